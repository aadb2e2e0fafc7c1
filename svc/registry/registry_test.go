package registry_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reelway/reelway/svc/registry"
)

func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %v", what, err)
}

func TestMemoryRegistryFollowsHealth(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	reg := registry.NewMemory(log)
	defer reg.Close()
	cat := registry.NewCatalog(reg, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cat.Run(ctx)

	inst := registry.Instance{
		ID: registry.InstanceID("metadata", 9005), Name: "metadata", Address: "127.0.0.1", Port: 9005,
		Tags: registry.DefaultTags, Meta: map[string]string{registry.MetaProtoServices: "a.v1.A, b.v1.B"},
	}
	if inst.ID != "metadata-9005" {
		t.Fatalf("instance id %q", inst.ID)
	}
	if err := reg.Register(ctx, registry.Registration{Instance: inst, HealthURL: srv.URL, CheckInterval: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "passing", func() error {
		if len(cat.ResolveProto("b.v1.B")) != 1 {
			return fmt.Errorf("routes %v", cat.Routes())
		}
		ins, err := cat.Resolve(ctx, "metadata")
		if err != nil || len(ins) != 1 || ins[0].BaseURL() != "http://127.0.0.1:9005" {
			return fmt.Errorf("resolve: %v %v", ins, err)
		}
		return nil
	})

	healthy.Store(false)
	waitFor(t, "critical", func() error {
		if _, err := cat.Resolve(ctx, "metadata"); err == nil {
			return fmt.Errorf("still resolvable")
		}
		if all := cat.All(); len(all) != 1 || all[0].Health != registry.HealthCritical {
			return fmt.Errorf("all: %v", all)
		}
		return nil
	})

	if err := reg.Deregister(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gone", func() error {
		if n := len(cat.All()); n != 0 {
			return fmt.Errorf("%d left", n)
		}
		return nil
	})
}

func TestProtoServicesParsing(t *testing.T) {
	tests := []struct {
		meta string
		want int
	}{
		{"", 0},
		{"a.v1.A", 1},
		{"a.v1.A,b.v1.B", 2},
		{" a.v1.A , ,b.v1.B,", 2},
	}
	for _, tt := range tests {
		in := registry.Instance{Meta: map[string]string{registry.MetaProtoServices: tt.meta}}
		if got := in.ProtoServices(); len(got) != tt.want {
			t.Errorf("%q: got %v", tt.meta, got)
		}
	}
}
