package rpc_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"connectrpc.com/connect"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/reelway/reelway/svc/rpc"
)

func frame(flags byte, payload string) []byte {
	out := make([]byte, 5+len(payload))
	out[0] = flags
	binary.BigEndian.PutUint32(out[1:5], uint32(len(payload)))
	copy(out[5:], payload)
	return out
}

func gz(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.String()
}

// trailerReader sets the response's trailers when the body reaches EOF, as the HTTP/2
// transport does.
type trailerReader struct {
	r       io.Reader
	resp    *http.Response
	trailer http.Header
}

func (t *trailerReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF {
		t.resp.Trailer = t.trailer
	}
	return n, err
}

func TestWatchResponseClassifiesTheEnd(t *testing.T) {
	msg := frame(0, "hello")
	tests := []struct {
		name     string
		wire     rpc.Wire
		status   int
		header   http.Header
		body     []byte
		trailer  http.Header
		wantCode connect.Code
		want     rpc.Outcome
	}{
		{"grpc ok in trailers", rpc.WireGRPC, 200, nil, msg, http.Header{"Grpc-Status": {"0"}}, 0, rpc.OutcomeSuccess},
		{"grpc internal in trailers", rpc.WireGRPC, 200, nil, msg, http.Header{"Grpc-Status": {"13"}}, connect.CodeInternal, rpc.OutcomeFailure},
		{"grpc not_found in trailers", rpc.WireGRPC, 200, nil, nil, http.Header{"Grpc-Status": {"5"}}, connect.CodeNotFound, rpc.OutcomeSuccess},
		{"grpc trailers-only unavailable", rpc.WireGRPC, 200, http.Header{"Grpc-Status": {"14"}}, nil, nil, connect.CodeUnavailable, rpc.OutcomeFailure},
		{"grpc trailers-only invalid_argument", rpc.WireGRPC, 200, http.Header{"Grpc-Status": {"3"}}, nil, nil, connect.CodeInvalidArgument, rpc.OutcomeSuccess},
		{"grpc without any status", rpc.WireGRPC, 200, nil, msg, nil, connect.CodeInternal, rpc.OutcomeFailure},
		{"grpc deadline_exceeded", rpc.WireGRPC, 200, nil, nil, http.Header{"Grpc-Status": {"4"}}, connect.CodeDeadlineExceeded, rpc.OutcomeFailure},
		{"grpc-web trailer frame ok", rpc.WireGRPCWeb, 200, nil, append(append([]byte{}, msg...), frame(0x80, "grpc-status: 0\r\ngrpc-message: \r\n")...), nil, 0, rpc.OutcomeSuccess},
		{"grpc-web trailer frame unknown", rpc.WireGRPCWeb, 200, nil, append(append([]byte{}, msg...), frame(0x80, "Grpc-Status: 2\r\n")...), nil, connect.CodeUnknown, rpc.OutcomeFailure},
		{"grpc-web trailer frame permission_denied", rpc.WireGRPCWeb, 200, nil, frame(0x80, "grpc-status:7\r\n"), nil, connect.CodePermissionDenied, rpc.OutcomeSuccess},
		{"grpc-web gzip trailer frame internal", rpc.WireGRPCWeb, 200, http.Header{"Grpc-Encoding": {"gzip"}}, append(frame(0x01, gz("m")), frame(0x81, gz("grpc-status: 13\r\n"))...), nil, connect.CodeInternal, rpc.OutcomeFailure},
		{"grpc-web gzip trailer frame ok", rpc.WireGRPCWeb, 200, http.Header{"Grpc-Encoding": {"gzip"}}, frame(0x81, gz("grpc-status: 0\r\n")), nil, 0, rpc.OutcomeSuccess},
		{"grpc-web trailers-only", rpc.WireGRPCWeb, 200, http.Header{"Grpc-Status": {"13"}}, nil, nil, connect.CodeInternal, rpc.OutcomeFailure},
		{"connect stream end ok", rpc.WireConnectStream, 200, nil, append(append([]byte{}, msg...), frame(0x02, "{}")...), nil, 0, rpc.OutcomeSuccess},
		{"connect stream end internal", rpc.WireConnectStream, 200, nil, append(append([]byte{}, msg...), frame(0x02, `{"error":{"code":"internal","message":"x"}}`)...), nil, connect.CodeInternal, rpc.OutcomeFailure},
		{"connect stream end not_found", rpc.WireConnectStream, 200, nil, frame(0x02, `{"error":{"code":"not_found"}}`), nil, connect.CodeNotFound, rpc.OutcomeSuccess},
		{"connect stream end gzip unavailable", rpc.WireConnectStream, 200, http.Header{"Connect-Content-Encoding": {"gzip"}}, frame(0x03, gz(`{"error":{"code":"unavailable"}}`)), nil, connect.CodeUnavailable, rpc.OutcomeFailure},
		{"connect stream without end message", rpc.WireConnectStream, 200, nil, msg, nil, connect.CodeInternal, rpc.OutcomeFailure},
		{"connect unary 200", rpc.WireConnectUnary, 200, nil, []byte("{}"), nil, 0, rpc.OutcomeSuccess},
		{"connect unary 400", rpc.WireConnectUnary, 400, nil, []byte(`{"code":"invalid_argument"}`), nil, connect.CodeInvalidArgument, rpc.OutcomeSuccess},
		{"connect unary 500", rpc.WireConnectUnary, 500, nil, []byte(`{"code":"internal"}`), nil, connect.CodeInternal, rpc.OutcomeFailure},
		{"connect unary 504", rpc.WireConnectUnary, 504, nil, nil, nil, connect.CodeDeadlineExceeded, rpc.OutcomeFailure},
		{"connect unary 404", rpc.WireConnectUnary, 404, nil, nil, nil, connect.CodeNotFound, rpc.OutcomeSuccess},
		{"plain 502", rpc.WireHTTP, 502, nil, []byte("bad gateway"), nil, 0, rpc.OutcomeFailure},
		{"plain 404", rpc.WireHTTP, 404, nil, nil, nil, 0, rpc.OutcomeSuccess},
		{"plain 501", rpc.WireHTTP, 501, nil, nil, nil, 0, rpc.OutcomeSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := tt.header
			if header == nil {
				header = http.Header{}
			}
			resp := &http.Response{StatusCode: tt.status, Header: header}
			// One byte at a time: frame headers and payloads split across reads.
			resp.Body = io.NopCloser(&trailerReader{r: iotest.OneByteReader(bytes.NewReader(tt.body)), resp: resp, trailer: tt.trailer})
			var ends []rpc.End
			rpc.WatchResponse(context.Background(), resp, tt.wire, false, func(e rpc.End) { ends = append(ends, e) })
			got, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(got, tt.body) {
				t.Fatalf("body changed in passing: %q %v", got, err)
			}
			resp.Body.Close()
			if len(ends) != 1 {
				t.Fatalf("onEnd called %d times", len(ends))
			}
			if tt.wire != rpc.WireHTTP && ends[0].Code != tt.wantCode {
				t.Errorf("code %v, want %v", ends[0].Code, tt.wantCode)
			}
			if ends[0].Outcome != tt.want {
				t.Errorf("outcome %v, want %v", ends[0].Outcome, tt.want)
			}
		})
	}
}

