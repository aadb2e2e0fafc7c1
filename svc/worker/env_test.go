package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/gen/reelway/transcoder/v1/transcoderv1connect"
	"github.com/reelway/reelway/gen/reelway/worker/v1/workerv1connect"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/metadata"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/reelway/reelway/svc/transcoder"
	"github.com/reelway/reelway/svc/worker"
)

// env is a real metadata service, a real transcoder over h2c (whose ffmpeg runs through a
// wrapper script that logs every run and can slow it down to real time), a real embedded
// NATS, and workers sharing one job store whose transcoder calls are counted (and, when a
// test asks, disturbed).
type env struct {
	t       *testing.T
	log     *slog.Logger
	dataDir string
	bus     *events.Bus
	meta    metadatav1connect.MetadataServiceClient
	tc      *countingTranscoder
	tcSrv   *restartable
	h2c     *http.Client
	ffmpeg  *ffmpegWrapper
}

func newEnv(t *testing.T) *env {
	t.Helper()
	log := testLogger(t)
	ctx := t.Context()
	dir := t.TempDir()

	ns, err := events.StartServer("127.0.0.1", 0, dir)
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(ns.Shutdown)
	bus, err := events.Connect(ctx, ns.URL(), "test", log)
	if err != nil {
		t.Fatalf("connect nats: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = bus.Close(cctx)
	})
	if err := bus.EnsureStream(ctx, time.Hour, 1<<30); err != nil {
		t.Fatalf("ensure stream: %v", err)
	}

	h2c := &http.Client{Transport: rpc.NewH2CTransport()}
	metaSvc, err := metadata.Open(ctx, filepath.Join(dir, "meta"), log, bus)
	if err != nil {
		t.Fatalf("open metadata: %v", err)
	}
	t.Cleanup(func() { _ = metaSvc.Close() })
	meta := metadatav1connect.NewMetadataServiceClient(h2c, serve(t, log, metaSvc))

	ff := newFFmpegWrapper(t)
	tcSvc := transcoder.New(log, transcoder.Config{DataDir: dir, FFmpegPath: ff.path, MaxConcurrent: 4}, bus)
	tcSrv := newRestartable(t, log, tcSvc)
	tc := transcoderv1connect.NewTranscoderServiceClient(h2c, tcSrv.url)

	return &env{
		t:       t,
		log:     log,
		dataDir: dir,
		bus:     bus,
		meta:    meta,
		tc:      &countingTranscoder{next: tc, calls: map[string][]time.Time{}, transient: map[string]int{}},
		tcSrv:   tcSrv,
		h2c:     h2c,
		ffmpeg:  ff,
	}
}

// runningWorker is a worker started by the test.
type runningWorker struct {
	svc    *worker.Service
	url    string
	stop   func()
	client workerv1connect.WorkerServiceClient
}

// startWorker runs a worker on the shared job store until stop is called or the test
// ends; stop waits for Start to return and closes the worker. The store is in a folder of
// its own unless cfg.DataDir names one (the platform's data directory, where the worker
// also finds the files it removes for deleted videos).
func (e *env) startWorker(name string, cfg worker.Config) *runningWorker {
	e.t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(e.dataDir, "worker")
	}
	cfg.Instance = name
	w, err := worker.Open(e.t.Context(), e.log, cfg, e.bus, e.bus, e.meta, e.tc)
	if err != nil {
		e.t.Fatalf("open worker: %v", err)
	}
	url := serve(e.t, e.log, w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Start returned %v", err)
				}
			case <-time.After(60 * time.Second):
				e.t.Errorf("Start did not return after its context ended")
			}
			_ = w.Close()
		})
	}
	e.t.Cleanup(stop)
	return &runningWorker{svc: w, url: url, stop: stop, client: e.workerClient(url)}
}

// addVideo creates a PROCESSING video whose source holds the given file's bytes.
func (e *env) addVideo(srcFile string) string {
	e.t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "vid" + hex.EncodeToString(b[:])
	data, err := os.ReadFile(srcFile)
	if err != nil {
		e.t.Fatal(err)
	}
	dir := filepath.Join(e.dataDir, "uploads", id)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "source"), data, 0o640); err != nil {
		e.t.Fatal(err)
	}
	_, err = e.meta.CreateVideo(e.t.Context(), &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{
		Id:        id,
		Title:     "test " + id,
		Status:    metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING,
		SizeBytes: int64(len(data)),
	}})
	if err != nil {
		e.t.Fatalf("create video: %v", err)
	}
	return id
}

