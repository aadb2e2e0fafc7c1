package monitor_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	monitorv1 "github.com/reelway/reelway/gen/reelway/monitor/v1"
	"github.com/reelway/reelway/gen/reelway/monitor/v1/monitorv1connect"
	"github.com/reelway/reelway/svc/monitor"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
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

// deadURL returns a URL nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr + "/healthz"
}

func TestOverview(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	mem := registry.NewMemory(log)
	t.Cleanup(mem.Close)
	cat := registry.NewCatalog(mem, log)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cat.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })

	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"status":"ok"}`)
	}))
	t.Cleanup(healthy.Close)
	dead := deadURL(t)

	regs := []struct {
		id, name, url string
		port          int
	}{
		{"metadata-2", "metadata", dead, 9105},
		{"cache-1", "cache", dead, 9006},
		{"metadata-1", "metadata", healthy.URL + "/healthz", 9005},
	}
	for _, r := range regs {
		err := mem.Register(t.Context(), registry.Registration{
			Instance: registry.Instance{
				ID: r.id, Name: r.name, Address: "127.0.0.1", Port: r.port, Tags: registry.DefaultTags,
				Meta: map[string]string{
					registry.MetaProtoServices: "reelway." + r.name + ".v1.Svc, grpc.health.v1.Health",
					registry.MetaVersion:       "v1.2.3",
				},
			},
			HealthURL:     r.url,
			CheckInterval: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// Sorted by service then id; only metadata-1 answers its health check.
	want := []*monitorv1.ServiceInstance{
		{Id: "cache-1", Service: "cache", Health: monitorv1.Health_HEALTH_CRITICAL},
		{Id: "metadata-1", Service: "metadata", Health: monitorv1.Health_HEALTH_PASSING},
		{Id: "metadata-2", Service: "metadata", Health: monitorv1.Health_HEALTH_CRITICAL},
	}
	srv := rpc.NewServer(log, nil)
	if err := monitor.New(log, cat).Mount(srv); err != nil {
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

	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := monitorv1connect.NewMonitorServiceClient(&http.Client{Transport: tr}, "http://"+ln.Addr().String(), p.opts...)
			var last *monitorv1.GetOverviewResponse
			deadline := time.Now().Add(10 * time.Second)
			for !matches(last, want) {
				if time.Now().After(deadline) {
					t.Fatalf("overview never matched; last: %v", last)
				}
				if last != nil {
					time.Sleep(20 * time.Millisecond)
				}
				res, err := c.GetOverview(t.Context(), &monitorv1.GetOverviewRequest{})
				if err != nil {
					t.Fatal(err)
				}
				last = res
			}
			if last.GetServicesPassing() != 1 {
				t.Fatalf("services_passing = %d, want 1 (one service, however many instances)", last.GetServicesPassing())
			}
			if d := time.Since(last.GetObserveTime().AsTime()); d < 0 || d > time.Minute {
				t.Fatalf("observe_time %v", last.GetObserveTime().AsTime())
			}
			m := last.GetInstances()[1]
			if m.GetAddress() != "127.0.0.1" || m.GetPort() != 9005 || m.GetVersion() != "v1.2.3" ||
				!slices.Equal(m.GetProtoServices(), []string{"reelway.metadata.v1.Svc", "grpc.health.v1.Health"}) {
				t.Fatalf("instance detail: %v", m)
			}
		})
	}
}

func matches(res *monitorv1.GetOverviewResponse, want []*monitorv1.ServiceInstance) bool {
	if res == nil || len(res.GetInstances()) != len(want) {
		return false
	}
	for i, in := range res.GetInstances() {
		if in.GetId() != want[i].GetId() || in.GetService() != want[i].GetService() || in.GetHealth() != want[i].GetHealth() {
			return false
		}
	}
	return true
}

func TestOverviewEmpty(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	res, err := monitor.New(log, emptyCatalog{}).GetOverview(t.Context(), &monitorv1.GetOverviewRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetInstances()) != 0 || res.GetServicesPassing() != 0 || res.GetObserveTime() == nil {
		t.Fatalf("empty overview: %v", res)
	}
}

// emptyCatalog is a registry that knows no instance yet, as before the first sync.
type emptyCatalog struct{}

func (emptyCatalog) All() []registry.Instance { return nil }
