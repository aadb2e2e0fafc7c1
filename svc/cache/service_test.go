package cache_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	"github.com/reelway/reelway/svc/cache"
	"github.com/reelway/reelway/svc/rpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

func protocols() []struct {
	name string
	opts []connect.ClientOption
} {
	return []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	}
}

// serve runs svc on a loopback h2c listener and returns a client speaking opts' protocol.
func serve(t *testing.T, svc *cache.Service, opts []connect.ClientOption) cachev1connect.CacheServiceClient {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	srv := rpc.NewServer(log, nil)
	if err := svc.Mount(srv); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	tr := rpc.NewH2CTransport()
	t.Cleanup(tr.CloseIdleConnections)
	return cachev1connect.NewCacheServiceClient(&http.Client{Transport: tr}, "http://"+ln.Addr().String(), opts...)
}

// clock is a manual clock for expiry tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newClock() *clock { return &clock{now: time.Unix(1_800_000_000, 0)} }

func set(t *testing.T, c cachev1connect.CacheServiceClient, key, value string, ttl time.Duration) {
	t.Helper()
	req := &cachev1.SetRequest{Key: key, Value: []byte(value)}
	if ttl > 0 {
		req.Ttl = durationpb.New(ttl)
	}
	if _, err := c.Set(t.Context(), req); err != nil {
		t.Fatalf("set %s: %v", key, err)
	}
}

func get(t *testing.T, c cachev1connect.CacheServiceClient, key string) (string, bool) {
	t.Helper()
	res, err := c.Get(t.Context(), &cachev1.GetRequest{Key: key})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return string(res.GetValue()), res.GetFound()
}

func TestSetGetDelete(t *testing.T) {
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := serve(t, cache.New(slog.New(slog.DiscardHandler), 100), p.opts)
			if _, ok := get(t, c, "k"); ok {
				t.Fatal("found a key never set")
			}
			set(t, c, "k", "v1", 0)
			if v, ok := get(t, c, "k"); !ok || v != "v1" {
				t.Fatalf("get = %q %v, want v1", v, ok)
			}
			set(t, c, "k", "v2", time.Hour)
			if v, ok := get(t, c, "k"); !ok || v != "v2" {
				t.Fatalf("get after overwrite = %q %v, want v2", v, ok)
			}
			set(t, c, "empty", "", 0)
			if v, ok := get(t, c, "empty"); !ok || v != "" {
				t.Fatalf("empty value: %q %v", v, ok)
			}
			for i, want := range []bool{true, false} {
				res, err := c.Delete(t.Context(), &cachev1.DeleteRequest{Key: "k"})
				if err != nil {
					t.Fatal(err)
				}
				if res.GetDeleted() != want {
					t.Fatalf("delete #%d: deleted = %v, want %v", i+1, res.GetDeleted(), want)
				}
			}
			if _, ok := get(t, c, "k"); ok {
				t.Fatal("found a deleted key")
			}
		})
	}
}

func TestTTLExpiresOverTheWire(t *testing.T) {
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := serve(t, cache.New(slog.New(slog.DiscardHandler), 100), p.opts)
			set(t, c, "short", "v", 50*time.Millisecond)
			set(t, c, "forever", "v", 0)
			deadline := time.Now().Add(5 * time.Second)
			for {
				if _, ok := get(t, c, "short"); !ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("entry with a 50ms ttl still there after 5s")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if _, ok := get(t, c, "forever"); !ok {
				t.Fatal("entry without ttl expired")
			}
		})
	}
}