// uploadCompleted announces a stored video as the upload service does and returns the
// event.
func (e *env) uploadCompleted(id string) *eventsv1.Event {
	e.t.Helper()
	ev := events.UploadCompleted("upload", id, 1, "")
	if err := e.bus.Publish(e.t.Context(), ev); err != nil {
		e.t.Fatalf("publish upload.completed: %v", err)
	}
	return ev
}

// waitVideo polls until the video reaches a final state and returns it.
func (e *env) waitVideo(id string) *metadatav1.Video {
	e.t.Helper()
	return e.waitStatus(id, 60*time.Second, metadatav1.VideoStatus_VIDEO_STATUS_READY, metadatav1.VideoStatus_VIDEO_STATUS_FAILED)
}

func (e *env) waitStatus(id string, timeout time.Duration, want ...metadatav1.VideoStatus) *metadatav1.Video {
	e.t.Helper()
	var v *metadatav1.Video
	waitFor(e.t, timeout, "video "+id+" in "+strings.Join(statusNames(want), "/"), func() bool {
		res, err := e.meta.GetVideo(e.t.Context(), &metadatav1.GetVideoRequest{Id: id})
		if err != nil {
			return false
		}
		v = res.GetVideo()
		for _, s := range want {
			if v.GetStatus() == s {
				return true
			}
		}
		return false
	})
	return v
}

func statusNames(s []metadatav1.VideoStatus) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x.String()
	}
	return out
}

