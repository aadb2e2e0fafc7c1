package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/consul/api"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
)

// gwWatchProcedure is the test backend's server-streaming procedure: key "<count>:<ms>".
const gwWatchProcedure = "/reelway.cache.v1.CacheService/Watch"

var (
	gwBackendOnce sync.Once
	gwBackendPath string
	gwBackendErr  error
)

// gwTestBackendBinary builds the gateway's test backend program once per test run.
func gwTestBackendBinary(t *testing.T) string {
	t.Helper()
	gwBackendOnce.Do(func() {
		dir, err := os.MkdirTemp("", "reelway-testbackend-")
		if err != nil {
			gwBackendErr = err
			return
		}
		gwBackendPath = filepath.Join(dir, "testbackend")
		cmd := exec.Command("go", "build", "-o", gwBackendPath, "./gateway/internal/testbackend/cmd/testbackend")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			gwBackendErr = fmt.Errorf("go build testbackend: %v\n%s", err, out)
		}
	})
	if gwBackendErr != nil {
		t.Fatal(gwBackendErr)
	}
	return gwBackendPath
}

// gwCluster is a real Consul agent (restartable on the same ports), NATS, the reelway
// gateway process and three test backend processes serving CacheService.
type gwCluster struct {
	t          *testing.T
	dir        string
	consulBin  string
	consulArgs []string
	consulAddr string
	consul     *process
	consulRuns int
	client     *api.Client
	tb         string
	gateway    string
	backends   []*gwBackend
}

type gwBackend struct {
	port int
	proc *process
	runs int
}

func startGatewayCluster(t *testing.T) *gwCluster {
	t.Helper()
	bin := os.Getenv("REELWAY_CONSUL_BIN")
	if bin == "" {
		t.Skip("REELWAY_CONSUL_BIN is not set: run the suite with `just test`, which builds Consul")
	}
	c := &gwCluster{t: t, dir: t.TempDir(), consulBin: bin}
	httpPort := freePort(t)
	c.consulArgs = []string{"agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-http-port=" + itoa(httpPort), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-server-port=" + itoa(freePort(t)), "-serf-lan-port=" + itoa(freePort(t)), "-serf-wan-port=" + itoa(freePort(t)),
		"-log-level=warn"}
	c.consulAddr = fmt.Sprintf("127.0.0.1:%d", httpPort)
	cfg := api.DefaultConfig()
	cfg.Address = c.consulAddr
	client, err := api.NewClient(cfg)
	must(t, err, "consul client")
	c.client = client
	c.startConsul()

	reelway := reelwayBinary(t)
	c.tb = gwTestBackendBinary(t)
	natsPort := freePort(t)
	startProcess(t, c.dir, "nats", []string{"REELWAY_DATA_DIR=" + filepath.Join(c.dir, "nats")}, reelway, "nats", "-nats-port", itoa(natsPort))
	gwPort := freePort(t)
	startProcess(t, c.dir, "gateway", []string{
		"REELWAY_CONSUL_ADDR=" + c.consulAddr,
		fmt.Sprintf("REELWAY_NATS_URL=nats://127.0.0.1:%d", natsPort),
		"REELWAY_DATA_DIR=" + filepath.Join(c.dir, "data"),
		"REELWAY_PORT=" + itoa(gwPort),
		"REELWAY_GATEWAY_TIMEOUT=2s",
		"REELWAY_LOG_LEVEL=warn",
	}, reelway, "serve", "gateway")
	c.gateway = fmt.Sprintf("http://127.0.0.1:%d", gwPort)
	for range 3 {
		b := &gwBackend{port: freePort(t)}
		c.backends = append(c.backends, b)
		c.startBackend(b)
	}
	c.waitRouted(3, 60*time.Second)
	return c
}

