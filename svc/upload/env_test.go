package upload_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/gen/reelway/upload/v1/uploadv1connect"
	"github.com/reelway/reelway/svc/auth"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/metadata"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/reelway/reelway/svc/upload"
	"golang.org/x/crypto/bcrypt"
)

// testMaxBytes keeps oversize cases small.
const testMaxBytes = 64 << 10

// testAuthSecret signs the test auth service's tokens, so tests can make expired ones.
var testAuthSecret = []byte("upload-test-auth-secret-32-bytes")

// env is a real upload service wired to a real metadata service, a real auth service and a
// real embedded NATS.
type env struct {
	dataDir string
	bus     *events.Bus
	meta    metadatav1connect.MetadataServiceClient
	auth    authv1connect.AuthServiceClient
	url     string
	h1      *http.Client
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

	metaSvc, err := metadata.Open(ctx, filepath.Join(dir, "meta"), log, bus)
	if err != nil {
		t.Fatalf("open metadata: %v", err)
	}
	t.Cleanup(func() { _ = metaSvc.Close() })
	h2c := &http.Client{Transport: rpc.NewH2CTransport()}
	metaURL := serve(t, log, metaSvc)
	meta := metadatav1connect.NewMetadataServiceClient(h2c, metaURL)

	authSvc, err := auth.Open(ctx, filepath.Join(dir, "auth"), testAuthSecret, log, nil, auth.WithBcryptCost(bcrypt.MinCost))
	if err != nil {
		t.Fatalf("open auth: %v", err)
	}
	t.Cleanup(func() { _ = authSvc.Close() })
	users := authv1connect.NewAuthServiceClient(h2c, serve(t, log, authSvc))

	svc := upload.New(log, upload.Config{DataDir: dir, MaxBytes: testMaxBytes}, bus, meta, users)
	return &env{
		dataDir: dir,
		bus:     bus,
		meta:    meta,
		auth:    users,
		url:     serve(t, log, svc),
		h1:      &http.Client{Timeout: 30 * time.Second},
		h2c:     h2c,
	}
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

// uploadClient returns an Upload client speaking the Connect protocol, or gRPC with
// connect.WithGRPC().
func (e *env) uploadClient(opts ...connect.ClientOption) uploadv1connect.UploadServiceClient {
	return uploadv1connect.NewUploadServiceClient(e.h2c, e.url, opts...)
}

// uploadEntries lists <dataDir>/uploads; a missing folder counts as empty.
func (e *env) uploadEntries(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.dataDir, "uploads"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("read uploads: %v", err)
	}
	var names []string
	for _, de := range entries {
		names = append(names, de.Name())
	}
	return names
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
