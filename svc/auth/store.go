package auth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"github.com/reelway/reelway/svc/sqlitedb"
	"time"
)

// user is a stored account.
type user struct {
	ID           string
	Email        string
	DisplayName  string
	PasswordHash []byte
	CreateTime   time.Time
}

// userStore keeps accounts in one SQLite file.
type userStore struct {
	db *sql.DB
}

// migrations are applied in order; entry i is schema version i+1. Append, never edit.
func migrations() []string {
	return []string{
		`CREATE TABLE users (
			id             TEXT PRIMARY KEY,
			email          TEXT    NOT NULL,
			email_key      TEXT    NOT NULL UNIQUE,
			display_name   TEXT    NOT NULL DEFAULT '',
			password_hash  BLOB    NOT NULL,
			create_time_us INTEGER NOT NULL
		);`,
	}
}

func openStore(ctx context.Context, path string) (*userStore, error) {
	db, err := sqlitedb.Open(ctx, path, migrations())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	return &userStore{db: db}, nil
}

func (s *userStore) close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("%w: close: %w", ErrStore, err)
	}
	return nil
}

// create inserts u under emailKey; a taken key yields ErrEmailTaken.
func (s *userStore) create(ctx context.Context, u user, emailKey string) error {
	res, err := s.db.ExecContext(ctx, `INSERT INTO users (id, email, email_key, display_name, password_hash, create_time_us)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		u.ID, u.Email, emailKey, u.DisplayName, u.PasswordHash, u.CreateTime.UnixMicro())
	if err != nil {
		return fmt.Errorf("%w: insert user: %w", ErrStore, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%w: insert user: %w", ErrStore, err)
	}
	if n == 0 {
		return ErrEmailTaken
	}
	return nil
}

// byEmail returns the user with emailKey, or errNoUser.
func (s *userStore) byEmail(ctx context.Context, emailKey string) (user, error) {
	var (
		u  user
		us int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT id, email, display_name, password_hash, create_time_us
		FROM users WHERE email_key = ?`, emailKey).Scan(&u.ID, &u.Email, &u.DisplayName, &u.PasswordHash, &us)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return user{}, errNoUser
	case err != nil:
		return user{}, fmt.Errorf("%w: find user: %w", ErrStore, err)
	}
	u.CreateTime = time.UnixMicro(us)
	return u, nil
}