func (c *gwCluster) startConsul() {
	c.t.Helper()
	c.consulRuns++
	c.consul = startProcess(c.t, c.dir, fmt.Sprintf("consul-%d", c.consulRuns), nil, c.consulBin, c.consulArgs...)
	waitFor(c.t, 30*time.Second, "consul leader", func() error {
		leader, err := c.client.Status().Leader()
		if err != nil {
			return err
		}
		if leader == "" {
			return errors.New("no leader")
		}
		return nil
	})
}

func (c *gwCluster) startBackend(b *gwBackend) {
	c.t.Helper()
	b.runs++
	b.proc = startProcess(c.t, c.dir, fmt.Sprintf("cache-%d-%d", b.port, b.runs), nil, c.tb,
		"-consul", c.consulAddr, "-port", itoa(b.port))
}

func (b *gwBackend) url() string { return fmt.Sprintf("http://127.0.0.1:%d", b.port) }
func (b *gwBackend) id() string  { return fmt.Sprintf("cache-%d", b.port) }

// waitRouted waits until the gateway routes CacheService to n instances.
func (c *gwCluster) waitRouted(n int, timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, fmt.Sprintf("gateway routes CacheService to %d instances", n), func() error {
		r, err := (&cluster{gateway: c.gateway}).routes()
		if err != nil {
			return err
		}
		if got := len(r[cachev1connect.CacheServiceName]); got != n {
			return fmt.Errorf("%d routed", got)
		}
		return nil
	})
}

func (c *gwCluster) fault(b *gwBackend, mode string, delay time.Duration) {
	c.t.Helper()
	resp, err := http.Post(fmt.Sprintf("%s/fault?mode=%s&delay=%s", b.url(), mode, delay), "", nil)
	must(c.t, err, "set fault")
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("set fault: %d", resp.StatusCode)
	}
}

type gwStats struct {
	Calls          int64 `json:"calls"`
	SideEffects    int64 `json:"sideEffects"`
	Cancelled      int64 `json:"cancelled"`
	LastDeadlineMs int64 `json:"lastDeadlineMs"`
}

func (c *gwCluster) stats(b *gwBackend) gwStats {
	c.t.Helper()
	resp, err := http.Get(b.url() + "/stats")
	must(c.t, err, "stats")
	defer resp.Body.Close()
	var s gwStats
	must(c.t, json.NewDecoder(resp.Body).Decode(&s), "decode stats")
	return s
}

func (c *gwCluster) allStats() []gwStats {
	var out []gwStats
	for _, b := range c.backends {
		out = append(out, c.stats(b))
	}
	return out
}

// metric returns the value of the gateway's exposition line starting with prefix.
func (c *gwCluster) metric(prefix string) string {
	c.t.Helper()
	resp, err := http.Get(c.gateway + "/metrics")
	must(c.t, err, "metrics")
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, prefix+" ") {
			return strings.TrimPrefix(line, prefix+" ")
		}
	}
	return ""
}

func (c *gwCluster) breakerState(b *gwBackend) string {
	return c.metric(`reelway_gateway_breaker_state{instance="` + b.id() + `"}`)
}

type gwProtocol struct {
	name   string
	client *http.Client
	opts   []connect.ClientOption
}

func gwProtocols() []gwProtocol {
	return []gwProtocol{
		{"connect", http.DefaultClient, []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", h2cClient(), []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", http.DefaultClient, []connect.ClientOption{connect.WithGRPCWeb()}},
	}
}

// gwLoad calls CacheService.Get through the gateway from several workers until stopped,
// and records every failure with its time.
type gwLoad struct {
	ok       atomic.Int64
	mu       sync.Mutex
	failures []gwFailure
	stop     chan struct{}
	wg       sync.WaitGroup
}

type gwFailure struct {
	at  time.Time
	err error
}

func startLoad(base string, workers int) *gwLoad {
	l := &gwLoad{stop: make(chan struct{})}
	protos := gwProtocols()
	for w := range workers {
		p := protos[w%len(protos)]
		client := cachev1connect.NewCacheServiceClient(p.client, base, p.opts...)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := client.Get(ctx, &cachev1.GetRequest{Key: "k"})
				cancel()
				if err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, gwFailure{time.Now(), fmt.Errorf("%s: %w", p.name, err)})
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return l
}

