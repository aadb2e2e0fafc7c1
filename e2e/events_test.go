package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/gen/reelway/worker/v1/workerv1connect"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/kernel"
	"github.com/reelway/reelway/svc/platform"
)

// restartableNATS is a real NATS server on a fixed port and store directory: stopping it
// and starting it again is a real restart, with clients reconnecting to the same address.
type restartableNATS struct {
	t    *testing.T
	port int
	dir  string
	srv  *events.Server
}

func startRestartableNATS(t *testing.T) *restartableNATS {
	t.Helper()
	n := &restartableNATS{t: t, port: freePort(t), dir: t.TempDir()}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *restartableNATS) start() {
	n.t.Helper()
	srv, err := events.StartServer("127.0.0.1", n.port, n.dir)
	must(n.t, err, "start nats on %d", n.port)
	n.srv = srv
}

func (n *restartableNATS) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv = nil
	}
}

func (n *restartableNATS) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// ffmpegCounter puts a logging ffmpeg wrapper first in PATH, so every ffmpeg the
// transcoder starts leaves a line: the transcoder's own trace of how often it encoded.
type ffmpegCounter struct{ dir, log string }

func countFFmpeg(t *testing.T) *ffmpegCounter {
	t.Helper()
	real, err := exec.LookPath("ffmpeg")
	must(t, err, "ffmpeg")
	c := &ffmpegCounter{dir: t.TempDir()}
	c.log = filepath.Join(c.dir, "ffmpeg.log")
	script := "#!/bin/sh\necho \"$$ $*\" >> '" + c.log + "'\nexec '" + real + "' \"$@\"\n"
	must(t, os.WriteFile(filepath.Join(c.dir, "ffmpeg"), []byte(script), 0o755), "write wrapper")
	t.Setenv("PATH", c.dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return c
}

// encodes counts the HLS encodes per video id.
func (c *ffmpegCounter) encodes(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile(c.log)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}
	}
	must(t, err, "read ffmpeg log")
	out := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "-f hls") {
			continue
		}
		_, rest, ok := strings.Cut(line, "/uploads/")
		if !ok {
			continue
		}
		id, _, _ := strings.Cut(rest, "/")
		out[id]++
	}
	return out
}

// startDevOn runs the whole platform in this process, as `reelway dev` does, on free ports,
// against an external NATS server (or, with natsURL empty, an embedded one) and with extra
// REELWAY_* settings; it returns the platform and the listen address of each service.
func startDevOn(t *testing.T, natsURL string, extra map[string]string) (*devPlatform, map[string]net.Addr) {
	t.Helper()
	dataDir := t.TempDir()
	env := map[string]string{"REELWAY_DATA_DIR": dataDir}
	for k, v := range extra {
		env[k] = v
	}
	cfg, err := kernel.LoadConfig("dev", nil, func(k string) string { return env[k] })
	must(t, err, "load config")
	cfg.Ports = map[string]int{}
	for _, s := range kernel.Services() {
		cfg.Ports[s] = 0
	}
	cfg.NATSURL = natsURL
	cfg.NATSPort = 0 // an embedded server, when natsURL is empty, on a free port
	cfg.UploadMaxBytes = devUploadLimit
	cfg.ShutdownTimeout = 5 * time.Second

	logFile, err := os.Create(filepath.Join(dataDir, "platform.log"))
	must(t, err, "create log")
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var mu sync.Mutex
	addrs := map[string]net.Addr{}
	ready := make(chan struct{})
	onReady := func(service string, addr net.Addr) {
		mu.Lock()
		defer mu.Unlock()
		addrs[service] = addr
		if len(addrs) == len(kernel.Services()) {
			close(ready)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- platform.Dev(ctx, cfg, log, onReady) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("platform.Dev returned %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("platform did not shut down within 60s")
		}
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				lines := strings.Split(string(b), "\n")
				t.Logf("platform log (last 60 lines):\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
			}
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("platform stopped during start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("platform not ready within 60s")
	}
	mu.Lock()
	defer mu.Unlock()
	return &devPlatform{gateway: "http://" + addrs["gateway"].String(), dataDir: dataDir}, addrs
}

// tinyClip is the cheapest real video: 1 s of 160x120 test pattern with a tone. Its
// ladder is one rendition, so a transcode takes a fraction of a second.
func tinyClip(t *testing.T) string {
	return media.clip(t, "tiny.mp4",
		"-f", "lavfi", "-i", "testsrc=size=160x120:rate=15",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-shortest")
}

// postUpload sends one plain upload and returns the status and the video id.
func postUpload(client *http.Client, base, title string, body []byte) (int, string, error) {
	resp, err := client.Post(base+"/v1/uploads?title="+title, "video/mp4", strings.NewReader(string(body)))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", err
	}
	var out struct {
		VideoID string `json:"videoId"`
	}
	if resp.StatusCode == http.StatusCreated {
		if err := json.Unmarshal(raw, &out); err != nil {
			return resp.StatusCode, "", fmt.Errorf("%w: %s", err, raw)
		}
	}
	return resp.StatusCode, out.VideoID, nil
}

// storedEvents reads every event of a type from the stream.
func storedEvents(t *testing.T, js jetstream.JetStream, typ eventsv1.EventType) []*eventsv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.Subject(typ)}})
	must(t, err, "ordered consumer")
	var out []*eventsv1.Event
	for {
		batch, err := cons.FetchNoWait(1000)
		must(t, err, "fetch")
		n := 0
		for msg := range batch.Messages() {
			n++
			ev, err := events.Decode(msg.Data())
			must(t, err, "decode")
			out = append(out, ev)
		}
		if n == 0 {
			return out
		}
	}
}

