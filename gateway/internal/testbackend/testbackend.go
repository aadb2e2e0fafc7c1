// Package testbackend is a real Connect backend for gateway tests: it serves CacheService
// (idempotent methods), MetadataService.CreateVideo (a side effect that must never be
// repeated) and a test-only server-streaming procedure, with faults switched at run time
// and counters to assert on. It runs in-process or as its own process (cmd/testbackend).
package testbackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/svc/rpc"
)

// WatchProcedure is the test-only server-streaming procedure: GetRequest.key is
// "<count>:<interval ms>", and each message's value is its index.
const WatchProcedure = "/" + cachev1connect.CacheServiceName + "/Watch"

// Modes a backend answers in.
const (
	ModeOK       = "ok"
	ModeInternal = "internal"
)

// ErrInjected is the error a backend in ModeInternal answers with.
var ErrInjected = errors.New("testbackend: injected failure")

// Stats are the counters a backend exposes at GET /stats.
type Stats struct {
	// Calls counts RPCs that reached a handler (validation failures never do).
	Calls int64 `json:"calls"`
	// SideEffects counts CreateVideo calls that reached the handler: the work starts at
	// once, whatever happens to the call afterwards.
	SideEffects int64 `json:"sideEffects"`
	// Cancelled counts calls whose context ended before they finished.
	Cancelled int64 `json:"cancelled"`
	// LastDeadlineMs is the time left to the deadline of the last call, at its start
	// (-1: no deadline).
	LastDeadlineMs int64 `json:"lastDeadlineMs"`
	// LastCallUnixNano is when the last call arrived.
	LastCallUnixNano int64 `json:"lastCallUnixNano"`
}

// Backend is one test backend instance.
type Backend struct {
	cachev1connect.UnimplementedCacheServiceHandler
	metadatav1connect.UnimplementedMetadataServiceHandler

	// Gate, if set, is waited on before each stream message after the first.
	Gate chan struct{}

	mode         atomic.Value
	delay        atomic.Int64
	calls        atomic.Int64
	sideEffects  atomic.Int64
	cancelled    atomic.Int64
	lastDeadline atomic.Int64
	lastCall     atomic.Int64
}

// New returns a healthy backend.
func New() *Backend {
	b := &Backend{}
	b.mode.Store(ModeOK)
	b.lastDeadline.Store(-1)
	return b
}

// SetFault switches the backend's behaviour: mode ModeInternal answers internal to every
// call; delay holds every call that long first (cut short by the call's context).
func (b *Backend) SetFault(mode string, delay time.Duration) {
	b.mode.Store(mode)
	b.delay.Store(int64(delay))
}

// Stats returns the counters.
func (b *Backend) Stats() Stats {
	return Stats{Calls: b.calls.Load(), SideEffects: b.sideEffects.Load(), Cancelled: b.cancelled.Load(),
		LastDeadlineMs: b.lastDeadline.Load(), LastCallUnixNano: b.lastCall.Load()}
}

// Mount adds the services, the streaming procedure, POST /fault?mode=&delay= and GET /stats.
func (b *Backend) Mount(srv *rpc.Server) {
	b.MountCache(srv)
	path, h := metadatav1connect.NewMetadataServiceHandler(b, srv.HandlerOptions()...)
	srv.Mount(metadatav1connect.MetadataServiceName, path, h)
}

// MountCache is Mount without MetadataService, for a backend that must not take the real
// metadata service's calls.
func (b *Backend) MountCache(srv *rpc.Server) {
	opts := srv.HandlerOptions()
	// The streaming procedure shares the service's path prefix, mounted unwrapped so the
	// handler can flush.
	path, h := cachev1connect.NewCacheServiceHandler(b, opts...)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	mux.Handle(WatchProcedure, connect.NewServerStreamHandlerSimple(WatchProcedure, b.watch, opts...))
	srv.Mount(cachev1connect.CacheServiceName, path, mux)
	srv.Handle("POST /fault", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delay, err := time.ParseDuration(r.URL.Query().Get("delay"))
		if err != nil {
			delay = 0
		}
		mode := r.URL.Query().Get("mode")
		if mode == "" {
			mode = ModeOK
		}
		b.SetFault(mode, delay)
	}))
	srv.Handle("GET /stats", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b.Stats())
	}))
}

// enter applies the fault to a call that reached a handler.
func (b *Backend) enter(ctx context.Context) error {
	b.calls.Add(1)
	b.lastCall.Store(time.Now().UnixNano())
	if d, ok := ctx.Deadline(); ok {
		b.lastDeadline.Store(time.Until(d).Milliseconds())
	} else {
		b.lastDeadline.Store(-1)
	}
	if d := time.Duration(b.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			b.cancelled.Add(1)
			return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
		case <-t.C:
		}
	}
	if b.mode.Load() == ModeInternal {
		return connect.NewError(connect.CodeInternal, ErrInjected)
	}
	return nil
}

// Get answers found=true with the key as value; "missing" is not_found with a detail,
// and "code:<name>" fails with the Connect code of that name (already_exists, say).
func (b *Backend) Get(ctx context.Context, req *cachev1.GetRequest) (*cachev1.GetResponse, error) {
	if err := b.enter(ctx); err != nil {
		return nil, err
	}
	if name, ok := strings.CutPrefix(req.GetKey(), "code:"); ok {
		var code connect.Code
		if err := code.UnmarshalText([]byte(name)); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
		return nil, connect.NewError(code, fmt.Errorf("%w: %s", ErrInjected, name))
	}
	if req.GetKey() == "missing" {
		err := connect.NewError(connect.CodeNotFound, errors.New("no such key"))
		if d, derr := connect.NewErrorDetail(&cachev1.GetRequest{Key: "missing"}); derr == nil {
			err.AddDetail(d)
		}
		return nil, err
	}
	return &cachev1.GetResponse{Found: true, Value: []byte(req.GetKey())}, nil
}

// Set accepts anything valid.
func (b *Backend) Set(ctx context.Context, _ *cachev1.SetRequest) (*cachev1.SetResponse, error) {
	if err := b.enter(ctx); err != nil {
		return nil, err
	}
	return &cachev1.SetResponse{}, nil
}

// CreateVideo is the non-idempotent call: its side effect happens as soon as it arrives.
func (b *Backend) CreateVideo(ctx context.Context, req *metadatav1.CreateVideoRequest) (*metadatav1.CreateVideoResponse, error) {
	b.sideEffects.Add(1)
	if err := b.enter(ctx); err != nil {
		return nil, err
	}
	return &metadatav1.CreateVideoResponse{Video: req.GetVideo()}, nil
}

func (b *Backend) watch(ctx context.Context, req *cachev1.GetRequest, stream *connect.ServerStream[cachev1.GetResponse]) error {
	if err := b.enter(ctx); err != nil {
		return err
	}
	countS, intervalS, _ := strings.Cut(req.GetKey(), ":")
	count, err := strconv.Atoi(countS)
	if err != nil || count < 0 || count > 1000 {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("key must be <count>:<interval ms>"))
	}
	interval, _ := strconv.Atoi(intervalS)
	for i := range count {
		if i > 0 {
			if b.Gate != nil {
				select {
				case <-b.Gate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			select {
			case <-time.After(time.Duration(interval) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := stream.Send(&cachev1.GetResponse{Found: true, Value: []byte(strconv.Itoa(i))}); err != nil {
			return err
		}
	}
	return nil
}
