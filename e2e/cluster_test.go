package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	gatewayv1 "github.com/reelway/reelway/gen/reelway/gateway/v1"
	"github.com/reelway/reelway/gen/reelway/gateway/v1/gatewayv1connect"
	"github.com/reelway/reelway/svc/kernel"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// reelwayBinary builds the reelway binary once per test run.
func reelwayBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "reelway-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "reelway")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// process is a child process whose output is kept in a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProcess(t *testing.T, dir, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(t, err, "open log")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	must(t, cmd.Start(), "start %s", name)
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				lines := strings.Split(string(b), "\n")
				t.Logf("%s log (last 30 lines):\n%s", name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
		}
	})
	return p
}

func (p *process) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

func (p *process) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.name, timeout)
		return nil
	}
}

// startConsul runs a real Consul agent in dev mode on free ports.
func startConsul(t *testing.T, dir string) (*api.Client, string) {
	t.Helper()
	bin := os.Getenv("REELWAY_CONSUL_BIN")
	if bin == "" {
		t.Skip("REELWAY_CONSUL_BIN is not set: run the suite with `just test`, which builds Consul")
	}
	httpPort := freePort(t)
	startProcess(t, dir, "consul", nil, bin, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-http-port="+itoa(httpPort), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-server-port="+itoa(freePort(t)), "-serf-lan-port="+itoa(freePort(t)), "-serf-wan-port="+itoa(freePort(t)),
		"-log-level=warn")
	cfg := api.DefaultConfig()
	cfg.Address = fmt.Sprintf("127.0.0.1:%d", httpPort)
	client, err := api.NewClient(cfg)
	must(t, err, "consul client")
	waitFor(t, 30*time.Second, "consul leader", func() error {
		leader, err := client.Status().Leader()
		if err != nil {
			return err
		}
		if leader == "" {
			return errors.New("no leader")
		}
		return nil
	})
	return client, cfg.Address
}

type cluster struct {
	t       *testing.T
	dir     string
	bin     string
	env     []string
	consul  *api.Client
	ports   map[string]int
	procs   map[string]*process
	gateway string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	consul, consulAddr := startConsul(t, dir)
	bin := reelwayBinary(t)
	natsPort := freePort(t)
	nats := startProcess(t, dir, "nats", []string{"REELWAY_DATA_DIR=" + filepath.Join(dir, "nats")}, bin, "nats", "-nats-port", itoa(natsPort))
	_ = nats
	c := &cluster{
		t: t, dir: dir, bin: bin, consul: consul,
		ports: map[string]int{}, procs: map[string]*process{},
		env: []string{
			"REELWAY_CONSUL_ADDR=" + consulAddr,
			fmt.Sprintf("REELWAY_NATS_URL=nats://127.0.0.1:%d", natsPort),
			"REELWAY_DATA_DIR=" + filepath.Join(dir, "data"),
			"REELWAY_VERSION=e2e",
			"REELWAY_SHUTDOWN_TIMEOUT=5s",
		},
	}
	for _, s := range kernel.Services() {
		c.ports[s] = freePort(t)
		c.start(s)
	}
	c.gateway = fmt.Sprintf("http://127.0.0.1:%d", c.ports["gateway"])
	waitFor(t, 60*time.Second, "nine passing services in Consul", func() error {
		for _, s := range kernel.Services() {
			entries, _, err := consul.Health().Service(s, "", true, nil)
			if err != nil {
				return err
			}
			if len(entries) != 1 {
				return fmt.Errorf("%s: %d passing entries", s, len(entries))
			}
		}
		return nil
	})
	return c
}

func (c *cluster) start(service string) {
	c.procs[service] = startProcess(c.t, c.dir, service, append(c.env, "REELWAY_PORT="+itoa(c.ports[service])), c.bin, "serve", service)
}

