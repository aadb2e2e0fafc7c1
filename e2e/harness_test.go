// Package e2e_test proves the platform end to end: the whole platform in one process
// (`reelway dev`), and the nine services as separate processes against a real Consul agent
// and a real NATS server.
package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// repoRoot is the module root, one folder up from this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

// handedOut remembers the ports freePort returned: the kernel may offer a port again once
// its probe listener closes, and two processes of one test given the same port would make
// one of them fail to start.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freePort asks the kernel for a free TCP port on loopback, never the same one twice in a
// test binary.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		handedOut.Lock()
		seen := handedOut.ports[port]
		handedOut.ports[port] = true
		handedOut.Unlock()
		if !seen {
			return port
		}
	}
	t.Fatal("no fresh free port")
	return 0
}

// h2cClient speaks HTTP/2 without TLS, as gRPC clients do.
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// clips caches generated media per test binary: ffmpeg is slow on two cores.
type clips struct {
	mu    sync.Mutex
	dir   string
	paths map[string]string
}

var media = &clips{paths: map[string]string{}}

// clip generates (once) a test video: lavfi testsrc with a sine tone.
func (c *clips) clip(t testing.TB, name string, args ...string) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.paths[name]; ok {
		return p
	}
	if c.dir == "" {
		d, err := os.MkdirTemp("", "reelway-e2e-media-")
		if err != nil {
			t.Fatal(err)
		}
		c.dir = d
	}
	p := filepath.Join(c.dir, name)
	cmd := exec.Command("ffmpeg", append(append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...), p)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", name, err, out)
	}
	c.paths[name] = p
	return p
}

// fiveSecondClip is the standard source: 5 s of 1280x720 test pattern with a 440 Hz tone.
func fiveSecondClip(t testing.TB) string {
	return media.clip(t, "clip.mp4",
		"-f", "lavfi", "-i", "testsrc=size=1280x720:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "5", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-shortest", "-movflags", "+faststart")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if media.dir != "" {
		os.RemoveAll(media.dir)
	}
	os.Exit(code)
}

// ffprobeDuration decodes a media file fully and returns its duration in seconds.
func ffprobeDecode(t testing.TB, path string) {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-v", "error", "-i", path, "-f", "null", "-")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("ffmpeg could not decode %s: %v\n%s", path, err, out)
	}
	probe := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", path)
	out, err = probe.Output()
	if err != nil || !strings.Contains(string(out), "video") {
		t.Fatalf("ffprobe found no video stream in %s: %v %q", path, err, out)
	}
}

func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func itoa(n int) string { return strconv.Itoa(n) }

func must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}
