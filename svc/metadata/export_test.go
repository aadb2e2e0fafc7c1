package metadata

import (
	"context"
	"fmt"
)

// ExplainList returns the backend's query plan for q, so the tests can check that every
// list shape is served by an index.
func ExplainList(ctx context.Context, s Store, q ListQuery) (string, error) {
	switch s := s.(type) {
	case *SQLite:
		return s.explainList(ctx, q)
	case *Postgres:
		return s.explainList(ctx, q)
	}
	return "", fmt.Errorf("no query plans for %T", s)
}

// Analyze refreshes the planner statistics, as a database in service has them.
func Analyze(ctx context.Context, s Store) error {
	switch s := s.(type) {
	case *SQLite:
		_, err := s.db.ExecContext(ctx, `ANALYZE`)
		return err
	case *Postgres:
		_, err := s.pool.Exec(ctx, `ANALYZE videos`)
		return err
	}
	return fmt.Errorf("no statistics for %T", s)
}
