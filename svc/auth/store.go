package auth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	// The pure-Go SQLite driver registers itself as "sqlite" with database/sql; that is
	// the only way database/sql finds drivers by name.
	_ "modernc.org/sqlite"
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
	// busy_timeout makes a writer wait instead of failing with SQLITE_BUSY; immediate
	// transactions take the write lock up front so it is never upgraded under contention.
	dsn := "file:" + path +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrStore, path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: open %s: %w", ErrStore, path, err)
	}
	if err := migrate(ctx, db, migrations()); err != nil {
		_ = db.Close()
		return nil, err
	}
	return &userStore{db: db}, nil
}

func migrate(ctx context.Context, db *sql.DB, steps []string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version       INTEGER PRIMARY KEY,
		applied_at_us INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("%w: create schema_migrations: %w", ErrStore, err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: begin migration: %w", ErrStore, err)
	}
	defer func() { _ = tx.Rollback() }()
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("%w: read schema version: %w", ErrStore, err)
	}
	if current > len(steps) {
		return fmt.Errorf("%w: database is at schema version %d, this build knows %d", ErrStore, current, len(steps))
	}
	for i := current; i < len(steps); i++ {
		if _, err := tx.ExecContext(ctx, steps[i]); err != nil {
			return fmt.Errorf("%w: migration %d: %w", ErrStore, i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at_us) VALUES (?, ?)`,
			i+1, time.Now().UnixMicro()); err != nil {
			return fmt.Errorf("%w: record migration %d: %w", ErrStore, i+1, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: commit migrations: %w", ErrStore, err)
	}
	return nil
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
