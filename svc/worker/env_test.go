package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
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

// env is a real metadata service and a real transcoder over h2c, a real embedded NATS,
// and a worker whose transcoder calls are counted (and, when a test asks, disturbed).
type env struct {
	t       *testing.T
	log     *slog.Logger
	dataDir string
	bus     *events.Bus
	meta    metadatav1connect.MetadataServiceClient
	tc      *countingTranscoder
	h2c     *http.Client
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

	tcSvc := transcoder.New(log, transcoder.Config{DataDir: dir}, bus)
	tc := transcoderv1connect.NewTranscoderServiceClient(h2c, serve(t, log, tcSvc))

	return &env{
		t:       t,
		log:     log,
		dataDir: dir,
		bus:     bus,
		meta:    meta,
		tc:      &countingTranscoder{next: tc, calls: map[string]int{}, transient: map[string]int{}},
		h2c:     h2c,
	}
}

// startWorker runs a fresh worker (empty job table) until the returned stop is called or
// the test ends; stop waits for Start to return.
func (e *env) startWorker(cfg worker.Config) (*worker.Service, string, func()) {
	e.t.Helper()
	w := worker.New(e.log, cfg, e.bus.JetStream(), e.bus, e.meta, e.tc)
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
			case <-time.After(30 * time.Second):
				e.t.Errorf("Start did not return after its context ended")
			}
		})
	}
	e.t.Cleanup(stop)
	return w, url, stop
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

// uploadCompleted announces a stored video as the upload service does.
func (e *env) uploadCompleted(id string) {
	e.t.Helper()
	if err := e.bus.Publish(e.t.Context(), events.UploadCompleted("upload", id, 1, "")); err != nil {
		e.t.Fatalf("publish upload.completed: %v", err)
	}
}

// waitVideo polls until the video reaches a final state and returns it.
func (e *env) waitVideo(id string) *metadatav1.Video {
	e.t.Helper()
	var v *metadatav1.Video
	waitFor(e.t, 60*time.Second, "video "+id+" READY or FAILED", func() bool {
		res, err := e.meta.GetVideo(e.t.Context(), &metadatav1.GetVideoRequest{Id: id})
		if err != nil {
			return false
		}
		v = res.GetVideo()
		s := v.GetStatus()
		return s == metadatav1.VideoStatus_VIDEO_STATUS_READY || s == metadatav1.VideoStatus_VIDEO_STATUS_FAILED
	})
	return v
}

// waitSettled polls until the worker's consumer has nothing pending or unacknowledged: every
// job delivered so far is acked or terminated and none will be redelivered.
func (e *env) waitSettled() *jetstream.ConsumerInfo {
	e.t.Helper()
	var info *jetstream.ConsumerInfo
	waitFor(e.t, 30*time.Second, "consumer settled", func() bool {
		cons, err := e.bus.JetStream().Consumer(e.t.Context(), events.StreamName, worker.ConsumerName)
		if err != nil {
			return false
		}
		info, err = cons.Info(e.t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	})
	return info
}

func (e *env) workerClient(url string, opts ...connect.ClientOption) workerv1connect.WorkerServiceClient {
	return workerv1connect.NewWorkerServiceClient(e.h2c, url, opts...)
}

// makeClip encodes a one-second 160x120 clip with sound.
func makeClip(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "clip.mp4")
	cmd := exec.CommandContext(t.Context(), "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc=size=160x120:rate=15", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	return out
}

// countingTranscoder counts Transcode calls per video, can fail the first calls of a video
// with a transient error, and can slow every call down.
type countingTranscoder struct {
	next worker.Transcoder

	mu        sync.Mutex
	calls     map[string]int
	transient map[string]int // video → how many calls fail with unavailable
	delay     time.Duration
}

var _ worker.Transcoder = (*countingTranscoder)(nil)

func (c *countingTranscoder) Transcode(ctx context.Context, req *transcoderv1.TranscodeRequest) (*transcoderv1.TranscodeResponse, error) {
	c.mu.Lock()
	c.calls[req.GetVideoId()]++
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
	return c.calls[id]
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
	srv := rpc.NewServer(log, nil)
	if err := p.Mount(srv); err != nil {
		t.Fatalf("mount: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = hs.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
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