// TestEventsSurviveNATSRestart uploads 200 files through the gateway at a steady rate
// while the NATS server is shut down and started again halfway, without restarting any
// service, then one more after the restart. Every upload is accepted and every video
// reaches READY or FAILED: each upload makes exactly one upload.completed event, one
// job, one attempt and one outcome event, and each real video one ffmpeg encode. Nothing
// is lost and nothing is applied twice.
//
// To keep the suite fast on two cores, one upload in four is a real (tiny) video that is
// transcoded to READY; the others are small text files that take the same path (upload,
// outbox, event, job, worker, transcoder) and fail at the transcoder's probe, FAILED with
// a reason, without an ffmpeg encode.
func TestEventsSurviveNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("200 uploads and transcodes with a NATS restart")
	}
	const uploads = 200
	clip, err := os.ReadFile(tinyClip(t))
	must(t, err, "read clip")
	text := []byte("this is a text file, not a video\n")
	isVideo := func(i int) bool { return i%4 == 0 }
	ffmpeg := countFFmpeg(t)
	ns := startRestartableNATS(t)
	p, addrs := startDevOn(t, ns.url(), map[string]string{"REELWAY_WORKER_CONCURRENCY": "2", "REELWAY_TRANSCODE_CONCURRENCY": "2"})

	type result struct {
		code int
		id   string
		err  error
	}
	results := make([]result, uploads)
	client := &http.Client{Timeout: 60 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond) // 20 uploads a second
	defer tick.Stop()
	var wg sync.WaitGroup
	restarted := make(chan struct{})
	begin := time.Now()
	for i := range uploads {
		<-tick.C
		if i == uploads/2 {
			// Halfway: a real restart of the server, while uploads keep coming.
			ns.stop()
			wg.Go(func() {
				time.Sleep(2 * time.Second)
				ns.start()
				close(restarted)
			})
		}
		body := text
		if isVideo(i) {
			body = clip
		}
		wg.Go(func() {
			code, id, err := postUpload(client, p.gateway, fmt.Sprintf("v%03d", i), body)
			results[i] = result{code, id, err}
		})
	}
	wg.Wait()
	<-restarted
	// One more upload after the restart, checked on its own below.
	code, lastID, err := postUpload(client, p.gateway, "after-restart", clip)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("upload after the restart: %d %v", code, err)
	}

	t.Logf("%d uploads answered in %v", uploads+1, time.Since(begin).Round(time.Millisecond))
	ids := map[string]bool{lastID: true} // video id → is a real video
	for i, r := range results {
		if r.err != nil || r.code != http.StatusCreated || r.id == "" {
			t.Errorf("upload %d: %d %q %v, want 201", i, r.code, r.id, r.err)
			continue
		}
		ids[r.id] = isVideo(i)
	}
	if len(ids) != uploads+1 {
		t.Fatalf("%d distinct videos from %d uploads", len(ids), uploads+1)
	}

	// The worker's job list says when everything is done (two calls a poll, not one per
	// video); then each video is checked once.
	worker := workerv1connect.NewWorkerServiceClient(h2cClient(), p.gateway, connect.WithGRPC())
	lastLog := time.Now()
	waitFor(t, 6*time.Minute, "every job SUCCEEDED or FAILED", func() error {
		done := 0
		for _, st := range []workerv1.JobState{workerv1.JobState_JOB_STATE_SUCCEEDED, workerv1.JobState_JOB_STATE_FAILED} {
			res, err := worker.ListJobs(context.Background(), &workerv1.ListJobsRequest{State: st, PageSize: 500})
			if err != nil {
				return err
			}
			done += len(res.GetJobs())
		}
		if done < len(ids) {
			if time.Since(lastLog) > 15*time.Second {
				lastLog = time.Now()
				t.Logf("%v: %d of %d jobs finished", time.Since(begin).Round(time.Second), done, len(ids))
			}
			return fmt.Errorf("%d of %d jobs finished", done, len(ids))
		}
		return nil
	})
	meta := metadatav1connect.NewMetadataServiceClient(http.DefaultClient, p.gateway)
	failed := map[string]string{}
	for id := range ids {
		res, err := meta.GetVideo(context.Background(), &metadatav1.GetVideoRequest{Id: id})
		must(t, err, "get video %s", id)
		switch v := res.GetVideo(); v.GetStatus() {
		case metadatav1.VideoStatus_VIDEO_STATUS_READY:
		case metadatav1.VideoStatus_VIDEO_STATUS_FAILED:
			failed[id] = v.GetFailureReason()
		default:
			t.Errorf("video %s is %v after its job finished", id, v.GetStatus())
		}
	}
	t.Logf("every video READY or FAILED %v after the first upload", time.Since(begin).Round(time.Millisecond))
	for id, video := range ids {
		why, isFailed := failed[id]
		switch {
		case video && isFailed:
			t.Errorf("video %s FAILED: %s", id, why)
		case !video && !isFailed:
			t.Errorf("text file %s became READY", id)
		case !video && !strings.Contains(why, "decodable"):
			t.Errorf("text file %s failed with %q, want a readable reason", id, why)
		}
	}

	nc, err := nats.Connect(ns.url())
	must(t, err, "connect nats")
	defer nc.Close()
	js, err := jetstream.New(nc)
	must(t, err, "jetstream")
	count := func(typ eventsv1.EventType) map[string]int {
		out := map[string]int{}
		for _, ev := range storedEvents(t, js, typ) {
			out[ev.GetSubjectId()]++
		}
		return out
	}
	var completed, created, started, ready, tfailed map[string]int
	// Events an outbox stored while NATS was down go out on its next attempt, which may
	// come after the jobs are done (its backoff grows while the server is away): poll
	// until every video has its events, then check each count exactly.
	complete := func() error {
		completed = count(eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED)
		created = count(eventsv1.EventType_EVENT_TYPE_VIDEO_CREATED)
		started = count(eventsv1.EventType_EVENT_TYPE_TRANSCODE_STARTED)
		ready = count(eventsv1.EventType_EVENT_TYPE_VIDEO_READY)
		tfailed = count(eventsv1.EventType_EVENT_TYPE_TRANSCODE_FAILED)
		for id := range ids {
			if completed[id] == 0 || created[id] == 0 || started[id] == 0 || ready[id]+tfailed[id] == 0 {
				return fmt.Errorf("%s: %d upload.completed, %d video.created, %d transcode.started, %d video.ready, %d transcode.failed so far",
					id, completed[id], created[id], started[id], ready[id], tfailed[id])
			}
		}
		return nil
	}
	waitFor(t, time.Minute, "every video's events stored", complete)
	encodes := ffmpeg.encodes(t)
	for id, video := range ids {
		wantReady, wantFailed, wantEncodes, wantState := 1, 0, 1, workerv1.JobState_JOB_STATE_SUCCEEDED
		if !video {
			wantReady, wantFailed, wantEncodes, wantState = 0, 1, 0, workerv1.JobState_JOB_STATE_FAILED
		}
		if completed[id] != 1 || created[id] != 1 || started[id] != 1 || ready[id] != wantReady || tfailed[id] != wantFailed {
			t.Errorf("%s: %d upload.completed, %d video.created, %d transcode.started, %d video.ready, %d transcode.failed events; want 1, 1, 1, %d, %d",
				id, completed[id], created[id], started[id], ready[id], tfailed[id], wantReady, wantFailed)
		}
		if encodes[id] != wantEncodes {
			t.Errorf("%s: ffmpeg encoded it %d times, want %d", id, encodes[id], wantEncodes)
		}
		res, err := worker.ListJobs(context.Background(), &workerv1.ListJobsRequest{VideoId: id})
		if err != nil {
			t.Fatalf("list jobs: %v", err)
		}
		if jobs := res.GetJobs(); len(jobs) != 1 || jobs[0].GetState() != wantState || jobs[0].GetAttempt() != 1 {
			t.Errorf("%s: jobs %v, want one %v after one attempt", id, jobs, wantState)
		}
	}

	// The restart shows in every process's health report.
	resp, err := http.Get("http://" + addrs["upload"].String() + "/healthz")
	must(t, err, "healthz")
	var health struct {
		Detail struct {
			NATS events.Status `json:"nats"`
		} `json:"detail"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&health), "decode healthz")
	resp.Body.Close()
	if st := health.Detail.NATS; !st.Connected || st.Reconnects < 1 || st.LastError == "" {
		t.Errorf("healthz nats = %+v, want connected after a reconnect, with the last error", st)
	}
	// And in the gateway's metrics (one process, one connection, in dev).
	resp, metrics := p.get(t, "/metrics")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(metrics), "reelway_nats_connected 1") ||
		!strings.Contains(string(metrics), "reelway_nats_reconnects_total ") || strings.Contains(string(metrics), "reelway_nats_reconnects_total 0\n") {
		t.Errorf("metrics: %d, want the NATS connection up after a reconnect:\n%s", resp.StatusCode, grepLines(string(metrics), "reelway_nats_"))
	}
}

func grepLines(text, substr string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
