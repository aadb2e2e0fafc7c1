// Package cache is the CacheService: hot values in process memory with a time to live and
// a bound on the number of entries.
package cache

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	"github.com/reelway/reelway/svc/rpc"
)

// DefaultMaxEntries is the entry bound used when New is given a non-positive one.
const DefaultMaxEntries = 100_000

// DefaultSweepInterval is how often Start removes expired entries.
const DefaultSweepInterval = time.Second

// ErrInvalidKey means a key is empty.
var ErrInvalidKey = errors.New("cache: invalid key")

// Option adjusts New.
type Option func(*Service)

// WithClock replaces time.Now, so tests can move time instead of sleeping.
func WithClock(now func() time.Time) Option {
	return func(s *Service) { s.now = now }
}

// WithSweepInterval sets how often Start removes expired entries.
func WithSweepInterval(d time.Duration) Option {
	return func(s *Service) {
		if d > 0 {
			s.sweepEvery = d
		}
	}
}

// Service implements CacheService.
//
// Entries sit in a map for lookup and in a min-heap ordered by eviction priority: the
// soonest to expire first, then entries without a ttl by age. The heap's top is both the
// next entry the sweeper may drop and the victim when the cache is full, so eviction and
// sweeping cost O(log n) per entry.
type Service struct {
	log        *slog.Logger
	max        int
	now        func() time.Time
	sweepEvery time.Duration

	mu      sync.Mutex
	entries map[string]*entry
	order   evictionHeap
	seq     uint64
}

var _ cachev1connect.CacheServiceHandler = (*Service)(nil)

// New returns an empty cache holding at most maxEntries entries (DefaultMaxEntries when
// maxEntries is not positive).
func New(log *slog.Logger, maxEntries int, opts ...Option) *Service {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	s := &Service{
		log:        log,
		max:        maxEntries,
		now:        time.Now,
		sweepEvery: DefaultSweepInterval,
		entries:    make(map[string]*entry),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Mount registers the Connect handler.
func (s *Service) Mount(srv *rpc.Server) error {
	path, h := cachev1connect.NewCacheServiceHandler(s, srv.HandlerOptions()...)
	srv.Mount(cachev1connect.CacheServiceName, path, h)
	return nil
}

// Start sweeps expired entries until ctx ends. Expired entries are already invisible to
// Get; sweeping only gives their memory back.
func (s *Service) Start(ctx context.Context) error {
	t := time.NewTicker(s.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n := s.sweep(); n > 0 {
				s.log.DebugContext(ctx, "cache.swept", "expired", n, "entries", s.Len())
			}
		}
	}
}

// Len returns the number of entries held, expired ones not yet swept included.
func (s *Service) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

func (s *Service) sweep() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropExpiredLocked(s.now())
}

// dropExpiredLocked removes every entry expired at now; they are all at the heap's top.
func (s *Service) dropExpiredLocked(now time.Time) int {
	n := 0
	for len(s.order) > 0 && s.order[0].expiredAt(now) {
		e := heap.Pop(&s.order).(*entry)
		delete(s.entries, e.key)
		n++
	}
	return n
}

func (s *Service) removeLocked(e *entry) {
	heap.Remove(&s.order, e.index)
	delete(s.entries, e.key)
}

// Get implements CacheServiceHandler.
func (s *Service) Get(ctx context.Context, req *cachev1.GetRequest) (*cachev1.GetResponse, error) {
	if req.GetKey() == "" {
		return nil, toConnect(ErrInvalidKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[req.GetKey()]
	if !ok {
		return &cachev1.GetResponse{}, nil
	}
	if e.expiredAt(s.now()) {
		s.removeLocked(e)
		return &cachev1.GetResponse{}, nil
	}
	// Stored values are never modified in place (Set replaces the slice), so the
	// response may share it.
	return &cachev1.GetResponse{Found: true, Value: e.value}, nil
}

// Set implements CacheServiceHandler.
func (s *Service) Set(ctx context.Context, req *cachev1.SetRequest) (*cachev1.SetResponse, error) {
	if req.GetKey() == "" {
		return nil, toConnect(ErrInvalidKey)
	}
	now := s.now()
	var expires time.Time
	if ttl := req.GetTtl().AsDuration(); ttl > 0 {
		expires = now.Add(ttl)
	}
	value := bytes.Clone(req.GetValue())

	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	if e, ok := s.entries[req.GetKey()]; ok {
		e.value, e.expires, e.seq = value, expires, s.seq
		heap.Fix(&s.order, e.index)
		return &cachev1.SetResponse{}, nil
	}
	if len(s.entries) >= s.max {
		s.dropExpiredLocked(now)
	}
	for len(s.entries) >= s.max {
		victim := heap.Pop(&s.order).(*entry)
		delete(s.entries, victim.key)
		s.log.DebugContext(ctx, "cache.evicted", "key_len", len(victim.key))
	}
	e := &entry{key: req.GetKey(), value: value, expires: expires, seq: s.seq}
	s.entries[e.key] = e
	heap.Push(&s.order, e)
	return &cachev1.SetResponse{}, nil
}

// Delete implements CacheServiceHandler.
func (s *Service) Delete(ctx context.Context, req *cachev1.DeleteRequest) (*cachev1.DeleteResponse, error) {
	if req.GetKey() == "" {
		return nil, toConnect(ErrInvalidKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[req.GetKey()]
	if !ok {
		return &cachev1.DeleteResponse{}, nil
	}
	s.removeLocked(e)
	// An expired entry was already gone as far as callers could tell.
	return &cachev1.DeleteResponse{Deleted: !e.expiredAt(s.now())}, nil
}

// toConnect maps domain errors to Connect codes.
func toConnect(err error) error {
	if errors.Is(err, ErrInvalidKey) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%w: key must not be empty", err))
	}
	return connect.NewError(connect.CodeInternal, err)
}

type entry struct {
	key     string
	value   []byte
	expires time.Time // zero: no ttl
	seq     uint64    // write order: older entries are evicted first
	index   int       // position in the heap
}

func (e *entry) expiredAt(now time.Time) bool {
	return !e.expires.IsZero() && !now.Before(e.expires)
}

// evictionHeap orders entries by eviction priority; it implements heap.Interface.
type evictionHeap []*entry

func (h evictionHeap) Len() int { return len(h) }

func (h evictionHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	switch {
	case a.expires.IsZero() != b.expires.IsZero():
		return !a.expires.IsZero() // an entry with a ttl goes before one without
	case !a.expires.Equal(b.expires):
		return a.expires.Before(b.expires)
	}
	return a.seq < b.seq
}

func (h evictionHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *evictionHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}

func (h *evictionHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	e.index = -1
	return e
}