// cutBody returns the bytes, then a read error.
type cutBody struct {
	r   io.Reader
	err error
}

func (c *cutBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		return n, c.err
	}
	return n, err
}

func (c *cutBody) Close() error { return nil }

func TestWatchResponseCutStreams(t *testing.T) {
	cut := errors.New("connection reset")
	t.Run("caller cancellation is ignored", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: &cutBody{bytes.NewReader(nil), context.Canceled}}
		var end rpc.End
		rpc.WatchResponse(ctx, resp, rpc.WireGRPC, true, func(e rpc.End) { end = e })
		_, _ = io.ReadAll(resp.Body)
		if end.Outcome != rpc.OutcomeIgnored {
			t.Fatalf("outcome %v", end.Outcome)
		}
	})
	t.Run("closed before the end is ignored", func(t *testing.T) {
		resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(frame(0, "x")))}
		var end rpc.End
		rpc.WatchResponse(context.Background(), resp, rpc.WireGRPC, true, func(e rpc.End) { end = e })
		resp.Body.Close()
		if end.Outcome != rpc.OutcomeIgnored {
			t.Fatalf("outcome %v", end.Outcome)
		}
	})
	tests := []struct {
		name      string
		wire      rpc.Wire
		body      []byte
		wantTail  []byte // the synthesized end, after the body
		trailer   string
		wantError bool // the cut cannot be ended in the protocol: the error passes through
	}{
		{"grpc gets trailers", rpc.WireGRPC, frame(0, "m1"), nil, "14", false},
		{"grpc-web gets a trailer frame", rpc.WireGRPCWeb, frame(0, "m1"), []byte("grpc-status: 14"), "", false},
		{"connect stream gets an end message", rpc.WireConnectStream, frame(0, "m1"), []byte(`"code":"unavailable"`), "", false},
		{"connect stream cut mid-message", rpc.WireConnectStream, frame(0, "m1")[:4], nil, "", true},
		{"connect unary cannot be ended", rpc.WireConnectUnary, []byte(`{"a":`), nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: &cutBody{bytes.NewReader(tt.body), cut}}
			var end rpc.End
			rpc.WatchResponse(context.Background(), resp, tt.wire, true, func(e rpc.End) { end = e })
			got, err := io.ReadAll(resp.Body)
			if tt.wantError {
				if !errors.Is(err, cut) {
					t.Fatalf("want the cut to pass through, got %v", err)
				}
			} else if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.HasPrefix(got, tt.body) || !bytes.Contains(got[len(tt.body):], tt.wantTail) {
				t.Fatalf("body %q", got)
			}
			if tt.trailer != "" && resp.Trailer.Get("Grpc-Status") != tt.trailer {
				t.Fatalf("trailers %v", resp.Trailer)
			}
			if end.Outcome != rpc.OutcomeFailure || end.Synthesized == tt.wantError {
				t.Fatalf("end %+v", end)
			}
		})
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestBreakerHalfOpenAdmitsBoundedProbes(t *testing.T) {
	var mu sync.Mutex
	var changes []string
	bs := rpc.NewBreakersWith(quiet(), rpc.BreakerConfig{FailureThreshold: 2, Window: 4, Delay: 50 * time.Millisecond, Probes: 2},
		func(id string, _, to circuitbreaker.State) {
			mu.Lock()
			defer mu.Unlock()
			changes = append(changes, to.String())
		})
	b := bs.For("a")
	// Caller errors and cancellations never count.
	for range 20 {
		p, ok := b.Acquire()
		if !ok {
			t.Fatal("refused while closed")
		}
		p.Done(rpc.OutcomeIgnored)
	}
	if b.State() != circuitbreaker.ClosedState {
		t.Fatalf("ignored outcomes changed the state: %v", b.State())
	}
	// A permit taken while closed and finished after the breaker opened is dropped.
	stale, _ := b.Acquire()
	for range 2 {
		p, _ := b.Acquire()
		p.Done(rpc.OutcomeFailure)
	}
	if b.State() != circuitbreaker.OpenState || b.Admits() {
		t.Fatalf("want open and refusing, got %v", b.State())
	}
	if _, ok := b.Acquire(); ok {
		t.Fatal("open breaker gave a permit")
	}
	time.Sleep(60 * time.Millisecond)
	if !b.Admits() {
		t.Fatal("delay over but the breaker does not admit a probe")
	}
	p1, ok1 := b.Acquire()
	p2, ok2 := b.Acquire()
	_, ok3 := b.Acquire()
	if !ok1 || !ok2 || ok3 || b.State() != circuitbreaker.HalfOpenState {
		t.Fatalf("half-open must admit exactly 2 probes: %v %v %v (%v)", ok1, ok2, ok3, b.State())
	}
	stale.Done(rpc.OutcomeSuccess) // from the closed state: must not free a probe slot
	if _, ok := b.Acquire(); ok {
		t.Fatal("a stale outcome handed out a third probe")
	}
	p1.Done(rpc.OutcomeSuccess)
	p2.Done(rpc.OutcomeSuccess)
	if b.State() != circuitbreaker.ClosedState {
		t.Fatalf("two good probes must close the breaker: %v", b.State())
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(changes, ",") != "open,half-open,closed" {
		t.Fatalf("transitions %v", changes)
	}
}

func TestBreakerIgnoredProbeReopens(t *testing.T) {
	bs := rpc.NewBreakersWith(quiet(), rpc.BreakerConfig{FailureThreshold: 1, Window: 1, Delay: 20 * time.Millisecond, Probes: 1}, nil)
	b := bs.For("a")
	p, _ := b.Acquire()
	p.Done(rpc.OutcomeFailure)
	time.Sleep(30 * time.Millisecond)
	probe, ok := b.Acquire()
	if !ok {
		t.Fatal("no probe")
	}
	probe.Done(rpc.OutcomeIgnored)
	if b.State() != circuitbreaker.OpenState {
		t.Fatalf("a probe that proved nothing must not leave the breaker half-open forever: %v", b.State())
	}
}