// end stops the load and returns the failures.
func (l *gwLoad) end() []gwFailure {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failures
}

func (l *gwLoad) failuresSince(t time.Time) []gwFailure {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []gwFailure
	for _, f := range l.failures {
		if f.at.After(t) {
			out = append(out, f)
		}
	}
	return out
}

func TestGatewayAgainstSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul, NATS, the gateway and three backend processes")
	}
	c := startGatewayCluster(t)

	t.Run("deadline forwarding", func(t *testing.T) {
		for _, p := range gwProtocols() {
			client := cachev1connect.NewCacheServiceClient(p.client, c.gateway, p.opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			before := c.allStats()
			_, err := client.Get(ctx, &cachev1.GetRequest{Key: "k"})
			cancel()
			must(t, err, "%s Get", p.name)
			after := c.allStats()
			for i := range after {
				if after[i].Calls == before[i].Calls {
					continue
				}
				// The caller's 1.5 s arrives minus what was spent on the way.
				if ms := after[i].LastDeadlineMs; ms > 1500 || ms < 900 {
					t.Errorf("%s: backend saw %d ms left of a 1500 ms deadline", p.name, ms)
				}
			}
			// No caller deadline: unary calls get the gateway's 2 s default.
			_, err = client.Get(context.Background(), &cachev1.GetRequest{Key: "k"})
			must(t, err, "%s Get", p.name)
			for i, s := range c.allStats() {
				if s.Calls > after[i].Calls && (s.LastDeadlineMs > 2000 || s.LastDeadlineMs < 1400) {
					t.Errorf("%s: backend saw %d ms left of the 2 s default", p.name, s.LastDeadlineMs)
				}
			}
		}
	})

	t.Run("error details and incremental streams", func(t *testing.T) {
		for _, p := range gwProtocols() {
			client := cachev1connect.NewCacheServiceClient(p.client, c.gateway, p.opts...)
			_, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "missing"})
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound || len(ce.Details()) != 1 {
				t.Fatalf("%s: error with details through the gateway: %v", p.name, err)
			}
			if v, err := ce.Details()[0].Value(); err != nil || v.(*cachev1.GetRequest).GetKey() != "missing" {
				t.Fatalf("%s: detail %v %v", p.name, v, err)
			}
			// Six messages 500 ms apart: longer than the 2 s unary default, which must not
			// cut a stream, and each message must arrive when it is sent.
			watch := connect.NewClient[cachev1.GetRequest, cachev1.GetResponse](p.client, c.gateway+gwWatchProcedure, p.opts...)
			start := time.Now()
			stream, err := watch.CallServerStream(context.Background(), connect.NewRequest(&cachev1.GetRequest{Key: "6:500"}))
			must(t, err, "%s watch", p.name)
			var arrivals []time.Duration
			for stream.Receive() {
				arrivals = append(arrivals, time.Since(start))
			}
			if err := stream.Err(); err != nil || len(arrivals) != 6 {
				t.Fatalf("%s: stream got %d messages: %v", p.name, len(arrivals), err)
			}
			if arrivals[0] > 1500*time.Millisecond || arrivals[5]-arrivals[0] < 2*time.Second {
				t.Fatalf("%s: messages arrived at %v: not one by one", p.name, arrivals)
			}
		}
	})

	t.Run("invalid requests never open a breaker", func(t *testing.T) {
		client := cachev1connect.NewCacheServiceClient(h2cClient(), c.gateway, connect.WithGRPC())
		for i := range 100 {
			_, err := client.Get(context.Background(), &cachev1.GetRequest{Key: ""})
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("invalid request %d: want invalid_argument, got %v", i, err)
			}
		}
		_, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "k"})
		must(t, err, "valid request after 100 invalid ones")
		for _, b := range c.backends {
			if s := c.breakerState(b); s != "0" {
				t.Fatalf("breaker of %s is %q after caller errors, want 0 (closed)", b.id(), s)
			}
		}
	})

	t.Run("failing instance ejected, bounded probes, let back", func(t *testing.T) {
		bad := c.backends[0]
		c.fault(bad, "internal", 0)
		load := startLoad(c.gateway, 6)
		waitFor(t, 20*time.Second, "bad instance ejected", func() error {
			if s := c.breakerState(bad); s != "2" {
				return fmt.Errorf("breaker state %q", s)
			}
			return nil
		})
		// While it is ejected the others carry the traffic: Get is NO_SIDE_EFFECTS, so
		// even the calls that hit it before it was ejected were retried elsewhere.
		mark := time.Now()
		time.Sleep(time.Second)
		if s := c.breakerState(bad); s == "2" {
			if fails := load.failuresSince(mark); len(fails) > 0 {
				t.Fatalf("%d failures while the bad instance was ejected: %v", len(fails), fails[0].err)
			}
		}
		if fails := load.end(); len(fails) > 0 {
			t.Fatalf("%d failed idempotent calls around the ejection: %v", len(fails), fails[0].err)
		}

		// It comes back, slowly (2 s per call). Past the open delay, 200 concurrent calls
		// arrive: the recovering instance sees at most the 2 half-open probes.
		c.fault(bad, "ok", 2*time.Second)
		time.Sleep(6500 * time.Millisecond) // 5 s open delay + 20 % jitter
		before := c.stats(bad).Calls
		client := cachev1connect.NewCacheServiceClient(h2cClient(), c.gateway, connect.WithGRPC())
		var wg sync.WaitGroup
		var failed atomic.Int64
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := client.Get(ctx, &cachev1.GetRequest{Key: "k"}); err != nil {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
		if probes := c.stats(bad).Calls - before; probes > 2 {
			t.Fatalf("the recovering instance saw %d calls, want at most 2 probes", probes)
		}
		if n := failed.Load(); n > 0 {
			t.Fatalf("%d of 200 calls failed while the healthy instances could serve them", n)
		}

		// Recovered for real: the breaker lets it back into rotation.
		c.fault(bad, "ok", 0)
		waitFor(t, 20*time.Second, "recovered instance takes traffic again", func() error {
			before := c.stats(bad).Calls
			for range 30 {
				if _, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
					return err
				}
			}
			if n := c.stats(bad).Calls - before; n < 3 {
				return fmt.Errorf("%d of 30 calls reached it (breaker %s)", n, c.breakerState(bad))
			}
			return nil
		})
	})

	t.Run("non-idempotent call to a slow backend runs once", func(t *testing.T) {
		for _, b := range c.backends {
			c.fault(b, "ok", 3*time.Second)
		}
		effects := func() (n int64) {
			for _, s := range c.allStats() {
				n += s.SideEffects
			}
			return n
		}
		before := effects()
		md := metadatav1connect.NewMetadataServiceClient(http.DefaultClient, c.gateway, connect.WithProtoJSON())
		start := time.Now()
		_, err := md.CreateVideo(context.Background(), &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: "v1", Title: "t"}})
		if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			t.Fatalf("want deadline_exceeded from the 2 s gateway timeout, got %v", err)
		}
		if d := time.Since(start); d < 1500*time.Millisecond || d > 3500*time.Millisecond {
			t.Errorf("the 2 s gateway timeout answered after %s", d)
		}
		time.Sleep(time.Second) // a retry, if any, would have arrived by now
		if n := effects() - before; n != 1 {
			t.Fatalf("%d side effects, want exactly 1", n)
		}
		for _, b := range c.backends {
			c.fault(b, "ok", 0)
		}
	})

	t.Run("kill -9 under load", func(t *testing.T) {
		load := startLoad(c.gateway, 6)
		time.Sleep(500 * time.Millisecond)
		victim := c.backends[2]
		killed := time.Now()
		victim.proc.signal(syscall.SIGKILL)
		time.Sleep(3 * time.Second)
		settled := time.Now()
		time.Sleep(2 * time.Second)
		fails := load.end()
		// Only calls in flight on the killed instance may fail (at most one per worker);
		// idempotent ones are retried, so usually none does.
		for _, f := range fails {
			if f.at.Before(killed) || f.at.After(killed.Add(2*time.Second)) {
				t.Errorf("failure at %s (kill at %s): %v", f.at.Format(time.StampMilli), killed.Format(time.StampMilli), f.err)
			}
		}
		if len(fails) > 6 {
			t.Fatalf("%d failures after kill -9 with 6 workers", len(fails))
		}
		if late := load.failuresSince(settled); len(late) > 0 {
			t.Fatalf("failures after the kill settled: %v", late[0].err)
		}
		if load.ok.Load() == 0 {
			t.Fatal("no successful calls")
		}
		c.startBackend(victim)
		c.waitRouted(3, 30*time.Second)
	})

	t.Run("rolling restart under load", func(t *testing.T) {
		load := startLoad(c.gateway, 6)
		for _, b := range c.backends {
			b.proc.signal(syscall.SIGTERM)
			if err := b.proc.wait(t, 20*time.Second); err != nil {
				t.Fatalf("%s exited with %v after SIGTERM", b.id(), err)
			}
			c.startBackend(b)
			c.waitRouted(3, 30*time.Second)
		}
		time.Sleep(500 * time.Millisecond)
		if fails := load.end(); len(fails) > 0 {
			t.Fatalf("%d failed idempotent calls during a rolling restart, first: %v", len(fails), fails[0].err)
		}
		if load.ok.Load() == 0 {
			t.Fatal("no successful calls")
		}
	})

	t.Run("consul stopped for 30 s", func(t *testing.T) {
		load := startLoad(c.gateway, 4)
		time.Sleep(500 * time.Millisecond)
		c.consul.signal(syscall.SIGKILL)
		_ = c.consul.wait(t, 10*time.Second)
		time.Sleep(30 * time.Second)
		if fails := load.failuresSince(time.Time{}); len(fails) > 0 {
			t.Fatalf("%d failed calls while Consul was down, first: %v", len(fails), fails[0].err)
		}
		// /healthz reports how old the catalog is.
		resp, err := http.Get(c.gateway + "/healthz")
		must(t, err, "healthz")
		var health struct {
			Detail struct {
				CatalogAgeSeconds float64 `json:"catalogAgeSeconds"`
			} `json:"detail"`
		}
		must(t, json.NewDecoder(resp.Body).Decode(&health), "decode healthz")
		resp.Body.Close()
		if health.Detail.CatalogAgeSeconds < 25 {
			t.Errorf("catalog age %.1f s after 30 s without Consul", health.Detail.CatalogAgeSeconds)
		}
		// A fresh dev agent knows nothing: every process registers itself again.
		c.startConsul()
		waitFor(t, 30*time.Second, "backends registered again and passing", func() error {
			entries, _, err := c.client.Health().Service("cache", "", true, nil)
			if err != nil {
				return err
			}
			if len(entries) != 3 {
				return fmt.Errorf("%d passing", len(entries))
			}
			return nil
		})
		waitFor(t, 30*time.Second, "gateway registered again", func() error {
			entries, _, err := c.client.Health().Service("gateway", "", true, nil)
			if err != nil {
				return err
			}
			if len(entries) != 1 {
				return fmt.Errorf("%d passing", len(entries))
			}
			return nil
		})
		time.Sleep(time.Second)
		if fails := load.end(); len(fails) > 0 {
			t.Fatalf("%d failed calls around the Consul restart, first: %v", len(fails), fails[0].err)
		}
		waitFor(t, 20*time.Second, "catalog in sync again", func() error {
			age, err := strconv.ParseFloat(c.metric("reelway_gateway_catalog_age_seconds"), 64)
			if err != nil || age > 12 {
				return fmt.Errorf("catalog age %v %v", age, err)
			}
			return nil
		})
	})
}
