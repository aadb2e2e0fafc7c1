package rpc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"connectrpc.com/connect"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
)

// staticResolver is a fixed instance list: the pool's balancing and failover are pure logic.
type staticResolver []registry.Instance

func (s staticResolver) Resolve(context.Context, string) ([]registry.Instance, error) {
	if len(s) == 0 {
		return nil, registry.ErrNoInstance
	}
	return s, nil
}

func instanceFor(t *testing.T, base string) registry.Instance {
	t.Helper()
	host, port, err := net.SplitHostPort(base[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	p, _ := net.LookupPort("tcp", port)
	return registry.Instance{ID: "cache-" + port, Name: "cache", Address: host, Port: p, Health: registry.HealthPassing}
}

func deadInstance(t *testing.T) registry.Instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens here any more: connection refused
	return registry.Instance{ID: "cache-dead", Name: "cache", Address: "127.0.0.1", Port: port, Health: registry.HealthPassing}
}

func TestPoolFailsOverFromDeadInstance(t *testing.T) {
	live := instanceFor(t, serve(t))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool := rpc.NewPool(staticResolver{deadInstance(t), live}, log)
	defer pool.Close()
	client := cachev1connect.NewCacheServiceClient(pool.HTTPClient("cache"), rpc.BaseURL("cache"), pool.ClientOptions()...)
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := client.Get(ctx, &cachev1.GetRequest{Key: "k"})
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

func TestPoolWithoutInstancesIsUnavailable(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool := rpc.NewPool(staticResolver{}, log)
	client := cachev1connect.NewCacheServiceClient(pool.HTTPClient("cache"), rpc.BaseURL("cache"), pool.ClientOptions()...)
	_, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "k"})
	if connect.CodeOf(err) != connect.CodeUnavailable || !errors.Is(err, registry.ErrNoInstance) {
		t.Fatalf("want unavailable wrapping ErrNoInstance, got %v", err)
	}
}

func TestBreakerOpensOnBackendFailuresOnly(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	base := serve(t)
	pool := rpc.NewPool(staticResolver{instanceFor(t, base)}, log)
	client := cachev1connect.NewCacheServiceClient(pool.HTTPClient("cache"), rpc.BaseURL("cache"), pool.ClientOptions()...)
	// Caller mistakes never open the breaker.
	for range 30 {
		_, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "missing"})
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("want not_found, got %v", err)
		}
	}
	if _, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
		t.Fatalf("breaker opened on caller errors: %v", err)
	}

	// A dead instance fails fast once its breaker is open.
	dead := rpc.NewPool(staticResolver{deadInstance(t)}, log)
	deadClient := cachev1connect.NewCacheServiceClient(dead.HTTPClient("cache"), rpc.BaseURL("cache"), dead.ClientOptions()...)
	var opened bool
	for range 20 {
		_, err := deadClient.Get(context.Background(), &cachev1.GetRequest{Key: "k"})
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("want unavailable, got %v", err)
		}
		if errors.Is(err, rpc.ErrBreakerOpen) {
			opened = true
			break
		}
	}
	if !opened {
		t.Fatal("breaker never opened for a dead instance")
	}
}
