package gateway_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/reelway/reelway/gateway"
	"github.com/reelway/reelway/svc/rpc"
)

// Procedures of the test backend: GetVideo is NO_SIDE_EFFECTS (the gateway buffers its
// body for replay), CreateVideo is not (its body streams through).
const (
	getVideo    = "/reelway.metadata.v1.MetadataService/GetVideo"
	createVideo = "/reelway.metadata.v1.MetadataService/CreateVideo"
)

// stallPatience is how long a test waits for an answer to a stalled call: generous for a
// loaded machine, and far below "never" (without the bound the answer never comes while
// the caller keeps its connection open).
const stallPatience = 20 * time.Second

// TestGatewayBoundsStalledUnaryBodies sends unary calls that announce a 100-byte body and
// send one byte: the gateway must stop waiting at the call's deadline (the caller's, else
// its default) and answer deadline_exceeded in the caller's protocol, over HTTP/1.1 and
// h2c, without blaming the backend and without a goroutine left reading.
func TestGatewayBoundsStalledUnaryBodies(t *testing.T) {
	breaker := rpc.BreakerConfig{FailureThreshold: 2, Window: 4, Delay: time.Minute}
	short := setup(t, 1, gateway.Options{Timeout: 400 * time.Millisecond, Breaker: breaker})
	// The default 30 s deadline: only the caller's own can end these calls in time.
	long := setup(t, 1, gateway.Options{Breaker: breaker})
	tests := []struct {
		name      string
		f         *fixture
		procedure string
		// connectTimeout and grpcTimeout are the caller's deadline headers ("": none).
		connectTimeout, grpcTimeout string
	}{
		{"default timeout/buffered", short, getVideo, "", ""},
		{"default timeout/streamed", short, createVideo, "", ""},
		{"caller deadline/buffered", long, getVideo, "300", "300m"},
		{"caller deadline/streamed", long, createVideo, "300", "300m"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/connect http1", func(t *testing.T) {
			head := "POST " + tt.procedure + " HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
			if tt.connectTimeout != "" {
				head += "Connect-Timeout-Ms: " + tt.connectTimeout + "\r\n"
			}
			start := time.Now()
			resp, body, br := rawExchange(t, tt.f.gateway, head+"\r\n{", stallPatience)
			checkPrompt(t, start)
			if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("Content-Type") != "application/json" ||
				!strings.Contains(string(body), `"deadline_exceeded"`) {
				t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
			}
			// The rest of the body is never read: the gateway closes the connection.
			if n, err := br.Read(make([]byte, 1)); err == nil {
				t.Fatalf("connection kept after an unread body: read %d bytes", n)
			}
		})
		t.Run(tt.name+"/connect h2c", func(t *testing.T) {
			h := http.Header{"Content-Type": {"application/json"}}
			if tt.connectTimeout != "" {
				h.Set("Connect-Timeout-Ms", tt.connectTimeout)
			}
			start := time.Now()
			resp, body := stallH2C(t, tt.f.gateway+tt.procedure, h, []byte("{"))
			checkPrompt(t, start)
			if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), `"deadline_exceeded"`) {
				t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
			}
		})
		t.Run(tt.name+"/grpc h2c", func(t *testing.T) {
			h := http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}}
			if tt.grpcTimeout != "" {
				h.Set("Grpc-Timeout", tt.grpcTimeout)
			}
			// A message prefix announcing 95 bytes, and one of them.
			frame := make([]byte, 6)
			binary.BigEndian.PutUint32(frame[1:5], 95)
			frame[5] = 0x0a
			start := time.Now()
			resp, body := stallH2C(t, tt.f.gateway+tt.procedure, h, frame)
			checkPrompt(t, start)
			status := resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status")
			if resp.StatusCode != http.StatusOK || status != "4" {
				t.Fatalf("%d grpc-status %q %v %v %q", resp.StatusCode, status, resp.Header, resp.Trailer, body)
			}
		})
	}
	// Nothing was the backends' fault, and nothing waits on the stalled callers any more
	// (their connections are still open).
	for _, f := range []*fixture{short, long} {
		m := metrics(t, f.gateway)
		if v := metric(m, `reelway_gateway_breaker_state{instance="`+f.instances[0].id+`"}`); v != "0" && v != "" {
			t.Errorf("breaker state %q after stalled callers, want 0 (closed)", v)
		}
		if strings.Contains(m, "reelway_gateway_breaker_transitions_total{") {
			t.Errorf("breaker changed state on stalled callers:\n%s", m)
		}
		for _, route := range []string{getVideo, createVideo} {
			if v := metric(m, `reelway_gateway_requests_total{code="deadline_exceeded",route="`+route+`"}`); v != "3" {
				t.Errorf("%s: deadline_exceeded count %q, want 3", route, v)
			}
		}
	}
	waitFor(t, "no goroutine reading a stalled body", func() error {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, fn := range []string{"gateway.readSmall", "gateway.(*guardBody).Read", "gateway.(*Gateway).serve"} {
			if strings.Contains(stacks, fn) {
				return fmt.Errorf("a goroutine is still in %s", fn)
			}
		}
		return nil
	})
}

// TestGatewayNoWholeRequestTimeoutOnStreams checks that the unary deadline stays off the
// bodies of streaming RPCs and plain routes: a caller slower than the gateway's default
// timeout still gets through.
func TestGatewayNoWholeRequestTimeoutOnStreams(t *testing.T) {
	const timeout = 300 * time.Millisecond
	f := setup(t, 1, gateway.Options{Timeout: timeout})
	f.addPlainBackend(t, "upload", mountUpload)
	msg := `{"key":"2:0"}`
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
	frame = append(frame, msg...)
	tests := []struct {
		name, head string
		first      string
		rest       string
		want       int
		wantBody   string
	}{
		{"server stream", "POST /reelway.cache.v1.CacheService/Watch HTTP/1.1\r\nHost: gw\r\nContent-Type: application/connect+json\r\n" +
			fmt.Sprintf("Content-Length: %d\r\n\r\n", len(frame)), string(frame[:3]), string(frame[3:]), http.StatusOK, `"MQ=="}` + "\x02\x00\x00\x00\x02{}"},
		{"upload", "POST /v1/uploads?title=slow HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\n",
			strings.Repeat("x", 500), strings.Repeat("x", 500), http.StatusCreated, `"sizeBytes":1000`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(f.gateway, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(stallPatience))
			if _, err := io.WriteString(conn, tt.head+tt.first); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * timeout) // a slow caller, well past the unary default
			if _, err := io.WriteString(conn, tt.rest); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.want || !strings.Contains(string(body), tt.wantBody) {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
		})
	}
}

// checkPrompt fails a test whose stalled call was not answered in about its deadline
// (300 or 400 ms; the bound is generous for a loaded machine).
func checkPrompt(t *testing.T, start time.Time) {
	t.Helper()
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("answered after %v, want about the deadline", d)
	}
}

// stallH2C sends a POST over h2c that announces a 100-byte body and sends only first, and
// returns the answer (the body read to its end, so gRPC trailers are in).
func stallH2C(t *testing.T, url string, h http.Header, first []byte) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stallPatience)
	defer cancel()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	go func() { _, _ = pw.Write(first) }()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, pr)
	req.ContentLength = 100
	req.Header = h
	resp, err := h2c().Do(req)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("answer body: %v", err)
	}
	return resp, body
}
