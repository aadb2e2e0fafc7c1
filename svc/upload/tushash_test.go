package upload_test

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/reelway/reelway/svc/rpc"
	"github.com/reelway/reelway/svc/upload"
)

// logBuffer keeps what a logger writes, to look for events in it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

// startLoggedUpload serves another upload service over e's data directory, metadata and
// NATS whose log lines also go to logs.
func (e *env) startLoggedUpload(t *testing.T, logs *logBuffer) *tusClient {
	t.Helper()
	w := &quietWriter{w: t.Output()}
	t.Cleanup(w.stop)
	log := slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(io.MultiWriter(w, logs), &slog.HandlerOptions{Level: slog.LevelDebug})})
	svc := upload.New(log, upload.Config{DataDir: e.dataDir, MaxBytes: testMaxBytes}, e.bus, e.meta, e.auth)
	return &tusClient{base: serve(t, log, svc), c: e.h2c}
}

// hashState reads an upload's sha256 state file: the offset it covers and the digest state.
func (e *env) hashState(t *testing.T, id string) (int64, []byte, bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dataDir, "tus", id+".sha256"))
	if os.IsNotExist(err) {
		return 0, nil, false
	}
	if err != nil {
		t.Fatalf("read sha256 state: %v", err)
	}
	var st struct {
		Offset int64  `json:"offset"`
		Digest []byte `json:"digest"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("sha256 state %q: %v", b, err)
	}
	return st.Offset, st.Digest, true
}

// digestState is the sha256 digest state after b, as a state file holds it.
func digestState(t *testing.T, b []byte) []byte {
	t.Helper()
	h := sha256.New()
	_, _ = h.Write(b)
	st, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestTusHashCarriedForward checks that the PATCHes of an upload hash the bytes they store,
// so that its sha256 is known at the last byte without reading the file again, and that a
// state file that is lost, torn or behind the bytes only costs that second read: the
// recorded sha256 is right every time.
func TestTusHashCarriedForward(t *testing.T) {
	e := newEnv(t)
	logs := &logBuffer{}
	a, b := e.startLoggedUpload(t, logs), e.startLoggedUpload(t, logs)
	const part = 16 << 10
	cases := []struct {
		name string
		// second is the service that gets the PATCHes after the first.
		second *tusClient
		// meddle changes the state file after the PATCH that stored the first n parts.
		meddle func(t *testing.T, path string, n int, saved []byte)
		rehash bool
	}{
		{name: "kept", second: a},
		{name: "PATCHes to another process sharing the data directory", second: b},
		{name: "lost", second: a, rehash: true, meddle: func(t *testing.T, path string, n int, _ []byte) {
			if n == 1 {
				must(t, os.Remove(path))
			}
		}},
		{name: "torn", second: a, rehash: true, meddle: func(t *testing.T, path string, n int, _ []byte) {
			if n == 1 {
				must(t, os.WriteFile(path, []byte(`{"offset":16384,"digest":"c2hhA`), 0o640))
			}
		}},
		{name: "not a sha256 state", second: a, rehash: true, meddle: func(t *testing.T, path string, n int, _ []byte) {
			if n == 1 {
				must(t, os.WriteFile(path, []byte(`{"offset":16384,"digest":"AAAA"}`), 0o640))
			}
		}},
		{name: "behind the bytes", second: a, rehash: true, meddle: func(t *testing.T, path string, n int, saved []byte) {
			if n == 2 {
				must(t, os.WriteFile(path, saved, 0o640)) // the state after the first part
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			completed := e.subscribeCompleted(t)
			data := randomBytes(t, 3*part)
			loc := a.mustCreate(t, len(data), "Hashed")
			id := idOf(t, loc)
			state := filepath.Join(e.dataDir, "tus", id+".sha256")
			var saved []byte
			for n := 1; n <= 3; n++ {
				c := a
				if n > 1 {
					c = tc.second
				}
				off := (n - 1) * part
				if res, body := c.patch(t, c.base+upload.TusPath+id, off, data[off:off+part], nil); res.StatusCode != http.StatusNoContent {
					t.Fatalf("PATCH %d: %d %s", n, res.StatusCode, body)
				}
				if n == 3 {
					break
				}
				if tc.meddle == nil || n == 1 {
					// Every PATCH left the digest of exactly the bytes stored.
					at, digest, ok := e.hashState(t, id)
					if !ok || at != int64(n*part) || !bytes.Equal(digest, digestState(t, data[:n*part])) {
						t.Fatalf("after PATCH %d: state for offset %d (found %v), want the digest of the first %d bytes", n, at, ok, n*part)
					}
				}
				if n == 1 {
					var err error
					saved, err = os.ReadFile(state)
					must(t, err)
				}
				if tc.meddle != nil {
					tc.meddle(t, state, n, saved)
				}
			}
			e.checkStored(t, completed, id, int64(len(data)), sum(data), "Hashed")
			if got := logs.has("msg=upload.tus_rehash video_id=" + id); got != tc.rehash {
				t.Errorf("file read again at the end: %v, want %v", got, tc.rehash)
			}
			if _, err := os.Stat(state); !os.IsNotExist(err) {
				t.Errorf("sha256 state left after the upload finished: %v", err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
