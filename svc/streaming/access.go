package streaming

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"golang.org/x/sync/singleflight"
)

// Lookup bounds: a video's visibility is cached for cacheTTL, so a change (made private,
// deleted) reaches playback within that time; when metadata cannot answer, an entry up to
// staleFor old is used rather than failing playback; the cache holds at most maxCached
// videos.
const (
	lookupTimeout = 5 * time.Second
	staleFor      = time.Minute
	maxCached     = 10_000
)

// video is what streaming needs to know about a video to serve it.
type video struct {
	visibility metadatav1.Visibility
	ownerID    string
	title      string
	duration   float64
	status     metadatav1.VideoStatus
	failure    string
}

// playable says why a video cannot be played yet, or ever, going by its status; nil for a
// ready one. A status older records lack (unspecified) is left to the files to settle.
func (v video) playable(id string) error {
	switch v.status {
	case metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING, metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING:
		return fmt.Errorf("%w: video %s is not ready (status %s)", ErrNotReady, id,
			strings.TrimPrefix(v.status.String(), "VIDEO_STATUS_"))
	case metadatav1.VideoStatus_VIDEO_STATUS_FAILED:
		if v.failure == "" {
			return fmt.Errorf("%w: video %s failed", ErrNotReady, id)
		}
		return fmt.Errorf("%w: video %s failed: %s", ErrNotReady, id, v.failure)
	}
	return nil
}

func (v video) private() bool {
	// Anything not explicitly public or unlisted is treated as private: a visibility
	// added to the schema later must not open videos by accident.
	return v.visibility != metadatav1.Visibility_VISIBILITY_PUBLIC &&
		v.visibility != metadatav1.Visibility_VISIBILITY_UNLISTED
}

type cached struct {
	v     video
	err   error // ErrNotFound or nil
	stamp time.Time
}

// lookups caches metadata answers briefly; concurrent misses for one video share one
// call.
type lookups struct {
	videos Videos
	ttl    time.Duration
	now    func() time.Time
	group  singleflight.Group

	mu      sync.Mutex
	entries map[string]cached
}

func newLookups(videos Videos, ttl time.Duration, now func() time.Time) *lookups {
	return &lookups{videos: videos, ttl: ttl, now: now, entries: make(map[string]cached)}
}

// get returns what metadata says of id: ErrNotFound when it has no such video,
// ErrUnavailable when it cannot say (and nothing recent enough is cached).
func (l *lookups) get(ctx context.Context, id string) (video, error) {
	l.mu.Lock()
	c, ok := l.entries[id]
	l.mu.Unlock()
	if ok && l.now().Sub(c.stamp) < l.ttl {
		return c.v, c.err
	}
	res, err, _ := l.group.Do(id, func() (any, error) {
		// The first caller's cancellation must not fail the others sharing the call.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		return l.fetch(cctx, id)
	})
	if err != nil {
		if ok && c.err == nil && l.now().Sub(c.stamp) < staleFor {
			return c.v, nil
		}
		return video{}, err
	}
	e := res.(cached)
	return e.v, e.err
}

func (l *lookups) fetch(ctx context.Context, id string) (cached, error) {
	res, err := l.videos.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: id})
	var e cached
	switch {
	case connect.CodeOf(err) == connect.CodeNotFound:
		e = cached{err: fmt.Errorf("%w: video %s", ErrNotFound, id)}
	case err != nil:
		return cached{}, fmt.Errorf("%w: metadata: %w", ErrUnavailable, err)
	default:
		v := res.GetVideo()
		e = cached{v: video{visibility: v.GetVisibility(), ownerID: v.GetOwnerId(), title: v.GetTitle(), duration: v.GetDurationSeconds(),
			status: v.GetStatus(), failure: v.GetFailureReason()}}
	}
	e.stamp = l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) >= maxCached {
		for k, old := range l.entries {
			if e.stamp.Sub(old.stamp) >= staleFor || len(l.entries) >= maxCached {
				delete(l.entries, k)
			}
		}
	}
	l.entries[id] = e
	return e, nil
}