func (c *cluster) routes() (map[string][]string, error) {
	gw := gatewayv1connect.NewGatewayServiceClient(http.DefaultClient, c.gateway)
	res, err := gw.ListRoutes(context.Background(), &gatewayv1.ListRoutesRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, r := range res.GetRoutes() {
		out[r.GetProtoService()] = r.GetEndpoints()
	}
	return out, nil
}

func TestClusterOfSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul, NATS and nine processes")
	}
	c := startCluster(t)

	t.Run("catalog entries", func(t *testing.T) {
		for _, s := range kernel.Services() {
			entries, _, err := c.consul.Health().Service(s, "", true, nil)
			must(t, err, "health %s", s)
			if len(entries) != 1 {
				t.Fatalf("%s: %d passing entries", s, len(entries))
			}
			e := entries[0]
			if want := fmt.Sprintf("%s-%d", s, c.ports[s]); e.Service.ID != want {
				t.Errorf("%s: id %q, want %q", s, e.Service.ID, want)
			}
			if !slices.Equal(e.Service.Tags, []string{"v1", "microservice"}) {
				t.Errorf("%s: tags %v", s, e.Service.Tags)
			}
			if e.Service.Meta["version"] != "e2e" || !strings.Contains(e.Service.Meta["proto_services"], "reelway.") {
				t.Errorf("%s: meta %v", s, e.Service.Meta)
			}
			if e.Checks.AggregatedStatus() != api.HealthPassing {
				t.Errorf("%s: check %s", s, e.Checks.AggregatedStatus())
			}
		}
	})

	t.Run("every service reports its NATS connection in metrics", func(t *testing.T) {
		for _, svc := range []string{"metadata", "upload", "worker", "gateway"} {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", c.ports[svc]))
			must(t, err, "GET /metrics of %s", svc)
			body := readAll(t, resp)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "reelway_nats_connected 1") {
				t.Errorf("%s /metrics: %d, no reelway_nats_connected 1:\n%.500s", svc, resp.StatusCode, body)
			}
		}
	})

	t.Run("gateway routes every service", func(t *testing.T) {
		waitFor(t, 10*time.Second, "routes", func() error {
			r, err := c.routes()
			if err != nil {
				return err
			}
			for _, ps := range []string{"reelway.cache.v1.CacheService", "reelway.metadata.v1.MetadataService", "reelway.auth.v1.AuthService"} {
				if len(r[ps]) != 1 {
					return fmt.Errorf("%s: %v", ps, r[ps])
				}
			}
			return nil
		})
		code, out := connectJSON(t, c.gateway, "/reelway.cache.v1.CacheService/Set", map[string]any{"key": "k", "value": "dg=="})
		if code != http.StatusOK {
			t.Fatalf("cache Set through gateway: %d %v", code, out)
		}
	})

	t.Run("upload to playback across processes", func(t *testing.T) {
		p := &devPlatform{gateway: c.gateway}
		code, out := p.upload(t, "cluster", fiveSecondClip(t))
		if code != http.StatusCreated {
			t.Fatalf("upload: %d %v", code, out)
		}
		id, _ := out["videoId"].(string)
		p.waitStatus(t, id, "VIDEO_STATUS_READY")
		resp, body := p.get(t, "/v1/hls/"+id+"/master.m3u8")
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "#EXT-X-STREAM-INF") {
			t.Fatalf("master: %d\n%s", resp.StatusCode, body)
		}
	})

	t.Run("killed service leaves the routes", func(t *testing.T) {
		c.procs["cache"].signal(syscall.SIGKILL)
		start := time.Now()
		waitFor(t, 15*time.Second, "cache gone from routes", func() error {
			r, err := c.routes()
			if err != nil {
				return err
			}
			if len(r["reelway.cache.v1.CacheService"]) != 0 {
				return errors.New("still routed")
			}
			return nil
		})
		t.Logf("cache left the routes %s after kill -9", time.Since(start).Round(time.Millisecond))
		code, out := connectJSON(t, c.gateway, "/reelway.cache.v1.CacheService/Get", map[string]any{"key": "k"})
		if code != http.StatusServiceUnavailable || out["code"] != "unavailable" {
			t.Fatalf("call to a dead service: %d %v", code, out)
		}
	})

	t.Run("SIGTERM deregisters before exit", func(t *testing.T) {
		p := c.procs["auth"]
		p.signal(syscall.SIGTERM)
		if err := p.wait(t, 20*time.Second); err != nil {
			t.Fatalf("auth exited with %v after SIGTERM, want 0", err)
		}
		entries, _, err := c.consul.Catalog().Service("auth", "", nil)
		must(t, err, "catalog")
		if len(entries) != 0 {
			t.Fatalf("auth still in the catalog after a clean exit: %v", entries[0].ServiceID)
		}
		// The log shows deregistration before the process stopped.
		b, _ := os.ReadFile(p.log)
		dereg := strings.Index(string(b), "msg=deregistered")
		stopped := strings.Index(string(b), "msg=stopped")
		if dereg < 0 || stopped < 0 || dereg > stopped {
			t.Errorf("want deregistered before stopped in the log (at %d, %d)", dereg, stopped)
		}
	})

	t.Run("restarts leave one entry per live instance", func(t *testing.T) {
		onePassing := func() error {
			all, _, err := c.consul.Catalog().Service("metadata", "", nil)
			if err != nil {
				return err
			}
			passing, _, err := c.consul.Health().Service("metadata", "", true, nil)
			if err != nil {
				return err
			}
			if len(all) != 1 || len(passing) != 1 {
				return fmt.Errorf("%d entries, %d passing", len(all), len(passing))
			}
			return nil
		}
		for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL, syscall.SIGKILL, syscall.SIGTERM} {
			old := c.procs["metadata"]
			old.signal(sig)
			err := old.wait(t, 20*time.Second)
			if sig == syscall.SIGTERM && err != nil {
				t.Fatalf("round %d: SIGTERM exit %v", i, err)
			}
			if sig == syscall.SIGKILL {
				// The dead instance's entry stays, critical, until its replacement registers.
				waitFor(t, 15*time.Second, "killed metadata critical", func() error {
					passing, _, err := c.consul.Health().Service("metadata", "", true, nil)
					if err != nil {
						return err
					}
					if len(passing) != 0 {
						return errors.New("still passing")
					}
					return nil
				})
			}
			c.start("metadata")
			waitFor(t, 20*time.Second, fmt.Sprintf("round %d: one passing metadata entry", i), onePassing)
			select {
			case <-c.procs["metadata"].done:
				t.Fatalf("round %d: the restarted metadata exited", i)
			default:
			}
		}
		// The gateway follows the catalog and routes to the restarted instance.
		waitFor(t, 5*time.Second, "gateway routes to the restarted metadata", func() error {
			code, out := connectJSON(t, c.gateway, "/reelway.metadata.v1.MetadataService/ListVideos", map[string]any{})
			if code != http.StatusOK {
				return fmt.Errorf("%d %v", code, out)
			}
			return nil
		})
	})
}
