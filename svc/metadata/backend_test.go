package metadata_test

import (
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/reelway/reelway/svc/metadata"
	"github.com/reelway/reelway/svc/metadata/internal/pgtest"
)

// backend is one Store implementation the suite runs against.
type backend struct {
	name string
	// skip, when set, says why this backend cannot run on this machine.
	skip string
	// newConfig returns the location of a new, empty store.
	newConfig func(t *testing.T) metadata.Config
}

// startBackends returns SQLite and PostgreSQL. PostgreSQL is a real throwaway server that
// lives until the calling test ends, with a new database for each store; where it is not
// installed, the PostgreSQL backend carries the reason to skip.
func startBackends(t *testing.T) []backend {
	t.Helper()
	sqlite := backend{name: "sqlite", newConfig: func(t *testing.T) metadata.Config {
		return metadata.Config{DataDir: filepath.Join(t.TempDir(), "data")}
	}}
	pg := backend{name: "postgres"}
	srv, err := pgtest.Start(t.Context())
	switch {
	case errors.Is(err, pgtest.ErrNotInstalled):
		pg.skip = "PostgreSQL run skipped: " + err.Error() + " (install postgresql to run it)"
	case err != nil:
		t.Fatal(err)
	default:
		t.Cleanup(func() {
			if err := srv.Stop(); err != nil {
				t.Error(err)
			}
		})
		pg.newConfig = func(t *testing.T) metadata.Config {
			return metadata.Config{DatabaseURL: srv.NewDatabase(t)}
		}
	}
	return []backend{sqlite, pg}
}

// openStore opens the store at cfg and closes it when the test ends.
func openStore(t *testing.T, cfg metadata.Config) metadata.Store {
	t.Helper()
	s, err := metadata.OpenStore(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// suiteCase is one test of the metadata suite.
type suiteCase struct {
	name string
	run  func(t *testing.T, b backend)
}

// suite is the metadata test suite: every case runs against every backend.
func suite() []suiteCase {
	return []suiteCase{
		{"Lifecycle", testLifecyclePublishesEvents},
		{"Pagination", testListPagination},
		{"BadInput", testBadInput},
		{"Titles", testTitles},
		{"TextFields", testTextFields},
		{"PublishFailure", testPublishFailureDoesNotFailWrites},
		{"Reopen", testReopenKeepsVideos},
		{"Filters", testFilters},
		{"Search", testSearch},
		{"SoftDelete", testSoftDelete},
		{"ConcurrentInserts", testPaginationUnderConcurrentInserts},
		{"Indexes", testListUsesIndexes},
		{"Migrations", testMigrations},
	}
}

// TestMetadata runs the suite against SQLite and PostgreSQL, then checks that both return
// the same videos for the same requests.
func TestMetadata(t *testing.T) {
	backends := startBackends(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			if b.skip != "" {
				t.Skip(b.skip)
			}
			t.Parallel()
			for _, c := range suite() {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, b)
				})
			}
		})
	}
	t.Run("Parity", func(t *testing.T) {
		for _, b := range backends {
			if b.skip != "" {
				t.Skip(b.skip)
			}
		}
		t.Parallel()
		testParity(t, backends)
	})
}
