package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/reelway/reelway/svc/registry"
)

// fakeConsul answers the three endpoints the watch loop uses, with an index and a service
// list the test controls. A blocking query whose index is current waits (up to its wait
// parameter) for a change, as Consul does.
type fakeConsul struct {
	mu        sync.Mutex
	index     uint64
	services  map[string][]string // name → instance ids, all passing
	down      bool
	changed   chan struct{}
	stateHits atomic.Int64
}

func newFakeConsul(t *testing.T) (*fakeConsul, string) {
	t.Helper()
	f := &fakeConsul{index: 10, services: map[string][]string{}, changed: make(chan struct{})}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, strings.TrimPrefix(srv.URL, "http://")
}

// set changes the catalog and index; wake releases blocked queries.
func (f *fakeConsul) set(index uint64, services map[string][]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = index
	f.services = services
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeConsul) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	down, index, ch := f.down, f.index, f.changed
	f.mu.Unlock()
	if down {
		http.Error(w, "agent down", http.StatusInternalServerError)
		return
	}
	switch {
	case r.URL.Path == "/v1/health/state/any":
		f.stateHits.Add(1)
		want, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		if want != 0 && want == index {
			wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
			select {
			case <-ch:
			case <-time.After(wait):
			case <-r.Context().Done():
				return
			}
		}
		f.mu.Lock()
		index = f.index
		f.mu.Unlock()
		w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
		_, _ = io.WriteString(w, "[]")
	case r.URL.Path == "/v1/catalog/services":
		f.mu.Lock()
		out := map[string][]string{}
		for name := range f.services {
			out[name] = nil
		}
		f.mu.Unlock()
		w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
		_ = json.NewEncoder(w).Encode(out)
	case strings.HasPrefix(r.URL.Path, "/v1/health/service/"):
		name := strings.TrimPrefix(r.URL.Path, "/v1/health/service/")
		f.mu.Lock()
		ids := f.services[name]
		f.mu.Unlock()
		var entries []*api.ServiceEntry
		for i, id := range ids {
			entries = append(entries, &api.ServiceEntry{
				Node:    &api.Node{Address: "127.0.0.1"},
				Service: &api.AgentService{ID: id, Service: name, Port: 10000 + i},
				Checks:  api.HealthChecks{{Status: api.HealthPassing}},
			})
		}
		w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
		_ = json.NewEncoder(w).Encode(entries)
	default:
		http.NotFound(w, r)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func watchFake(t *testing.T, addr string, cfg registry.ConsulConfig) *registry.Catalog {
	t.Helper()
	reg, err := registry.NewConsulWith(addr, quietLog(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cat := registry.NewCatalog(reg, quietLog())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cat.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cat
}

func ids(ins []registry.Instance) string {
	var out []string
	for _, in := range ins {
		out = append(out, in.ID)
	}
	return strings.Join(out, ",")
}

func TestConsulWatchFollowsChangesAndSyncs(t *testing.T) {
	f, addr := newFakeConsul(t)
	f.set(10, map[string][]string{"cache": {"cache-1"}})
	cat := watchFake(t, addr, registry.ConsulConfig{WaitTime: 200 * time.Millisecond, MinGap: 10 * time.Millisecond})
	waitFor(t, "first sync", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-1" {
			return fmt.Errorf("cache: %q", got)
		}
		return nil
	})
	start := time.Now()
	f.set(11, map[string][]string{"cache": {"cache-1", "cache-2"}})
	waitFor(t, "change", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-1,cache-2" {
			return fmt.Errorf("cache: %q", got)
		}
		return nil
	})
	if d := time.Since(start); d > time.Second {
		t.Errorf("a change took %s to arrive: the watch must wake on the index, not a timer", d)
	}
	// Nothing changes: each ended wait is still a sync, so the age stays below the wait.
	time.Sleep(600 * time.Millisecond)
	if age := cat.Age(); age > 500*time.Millisecond {
		t.Errorf("catalog age %s with a healthy agent and a 200ms wait", age)
	}
}

func TestConsulWatchZeroIndexNeverSpins(t *testing.T) {
	f, addr := newFakeConsul(t)
	f.set(0, map[string][]string{"cache": {"cache-1"}})
	cat := watchFake(t, addr, registry.ConsulConfig{WaitTime: time.Second, MinGap: 10 * time.Millisecond, RetryMin: 50 * time.Millisecond, RetryMax: 400 * time.Millisecond})
	waitFor(t, "sync despite index 0", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-1" {
			return fmt.Errorf("cache: %q", got)
		}
		return nil
	})
	before := f.stateHits.Load()
	time.Sleep(1500 * time.Millisecond)
	// Backing off 50, 100, 200, 400, 400... ms allows about 6 queries in 1.5 s; a loop
	// honouring index 0 literally would make thousands.
	if n := f.stateHits.Load() - before; n > 12 {
		t.Fatalf("%d queries in 1.5 s against an agent answering index 0: the watch spins", n)
	}
	// The index recovers: the watch blocks normally again and follows changes.
	f.set(20, map[string][]string{"cache": {"cache-2"}})
	waitFor(t, "recovered", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-2" {
			return fmt.Errorf("cache: %q", got)
		}
		return nil
	})
}

