package e2e_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Markers delimit the upload benchmark's section of BENCHMARKS.md.
const (
	uploadBenchStart = "<!-- bench:upload:start -->"
	uploadBenchEnd   = "<!-- bench:upload:end -->"
)

const (
	// uploadBenchChunk is the PATCH size of the chunked tus run, a size tus-js-client users
	// commonly pick (its chunkSize option).
	uploadBenchChunk = 64 << 20
	// uploadRSSTarget is the most the upload process may hold resident at its peak.
	uploadRSSTarget = 100 << 20
	// uploadRatioTarget is the least throughput through the gateway, as a share of dd's.
	uploadRatioTarget = 0.8
)

// uploadPlatform is the part of the platform an upload touches, each service its own
// process so that the upload process's memory is its own: a Consul agent, `reelway nats`,
// and `reelway serve` metadata, upload and gateway. The worker and transcoder are not
// started: upload.completed events wait in JetStream, so no transcode of the benchmark's
// random bytes competes with the measurements.
type uploadPlatform struct {
	*cluster
	dataDir string
	client  *http.Client
}

func startUploadPlatform(t *testing.T) *uploadPlatform {
	t.Helper()
	dir := t.TempDir()
	consul, consulAddr := startConsul(t, dir)
	bin := reelwayBinary(t)
	natsPort := freePort(t)
	startProcess(t, dir, "nats", []string{"REELWAY_DATA_DIR=" + filepath.Join(dir, "nats")}, bin, "nats", "-nats-port", itoa(natsPort))
	dataDir := filepath.Join(dir, "data")
	c := &cluster{
		t: t, dir: dir, bin: bin, consul: consul,
		ports: map[string]int{}, procs: map[string]*process{},
		env: []string{
			"REELWAY_CONSUL_ADDR=" + consulAddr,
			fmt.Sprintf("REELWAY_NATS_URL=nats://127.0.0.1:%d", natsPort),
			"REELWAY_DATA_DIR=" + dataDir,
			"REELWAY_VERSION=bench",
			"REELWAY_SHUTDOWN_TIMEOUT=5s",
			// Room for the 1 GiB file whatever the default becomes.
			"REELWAY_UPLOAD_MAX_BYTES=" + strconv.FormatInt(4<<30, 10),
		},
	}
	services := []string{"metadata", "upload", "gateway"}
	for _, s := range services {
		c.ports[s] = freePort(t)
		c.start(s)
	}
	c.gateway = fmt.Sprintf("http://127.0.0.1:%d", c.ports["gateway"])
	waitFor(t, 60*time.Second, "metadata, upload and gateway passing in Consul", func() error {
		for _, s := range services {
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
	// One connection, HTTP/1.1 as curl and browsers upload; the transport's own buffers
	// are what Go clients get by default.
	p := &uploadPlatform{cluster: c, dataDir: dataDir, client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
	// Routed to upload, and upload reaches metadata and the bus: a small upload succeeds.
	waitFor(t, 60*time.Second, "a small upload through the gateway", func() error {
		req, _ := http.NewRequest(http.MethodPost, c.gateway+"/v1/uploads?title=warm-up", strings.NewReader("warm-up"))
		resp, err := p.client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return nil
	})
	return p
}

// writeBenchSource writes size pseudo-random bytes (ChaCha8, fixed seed) to path, durably,
// and returns their sha256. Random bytes are what a video file looks like to the upload
// path, and no file system or disk can compress them.
func writeBenchSource(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	must(t, err, "create source")
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{'r', 'e', 'e', 'l', 'w', 'a', 'y'})
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		b := buf[:min(int64(len(buf)), left)]
		_, _ = rng.Read(b)
		_, _ = h.Write(b)
		_, err := f.Write(b)
		must(t, err, "write source")
		left -= int64(len(b))
	}
	must(t, f.Sync(), "sync source")
	return hex.EncodeToString(h.Sum(nil))
}

// timeSHA256 hashes a file as the upload service does and returns how long it took.
func timeSHA256(t *testing.T, path, want string) time.Duration {
	t.Helper()
	f, err := os.Open(path)
	must(t, err, "open source")
	defer f.Close()
	h := sha256.New()
	start := time.Now()
	_, err = io.CopyBuffer(h, f, make([]byte, 1<<20))
	must(t, err, "hash source")
	elapsed := time.Since(start)
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("source sha256 %s, want %s", got, want)
	}
	return elapsed
}

// uploadRun is one measurement of one target.
type uploadRun struct {
	elapsed time.Duration
	// cpu is the CPU time (user+system) the upload and gateway processes used during it.
	uploadCPU, gatewayCPU time.Duration
	// setup is the tus creation's latency, outside elapsed.
	setup time.Duration
}

// TestBenchUpload is the upload benchmark of `just bench`, not part of the test suite: it
// runs only when REELWAY_BENCH_FILE names the BENCHMARKS.md to write its section into.
// It uploads a 1 GiB file through the gateway, with a plain POST /v1/uploads and with tus
// (one PATCH of the whole file, and 64 MiB PATCHes as tus-js-client sends them), and
// writes the same bytes to the same file system with dd, alternating the four over a few
// rounds; it reports the throughputs, their ratio to dd's, and the upload process's peak
// resident memory. It reports; it asserts no target (only that every upload is stored
// whole, with the right sha256).
func TestBenchUpload(t *testing.T) {
	file := os.Getenv("REELWAY_BENCH_FILE")
	if file == "" {
		t.Skip("REELWAY_BENCH_FILE not set: run `just bench`")
	}
	if _, err := exec.LookPath("dd"); err != nil {
		t.Fatalf("dd is needed: %v", err)
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("REELWAY_BENCH_RUNS")); err == nil && v > 0 {
		rounds = v
	}
	// REELWAY_BENCH_UPLOAD_MIB shrinks the file for trying the benchmark out.
	size := int64(1 << 30)
	if v, err := strconv.Atoi(os.Getenv("REELWAY_BENCH_UPLOAD_MIB")); err == nil && v > 0 {
		size = int64(v) << 20
	}
	loadStart := loadAvg()
	p := startUploadPlatform(t)
	upload, gateway := p.procs["upload"].cmd.Process.Pid, p.procs["gateway"].cmd.Process.Pid
	rssStart, hwmStart := procStatusKiB(t, upload, "VmRSS"), procStatusKiB(t, upload, "VmHWM")
	gwHWMStart := procStatusKiB(t, gateway, "VmHWM")
	t.Logf("upload pid %d, gateway pid %d", upload, gateway)

	src := filepath.Join(p.dir, "source.bin")
	sum := writeBenchSource(t, src, size)
	hashTime := timeSHA256(t, src, sum)

	targets := []struct {
		name string
		run  func(round int) uploadRun
	}{
		{"dd (bs=1M conv=fsync)", func(int) uploadRun { return p.dd(t, src) }},
		{"POST /v1/uploads", func(round int) uploadRun { return p.post(t, src, size, sum, round) }},
		{"tus, 1 PATCH", func(round int) uploadRun { return p.tus(t, src, size, sum, size, round) }},
		{"tus, 64 MiB PATCHes", func(round int) uploadRun { return p.tus(t, src, size, sum, uploadBenchChunk, round) }},
	}
	results := make([][]uploadRun, len(targets))
	var hwmRound1 int64
	for round := range rounds {
		// Each round starts with a different target, so none always runs first.
		for k := range targets {
			i := (round + k) % len(targets)
			measured := measureCPU(upload, gateway, func() uploadRun { return targets[i].run(round) })
			results[i] = append(results[i], measured)
			t.Logf("round %d %s: %s (%.0f MiB/s), upload CPU %s, gateway CPU %s", round+1, targets[i].name,
				measured.elapsed.Round(time.Millisecond), mibPerSec(size, measured.elapsed),
				measured.uploadCPU.Round(10*time.Millisecond), measured.gatewayCPU.Round(10*time.Millisecond))
		}
		if round == 0 {
			hwmRound1 = procStatusKiB(t, upload, "VmHWM")
		}
	}
	rssEnd, hwmEnd := procStatusKiB(t, upload, "VmRSS"), procStatusKiB(t, upload, "VmHWM")
	gwHWMEnd := procStatusKiB(t, gateway, "VmHWM")

	ddMedian, ddBest := medianRun(results[0]).elapsed, bestRun(results[0]).elapsed
	var md strings.Builder
	fmt.Fprintf(&md, "## Upload: %s through the gateway against dd\n\n", sizeText(size))
	fmt.Fprintf(&md, "Run %s on %d cores (%s), %s, `go test ./e2e -run '^TestBenchUpload$'` via `just bench-upload`; "+
		"%d rounds, the four targets alternating (each round starts with the next one). Load average %s at the start, %s at the end "+
		"(other engineers' test runs share the machine).\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), cpuModel(), runtime.Version(), rounds, loadStart, loadAvg())
	fmt.Fprintf(&md, "Each service is its own process: a Consul dev agent, `reelway nats`, and `reelway serve` metadata, upload and "+
		"gateway (worker and transcoder are not started, so `upload.completed` waits in JetStream and no transcode of the random "+
		"bytes runs during the measurements). The source is %s of pseudo-random bytes on the same ext4 file system as the data "+
		"directory, in the page cache. The client is Go's net/http over one HTTP/1.1 connection to the gateway, streaming the "+
		"body from the file (read, then write to the socket, 32 KiB at a time). The upload service fsyncs the stored file "+
		"before it answers (POST: fsync, then rename; tus: fsync at the last PATCH, then rename), so dd does too: `dd if=source of=<data dir>/dd.bin bs=1M conv=fsync`; "+
		"the upload service also starts the write-out of every 8 MiB as it arrives (sync_file_range), so its fsync finds little "+
		"left to write, where dd leaves it all to the fsync. "+
		"POST is timed from the request to its 201; tus from the creation's 201 to the last PATCH's 204 (the creation took "+
		"%s, median). Every upload is checked: size and sha256 on the video match the source's.\n\n",
		sizeText(size), medianSetup(results[2], results[3]).Round(100*time.Microsecond))
	md.WriteString("| target | runs | median | best | MiB/s (median) | vs dd (median) | vs dd (best) | upload CPU | gateway CPU | target |\n")
	md.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	worst := 0.0
	for i, tg := range targets {
		med, best := medianRun(results[i]), bestRun(results[i])
		var runs []string
		for _, r := range results[i] {
			runs = append(runs, fmt.Sprintf("%.2f s", r.elapsed.Seconds()))
		}
		ratio, ratioBest := ddMedian.Seconds()/med.elapsed.Seconds(), ddBest.Seconds()/best.elapsed.Seconds()
		goal, upCPU, gwCPU := "", "", ""
		if i > 0 {
			goal = verdict(ratio >= uploadRatioTarget, fmt.Sprintf("≥ %.1f×", uploadRatioTarget))
			upCPU = fmt.Sprintf("%.2f s", medianDuration(results[i], func(r uploadRun) time.Duration { return r.uploadCPU }).Seconds())
			gwCPU = fmt.Sprintf("%.2f s", medianDuration(results[i], func(r uploadRun) time.Duration { return r.gatewayCPU }).Seconds())
			if worst == 0 || ratio < worst {
				worst = ratio
			}
		}
		fmt.Fprintf(&md, "| %s | %s | %.2f s | %.2f s | %.0f | %.2f× | %.2f× | %s | %s | %s |\n", tg.name, strings.Join(runs, ", "),
			med.elapsed.Seconds(), best.elapsed.Seconds(), mibPerSec(size, med.elapsed), ratio, ratioBest, upCPU, gwCPU, goal)
	}
	fmt.Fprintf(&md, "\nCPU columns: user+system time of the upload and gateway processes during the upload (median). The disk is a "+
		"virtual one whose write speed varies from second to second under other users' load, so the rounds spread: compare medians. "+
		"It also serves dd's one burst of write-out at the fsync more slowly and less steadily than a stream of 8 MiB write-outs, "+
		"so a ratio above 1 says more about dd than about the upload path, which is bound by CPU here: client, gateway and upload "+
		"process share the two cores, and the sha256 the upload service records costs %.2f s of one core per %s on its own "+
		"(Go's crypto/sha256 over the cached source, timed in this run).\n\n", hashTime.Seconds(), sizeText(size))
	fmt.Fprintf(&md, "### Upload process memory\n\n")
	fmt.Fprintf(&md, "| when | VmRSS | VmHWM (peak) |\n|---|---:|---:|\n")
	fmt.Fprintf(&md, "| started, before any upload | %s | %s |\n", mib(rssStart), mib(hwmStart))
	fmt.Fprintf(&md, "| after round 1 (%s through it) | | %s |\n", sizeText(3*size), mib(hwmRound1))
	fmt.Fprintf(&md, "| after all %d rounds (%s through it) | %s | %s |\n", rounds, sizeText(int64(3*rounds)*size), mib(rssEnd), mib(hwmEnd))
	fmt.Fprintf(&md, "\nVmHWM and VmRSS from `/proc/<pid>/status` of `reelway serve upload`. The gateway's peak was %s at the start, "+
		"%s at the end.\n\n", mib(gwHWMStart), mib(gwHWMEnd))
	fmt.Fprintf(&md, "### Targets\n\n")
	fmt.Fprintf(&md, "- every upload's median throughput %s (the slowest: %.3f× dd's median)\n",
		verdict(worst >= uploadRatioTarget, fmt.Sprintf("≥ %.1f× dd's", uploadRatioTarget)), worst)
	fmt.Fprintf(&md, "- the upload process's peak resident memory %s (%s)\n",
		verdict(hwmEnd*1024 < uploadRSSTarget, fmt.Sprintf("< %d MiB", uploadRSSTarget>>20)), mib(hwmEnd))
	t.Log("\n" + md.String())
	must(t, writeBenchSection(file, uploadBenchStart, uploadBenchEnd, md.String()), "write %s", file)
}

// dd writes the source to the data directory's file system with dd, as durably as the
// upload service stores it.
func (p *uploadPlatform) dd(t *testing.T, src string) uploadRun {
	t.Helper()
	dst := filepath.Join(p.dataDir, "dd.bin")
	start := time.Now()
	out, err := exec.Command("dd", "if="+src, "of="+dst, "bs=1M", "conv=fsync", "status=none").CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("dd: %v\n%s", err, out)
	}
	must(t, os.Remove(dst), "remove dd output")
	syscall.Sync()
	return uploadRun{elapsed: elapsed}
}

// post uploads the source with POST /v1/uploads through the gateway.
func (p *uploadPlatform) post(t *testing.T, src string, size int64, sum string, round int) uploadRun {
	t.Helper()
	f, err := os.Open(src)
	must(t, err, "open source")
	defer f.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, p.gateway+"/v1/uploads?title=bench-post-"+itoa(round), fileBody(f, 0, size))
	must(t, err, "new request")
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := p.client.Do(req)
	must(t, err, "POST /v1/uploads")
	body := readAll(t, resp)
	elapsed := time.Since(start)
	var out struct {
		VideoID   string `json:"videoId"`
		SizeBytes int64  `json:"sizeBytes"`
		SHA256    string `json:"sha256"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &out) != nil {
		t.Fatalf("POST /v1/uploads: %d %s", resp.StatusCode, body)
	}
	if out.SizeBytes != size || out.SHA256 != sum {
		t.Fatalf("POST /v1/uploads stored %d bytes with sha256 %s, want %d and %s", out.SizeBytes, out.SHA256, size, sum)
	}
	p.checkVideo(t, out.VideoID, size, sum)
	return uploadRun{elapsed: elapsed}
}

// tus uploads the source resumably through the gateway: a creation, then PATCHes of at
// most chunk bytes.
func (p *uploadPlatform) tus(t *testing.T, src string, size int64, sum string, chunk int64, round int) uploadRun {
	t.Helper()
	base := p.gateway + "/v1/uploads/tus/"
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base, nil)
	must(t, err, "new request")
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", strconv.FormatInt(size, 10))
	req.Header.Set("Upload-Metadata", "title "+b64(fmt.Sprintf("bench-tus-%d-%d", chunk>>20, round))+",filename "+b64("source.bin"))
	start := time.Now()
	resp, err := p.client.Do(req)
	must(t, err, "tus creation")
	readAll(t, resp)
	setup := time.Since(start)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusCreated || err != nil || !strings.HasPrefix(loc.Path, "/v1/uploads/tus/") {
		t.Fatalf("tus creation: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Through the gateway whatever host the Location names.
	target := p.gateway + loc.Path
	id := strings.TrimPrefix(loc.Path, "/v1/uploads/tus/")

	f, err := os.Open(src)
	must(t, err, "open source")
	defer f.Close()
	start = time.Now()
	for off := int64(0); off < size; {
		n := min(chunk, size-off)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, target, fileBody(f, off, n))
		must(t, err, "new request")
		req.ContentLength = n
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Content-Type", "application/offset+octet-stream")
		req.Header.Set("Upload-Offset", strconv.FormatInt(off, 10))
		resp, err := p.client.Do(req)
		must(t, err, "PATCH at %d", off)
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != strconv.FormatInt(off+n, 10) {
			t.Fatalf("PATCH at %d: %d Upload-Offset %q %s", off, resp.StatusCode, resp.Header.Get("Upload-Offset"), body)
		}
		off += n
	}
	elapsed := time.Since(start)
	p.checkVideo(t, id, size, sum)
	return uploadRun{elapsed: elapsed, setup: setup}
}

// fileBody is n bytes of f from off as a request body. It is not an *os.File, so the
// client reads the file and writes the socket, as browsers and curl do, for every target
// alike: net/http would send a whole *os.File with sendfile, but not a part of one.
func fileBody(f *os.File, off, n int64) io.ReadCloser {
	return io.NopCloser(io.NewSectionReader(f, off, n))
}

// checkVideo wants the video PROCESSING with the source's size and sha256, then frees the
// stored file (nothing will transcode it) so the rounds do not fill the disk.
func (p *uploadPlatform) checkVideo(t *testing.T, id string, size int64, sum string) {
	t.Helper()
	code, out := connectJSON(t, p.gateway, "/reelway.metadata.v1.MetadataService/GetVideo", map[string]string{"id": id})
	video, _ := out["video"].(map[string]any)
	if code != http.StatusOK || video["status"] != "VIDEO_STATUS_PROCESSING" || video["sizeBytes"] != strconv.FormatInt(size, 10) || video["sha256"] != sum {
		t.Fatalf("video %s: %d %v, want PROCESSING, %d bytes, sha256 %s", id, code, out, size, sum)
	}
	stored := filepath.Join(p.dataDir, "uploads", id, "source")
	if fi, err := os.Stat(stored); err != nil || fi.Size() != size {
		t.Fatalf("stored source %s: %v", stored, err)
	}
	must(t, os.RemoveAll(filepath.Dir(stored)), "remove stored source")
	syscall.Sync()
}

// measureCPU runs fn and adds the CPU time the upload and gateway processes spent meanwhile.
func measureCPU(upload, gateway int, fn func() uploadRun) uploadRun {
	u0, g0 := procCPU(upload), procCPU(gateway)
	r := fn()
	r.uploadCPU, r.gatewayCPU = procCPU(upload)-u0, procCPU(gateway)-g0
	return r
}

// procCPU is a process's user+system time from /proc/<pid>/stat (in USER_HZ ticks, 100 a
// second on Linux).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// procStatusKiB reads a kB field (VmRSS, VmHWM) of /proc/<pid>/status.
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err, "open status of %d", pid)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			must(t, err, "parse %s", field)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func medianRun(rs []uploadRun) uploadRun {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b uploadRun) int { return int(a.elapsed - b.elapsed) })
	return s[len(s)/2]
}

func bestRun(rs []uploadRun) uploadRun {
	return slices.MinFunc(rs, func(a, b uploadRun) int { return int(a.elapsed - b.elapsed) })
}

func medianDuration(rs []uploadRun, f func(uploadRun) time.Duration) time.Duration {
	var ds []time.Duration
	for _, r := range rs {
		ds = append(ds, f(r))
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func medianSetup(groups ...[]uploadRun) time.Duration {
	var all []uploadRun
	for _, g := range groups {
		all = append(all, g...)
	}
	return medianDuration(all, func(r uploadRun) time.Duration { return r.setup })
}

func mibPerSec(size int64, d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func sizeText(n int64) string {
	if n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// writeBenchSection replaces the section of file between the start and end markers, or
// appends it, leaving the rest of the file as it is.
func writeBenchSection(file, start, end, section string) error {
	old, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	block := start + "\n" + section + end + "\n"
	i, j := strings.Index(text, start), strings.Index(text, end)
	switch {
	case i >= 0 && j > i:
		text = text[:i] + block + strings.TrimPrefix(text[j+len(end):], "\n")
	case text == "":
		text = "# Benchmarks\n\n" + block
	default:
		text = strings.TrimRight(text, "\n") + "\n\n" + block
	}
	return os.WriteFile(file, []byte(text), 0o644)
}
