package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gatewayv1 "github.com/reelway/reelway/gen/reelway/gateway/v1"
	"github.com/reelway/reelway/gen/reelway/gateway/v1/gatewayv1connect"
	"github.com/reelway/reelway/gen/reelway/streaming/v1/streamingv1connect"
	"github.com/reelway/reelway/svc/transcoder"
)

// Markers delimit this benchmark's section of BENCHMARKS.md; other sections are left
// alone.
const (
	benchStart = "<!-- bench:media:start -->"
	benchEnd   = "<!-- bench:media:end -->"
)

// TestBenchMedia is the media benchmark of `just bench`, not part of the test suite: it
// runs only when REELWAY_BENCH_FILE names the BENCHMARKS.md to write its section into.
// It measures, in one run on this machine:
//   - the transcode wall time of the platform pipeline (upload through the gateway until
//     the video is READY) for a fixed 60 s 1080p clip, against the raw ffmpeg command
//     line the transcoder runs for the ladder;
//   - segment serving throughput with wrk (same script, same connections) from nginx
//     serving the HLS files statically, from the streaming service directly, and through
//     the gateway.
//
// It reports; it asserts no target.
func TestBenchMedia(t *testing.T) {
	file := os.Getenv("REELWAY_BENCH_FILE")
	if file == "" {
		t.Skip("REELWAY_BENCH_FILE not set: run `just bench`")
	}
	for _, tool := range []string{"ffmpeg", "wrk", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (the bench recipe installs it): %v", tool, err)
		}
	}
	runs := 2
	if v, err := strconv.Atoi(os.Getenv("REELWAY_BENCH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	clip := media.clip(t, "bench-60s-1080p.mp4",
		"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		// A low source bitrate keeps the file under the dev platform's 8 MiB upload limit;
		// the work measured is decoding and encoding 1800 frames of 1080p either way.
		"-t", "60", "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "600k", "-maxrate", "600k", "-bufsize", "1200k",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-shortest")
	loadStart := loadAvg()
	p := startDev(t)

	// Transcode: raw ffmpeg and the pipeline, alternating.
	var raw, pipeline []time.Duration
	var rawArgs []string
	var lastID string
	for i := range runs {
		rawArgs, raw = appendDuration(t, raw, func() []string { return rawTranscode(t, clip) })
		start := time.Now()
		code, out := p.upload(t, "bench-"+strconv.Itoa(i), clip)
		if code != http.StatusCreated {
			t.Fatalf("upload: %d %v", code, out)
		}
		lastID, _ = out["videoId"].(string)
		p.waitStatusEvery(t, lastID, "VIDEO_STATUS_READY", 50*time.Millisecond)
		pipeline = append(pipeline, time.Since(start))
	}
	inside := transcoderTimes(t, filepath.Join(p.dataDir, "platform.log"))

	// Segment serving: every segment of every rendition, round robin.
	var paths []string
	hlsDir := filepath.Join(p.dataDir, "hls", lastID)
	segs, _ := filepath.Glob(filepath.Join(hlsDir, "*", "seg_*.ts"))
	var segBytes int64
	for _, s := range segs {
		rel, _ := filepath.Rel(filepath.Join(p.dataDir, "hls"), s)
		paths = append(paths, "/v1/hls/"+filepath.ToSlash(rel))
		if fi, err := os.Stat(s); err == nil {
			segBytes += fi.Size()
		}
	}
	if len(paths) == 0 {
		t.Fatal("no segments to serve")
	}
	script := filepath.Join(t.TempDir(), "segments.lua")
	var lua strings.Builder
	lua.WriteString("local paths = {\n")
	for _, p := range paths {
		fmt.Fprintf(&lua, "  %q,\n", p)
	}
	lua.WriteString("}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", paths[(i % #paths) + 1])\nend\n")
	must(t, os.WriteFile(script, []byte(lua.String()), 0o644), "write wrk script")

	streamingURL := streamingBase(t, p.gateway)
	nginxURL, nginxProxyURL := startNginx(t, p.dataDir, strings.TrimPrefix(streamingURL, "http://"))
	stdlibURL := startFileServer(t, filepath.Join(p.dataDir, "hls"))
	targets := []struct{ name, url string }{{"nginx (static)", nginxURL}, {"Go http.FileServer (static)", stdlibURL},
		{"streaming service", streamingURL}, {"gateway → streaming", p.gateway}, {"nginx proxy → streaming", nginxProxyURL}}
	// Other work on the machine moves absolute rates by tens of percent from one run to the
	// next, so each round measures every target back to back and the verdict uses the
	// median over rounds of each target's ratio to nginx within its round.
	servingRounds := 5
	if v, err := strconv.Atoi(os.Getenv("REELWAY_BENCH_SERVING_ROUNDS")); err == nil && v > 0 {
		servingRounds = v
	}
	results := map[string][]wrkResult{}
	ratios := map[string][]float64{}
	for round := range servingRounds {
		// Rotate the order so no target always runs first (or right after the same one).
		for i := range targets {
			tg := targets[(i+round)%len(targets)]
			stop := profileServing(t, round, tg.name)
			results[tg.name] = append(results[tg.name], runWrk(t, tg.url, script))
			stop()
		}
		base := results["nginx (static)"][round].bytesPerSec
		for _, tg := range targets {
			ratios[tg.name] = append(ratios[tg.name], results[tg.name][round].bytesPerSec/base)
		}
	}

	median := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		if len(s)%2 == 1 {
			return s[len(s)/2]
		}
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	var md strings.Builder
	fmt.Fprintf(&md, "## Media: segment serving and transcode\n\n")
	fmt.Fprintf(&md, "Run %s on %d cores (%s), `go test ./e2e -run TestBenchMedia` via `just bench`; %d transcode rounds and %d serving rounds, "+
		"targets alternating. Load average %s when the serving runs ended.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), cpuModel(), runs, servingRounds, loadAvg())
	fmt.Fprintf(&md, "### Segment serving\n\n")
	fmt.Fprintf(&md, "wrk 1 thread, 16 keep-alive connections, %s per run, cycling through all %d segments of every rendition of the 60 s clip "+
		"(%.1f MiB in total, %.0f KiB mean). nginx %s serves the same folder statically (sendfile on, access log on, workers auto), and so does a bare "+
		"`http.FileServer` in the test process (Go's standard library with nothing added, the floor for any net/http server). "+
		"As a reference for the gateway path, the same nginx also proxies to the streaming service the way the gateway does "+
		"(HTTP/1.1 keep-alive upstream, `proxy_buffering off`, 256 KiB `proxy_buffer_size`, the gateway's copy buffer): one more loopback "+
		"TCP hop, whose kernel work (a receive and a send of every byte) is the same for any proxy. "+
		"Each round runs every target back to back (the order rotating); the ratio to nginx is taken within each round and "+
		"its median over the rounds is the verdict, because the machine's other work moves absolute rates between runs far more "+
		"than between neighbouring runs.\n\n",
		wrkDuration, len(paths), float64(segBytes)/(1<<20), float64(segBytes)/float64(len(paths))/1024, nginxVersion())
	md.WriteString("| target | median requests/s | median MiB/s | vs nginx per round | median vs nginx | target |\n|---|---:|---:|---|---:|---|\n")
	for _, tg := range targets {
		var per []string
		var rpsN, bpsN []float64
		for i, r := range results[tg.name] {
			rpsN, bpsN = append(rpsN, r.requestsPerSec), append(bpsN, r.bytesPerSec/(1<<20))
			per = append(per, fmt.Sprintf("%.2f", ratios[tg.name][i]))
		}
		ratio, goal := median(ratios[tg.name]), ""
		switch tg.name {
		case "streaming service":
			goal = verdict(ratio >= 0.9, "≥ 0.9×")
		case "gateway → streaming":
			goal = verdict(ratio >= 0.7, "≥ 0.7×")
		}
		fmt.Fprintf(&md, "| %s | %.0f | %.1f | %s | %.2f× | %s |\n", tg.name, median(rpsN), median(bpsN), strings.Join(per, ", "), ratio, goal)
	}
	var vsProxy []float64
	var per []string
	for i, r := range results["gateway → streaming"] {
		vsProxy = append(vsProxy, r.bytesPerSec/results["nginx proxy → streaming"][i].bytesPerSec)
		per = append(per, fmt.Sprintf("%.2f", vsProxy[len(vsProxy)-1]))
	}
	fmt.Fprintf(&md, "\nGateway → streaming over nginx proxy → streaming (the same hop made by nginx), per round: %s; median %.2f×.\n",
		strings.Join(per, ", "), median(vsProxy))
	// Other work on the machine moves wall times between runs far more than the pipeline
	// adds, so the verdict uses what one run measures on both sides at once: the pipeline's
	// wall time over the time its own ffmpeg encode (the command above) took inside it.
	var overhead []float64
	for i, tt := range inside {
		if i < len(pipeline) && tt[1] > 0 {
			overhead = append(overhead, pipeline[i].Seconds()/tt[1].Seconds())
		}
	}
	worst := 0.0
	if len(overhead) > 0 {
		worst = slices.Max(overhead)
	}
	fmt.Fprintf(&md, "\n### Transcode\n\n")
	fmt.Fprintf(&md, "A fixed 60 s 1920x1080 30 fps clip with AAC stereo (lavfi testsrc2 + sine). The pipeline is `POST /v1/uploads` "+
		"through the gateway until GetVideo says READY (upload, worker, ffprobe, the ladder encode, poster and thumbnail, "+
		"MP4 download remux, playlist checks, metadata update); the baseline is the transcoder's own ladder command run by hand:\n\n")
	fmt.Fprintf(&md, "```\nffmpeg %s\n```\n\n", strings.Join(quoteArgs(rawArgs), " "))
	md.WriteString("| run | raw ffmpeg | pipeline | pipeline ÷ raw | ffmpeg encode inside the pipeline | packaging | pipeline ÷ its encode |\n")
	md.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	for i := range pipeline {
		enc, pkg, over := "?", "?", "?"
		if i < len(inside) {
			enc, pkg = fmt.Sprintf("%.1f s", inside[i][1].Seconds()), fmt.Sprintf("%.1f s", inside[i][2].Seconds())
		}
		if i < len(overhead) {
			over = fmt.Sprintf("%.3f×", overhead[i])
		}
		fmt.Fprintf(&md, "| %d | %.1f s | %.1f s | %.3f× | %s | %s | %s |\n", i+1, raw[i].Seconds(), pipeline[i].Seconds(),
			pipeline[i].Seconds()/raw[i].Seconds(), enc, pkg, over)
	}
	fmt.Fprintf(&md, "\nLoad average %s at the start, %s at the end (other test runs share the machine). "+
		"Target ≤ 1.05×: %s (worst pipeline ÷ its own encode, %.3f×). Raw and pipeline runs alternate, but the load "+
		"between them varies, so the pipeline ÷ raw column is noise-dominated.\n", loadStart, loadAvg(), verdict(worst > 0 && worst <= 1.05, "≤ 1.05×"), worst)
	t.Log("\n" + md.String())
	must(t, writeSection(file, md.String()), "write %s", file)
}

var transcodeDone = regexp.MustCompile(`msg=transcode\.done .*elapsed=(\S+) encode=(\S+) package=(\S+)`)

// transcoderTimes reads the transcoder's own timings (total, encode, packaging) of each
// transcode from the platform log.
func transcoderTimes(t *testing.T, log string) [][3]time.Duration {
	t.Helper()
	b, err := os.ReadFile(log)
	must(t, err, "read platform log")
	var out [][3]time.Duration
	for _, m := range transcodeDone.FindAllSubmatch(b, -1) {
		var d [3]time.Duration
		for i := range d {
			d[i], _ = time.ParseDuration(string(m[i+1]))
		}
		out = append(out, d)
	}
	return out
}

func verdict(ok bool, goal string) string {
	if ok {
		return goal + " met"
	}
	return goal + " **missed**"
}

func seconds(ds []time.Duration) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%.1f s", d.Seconds()))
	}
	return strings.Join(parts, ", ")
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " ;[]:=,*'\"") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}

func appendDuration(t *testing.T, ds []time.Duration, fn func() []string) ([]string, []time.Duration) {
	t.Helper()
	start := time.Now()
	args := fn()
	return args, append(ds, time.Since(start))
}

// rawTranscode runs by hand the ladder command the transcoder would run for clip, and
// returns its arguments.
func rawTranscode(t *testing.T, clip string) []string {
	t.Helper()
	dir := t.TempDir()
	tc := transcoder.New(slog.New(slog.NewTextHandler(io.Discard, nil)), transcoder.Config{DataDir: dir}, nil)
	src := filepath.Join(dir, "uploads", "raw", "source")
	must(t, os.MkdirAll(filepath.Dir(src), 0o755), "mkdir")
	must(t, os.Link(clip, src), "link clip")
	out := filepath.Join(dir, "out")
	args, err := tc.EncodeCommand(t.Context(), "raw", out)
	must(t, err, "encode command")
	if b, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("raw ffmpeg: %v\n%s", err, b)
	}
	// Print paths relative to the folders they stand for.
	for i, a := range args {
		args[i] = strings.NewReplacer(src, "source.mp4", out+"/", "").Replace(a)
	}
	return args
}