func TestConsulWatchIndexBackwardsResetsWithGrace(t *testing.T) {
	f, addr := newFakeConsul(t)
	f.set(500, map[string][]string{"cache": {"cache-1", "cache-2"}})
	cat := watchFake(t, addr, registry.ConsulConfig{WaitTime: 100 * time.Millisecond, MinGap: 10 * time.Millisecond, Grace: 700 * time.Millisecond})
	waitFor(t, "first sync", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-1,cache-2" {
			return fmt.Errorf("cache: %q", got)
		}
		return nil
	})
	// The agent restarts with a fresh catalog where only cache-2 registered again so far.
	f.set(7, map[string][]string{"cache": {"cache-2"}, "auth": {"auth-1"}})
	waitFor(t, "refetched after the reset", func() error {
		if got := ids(mustResolve(cat, "auth")); got != "auth-1" {
			return fmt.Errorf("auth: %q", got)
		}
		return nil
	})
	// During the grace period the forgotten instance still routes...
	if got := ids(mustResolve(cat, "cache")); got != "cache-1,cache-2" {
		t.Fatalf("during grace: cache %q, want both instances", got)
	}
	// ...and after it, the new catalog is the truth, followed from the new lower index.
	waitFor(t, "grace over", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-2" {
			return fmt.Errorf("cache: %q", got)
		}
		return nil
	})
	f.set(8, map[string][]string{"cache": {"cache-2", "cache-3"}, "auth": {"auth-1"}})
	waitFor(t, "follows the new index", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-2,cache-3" {
			return fmt.Errorf("cache: %q", got)
		}
		return nil
	})
}

func TestConsulWatchKeepsLastCatalogWhileUnreachable(t *testing.T) {
	f, addr := newFakeConsul(t)
	f.set(10, map[string][]string{"cache": {"cache-1"}})
	cat := watchFake(t, addr, registry.ConsulConfig{WaitTime: 100 * time.Millisecond, MinGap: 10 * time.Millisecond, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	waitFor(t, "first sync", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-1" {
			return fmt.Errorf("cache: %q", got)
		}
		return nil
	})
	f.setDown(true)
	before := f.stateHits.Load()
	time.Sleep(time.Second)
	if got := ids(mustResolve(cat, "cache")); got != "cache-1" {
		t.Fatalf("routes lost while the agent is down: %q", got)
	}
	if age := cat.Age(); age < 700*time.Millisecond {
		t.Errorf("catalog age %s after 1 s without the agent: it must grow", age)
	}
	_ = before
	f.setDown(false)
	f.set(11, map[string][]string{"cache": {"cache-1", "cache-2"}})
	waitFor(t, "back in sync", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-1,cache-2" {
			return fmt.Errorf("cache: %q", got)
		}
		if age := cat.Age(); age > 500*time.Millisecond {
			return fmt.Errorf("age %s", age)
		}
		return nil
	})
}

func mustResolve(cat *registry.Catalog, name string) []registry.Instance {
	ins, _ := cat.Resolve(context.Background(), name)
	return ins
}

// startConsulAgent runs a real dev agent on the given HTTP port (0: a free one) and
// returns its address and a stop function that kills it.
func startConsulAgent(t *testing.T, httpPort int) (string, func()) {
	t.Helper()
	bin := os.Getenv("REELWAY_CONSUL_BIN")
	if bin == "" {
		t.Skip("REELWAY_CONSUL_BIN is not set: run the suite with `just test`, which builds Consul")
	}
	if httpPort == 0 {
		httpPort = freePort(t)
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "consul.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-http-port="+strconv.Itoa(httpPort), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-server-port="+strconv.Itoa(freePort(t)), "-serf-lan-port="+strconv.Itoa(freePort(t)),
		"-serf-wan-port="+strconv.Itoa(freePort(t)), "-log-level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			logf.Close()
		})
	}
	t.Cleanup(stop)
	addr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	cfg := api.DefaultConfig()
	cfg.Address = addr
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, err := client.Status().Leader()
		if err == nil && leader != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul did not elect a leader: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return addr, stop
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestConsulKeepsRegistrationAcrossAgentRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Consul agent twice")
	}
	port := freePort(t)
	addr, stop := startConsulAgent(t, port)
	health := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer health.Close()

	reg, err := registry.NewConsulWith(addr, quietLog(), registry.ConsulConfig{RetryMin: 100 * time.Millisecond, RetryMax: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cat := registry.NewCatalog(reg, quietLog())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = cat.Run(ctx) }()
	inst := registry.Instance{ID: "cache-1", Name: "cache", Address: "127.0.0.1", Port: 1}
	if err := reg.Register(ctx, registry.Registration{Instance: inst, HealthURL: health.URL, CheckInterval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "passing", func() error {
		if got := ids(mustResolve(cat, "cache")); got != "cache-1" {
			return fmt.Errorf("cache: %q", got)
		}
		return nil
	})

	// The agent dies: the catalog keeps routing with what it knew, and ages.
	stop()
	time.Sleep(time.Second)
	if got := ids(mustResolve(cat, "cache")); got != "cache-1" {
		t.Fatalf("routes lost while the agent is down: %q", got)
	}
	if cat.Age() < 500*time.Millisecond {
		t.Errorf("catalog age %s while the agent is down", cat.Age())
	}

	// A new dev agent on the same port starts empty; the instance registers itself again.
	_, _ = startConsulAgent(t, port)
	client, _ := api.NewClient(&api.Config{Address: addr})
	waitFor(t, "re-registered and passing in the new agent", func() error {
		entries, _, err := client.Health().Service("cache", "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != 1 {
			return fmt.Errorf("%d passing entries", len(entries))
		}
		return nil
	})
	if got := ids(mustResolve(cat, "cache")); got != "cache-1" {
		t.Fatalf("after the restart: cache %q", got)
	}

	// Deregistration stops the keeper: the instance stays gone.
	if err := reg.Deregister(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	entries, _, err := client.Catalog().Service("cache", "", nil)
	if err != nil || len(entries) != 0 {
		t.Fatalf("after deregistration: %d entries, %v", len(entries), err)
	}
}
