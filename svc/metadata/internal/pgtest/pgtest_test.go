package pgtest_test

import (
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/reelway/reelway/svc/metadata/internal/pgtest"
)

func TestServerLifecycle(t *testing.T) {
	ctx := t.Context()
	s, err := pgtest.Start(ctx)
	if errors.Is(err, pgtest.ErrNotInstalled) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = s.Stop()
		}
	})

	// Each database is new and empty, and the server is the version the machine ships.
	var dirs []string
	for range 2 {
		url, err := s.CreateDatabase(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		var dataDir, encoding string
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT current_setting('data_directory'), pg_encoding_to_char(encoding)
			FROM pg_database WHERE datname = current_database()`).Scan(&dataDir, &encoding); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `CREATE TABLE t (x int)`); err != nil {
			t.Fatal(err)
		}
		_ = conn.Close(ctx)
		if n != 0 || encoding != "UTF8" {
			t.Fatalf("new database has %d tables, encoding %s", n, encoding)
		}
		dirs = append(dirs, dataDir)
	}
	if _, err := os.Stat(dirs[0]); err != nil {
		t.Fatalf("data directory %s: %v", dirs[0], err)
	}

	stopped = true
	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, s.Logs())
	}
	if _, err := os.Stat(dirs[0]); !os.IsNotExist(err) {
		t.Fatalf("data directory left behind: %v", err)
	}
	if conn, err := pgx.Connect(ctx, s.URL("postgres")); err == nil {
		_ = conn.Close(ctx)
		t.Fatal("server still accepts connections after Stop")
	}
}