func TestExpiryIsExact(t *testing.T) {
	clk := newClock()
	svc := cache.New(slog.New(slog.DiscardHandler), 100, cache.WithClock(clk.Now))
	ctx := t.Context()
	if _, err := svc.Set(ctx, &cachev1.SetRequest{Key: "k", Value: []byte("v"), Ttl: durationpb.New(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	found := func() bool {
		res, err := svc.Get(ctx, &cachev1.GetRequest{Key: "k"})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetFound()
	}
	clk.Advance(time.Minute - time.Nanosecond)
	if !found() {
		t.Fatal("expired before its ttl")
	}
	clk.Advance(time.Nanosecond)
	if found() {
		t.Fatal("visible at its expiry time")
	}
	if res, err := svc.Delete(ctx, &cachev1.DeleteRequest{Key: "k"}); err != nil || res.GetDeleted() {
		t.Fatalf("delete of an expired key: %v %v", res, err)
	}
}

func TestSweeperDropsExpired(t *testing.T) {
	clk := newClock()
	svc := cache.New(slog.New(slog.DiscardHandler), 100, cache.WithClock(clk.Now), cache.WithSweepInterval(5*time.Millisecond))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("start returned %v", err)
		}
	}()

	for _, k := range []string{"a", "b", "c"} {
		if _, err := svc.Set(t.Context(), &cachev1.SetRequest{Key: k, Ttl: durationpb.New(time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.Set(t.Context(), &cachev1.SetRequest{Key: "keep"}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for svc.Len() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("sweeper left %d entries, want 1", svc.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEvictionAtCapacity(t *testing.T) {
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			clk := newClock()
			svc := cache.New(slog.New(slog.DiscardHandler), 3, cache.WithClock(clk.Now))
			c := serve(t, svc, p.opts)

			set(t, c, "forever-old", "1", 0)
			set(t, c, "hour", "2", time.Hour)
			set(t, c, "minute", "3", time.Minute)
			set(t, c, "minute", "3b", time.Minute) // overwriting at capacity evicts nothing
			steps := []struct {
				add   string
				ttl   time.Duration
				gone  string
				state []string
			}{
				// The soonest to expire goes first, then entries without a ttl by age.
				{"forever-1", 0, "minute", []string{"forever-old", "hour", "forever-1"}},
				{"forever-2", 0, "hour", []string{"forever-old", "forever-1", "forever-2"}},
				{"forever-3", 0, "forever-old", []string{"forever-1", "forever-2", "forever-3"}},
			}
			for _, st := range steps {
				set(t, c, st.add, "x", st.ttl)
				if svc.Len() != 3 {
					t.Fatalf("after adding %s: %d entries, want 3", st.add, svc.Len())
				}
				if _, ok := get(t, c, st.gone); ok {
					t.Fatalf("adding %s did not evict %s", st.add, st.gone)
				}
				for _, k := range st.state {
					if _, ok := get(t, c, k); !ok {
						t.Fatalf("adding %s evicted %s", st.add, k)
					}
				}
			}

			// Expired entries make room before any live one is evicted.
			set(t, c, "brief", "x", time.Second) // evicts forever-1
			clk.Advance(time.Second)
			set(t, c, "new", "x", 0)
			for _, k := range []string{"forever-2", "forever-3", "new"} {
				if _, ok := get(t, c, k); !ok {
					t.Fatalf("%s was evicted while an expired entry was held", k)
				}
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	ctx := t.Context()
	long := strings.Repeat("k", 513)
	tests := []struct {
		name string
		call func(cachev1connect.CacheServiceClient) error
	}{
		{"get empty key", func(c cachev1connect.CacheServiceClient) error {
			_, err := c.Get(ctx, &cachev1.GetRequest{})
			return err
		}},
		{"set empty key", func(c cachev1connect.CacheServiceClient) error {
			_, err := c.Set(ctx, &cachev1.SetRequest{Value: []byte("v")})
			return err
		}},
		{"delete empty key", func(c cachev1connect.CacheServiceClient) error {
			_, err := c.Delete(ctx, &cachev1.DeleteRequest{})
			return err
		}},
		{"get long key", func(c cachev1connect.CacheServiceClient) error {
			_, err := c.Get(ctx, &cachev1.GetRequest{Key: long})
			return err
		}},
		{"set negative ttl", func(c cachev1connect.CacheServiceClient) error {
			_, err := c.Set(ctx, &cachev1.SetRequest{Key: "k", Ttl: durationpb.New(-time.Second)})
			return err
		}},
		{"set ttl over 30 days", func(c cachev1connect.CacheServiceClient) error {
			_, err := c.Set(ctx, &cachev1.SetRequest{Key: "k", Ttl: durationpb.New(31 * 24 * time.Hour)})
			return err
		}},
		{"set value over 1MiB", func(c cachev1connect.CacheServiceClient) error {
			_, err := c.Set(ctx, &cachev1.SetRequest{Key: "k", Value: bytes.Repeat([]byte("x"), 1<<20+1)})
			return err
		}},
	}
	for _, p := range protocols() {
		c := serve(t, cache.New(slog.New(slog.DiscardHandler), 10), p.opts)
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				err := tt.call(c)
				if got := connect.CodeOf(err); err == nil || got != connect.CodeInvalidArgument {
					t.Fatalf("got %v (code %v), want invalid_argument", err, got)
				}
			})
		}
	}

	// Called directly, without the validating interceptor, the service still refuses.
	svc := cache.New(slog.New(slog.DiscardHandler), 10)
	_, err := svc.Set(ctx, &cachev1.SetRequest{})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !errors.Is(err, cache.ErrInvalidKey) {
		t.Fatalf("direct set with empty key: %v", err)
	}
}