// waitStatusEvery is waitStatus polling at a chosen interval, so the measured time is
// not rounded up to the harness's 100 ms.
func (p *devPlatform) waitStatusEvery(t *testing.T, id, want string, every time.Duration) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Minute)
	for time.Now().Before(deadline) {
		code, out := connectJSON(t, p.gateway, "/reelway.metadata.v1.MetadataService/GetVideo", map[string]string{"id": id})
		if code == http.StatusOK {
			video, _ := out["video"].(map[string]any)
			switch status, _ := video["status"].(string); status {
			case want:
				return
			case "VIDEO_STATUS_FAILED":
				t.Fatalf("video %s failed: %v", id, video)
			}
		}
		time.Sleep(every)
	}
	t.Fatalf("video %s not %s in time", id, want)
}

// streamingBase finds the streaming service's own address in the gateway's route table.
func streamingBase(t *testing.T, gateway string) string {
	t.Helper()
	res, err := gatewayv1connect.NewGatewayServiceClient(http.DefaultClient, gateway).ListRoutes(context.Background(), &gatewayv1.ListRoutesRequest{})
	must(t, err, "list routes")
	for _, r := range res.GetRoutes() {
		if r.GetProtoService() == streamingv1connect.StreamingServiceName && len(r.GetEndpoints()) > 0 {
			return strings.TrimRight(r.GetEndpoints()[0], "/")
		}
	}
	t.Fatal("no streaming endpoint in the route table")
	return ""
}

