// Command bench measures the gateway on loopback (`just bench`): unary Connect JSON,
// Connect proto and gRPC calls against the same backend directly, through the Reelway
// gateway and through Caddy's reverse_proxy (h2c), then the real MetadataService/GetVideo
// direct and through the gateway, the latency the gateway adds at low concurrency, and
// discovery convergence (deregistration to last request received). Every process is real:
// a Consul dev agent, NATS, `reelway serve gateway|metadata`, the gateway's test backend,
// and caddy. It prints a markdown report for BENCHMARKS.md.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	gatewayv1 "github.com/reelway/reelway/gen/reelway/gateway/v1"
	"github.com/reelway/reelway/gen/reelway/gateway/v1/gatewayv1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	reelway, testbackend, consul, caddy string
	conc                                int
	warm, dur                           time.Duration
	rounds, discoveryRounds             int
	only                                string
	profile, gwprof                     string
}

func run() error {
	var cfg config
	flag.StringVar(&cfg.reelway, "reelway", "bin/reelway", "reelway binary")
	flag.StringVar(&cfg.testbackend, "testbackend", "bin/testbackend", "gateway test backend binary")
	flag.StringVar(&cfg.consul, "consul", os.Getenv("REELWAY_CONSUL_BIN"), "consul binary")
	flag.StringVar(&cfg.caddy, "caddy", "caddy", "caddy binary")
	flag.IntVar(&cfg.conc, "c", 64, "concurrency of the throughput runs")
	flag.DurationVar(&cfg.warm, "warm", 2*time.Second, "warm-up before each measurement")
	flag.DurationVar(&cfg.dur, "d", 10*time.Second, "measurement time of each run")
	flag.IntVar(&cfg.rounds, "rounds", 3, "runs of each target, alternating; the median is reported")
	flag.IntVar(&cfg.discoveryRounds, "discovery-rounds", 20, "discovery convergence rounds")
	flag.StringVar(&cfg.only, "only", "", "run one part: proxy, latency, getvideo, discovery")
	flag.StringVar(&cfg.profile, "profile", "", "write a CPU profile of the gateway during its gRPC run here (needs -gwprof)")
	flag.StringVar(&cfg.gwprof, "gwprof", "", "gateway binary with pprof (go build ./bench/gwprof), used instead of reelway serve gateway")
	flag.Parse()
	if cfg.consul == "" {
		return errors.New("no consul binary: set -consul or REELWAY_CONSUL_BIN")
	}
	dir, err := os.MkdirTemp("", "reelway-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	h := &harness{dir: dir}
	defer h.stopAll()

	consulAddr, err := h.startConsul(cfg.consul)
	if err != nil {
		return err
	}
	natsPort := freePort()
	h.start("nats", cfg.reelway, []string{"REELWAY_DATA_DIR=" + filepath.Join(dir, "nats")}, "nats", "-nats-port", strconv.Itoa(natsPort))
	env := []string{
		"REELWAY_CONSUL_ADDR=" + consulAddr,
		fmt.Sprintf("REELWAY_NATS_URL=nats://127.0.0.1:%d", natsPort),
		"REELWAY_DATA_DIR=" + filepath.Join(dir, "data"),
		// No access log, like Caddy's default: both proxies are measured doing the same work.
		"REELWAY_LOG_LEVEL=warn",
	}
	backendPort := freePort()
	h.start("backend", cfg.testbackend, nil, "-consul", consulAddr, "-port", strconv.Itoa(backendPort), "-metadata=false")
	gwPort := freePort()
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	var gwCmd *exec.Cmd
	if cfg.gwprof != "" {
		gwCmd = h.start("gateway", cfg.gwprof, append(env, "REELWAY_PORT="+strconv.Itoa(gwPort), "REELWAY_PPROF_ADDR="+pprofAddr))
	} else {
		gwCmd = h.start("gateway", cfg.reelway, append(env, "REELWAY_PORT="+strconv.Itoa(gwPort)), "serve", "gateway")
	}
	direct := fmt.Sprintf("http://127.0.0.1:%d", backendPort)
	gateway := fmt.Sprintf("http://127.0.0.1:%d", gwPort)
	if err := waitRoutes(gateway, "reelway.cache.v1.CacheService", 1); err != nil {
		return err
	}

	var report strings.Builder
	var verdicts []string
	verdict := func(ok bool, what string, args ...any) {
		v := "met"
		if !ok {
			v = "**missed**"
		}
		verdicts = append(verdicts, fmt.Sprintf("- %s: %s", fmt.Sprintf(what, args...), v))
	}
	fmt.Fprintf(&report, "## Gateway: against direct calls and Caddy\n\nRun %s on %s, %d cores (GOMAXPROCS %d), %s, %s; `go run ./bench -c %d -d %s -warm %s` via `just bench-gateway`. "+
		"One run of the program; within it every target is measured %d times, alternating, and the median run is shown. Every process shares the loopback and the two cores (load generator, proxy, backend, Consul, and whatever else the machine runs), so absolute rates move between runs: compare rows within a table. "+
		"The backend is the gateway's test backend (`gateway/internal/testbackend`, a real Connect server with Reelway's interceptors: request id, logging, protovalidate), registered in a Consul dev agent; the gateway is `reelway serve gateway` with `REELWAY_LOG_LEVEL=warn` (no access log, like Caddy's default); Caddy is `reverse_proxy h2c://backend` with `flush_interval -1`. "+
		"The load generator (`bench/`) keeps N calls in flight over one shared HTTP/2 connection (h2c), Connect JSON, Connect proto or gRPC, `CacheService.Get` with a 5-byte key. Proxy CPU per call is the proxy process's user+system time over the measured window divided by the calls.\n\n",
		time.Now().UTC().Format("2006-01-02"), cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), caddyVersion(cfg.caddy), cfg.conc, cfg.dur, cfg.warm, cfg.rounds)

	caddyPort := freePort()
	caddyCmd, err := h.startCaddy(cfg.caddy, caddyPort, backendPort)
	if err != nil {
		return err
	}
	caddy := fmt.Sprintf("http://127.0.0.1:%d", caddyPort)
	if cfg.only == "" || cfg.only == "proxy" {
		pids := map[string]int{"gateway": gwCmd.Process.Pid, "caddy": caddyCmd.Process.Pid}
		fmt.Fprintf(&report, "### Unary calls, small messages, %d concurrent streams over one HTTP/2 connection\n\n", cfg.conc)
		report.WriteString("| protocol | target | calls/s | p50 | p99 | errors | proxy CPU per call | gateway/direct | gateway/Caddy |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, proto := range []string{"connect-json", "connect-proto", "grpc"} {
			targets := []struct{ label, base string }{{"direct", direct}, {"gateway", gateway}, {"caddy", caddy}}
			runs := make([][]result, len(targets))
			for round := range cfg.rounds {
				for i, t := range targets {
					var prof chan error
					if cfg.profile != "" && t.label == "gateway" && proto == "grpc" && round == 0 {
						prof = make(chan error, 1)
						go func() { prof <- fetchProfile(pprofAddr, cfg.warm, cfg.dur, cfg.profile) }()
					}
					var cpu cpuMeter
					if pid, ok := pids[t.label]; ok {
						cpu = startCPU(pid, cfg.warm)
					}
					r := runLoad(t.label, t.base, proto, cacheGet, cfg.conc, cfg.warm, cfg.dur)
					r.CPUPerCall = cpu.perCall(r.N)
					if prof != nil {
						if err := <-prof; err != nil {
							return err
						}
					}
					fmt.Fprintln(os.Stderr, r)
					runs[i] = append(runs[i], r)
				}
			}
			var rs []result
			for i := range targets {
				rs = append(rs, median(runs[i]))
			}
			verdict(rs[1].RPS >= 1.2*rs[2].RPS && rs[1].P99 <= rs[2].P99, "%s: gateway ≥ 1.2× Caddy's throughput (%.2f×) with p99 no worse (%s vs %s)", proto, rs[1].RPS/rs[2].RPS, ms(rs[1].P99), ms(rs[2].P99))
			for i, r := range rs {
				ratios := " | "
				if i == 1 {
					ratios = fmt.Sprintf("%.2f | %.2f (p99 %.2f)", r.RPS/rs[0].RPS, r.RPS/rs[2].RPS, float64(r.P99)/float64(rs[2].P99))
				}
				cpu := ""
				if r.CPUPerCall > 0 {
					cpu = fmt.Sprintf("%.0f µs", float64(r.CPUPerCall)/float64(time.Microsecond))
				}
				fmt.Fprintf(&report, "| %s | %s | %.0f | %s | %s | %d | %s | %s |\n", proto, r.Label, r.RPS, ms(r.P50), ms(r.P99), r.Errors, cpu, ratios)
			}
		}
		report.WriteString("\n")
	}

	if cfg.only == "" || cfg.only == "latency" {
		report.WriteString("### Latency added at low concurrency (Connect proto, CacheService.Get)\n\n| streams | direct p50 | gateway p50 | gateway added p50 | Caddy p50 | Caddy added p50 | direct p99 | gateway p99 | Caddy p99 |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range []int{1, 2, 4} {
			var ds, gs, cs []result
			for range cfg.rounds {
				ds = append(ds, runLoad("direct", direct, "connect-proto", cacheGet, c, cfg.warm/2, cfg.dur/2))
				gs = append(gs, runLoad("gateway", gateway, "connect-proto", cacheGet, c, cfg.warm/2, cfg.dur/2))
				cs = append(cs, runLoad("caddy", caddy, "connect-proto", cacheGet, c, cfg.warm/2, cfg.dur/2))
				fmt.Fprintln(os.Stderr, ds[len(ds)-1])
				fmt.Fprintln(os.Stderr, gs[len(gs)-1])
				fmt.Fprintln(os.Stderr, cs[len(cs)-1])
			}
			d, g, cd := medianP50(ds), medianP50(gs), medianP50(cs)
			fmt.Fprintf(&report, "| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, ms(d.P50), ms(g.P50), ms(g.P50-d.P50), ms(cd.P50), ms(cd.P50-d.P50), ms(d.P99), ms(g.P99), ms(cd.P99))
			verdict(g.P50-d.P50 <= 300*time.Microsecond, "added p50 at %d streams ≤ 0.3 ms (%s)", c, ms(g.P50-d.P50))
		}
		report.WriteString("\n")
	}

	if cfg.only == "" || cfg.only == "getvideo" {
		mdPort := freePort()
		h.start("metadata", cfg.reelway, append(env, "REELWAY_PORT="+strconv.Itoa(mdPort)), "serve", "metadata")
		md := fmt.Sprintf("http://127.0.0.1:%d", mdPort)
		if err := waitRoutes(gateway, "reelway.metadata.v1.MetadataService", 1); err != nil {
			return err
		}
		client := metadatav1connect.NewMetadataServiceClient(newH2C(), md)
		id := "benchvideo1"
		_, err := client.CreateVideo(context.Background(), &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: id, Title: "bench"}})
		if err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
			return fmt.Errorf("create video: %w", err)
		}
		fmt.Fprintf(&report, "### MetadataService/GetVideo (SQLite), %d concurrent streams\n\n| protocol | direct calls/s | gateway calls/s | gateway/direct | direct p50 / p99 | gateway p50 / p99 |\n|---|---:|---:|---:|---:|---:|\n", cfg.conc)
		for _, proto := range []string{"connect-proto", "grpc"} {
			d := runLoad("direct", md, proto, getVideo(id), cfg.conc, cfg.warm, cfg.dur)
			g := runLoad("gateway", gateway, proto, getVideo(id), cfg.conc, cfg.warm, cfg.dur)
			fmt.Fprintln(os.Stderr, d)
			fmt.Fprintln(os.Stderr, g)
			fmt.Fprintf(&report, "| %s | %.0f | %.0f | %.2f | %s / %s | %s / %s |\n", proto, d.RPS, g.RPS, g.RPS/d.RPS, ms(d.P50), ms(d.P99), ms(g.P50), ms(g.P99))
			verdict(g.RPS >= 0.5*d.RPS, "GetVideo over %s: gateway/direct ≥ 0.5 (%.2f)", proto, g.RPS/d.RPS)
		}
		report.WriteString("\n")
	}

	if cfg.only == "" || cfg.only == "discovery" {
		conv, err := discovery(h, cfg, consulAddr, gateway)
		if err != nil {
			return err
		}
		slices.Sort(conv)
		q := func(p int) time.Duration { return conv[min(len(conv)-1, len(conv)*p/100)] }
		fmt.Fprintf(&report, "### Discovery convergence\n\nTime from an instance's deregistration (Consul agent API, the instance keeps serving) to the last request it received through the gateway, under load (8 streams), %d rounds: p50 %s, p99 %s, max %s.\n\n",
			len(conv), ms(q(50)), ms(q(99)), ms(conv[len(conv)-1]))
		verdict(q(99) <= time.Second, "discovery convergence p99 ≤ 1 s (%s)", ms(q(99)))
	}
	fmt.Fprintf(&report, "### Targets\n\n%s\n", strings.Join(verdicts, "\n"))
	fmt.Print(report.String())
	if path := os.Getenv("REELWAY_BENCH_FILE"); path != "" && cfg.only == "" {
		return writeSection(path, report.String())
	}
	return nil
}