// waitSettled polls until the jobs consumer has nothing pending or unacknowledged: every
// job delivered so far is acknowledged or terminated and none waits for a redelivery.
func (e *env) waitSettled() *jetstream.ConsumerInfo {
	e.t.Helper()
	var info *jetstream.ConsumerInfo
	waitFor(e.t, 60*time.Second, "jobs consumer settled", func() bool {
		cons, err := e.bus.JetStream().Consumer(e.t.Context(), worker.JobsStream, worker.JobsConsumer)
		if err != nil {
			return false
		}
		info, err = cons.Info(e.t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	return info
}

// events returns the stored events of a type, oldest first.
func (e *env) events(typ eventsv1.EventType) []*eventsv1.Event {
	e.t.Helper()
	return e.stored(events.StreamName, events.Subject(typ), func(data []byte) *eventsv1.Event {
		ev, err := events.Decode(data)
		if err != nil {
			e.t.Fatalf("decode %s: %v", events.Name(typ), err)
		}
		return ev
	})
}

// eventsFor keeps the events about one subject id.
func eventsFor(evs []*eventsv1.Event, subject string) []*eventsv1.Event {
	var out []*eventsv1.Event
	for _, ev := range evs {
		if ev.GetSubjectId() == subject {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) stored(stream, subject string, decode func([]byte) *eventsv1.Event) []*eventsv1.Event {
	e.t.Helper()
	cons, err := e.bus.JetStream().OrderedConsumer(e.t.Context(), stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*eventsv1.Event
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			out = append(out, decode(msg.Data()))
		}
		if n == 0 {
			return out
		}
	}
}

func (e *env) workerClient(url string, opts ...connect.ClientOption) workerv1connect.WorkerServiceClient {
	return workerv1connect.NewWorkerServiceClient(e.h2c, url, opts...)
}

// makeClip encodes a 160x120 clip with sound of the given length.
func makeClip(t *testing.T, seconds int) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "clip.mp4")
	cmd := exec.CommandContext(t.Context(), "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc=size=160x120:rate=15", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", itoa(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	return out
}

func itoa(n int) string { return strconv.Itoa(n) }

// ffmpegWrapper is the transcoder's ffmpeg: a script that appends its pid and arguments
// to a log, then runs the real ffmpeg; while the slow flag file exists, the HLS encode
// reads its input at real-time speed (-re), so it lasts as long as the clip. The log is the transcoder's own trace of every ffmpeg it started.
type ffmpegWrapper struct {
	path, log, slowFlag string
}

func newFFmpegWrapper(t *testing.T) *ffmpegWrapper {
	t.Helper()
	real, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Skip("ffmpeg not installed")
	}
	dir := t.TempDir()
	w := &ffmpegWrapper{path: filepath.Join(dir, "ffmpeg"), log: filepath.Join(dir, "ffmpeg.log"), slowFlag: filepath.Join(dir, "slow")}
	script := "#!/bin/sh\n" +
		"echo \"$$ $*\" >> '" + w.log + "'\n" +
		"case \"$*\" in *'-f hls'*) if [ -e '" + w.slowFlag + "' ]; then exec '" + real + "' -re \"$@\"; fi;; esac\n" +
		"exec '" + real + "' \"$@\"\n"
	if err := os.WriteFile(w.path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return w
}

// slow makes every following ffmpeg run read its input at real time.
func (w *ffmpegWrapper) slow(t *testing.T, on bool) {
	t.Helper()
	if on {
		if err := os.WriteFile(w.slowFlag, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	_ = os.Remove(w.slowFlag)
}

// encodes returns the log lines of the HLS encodes of a video (one per ffmpeg encode).
func (w *ffmpegWrapper) encodes(t *testing.T, videoID string) []string {
	t.Helper()
	b, err := os.ReadFile(w.log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "/uploads/"+videoID+"/") && strings.Contains(line, "-f hls") {
			out = append(out, line)
		}
	}
	return out
}

// countingTranscoder records the Transcode calls per video, can fail the first calls of
// a video with a transient error, and can slow every call down.
type countingTranscoder struct {
	next worker.Transcoder

	mu        sync.Mutex
	calls     map[string][]time.Time
	transient map[string]int // video → how many calls fail with unavailable
	delay     time.Duration
}

var _ worker.Transcoder = (*countingTranscoder)(nil)

func (c *countingTranscoder) Transcode(ctx context.Context, req *transcoderv1.TranscodeRequest) (*transcoderv1.TranscodeResponse, error) {
	c.mu.Lock()
	c.calls[req.GetVideoId()] = append(c.calls[req.GetVideoId()], time.Now())
	fail := c.transient[req.GetVideoId()] > 0
	if fail {
		c.transient[req.GetVideoId()]--
	}
	delay := c.delay
	c.mu.Unlock()
	if fail {
		return nil, connect.NewError(connect.CodeUnavailable, io.ErrUnexpectedEOF)
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.next.Transcode(ctx, req)
}

func (c *countingTranscoder) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls[id])
}

func (c *countingTranscoder) times(id string) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.calls[id]...)
}

func (c *countingTranscoder) failTransiently(id string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.transient[id] = n
}

func (c *countingTranscoder) slowDown(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delay = d
}

type plugin interface {
	Mount(srv *rpc.Server) error
}

// serve runs p on an h2c listener, as the kernel does, and returns its base URL.
func serve(t *testing.T, log *slog.Logger, p plugin) string {
	t.Helper()
	r := newRestartable(t, log, p)
	return r.url
}

// restartable serves a plugin on a fixed address that can be stopped (connections
// refused, as when the service is down) and started again.
type restartable struct {
	t    *testing.T
	log  *slog.Logger
	h    http.Handler
	addr string
	url  string

	mu   sync.Mutex
	hs   *http.Server
	done chan struct{}
}

func newRestartable(t *testing.T, log *slog.Logger, p plugin) *restartable {
	t.Helper()
	srv := rpc.NewServer(log, nil)
	if err := p.Mount(srv); err != nil {
		t.Fatalf("mount: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	r := &restartable{t: t, log: log, h: srv.Handler(), addr: ln.Addr().String()}
	r.url = "http://" + r.addr
	r.serve(ln)
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) serve(ln net.Listener) {
	hs := rpc.NewHTTPServer(r.h, r.log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	r.mu.Lock()
	r.hs, r.done = hs, done
	r.mu.Unlock()
}

func (r *restartable) stop() {
	r.mu.Lock()
	hs, done := r.hs, r.done
	r.hs = nil
	r.mu.Unlock()
	if hs != nil {
		_ = hs.Close()
		<-done
	}
}

func (r *restartable) start() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("listen again on %s: %v", r.addr, err)
	}
	r.serve(ln)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLogger writes to the test's output and goes quiet once the test is over, so a late
// log line from a background goroutine cannot fail the run.
func testLogger(t *testing.T) *slog.Logger {
	w := &quietWriter{w: t.Output()}
	t.Cleanup(w.stop)
	return slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})})
}

type quietWriter struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (q *quietWriter) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done {
		return len(p), nil
	}
	return q.w.Write(p)
}

func (q *quietWriter) stop() {
	q.mu.Lock()
	q.done = true
	q.mu.Unlock()
}
