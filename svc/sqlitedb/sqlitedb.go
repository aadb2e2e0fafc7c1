// Package sqlitedb opens the SQLite files services keep in the data directory and brings
// their schema up to date with versioned migrations.
package sqlitedb

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

// Errors of opening and migrating.
var (
	// ErrOpen means the database file could not be opened or migrated.
	ErrOpen = errors.New("sqlitedb: open")
	// ErrNewerSchema means the file was migrated by a newer build than this one.
	ErrNewerSchema = errors.New("sqlitedb: database schema is newer than this build")
)

// Open opens (creating if needed) the database file at path and applies the pending
// migrations. Entry i of migrations is schema version i+1: append, never edit.
func Open(ctx context.Context, path string, migrations []string) (*sql.DB, error) {
	// busy_timeout makes a writer wait for another instead of failing with SQLITE_BUSY;
	// immediate transactions take the write lock up front, because a read lock that is
	// upgraded later cannot wait and fails at once under contention.
	dsn := "file:" + path +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrOpen, path, err)
	}
	if err := ping(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrOpen, path, err)
	}
	if err := Migrate(ctx, db, migrations); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// ping opens the first connection, which switches a new file to WAL. Two processes (or
// goroutines) doing that to one new file at once can get SQLITE_BUSY without the busy
// timeout being waited out, so a busy first connection is tried again for a while.
func ping(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		err := db.PingContext(ctx)
		var coded interface{ Code() int }
		if err == nil || !errors.As(err, &coded) || coded.Code()&0xff != sqliteBusy || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// sqliteBusy is SQLITE_BUSY, the primary result code of a lock another connection holds.
const sqliteBusy = 5

// Migrate applies the steps db has not recorded in schema_migrations, in one transaction:
// a second process opening the same file waits for the lock and then finds nothing to do.
func Migrate(ctx context.Context, db *sql.DB, steps []string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version       INTEGER PRIMARY KEY,
		applied_at_us INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("%w: create schema_migrations: %w", ErrOpen, err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: begin migration: %w", ErrOpen, err)
	}
	defer func() { _ = tx.Rollback() }()
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("%w: read schema version: %w", ErrOpen, err)
	}
	if current > len(steps) {
		return fmt.Errorf("%w: at version %d, this build knows %d", ErrNewerSchema, current, len(steps))
	}
	for i := current; i < len(steps); i++ {
		if _, err := tx.ExecContext(ctx, steps[i]); err != nil {
			return fmt.Errorf("%w: migration %d: %w", ErrOpen, i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at_us) VALUES (?, ?)`,
			i+1, time.Now().UnixMicro()); err != nil {
			return fmt.Errorf("%w: record migration %d: %w", ErrOpen, i+1, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: commit migrations: %w", ErrOpen, err)
	}
	return nil
}