// startFileServer serves dir under /v1/hls/ with Go's own http.FileServer and nothing
// else (no logging, no lookups): the floor any net/http file server starts from, to tell
// the streaming service's own costs from the standard library's.
func startFileServer(t *testing.T, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "listen")
	srv := &http.Server{Handler: http.StripPrefix("/v1/hls/", http.FileServer(http.Dir(dir))), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// startNginx serves <dataDir>/hls under /v1/hls/ with a stock-like configuration, and
// on a second port proxies /v1/hls/ to upstream (host:port) the way the gateway does:
// HTTP/1.1 with kept-alive upstream connections, unbuffered, 256 KiB reads (the gateway's
// copy buffer). It returns both base URLs.
func startNginx(t *testing.T, dataDir, upstream string) (static, proxy string) {
	t.Helper()
	dir := t.TempDir()
	port, proxyPort := freePort(t), freePort(t)
	conf := fmt.Sprintf(`daemon off;
user root;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  access_log %[1]s/access.log;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:%[2]d;
    location /v1/hls/ { alias %[3]s/hls/; }
  }
  upstream streaming { server %[4]s; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:%[5]d;
    location /v1/hls/ {
      proxy_pass http://streaming;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_buffer_size 256k;
      proxy_buffers 4 256k;
      proxy_busy_buffers_size 512k;
    }
  }
}
`, dir, port, dataDir, upstream, proxyPort)
	path := filepath.Join(dir, "nginx.conf")
	must(t, os.WriteFile(path, []byte(conf), 0o644), "write nginx.conf")
	cmd := exec.Command("nginx", "-c", path, "-p", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	must(t, cmd.Start(), "start nginx")
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	static, proxy = "http://127.0.0.1:"+strconv.Itoa(port), "http://127.0.0.1:"+strconv.Itoa(proxyPort)
	waitFor(t, 10*time.Second, "nginx", func() error {
		for _, base := range []string{static, proxy} {
			resp, err := http.Get(base + "/")
			if err != nil {
				return fmt.Errorf("%w: %s", err, stderr.String())
			}
			resp.Body.Close()
		}
		return nil
	})
	return static, proxy
}

type wrkResult struct {
	requestsPerSec float64
	bytesPerSec    float64
}

var (
	wrkRequests = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTransfer = regexp.MustCompile(`Transfer/sec:\s+([0-9.]+)([KMG]?B)`)
	wrkErrors   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// wrkDuration is the length of one wrk run.
const wrkDuration = "6s"

func runWrk(t *testing.T, base, script string) wrkResult {
	t.Helper()
	out, err := exec.Command("wrk", "-t1", "-c16", "-d"+wrkDuration, "-s", script, base).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk %s: %v\n%s", base, err, out)
	}
	if m := wrkErrors.FindSubmatch(out); m != nil {
		t.Fatalf("wrk %s: %s error responses\n%s", base, m[1], out)
	}
	rm, tm := wrkRequests.FindSubmatch(out), wrkTransfer.FindSubmatch(out)
	if rm == nil || tm == nil {
		t.Fatalf("wrk %s: cannot read\n%s", base, out)
	}
	rps, _ := strconv.ParseFloat(string(rm[1]), 64)
	bps, _ := strconv.ParseFloat(string(tm[1]), 64)
	bps *= map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[string(tm[2])]
	return wrkResult{requestsPerSec: rps, bytesPerSec: bps}
}

func nginxVersion() string {
	out, _ := exec.Command("nginx", "-v").CombinedOutput()
	_, v, _ := strings.Cut(strings.TrimSpace(string(out)), "nginx/")
	return v
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// writeSection replaces this benchmark's section of the file between its markers, or
// appends it, leaving the rest of the file as it is.
func writeSection(file, section string) error {
	old, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	block := benchStart + "\n" + section + benchEnd + "\n"
	i, j := strings.Index(text, benchStart), strings.Index(text, benchEnd)
	switch {
	case i >= 0 && j > i:
		text = text[:i] + block + strings.TrimPrefix(text[j+len(benchEnd):], "\n")
	case text == "":
		text = "# Benchmarks\n\n" + block
	default:
		text = strings.TrimRight(text, "\n") + "\n\n" + block
	}
	return os.WriteFile(file, []byte(text), 0o644)
}

// profileServing writes a CPU profile of this process (the platform, nginx aside) during
// the first round of each serving target when REELWAY_BENCH_PROFILE names a folder, so
// the serving paths can be profiled under the benchmark's own load. It returns the stop.
func profileServing(t *testing.T, round int, target string) func() {
	dir := os.Getenv("REELWAY_BENCH_PROFILE")
	if dir == "" || round > 0 {
		return func() {}
	}
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(target))
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	must(t, err, "create profile")
	must(t, pprof.StartCPUProfile(f), "start profile")
	return func() {
		pprof.StopCPUProfile()
		must(t, f.Close(), "close profile")
	}
}
