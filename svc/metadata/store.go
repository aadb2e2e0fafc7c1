package metadata

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
)

// Errors of the metadata service and its stores.
var (
	// ErrNotFound means no video has the id, or it was deleted.
	ErrNotFound = errors.New("metadata: video not found")
	// ErrExists means a video with the id already exists with other content (or existed
	// and was deleted: ids are never reused, so a file cleanup cannot hit a new video).
	ErrExists = errors.New("metadata: video already exists")
	// ErrInvalid means the caller sent a request the service cannot act on.
	ErrInvalid = errors.New("metadata: invalid argument")
	// ErrSchema means the database schema is newer than this binary understands.
	ErrSchema = errors.New("metadata: unsupported schema")
	// ErrStore wraps failures of the storage backend.
	ErrStore = errors.New("metadata: store")
)

// Store persists videos. The service owns this interface; SQLite and PostgreSQL implement
// it, and the same test suite runs against both.
type Store interface {
	// Create inserts v; an existing id, deleted or not, yields ErrExists and changes nothing.
	Create(ctx context.Context, v *metadatav1.Video) error
	// Get returns the video with id, or ErrNotFound when there is none or it was deleted.
	Get(ctx context.Context, id string) (*metadatav1.Video, error)
	// List returns up to q.Limit videos that are not deleted and match q, ordered by
	// create time then id, both in q.Order's direction.
	List(ctx context.Context, q ListQuery) ([]*metadatav1.Video, error)
	// Update reads the video, lets apply change it and writes it back in one transaction,
	// so concurrent updates of different fields cannot lose each other's changes. When
	// apply reports no change nothing is written and the stored video is returned. A
	// deleted video is ErrNotFound.
	Update(ctx context.Context, id string, apply func(v *metadatav1.Video) (changed bool, err error)) (*metadatav1.Video, error)
	// Delete marks the video deleted at the given time (a soft delete: the row stays for
	// the file cleanup that follows video.deleted), or returns ErrNotFound when there is
	// no such video or it was deleted already.
	Delete(ctx context.Context, id string, at time.Time) error
	// Close releases the backend.
	Close() error
}

// Order is the direction of the list order.
type Order int

// The list orders.
const (
	// NewestFirst orders by create time then id, both descending.
	NewestFirst Order = iota
	// OldestFirst orders by create time then id, both ascending.
	OldestFirst
)

// ListQuery selects one page of videos.
type ListQuery struct {
	// Limit is the most videos to return; it must be positive.
	Limit int
	// Status keeps only videos in that state unless it is unspecified.
	Status metadatav1.VideoStatus
	// OwnerID keeps only that owner's videos unless it is empty.
	OwnerID string
	// Visibility keeps only videos with that visibility unless it is unspecified.
	Visibility metadatav1.Visibility
	// Words keeps only videos whose search text has, for every word, a word starting with
	// it. The words must come from SearchWords, which both backends index the same way.
	Words []string
	// Order is the direction of the order.
	Order Order
	// After, when set, starts the page strictly after that position in Order.
	After *Cursor
}

// Cursor is a position in the list order.
type Cursor struct {
	CreateTime time.Time
	ID         string
}

// Config selects and locates the store.
type Config struct {
	// DataDir holds metadata.db when DatabaseURL is empty.
	DataDir string
	// DatabaseURL, when set, is a PostgreSQL connection string (URL or key=value form) and
	// the videos live there instead of in SQLite. It may carry a password: never log it.
	DatabaseURL string
}

// OpenStore opens the store cfg selects and brings its schema up to date.
func OpenStore(ctx context.Context, cfg Config, log *slog.Logger) (Store, error) {
	if cfg.DatabaseURL != "" {
		s, err := OpenPostgres(ctx, cfg.DatabaseURL)
		if err != nil {
			return nil, err
		}
		log.InfoContext(ctx, "store.open", "backend", "postgres", "database", s.Describe())
		return s, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("%w: create data dir: %w", ErrStore, err)
	}
	path := filepath.Join(cfg.DataDir, "metadata.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		return nil, err
	}
	log.InfoContext(ctx, "store.open", "backend", "sqlite", "path", path)
	return s, nil
}

// rowIter is what both backends' result sets (pgx.Rows, *sql.Rows) offer.
type rowIter interface {
	scanner
	Next() bool
	Err() error
}

// collect scans every row of a List query.
func collect(rows rowIter, scan func(scanner) (*metadatav1.Video, error)) ([]*metadatav1.Video, error) {
	var out []*metadatav1.Video
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%w: list: %w", ErrStore, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: list: %w", ErrStore, err)
	}
	return out, nil
}
