package metadata

import (
	"context"
	"errors"
	"time"

	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
)

// Errors of the metadata service and its stores.
var (
	// ErrNotFound means no video has the id.
	ErrNotFound = errors.New("metadata: video not found")
	// ErrExists means a video with the id already exists with other content.
	ErrExists = errors.New("metadata: video already exists")
	// ErrInvalid means the caller sent a request the service cannot act on.
	ErrInvalid = errors.New("metadata: invalid argument")
	// ErrSchema means the database schema is newer than this binary understands.
	ErrSchema = errors.New("metadata: unsupported schema")
	// ErrStore wraps failures of the storage backend.
	ErrStore = errors.New("metadata: store")
)

// Store persists videos. The service owns this interface so that a PostgreSQL backend can
// sit beside SQLite without touching the handlers.
type Store interface {
	// Create inserts v; an existing id yields ErrExists and changes nothing.
	Create(ctx context.Context, v *metadatav1.Video) error
	// Get returns the video with id, or ErrNotFound.
	Get(ctx context.Context, id string) (*metadatav1.Video, error)
	// List returns up to q.Limit videos ordered by create time then id, both descending.
	List(ctx context.Context, q ListQuery) ([]*metadatav1.Video, error)
	// Update reads the video, lets apply change it and writes it back in one transaction,
	// so concurrent updates of different fields cannot lose each other's changes. When
	// apply reports no change nothing is written and the stored video is returned.
	Update(ctx context.Context, id string, apply func(v *metadatav1.Video) (changed bool, err error)) (*metadatav1.Video, error)
	// Delete removes the video with id, or returns ErrNotFound.
	Delete(ctx context.Context, id string) error
	// Close releases the backend.
	Close() error
}

// ListQuery selects one page of videos.
type ListQuery struct {
	// Limit is the most videos to return; it must be positive.
	Limit int
	// Status keeps only videos in that state unless it is unspecified.
	Status metadatav1.VideoStatus
	// After, when set, starts the page strictly after that position.
	After *Cursor
}

// Cursor is a position in the list order.
type Cursor struct {
	CreateTime time.Time
	ID         string
}
