package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reelway/reelway/gateway"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/gen/reelway/transcoder/v1/transcoderv1connect"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
)

// hugeLength is the Content-Length an over-size upload announces (10 GiB).
const hugeLength = 10 << 30

// uploadLimit is the stand-in upload service's size limit.
const uploadLimit = 1 << 20

// plainBackend is a stand-in for the upload or streaming service: a real net/http server
// behind the gateway that records what reached it.
type plainBackend struct {
	id    string
	hits  atomic.Int64
	mu    sync.Mutex
	paths []string // escaped paths of the requests that reached it
	heads []http.Header
	// bodyEnded receives, for each request the backend answered early and then kept
	// reading (fullDuplex), how many body bytes it got before the body ended.
	bodyEnded chan int64
}

func (b *plainBackend) record(r *http.Request) {
	b.hits.Add(1)
	b.mu.Lock()
	b.paths = append(b.paths, r.URL.EscapedPath())
	b.heads = append(b.heads, r.Header.Clone())
	b.mu.Unlock()
}

// lastHeader returns the headers of the last request that reached the backend.
func (b *plainBackend) lastHeader() http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.heads) == 0 {
		return nil
	}
	return b.heads[len(b.heads)-1]
}

func (b *plainBackend) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.paths...)
}

// addPlainBackend starts a backend registered under a service name the gateway routes
// plain paths to ("upload", "streaming") and waits until the gateway can resolve it.
func (f *fixture) addPlainBackend(t *testing.T, name string, mount func(*rpc.Server, *plainBackend)) *plainBackend {
	t.Helper()
	b := &plainBackend{bodyEnded: make(chan int64, 16)}
	srv := rpc.NewServer(quiet(), nil)
	mount(srv, b)
	base, _ := listen(t, srv.Handler())
	_, portS, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	port, _ := net.LookupPort("tcp", portS)
	b.id = registry.InstanceID(name, port)
	err := f.reg.Register(context.Background(), registry.Registration{
		Instance:  registry.Instance{ID: b.id, Name: name, Address: "127.0.0.1", Port: port},
		HealthURL: base + "/healthz", CheckInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, name+" routed", func() error {
		_, err := f.cat.Resolve(context.Background(), name)
		return err
	})
	return b
}

// mountUpload serves what the upload service serves, the way it answers an over-size
// upload: at once, from the headers. POST /v1/uploads says Connection: close and returns
// as the upload service does; the tus endpoint sends its whole answer (with its length),
// then keeps reading (full duplex), so the test sees whether the gateway stops sending
// the rest of the body once the answer is through.
func mountUpload(srv *rpc.Server, b *plainBackend) {
	srv.Handle("POST /v1/uploads", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.record(r)
		if r.ContentLength > uploadLimit {
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			fmt.Fprintf(w, `{"code":"resource_exhausted","message":"%d bytes announced"}`+"\n", r.ContentLength)
			return
		}
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"sizeBytes":%d}`+"\n", n)
	}))
	tus := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.record(r)
		if r.ContentLength <= uploadLimit {
			n, _ := io.Copy(io.Discard, r.Body)
			w.Header().Set("Upload-Offset", fmt.Sprint(n))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		const msg = "ERR_MAX_SIZE_EXCEEDED: maximum size exceeded\n"
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", fmt.Sprint(len(msg)))
		w.Header().Set("Tus-Resumable", "1.0.0")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = io.WriteString(w, msg)
		_ = rc.Flush()
		n, _ := io.Copy(io.Discard, r.Body)
		b.bodyEnded <- n
	})
	srv.Handle("POST /v1/uploads/tus/", tus)
	srv.Handle("PATCH /v1/uploads/tus/", tus)
}

// mountStreaming serves GET and OPTIONS under /v1/hls/ as the streaming service does.
func mountStreaming(srv *rpc.Server, b *plainBackend) {
	srv.Handle("GET /v1/hls/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.record(r)
		w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
		_, _ = io.WriteString(w, "#EXTM3U\n")
	}))
	srv.Handle("OPTIONS /v1/hls/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.record(r)
		w.Header().Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
	}))
}

// rawExchange sends a request written by hand (path as is, no client-side cleaning) on a
// new connection and reads the response, all within a deadline.
func rawExchange(t *testing.T, base, request string, deadline time.Duration) (*http.Response, []byte, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response within %v: %v", deadline, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("response body: %v", err)
	}
	return resp, body, br
}

// TestGatewayRelaysEarlyAnswers sends uploads announcing 10 GiB, then a few bytes, then
// nothing: the backend refuses them from their headers, and the caller must get that
// answer at once, through HTTP/1.1 and h2c alike, with the rest of the body no longer
// forwarded and the breaker untouched.
func TestGatewayRelaysEarlyAnswers(t *testing.T) {
	f := setup(t, 1, gateway.Options{Breaker: rpc.BreakerConfig{FailureThreshold: 2, Window: 4, Delay: time.Minute}})
	up := f.addPlainBackend(t, "upload", mountUpload)
	// Generous for a loaded machine, and far below "never": without the relay the answer
	// only comes when the caller gives up.
	const patience = 20 * time.Second
	tests := []struct {
		name, method, path string
		// keepsReading: the backend reads on after answering; the gateway must end that
		// body (the backend reports how much it got).
		keepsReading bool
		wantBody     string
	}{
		{"plain upload", http.MethodPost, "/v1/uploads?title=big", false, `"resource_exhausted"`},
		{"tus creation with upload", http.MethodPost, "/v1/uploads/tus/", true, "ERR_MAX_SIZE_EXCEEDED"},
		{"tus patch", http.MethodPatch, "/v1/uploads/tus/abc", true, "ERR_MAX_SIZE_EXCEEDED"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/http1", func(t *testing.T) {
			req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/offset+octet-stream\r\n"+
				"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n\r\n0123456789", tt.method, tt.path, int64(hugeLength))
			resp, body, br := rawExchange(t, f.gateway, req, patience)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), tt.wantBody) {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if !resp.Close {
				t.Errorf("no Connection: close on an answer that leaves the body unread: %v", resp.Header)
			}
			// The gateway closes the connection after the answer, as net/http does.
			if n, err := br.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Errorf("connection still open after the answer: read %d, %v", n, err)
			}
			if tt.keepsReading {
				select {
				case n := <-up.bodyEnded:
					if n > 10 {
						t.Errorf("backend got %d body bytes, the caller sent 10", n)
					}
				case <-time.After(patience):
					t.Fatal("the gateway kept the backend's request body open")
				}
			}
		})
		t.Run(tt.name+"/h2c", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			pr, pw := io.Pipe()
			t.Cleanup(func() { pw.Close() })
			go func() { _, _ = pw.Write([]byte("0123456789")) }()
			req, _ := http.NewRequestWithContext(ctx, tt.method, f.gateway+tt.path, pr)
			req.ContentLength = hugeLength
			req.Header.Set("Content-Type", "application/offset+octet-stream")
			req.Header.Set("Tus-Resumable", "1.0.0")
			req.Header.Set("Upload-Offset", "0")
			resp, err := h2c().Do(req)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("answer body: %v", err)
			}
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), tt.wantBody) {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if tt.keepsReading {
				select {
				case n := <-up.bodyEnded:
					if n > 10 {
						t.Errorf("backend got %d body bytes, the caller sent 10", n)
					}
				case <-time.After(patience):
					t.Fatal("the gateway kept the backend's request body open")
				}
			}
		})
	}
	// A caller that waits for 100 Continue is never asked for the body: the first answer
	// it gets is the backend's 413.
	t.Run("expect 100-continue", func(t *testing.T) {
		req := fmt.Sprintf("POST /v1/uploads?title=big HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", int64(hugeLength))
		resp, body, _ := rawExchange(t, f.gateway, req, patience)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
			t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
		}
	})
	// An accepted one is asked for its body (the backend's 100 Continue comes through)
	// and taken.
	t.Run("expect 100-continue accepted", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(f.gateway, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(patience))
		fmt.Fprintf(conn, "POST /v1/uploads?title=small HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusContinue {
			t.Fatalf("want 100 Continue first: %v %v", resp, err)
		}
		_, _ = io.WriteString(conn, strings.Repeat("x", 1000))
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusCreated || !strings.Contains(string(body), `"sizeBytes":1000`) {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})
	// Seven 413s are the caller's fault: the breaker (2 failures open it) stays closed, and
	// an upload within the limit goes through, on a connection that is kept.
	m := metrics(t, f.gateway)
	if v := metric(m, `reelway_gateway_breaker_state{instance="`+up.id+`"}`); v != "0" {
		t.Fatalf("breaker state %q after early 413s, want 0 (closed)", v)
	}
	if v := metric(m, `reelway_gateway_requests_total{code="413",route="/v1/uploads"}`); v != "7" {
		t.Fatalf("413 count %q, want 7", v)
	}
	for range 2 {
		resp, err := http.Post(f.gateway+"/v1/uploads?title=small", "application/octet-stream", strings.NewReader(strings.Repeat("x", 1000)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || !strings.Contains(string(body), `"sizeBytes":1000`) || resp.Close {
			t.Fatalf("upload within the limit: %d %q close=%v", resp.StatusCode, body, resp.Close)
		}
	}
}

// TestGatewayPlainRouteMethods checks that a method a plain route does not serve gets 405
// with Allow (in JSON, never HTML) from the gateway, without reaching a backend.
func TestGatewayPlainRouteMethods(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	up := f.addPlainBackend(t, "upload", mountUpload)
	st := f.addPlainBackend(t, "streaming", mountStreaming)
	tests := []struct {
		method, path string
		want         int
		allow        string
		backend      *plainBackend // the backend that must see the request (nil: none)
	}{
		{http.MethodGet, "/v1/uploads", http.StatusMethodNotAllowed, "OPTIONS, POST", nil},
		{http.MethodGet, "/v1/uploads?title=x", http.StatusMethodNotAllowed, "OPTIONS, POST", nil},
		{http.MethodHead, "/v1/uploads", http.StatusMethodNotAllowed, "OPTIONS, POST", nil},
		{http.MethodPut, "/v1/uploads", http.StatusMethodNotAllowed, "OPTIONS, POST", nil},
		{http.MethodDelete, "/v1/uploads", http.StatusMethodNotAllowed, "OPTIONS, POST", nil},
		{http.MethodOptions, "/v1/uploads", http.StatusNoContent, "OPTIONS, POST", nil},
		{http.MethodPost, "/v1/uploads?title=x", http.StatusCreated, "", up},
		{http.MethodPost, "/v1/hls/abc/master.m3u8", http.StatusMethodNotAllowed, "GET, HEAD, OPTIONS", nil},
		{http.MethodPut, "/v1/hls/abc/master.m3u8", http.StatusMethodNotAllowed, "GET, HEAD, OPTIONS", nil},
		{http.MethodDelete, "/v1/hls/abc/master.m3u8", http.StatusMethodNotAllowed, "GET, HEAD, OPTIONS", nil},
		{http.MethodPatch, "/v1/hls/abc/seg_0.ts", http.StatusMethodNotAllowed, "GET, HEAD, OPTIONS", nil},
		{http.MethodGet, "/v1/hls/abc/master.m3u8", http.StatusOK, "", st},
		{http.MethodHead, "/v1/hls/abc/master.m3u8", http.StatusOK, "", st},
		{http.MethodOptions, "/v1/hls/abc/master.m3u8", http.StatusNoContent, "", st},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			upBefore, stBefore := up.hits.Load(), st.hits.Load()
			req, _ := http.NewRequest(tt.method, f.gateway+tt.path, strings.NewReader("payload"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %q", resp.StatusCode, tt.want, body)
			}
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			if ct := resp.Header.Get("Content-Type"); strings.Contains(ct, "html") || strings.Contains(string(body), "<") {
				t.Errorf("HTML answer: %s %q", ct, body)
			}
			if tt.want == http.StatusMethodNotAllowed && tt.method != http.MethodHead &&
				(resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(body), `"code"`)) {
				t.Errorf("405 body is not the gateway's JSON error: %q", body)
			}
			upHits, stHits := up.hits.Load()-upBefore, st.hits.Load()-stBefore
			switch {
			case tt.backend == up && (upHits != 1 || stHits != 0),
				tt.backend == st && (stHits != 1 || upHits != 0),
				tt.backend == nil && upHits+stHits != 0:
				t.Errorf("backend hits: upload %d, streaming %d", upHits, stHits)
			}
		})
	}
}

// TestGatewayRefusesTraversal sends paths with dot segments, raw or percent-encoded,
// encoded slashes and empty segments, as curl --path-as-is does: each gets the gateway's
// plain 400 (no redirect, no HTML) and none reaches a backend.
func TestGatewayRefusesTraversal(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	up := f.addPlainBackend(t, "upload", mountUpload)
	st := f.addPlainBackend(t, "streaming", mountStreaming)
	bad := []string{
		"/v1/hls/../../etc/passwd",
		"/v1/hls/abc/../../../etc/passwd",
		"/v1/hls/abc/../def/master.m3u8",
		"/v1/hls/abc/./master.m3u8",
		"/v1/hls/abc/..",
		"/v1/hls/abc/.",
		"/v1/hls/%2e%2e/%2e%2e/etc/passwd",
		"/v1/hls/%2E%2E/%2E%2E/etc/passwd",
		"/v1/hls/.%2e/x",
		"/v1/hls/..%2F..%2Fetc%2Fpasswd",
		"/v1/hls/abc%2F..%2F..%2Fetc/passwd",
		"/v1/hls/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
		"/v1/hls/abc%2fmaster.m3u8",
		"/v1/uploads/tus/../../etc/passwd",
		"/v1/uploads/tus/%2e%2e/x",
		"/v1/uploads/..",
		"/../etc/passwd",
		"/%2e%2e/etc/passwd",
		"/reelway.cache.v1.CacheService/../Get",
		"/v1/hls/../../reelway.cache.v1.CacheService/Get",
		// Empty segments: the mux would redirect them, with an HTML body.
		"/v1/hls/abc//master.m3u8",
		"//v1/hls/abc/master.m3u8",
		"/v1/hls//abc/master.m3u8",
		"/v1/hls/abc/master.m3u8//",
		"/v1//uploads?title=x",
		"//v1/uploads?title=x",
		"/v1/uploads//tus/abc",
		"/v1/uploads/tus//",
		"/reelway.cache.v1.CacheService//Get",
		"//reelway.cache.v1.CacheService/Get",
		"//",
	}
	for _, path := range bad {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(method+" "+path, func(t *testing.T) {
				req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", method, path)
				resp, body, _ := rawExchange(t, f.gateway, req, 20*time.Second)
				if resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("status %d, want 400: %v %q", resp.StatusCode, resp.Header, body)
				}
				if loc := resp.Header.Get("Location"); loc != "" {
					t.Errorf("redirected to %q", loc)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" || strings.Contains(string(body), "<") {
					t.Errorf("not the gateway's JSON error: %s %q", ct, body)
				}
				if !strings.Contains(string(body), `"invalid_argument"`) {
					t.Errorf("body %q", body)
				}
			})
		}
	}
	// Over h2c too (the client sends the request target as given).
	for _, path := range []string{"/v1/hls/../../etc/passwd", "/v1/hls/%2e%2e/%2e%2e/etc/passwd", "/v1/hls/..%2F..%2Fetc%2Fpasswd", "/v1/hls/abc//master.m3u8"} {
		t.Run("h2c "+path, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, f.gateway, nil)
			req.URL = &url.URL{Scheme: "http", Host: req.URL.Host, Opaque: path}
			resp, err := h2c().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || strings.Contains(string(body), "<") {
				t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
			}
		})
	}
	if n := up.hits.Load() + st.hits.Load(); n != 0 {
		t.Fatalf("%d traversal requests reached a backend: %q %q", n, up.seen(), st.seen())
	}
	// Names that merely contain dots are not dot segments: they go through unchanged.
	for _, path := range []string{"/v1/hls/abc/.hidden", "/v1/hls/abc/..m3u8", "/v1/hls/abc/.../master.m3u8", "/v1/hls/a.b/master.m3u8"} {
		req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", path)
		resp, body, _ := rawExchange(t, f.gateway, req, 20*time.Second)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	if got := st.seen(); len(got) != 4 || got[0] != "/v1/hls/abc/.hidden" || got[2] != "/v1/hls/abc/.../master.m3u8" {
		t.Fatalf("streaming saw %q", got)
	}
}

// TestGatewayForwardingHeaders checks that backends learn the host, scheme and client
// address the gateway saw, whatever forwarding headers the caller sent: a backend that
// builds URLs from them (tus Locations) must not point callers elsewhere.
func TestGatewayForwardingHeaders(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	st := f.addPlainBackend(t, "streaming", mountStreaming)
	host := strings.TrimPrefix(f.gateway, "http://")
	tests := []struct {
		name string
		hdr  map[string]string
	}{
		{"none", nil},
		{"Forwarded", map[string]string{"Forwarded": `for=10.0.0.1;host="evil.example";proto=https`}},
		{"X-Forwarded", map[string]string{"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}},
		{"no Host", map[string]string{"Host": ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, f.gateway+"/v1/hls/v1/master.m3u8", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			if _, ok := tc.hdr["Host"]; ok {
				// HTTP/1.0 lets a request go without Host; Go's client always sends one.
				_, _, _ = rawExchange(t, f.gateway, "GET /v1/hls/v1/master.m3u8 HTTP/1.0\r\n\r\n", 10*time.Second)
			} else {
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			h := st.lastHeader()
			if h == nil {
				t.Fatal("the request did not reach the backend")
			}
			if got := h.Values("Forwarded"); len(got) != 0 {
				t.Errorf("backend got Forwarded %q from the caller", got)
			}
			if got := h.Values("X-Forwarded-Host"); len(got) != 1 || got[0] != host {
				t.Errorf("X-Forwarded-Host = %q, want %q", got, host)
			}
			if got := h.Values("X-Forwarded-Proto"); len(got) != 1 || got[0] != "http" {
				t.Errorf("X-Forwarded-Proto = %q, want http", got)
			}
			if got := h.Get("X-Forwarded-For"); !strings.HasSuffix(got, "127.0.0.1") {
				t.Errorf("X-Forwarded-For = %q, want it to end with the caller's address", got)
			}
		})
	}
}

// TestGatewayBrokenCallerBodies sends request bodies whose chunked framing breaks halfway,
// on an RPC that streams its body, one that is buffered for retries, and a plain route:
// each gets 400 invalid_argument, and none counts against the backend, so the breaker
// stays closed and a good call still goes through.
func TestGatewayBrokenCallerBodies(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	f.addPlainBackend(t, "upload", mountUpload)
	const broken = "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nZZZ\r\n"
	tests := []struct{ name, head string }{
		{"not idempotent", "POST /reelway.metadata.v1.MetadataService/CreateVideo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"},
		{"idempotent", "POST /reelway.cache.v1.CacheService/Set HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"},
		{"plain upload", "POST /v1/uploads?title=x HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 12 { // more than the breaker's threshold
				resp, body, _ := rawExchange(t, f.gateway, tc.head+broken, 10*time.Second)
				var e struct{ Code string }
				_ = json.Unmarshal(body, &e)
				if resp.StatusCode != http.StatusBadRequest || e.Code != "invalid_argument" {
					t.Fatalf("broken body: %d %q, want 400 invalid_argument", resp.StatusCode, body)
				}
			}
		})
	}
	md := metadatav1connect.NewMetadataServiceClient(h2c(), f.gateway)
	if _, err := md.CreateVideo(context.Background(), &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: "v1", Title: "t"}}); err != nil {
		t.Fatalf("a good call after the broken bodies: %v", err)
	}
}

// TestGatewayStalledStreamRequest sends a server-streaming call whose one request message
// never arrives whole: the gateway's default timeout does not cut streams, but the
// request itself must come within it, or the call would hang forever. The caller gets
// deadline_exceeded in its protocol (here gRPC-Web text, whose body the gateway reads
// itself) and the backend is not blamed.
func TestGatewayStalledStreamRequest(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const svc = transcoderv1connect.TranscoderServiceName
	f := setupKnowing(t, 1, gateway.Options{Timeout: timeout}, svc)
	// The backend stands in for the transcoder, whose WatchTranscode is a server stream.
	in := f.instances[0]
	_, portS, _ := net.SplitHostPort(strings.TrimPrefix(in.url, "http://"))
	port, _ := net.LookupPort("tcp", portS)
	err := f.reg.Register(context.Background(), registry.Registration{
		Instance:  registry.Instance{ID: registry.InstanceID("transcoder", port), Name: "transcoder", Address: "127.0.0.1", Port: port, Meta: map[string]string{registry.MetaProtoServices: svc}},
		HealthURL: in.url + "/healthz", CheckInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "transcoder routed", func() error {
		if len(f.cat.ResolveProto(svc)) == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	for _, ct := range []string{"application/grpc-web-text", "application/grpc-web-text+proto"} {
		t.Run(ct, func(t *testing.T) {
			start := time.Now()
			resp, body, _ := rawExchange(t, f.gateway, "POST /"+svc+"/WatchTranscode HTTP/1.1\r\nHost: x\r\nContent-Type: "+ct+"\r\nContent-Length: 100\r\n\r\nAAAAAA", 10*time.Second)
			if got := resp.Header.Get("Grpc-Status"); got != "4" {
				t.Fatalf("stalled stream request: %d grpc-status %q %q, want deadline_exceeded (4)", resp.StatusCode, got, body)
			}
			if took := time.Since(start); took < timeout {
				t.Errorf("answered after %v, before the %v timeout", took, timeout)
			}
		})
	}
}

// TestGatewayStreamingMethodWithUnaryType calls a server-streaming method with Connect's
// unary content types: the gateway says which types a stream takes (the handler would
// send a bodyless 415).
func TestGatewayStreamingMethodWithUnaryType(t *testing.T) {
	f := setupKnowing(t, 1, gateway.Options{}, transcoderv1connect.TranscoderServiceName)
	for _, ct := range []string{"application/json", "application/proto", "application/json; charset=utf-8"} {
		resp, err := http.Post(f.gateway+transcoderv1connect.TranscoderServiceWatchTranscodeProcedure, ct, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType || !strings.Contains(string(body), "application/connect+json") ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s %q, want a JSON 415 naming application/connect+json", ct, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}
