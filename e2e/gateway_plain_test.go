package e2e_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	gatewayv1 "github.com/reelway/reelway/gen/reelway/gateway/v1"
	"github.com/reelway/reelway/gen/reelway/gateway/v1/gatewayv1connect"
	"github.com/reelway/reelway/gen/reelway/upload/v1/uploadv1connect"
)

// rawHTTP1 writes a request by hand on a new connection (the path goes as is, and the
// body may be shorter than announced) and reads the first response within a deadline.
// After the response it reports whether the server then closed the connection.
func rawHTTP1(t *testing.T, base, request string) (resp *http.Response, body []byte, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	must(t, err, "dial %s", base)
	defer conn.Close()
	// Far longer than a prompt answer takes on a loaded machine, far shorter than never.
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = io.WriteString(conn, request)
	must(t, err, "write request")
	br := bufio.NewReader(conn)
	resp, err = http.ReadResponse(br, nil)
	must(t, err, "read response")
	body, err = io.ReadAll(resp.Body)
	must(t, err, "read response body")
	_, err = br.ReadByte()
	return resp, body, errors.Is(err, io.EOF)
}

// TestGatewayPlainRoutesAgainstDev checks the gateway's plain routes against the real
// upload and streaming services: an upload refused from its headers (10 GiB announced, a
// few bytes sent, then nothing) is answered at once, exactly as the upload service
// answers it directly, over HTTP/1.1 and h2c and for tus; methods a route does not serve
// get 405 with Allow; traversal paths get a plain 400.
func TestGatewayPlainRoutesAgainstDev(t *testing.T) {
	p := startDev(t)
	gw := gatewayv1connect.NewGatewayServiceClient(http.DefaultClient, p.gateway)
	routes, err := gw.ListRoutes(context.Background(), &gatewayv1.ListRoutesRequest{})
	must(t, err, "list routes")
	var direct string
	for _, r := range routes.GetRoutes() {
		if r.GetProtoService() == uploadv1connect.UploadServiceName && len(r.GetEndpoints()) > 0 {
			direct = r.GetEndpoints()[0]
		}
	}
	if direct == "" {
		t.Fatalf("no upload endpoint in %v", routes)
	}
	const huge = int64(10 << 30)

	t.Run("early 413 over HTTP/1.1", func(t *testing.T) {
		req := fmt.Sprintf("POST /v1/uploads?title=big HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n\r\n0123456789", huge)
		want, wantBody, _ := rawHTTP1(t, direct, req)
		if want.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("upload service itself answered %d %q", want.StatusCode, wantBody)
		}
		start := time.Now()
		got, body, closed := rawHTTP1(t, p.gateway, req)
		if got.StatusCode != want.StatusCode || string(body) != string(wantBody) ||
			got.Header.Get("Content-Type") != want.Header.Get("Content-Type") {
			t.Fatalf("through the gateway: %d %v %q, directly: %d %q", got.StatusCode, got.Header, body, want.StatusCode, wantBody)
		}
		if !got.Close || !closed {
			t.Errorf("connection kept after an answer that leaves 10 GiB unread (Connection: close %v, closed %v)", got.Close, closed)
		}
		t.Logf("413 through the gateway in %v", time.Since(start))
	})

	t.Run("early 413 with Expect: 100-continue", func(t *testing.T) {
		req := fmt.Sprintf("POST /v1/uploads?title=big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", huge)
		got, body, _ := rawHTTP1(t, p.gateway, req)
		if got.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("first answer %d %q, want 413 without asking for the body", got.StatusCode, body)
		}
	})

	t.Run("early 413 over h2c", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pr, pw := io.Pipe()
		defer pw.Close() // never closed before: the client stalls
		go func() { _, _ = pw.Write([]byte("0123456789")) }()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.gateway+"/v1/uploads?title=big", pr)
		must(t, err, "new request")
		req.ContentLength = huge
		resp, err := h2cClient().Do(req)
		must(t, err, "h2c upload")
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "resource_exhausted") {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})

	t.Run("early 413 from tus", func(t *testing.T) {
		// Creation with upload, over the limit.
		req := fmt.Sprintf("POST /v1/uploads/tus/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"+
			"Upload-Length: %d\r\nUpload-Metadata: title %s\r\nContent-Type: application/offset+octet-stream\r\n"+
			"Content-Length: %d\r\n\r\n0123456789", huge, b64("big"), huge)
		got, body, closed := rawHTTP1(t, p.gateway, req)
		if got.StatusCode != http.StatusRequestEntityTooLarge || !closed {
			t.Fatalf("tus creation: %d %q closed %v", got.StatusCode, body, closed)
		}
		// A PATCH announcing more than the upload's length.
		res := tusRequest(t, http.MethodPost, p.gateway+"/v1/uploads/tus/", nil, map[string]string{
			"Upload-Length": "100", "Upload-Metadata": "title " + b64("small"),
		})
		loc := res.Header.Get("Location")
		if res.StatusCode != http.StatusCreated || loc == "" {
			t.Fatalf("create: %d %q", res.StatusCode, loc)
		}
		path := loc[strings.Index(loc, "/v1/uploads/tus/"):]
		req = fmt.Sprintf("PATCH %s HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"+
			"Content-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n0123456789", path, huge)
		got, body, closed = rawHTTP1(t, p.gateway, req)
		if got.StatusCode != http.StatusRequestEntityTooLarge || !closed {
			t.Fatalf("tus patch: %d %q closed %v", got.StatusCode, body, closed)
		}
	})

	t.Run("late 413 for chunked bodies longer than the upload", func(t *testing.T) {
		// The upload service finds out only in the middle of the body, answers 413 and
		// closes while the gateway is still sending. Its connection must not be reset
		// before the gateway has read the answer (it would say 503 and count a backend
		// failure), however many such uploads arrive at once.
		const n, size = 8, 20 << 20
		codes := make(chan string, n)
		for range n {
			go func() {
				req, err := http.NewRequest(http.MethodPost, p.gateway+"/v1/uploads/tus/", io.LimitReader(zeros{}, size))
				if err != nil {
					codes <- err.Error()
					return
				}
				req.Header.Set("Tus-Resumable", "1.0.0")
				req.Header.Set("Content-Type", "application/offset+octet-stream")
				req.Header.Set("Upload-Length", "10")
				req.Header.Set("Expect", "100-continue") // as curl -T sends it
				req.Header.Set("Upload-Metadata", "title "+b64("too long"))
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					codes <- err.Error()
					return
				}
				body, _ := io.ReadAll(res.Body)
				_ = res.Body.Close()
				codes <- fmt.Sprintf("%d %s", res.StatusCode, strings.TrimSpace(string(body)))
			}()
		}
		for range n {
			if got := <-codes; !strings.HasPrefix(got, "413 ERR_UPLOAD_SIZE_EXCEEDED") {
				t.Errorf("chunked body longer than its upload: %q, want 413 ERR_UPLOAD_SIZE_EXCEEDED", got)
			}
		}
	})

	t.Run("413s leave the breaker closed", func(t *testing.T) {
		resp, err := http.Get(p.gateway + "/metrics")
		must(t, err, "metrics")
		var states []string
		for _, line := range strings.Split(string(readAll(t, resp)), "\n") {
			if strings.HasPrefix(line, `reelway_gateway_breaker_state{instance="upload-`) {
				states = append(states, line)
			}
		}
		if len(states) == 0 || !strings.HasSuffix(states[0], " 0") {
			t.Fatalf("upload breaker: %q", states)
		}
	})

	t.Run("405 with Allow", func(t *testing.T) {
		for _, tt := range []struct{ method, path, allow string }{
			{http.MethodGet, "/v1/uploads", "OPTIONS, POST"},
			{http.MethodPut, "/v1/uploads?title=x", "OPTIONS, POST"},
			{http.MethodPost, "/v1/hls/abc/master.m3u8", "GET, HEAD, OPTIONS"},
			{http.MethodDelete, "/v1/hls/abc/master.m3u8", "GET, HEAD, OPTIONS"},
		} {
			req, err := http.NewRequest(tt.method, p.gateway+tt.path, strings.NewReader("x"))
			must(t, err, "new request")
			resp, err := http.DefaultClient.Do(req)
			must(t, err, "%s %s", tt.method, tt.path)
			body := readAll(t, resp)
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tt.allow ||
				resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s %s: %d Allow %q %s %q", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("Content-Type"), body)
			}
		}
	})

	t.Run("traversal is a plain 400", func(t *testing.T) {
		for _, path := range []string{
			"/v1/hls/../../etc/passwd",
			"/v1/hls/%2e%2e/%2e%2e/etc/passwd",
			"/v1/hls/..%2F..%2Fetc%2Fpasswd",
			"/v1/uploads/tus/../../../etc/passwd",
		} {
			resp, body, _ := rawHTTP1(t, p.gateway, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" ||
				resp.Header.Get("Content-Type") != "application/json" || strings.Contains(string(body), "<") {
				t.Errorf("%s: %d %v %q", path, resp.StatusCode, resp.Header, body)
			}
		}
	})

	// The upload path still works: a small upload is taken (and its connection kept).
	resp, err := http.Post(p.gateway+"/v1/uploads?title=small", "video/mp4", strings.NewReader(strings.Repeat("x", 4096)))
	must(t, err, "small upload")
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusCreated || resp.Close || !strings.Contains(string(body), `"sizeBytes":4096`) {
		t.Fatalf("small upload: %d close %v %q", resp.StatusCode, resp.Close, body)
	}
}

// zeros is an endless body.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