// Markers around the gateway's section of BENCHMARKS.md.
const (
	sectionStart = "<!-- bench:gateway:start -->"
	sectionEnd   = "<!-- bench:gateway:end -->"
)

// writeSection replaces the gateway's section of the benchmarks file, or appends it.
func writeSection(path, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	section := sectionStart + "\n" + body + sectionEnd
	text := string(old)
	i, j := strings.Index(text, sectionStart), strings.Index(text, sectionEnd)
	if i >= 0 && j > i {
		text = text[:i] + section + text[j+len(sectionEnd):]
	} else {
		if text != "" && !strings.HasSuffix(text, "\n\n") {
			text = strings.TrimRight(text, "\n") + "\n\n"
		}
		text += section + "\n"
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

// discovery repeatedly takes a second backend instance out of Consul while it keeps
// serving, and measures how long requests still reach it.
func discovery(h *harness, cfg config, consulAddr, gateway string) ([]time.Duration, error) {
	port := freePort()
	h.start("backend-2", cfg.testbackend, nil, "-consul", consulAddr, "-port", strconv.Itoa(port), "-metadata=false")
	b := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitRoutes(gateway, "reelway.cache.v1.CacheService", 2); err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := newH2C()
	for range 8 {
		fn := cacheGet(gateway, "connect-proto", hc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = fn(context.Background())
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	var out []time.Duration
	for range cfg.discoveryRounds {
		// Wait until it takes traffic.
		before := backendStats(b).LastCallUnixNano
		deadline := time.Now().Add(20 * time.Second)
		for backendStats(b).LastCallUnixNano == before {
			if time.Now().After(deadline) {
				return nil, errors.New("instance never took traffic again")
			}
			time.Sleep(50 * time.Millisecond)
		}
		resp, err := http.Post(b+"/deregister", "", nil)
		if err != nil {
			return nil, err
		}
		var dereg struct {
			DeregisteredUnixNano int64 `json:"deregisteredUnixNano"`
		}
		err = json.NewDecoder(resp.Body).Decode(&dereg)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		time.Sleep(2 * time.Second)
		last := backendStats(b).LastCallUnixNano
		out = append(out, max(0, time.Duration(last-dereg.DeregisteredUnixNano)))
		fmt.Fprintf(os.Stderr, "discovery: last request %s after deregistration\n", time.Duration(last-dereg.DeregisteredUnixNano))
		resp, err = http.Post(b+"/register", "", nil)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		if err := waitRoutes(gateway, "reelway.cache.v1.CacheService", 2); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// median returns the run with the median throughput.
func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int { return cmp.Compare(a.RPS, b.RPS) })
	return s[len(s)/2]
}

// medianP50 returns the run with the median p50 latency.
func medianP50(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int { return cmp.Compare(a.P50, b.P50) })
	return s[len(s)/2]
}

// fetchProfile waits out the warm-up, then records the gateway's CPU profile for dur.
func fetchProfile(addr string, warm, dur time.Duration, path string) error {
	time.Sleep(warm)
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(dur.Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

type stats struct {
	LastCallUnixNano int64 `json:"lastCallUnixNano"`
}

func backendStats(base string) stats {
	var s stats
	resp, err := http.Get(base + "/stats")
	if err != nil {
		return s
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&s)
	return s
}

func waitRoutes(gateway, protoService string, n int) error {
	gw := gatewayv1connect.NewGatewayServiceClient(http.DefaultClient, gateway)
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := gw.ListRoutes(context.Background(), &gatewayv1.ListRoutesRequest{})
		if err == nil {
			for _, r := range res.GetRoutes() {
				if r.GetProtoService() == protoService && len(r.GetEndpoints()) == n {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gateway never routed %s to %d instances (%v)", protoService, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// harness runs child processes with their output in log files.
type harness struct {
	dir   string
	mu    sync.Mutex
	procs []*exec.Cmd
}

func (h *harness) start(name, bin string, env []string, args ...string) *exec.Cmd {
	f, _ := os.Create(filepath.Join(h.dir, name+".log"))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: start %s: %v\n", name, err)
		os.Exit(1)
	}
	h.mu.Lock()
	h.procs = append(h.procs, cmd)
	h.mu.Unlock()
	return cmd
}

func (h *harness) stopAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.procs) - 1; i >= 0; i-- {
		_ = h.procs[i].Process.Signal(syscall.SIGTERM)
	}
	for i := len(h.procs) - 1; i >= 0; i-- {
		done := make(chan struct{})
		go func() { _ = h.procs[i].Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = h.procs[i].Process.Kill()
			<-done
		}
	}
}

func (h *harness) startConsul(bin string) (string, error) {
	port := freePort()
	h.start("consul", bin, nil, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-http-port="+strconv.Itoa(port), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-server-port="+strconv.Itoa(freePort()), "-serf-lan-port="+strconv.Itoa(freePort()),
		"-serf-wan-port="+strconv.Itoa(freePort()), "-log-level=warn")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/v1/status/leader")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if len(strings.Trim(string(b), "\"\n ")) > 0 {
				return addr, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", errors.New("consul did not start")
}

// cpuMeter reads a process's CPU time (user + system) over the measured part of a run.
type cpuMeter struct {
	pid   int
	start chan time.Duration
}

// startCPU samples pid's CPU time once the warm-up is over.
func startCPU(pid int, warm time.Duration) cpuMeter {
	m := cpuMeter{pid: pid, start: make(chan time.Duration, 1)}
	go func() {
		time.Sleep(warm)
		m.start <- procCPU(pid)
	}()
	return m
}

// perCall divides the CPU time used since the sample by n calls.
func (m cpuMeter) perCall(n int) time.Duration {
	if m.start == nil || n == 0 {
		return 0
	}
	return (procCPU(m.pid) - <-m.start) / time.Duration(n)
}

// procCPU is utime+stime from /proc/<pid>/stat (clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are the 14th and 15th.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// startCaddy runs caddy as an h2c reverse proxy to the backend: it accepts h2c from the
// load generator and speaks h2c upstream, flushing immediately like the gateway.
func (h *harness) startCaddy(bin string, port, backendPort int) (*exec.Cmd, error) {
	conf := fmt.Sprintf(`{
	admin off
	auto_https off
	servers {
		protocols h1 h2 h2c
	}
}

http://127.0.0.1:%d {
	reverse_proxy h2c://127.0.0.1:%d {
		flush_interval -1
	}
}
`, port, backendPort)
	path := filepath.Join(h.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := h.start("caddy", bin, []string{"HOME=" + h.dir, "XDG_DATA_HOME=" + h.dir, "XDG_CONFIG_HOME=" + h.dir}, "run", "--config", path, "--adapter", "caddyfile")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cmd, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, errors.New("caddy did not start: see " + filepath.Join(h.dir, "caddy.log"))
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func caddyVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "caddy (unknown version)"
	}
	v, _, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	return "Caddy " + v
}
