package sqlitedb_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/reelway/reelway/svc/sqlitedb"
)

func TestMigrationsApplyOnceAndInOrder(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	v1 := []string{`CREATE TABLE a (n INTEGER)`}
	v2 := append(v1, `INSERT INTO a (n) VALUES (1)`)

	db, err := sqlitedb.Open(ctx, path, v1)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	// Reopening with one more step applies only that step, and again applies nothing.
	for range 2 {
		db, err = sqlitedb.Open(ctx, path, v2)
		if err != nil {
			t.Fatal(err)
		}
		var n, version int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM a`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&version); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if n != 1 || version != 2 {
			t.Fatalf("rows %d version %d, want 1 and 2", n, version)
		}
	}
	// An older build refuses a newer file rather than running against an unknown schema.
	if _, err := sqlitedb.Open(ctx, path, v1); !errors.Is(err, sqlitedb.ErrNewerSchema) {
		t.Fatalf("want ErrNewerSchema, got %v", err)
	}
	// A failing step leaves the version where it was.
	bad := append(v2, `THIS IS NOT SQL`)
	if _, err := sqlitedb.Open(ctx, path, bad); !errors.Is(err, sqlitedb.ErrOpen) {
		t.Fatalf("want ErrOpen, got %v", err)
	}
	db, err = sqlitedb.Open(ctx, path, v2)
	if err != nil {
		t.Fatalf("file unusable after a failed migration: %v", err)
	}
	db.Close()
}

// TestConcurrentOpenOfNewFile opens one new file from several goroutines at once, many
// times: each open migrates or finds the work done, and none fails with SQLITE_BUSY (the
// switch of a new file to WAL does not wait out the busy timeout by itself).
func TestConcurrentOpenOfNewFile(t *testing.T) {
	steps := []string{`CREATE TABLE t (id INTEGER PRIMARY KEY)`, `ALTER TABLE t ADD COLUMN name TEXT`}
	for round := range 30 {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("round%d.db", round))
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				db, err := sqlitedb.Open(t.Context(), path, steps)
				if err != nil {
					t.Errorf("round %d: %v", round, err)
					return
				}
				_ = db.Close()
			})
		}
		wg.Wait()
	}
}
