package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
)

// Retry limits.
const (
	// maxReplayBytes is the largest request body kept in memory so an idempotent unary
	// call can be sent again; larger bodies stream through and are never replayed.
	maxReplayBytes = 1 << 20
	// maxBackendAttempts bounds the attempts of an idempotent call that backends failed.
	maxBackendAttempts = 3
)

// transport is the proxy's RoundTripper: for each attempt it picks an instance, takes a
// permit from its breaker, forwards the remaining deadline, and decides whether a failure
// may be retried on another instance. The forwarder sees one round trip.
type transport struct {
	g *Gateway
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	g := t.g
	ctx := req.Context()
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		return nil, fmt.Errorf("%w: request without a route", ErrUnknownRoute)
	}
	body, err := newAttemptBody(req, c)
	if err != nil {
		return nil, err
	}
	var triedBuf [8]bool
	tried := triedBuf[:0]
	if n := len(c.instances); n <= len(triedBuf) {
		tried = triedBuf[:n]
	} else {
		tried = make([]bool, n)
	}
	backendAttempts := 0
	var lastErr error
	for attempt := 0; ; attempt++ {
		be, permit, err := g.pick(c.instances, tried)
		if err != nil {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, err
		}
		out := req
		if attempt > 0 {
			out = req.Clone(ctx)
		}
		out.URL.Host = be.hostport
		out.Host = be.hostport
		if c.timeoutHeader != "" {
			left := time.Until(c.deadline)
			if left <= 0 {
				permit.Done(rpc.OutcomeIgnored)
				return nil, context.DeadlineExceeded
			}
			if c.timeoutHeader == headerConnectTimeout {
				out.Header.Set(headerConnectTimeout, formatConnectTimeout(left))
			} else {
				out.Header.Set(headerGRPCTimeout, formatGRPCTimeout(left))
			}
		}
		body.prepare(out)
		be.inflight.Add(1)
		base := g.base
		if c.wire == rpc.WireHTTP {
			base = g.plain
		}
		resp, err := base.RoundTrip(out)
		if err != nil {
			be.inflight.Add(-1)
			if body.late() {
				// The caller's body missed the deadline: not the backend's doing.
				permit.Done(rpc.OutcomeIgnored)
				return nil, errLateBody
			}
			if berr := body.broken(); berr != nil {
				permit.Done(rpc.OutcomeIgnored)
				return nil, fmt.Errorf("%w: %w", errBadBody, berr)
			}
			permit.Done(rpc.ErrorOutcome(ctx, err))
			lastErr = err
			if ctx.Err() != nil {
				return nil, err
			}
			if neverSent(err) && body.intact() {
				g.metrics.retries.WithLabelValues(c.route, "not_sent").Inc()
				continue
			}
			if c.idempotent && body.replayable() && backendAttempts+1 < maxBackendAttempts && g.spendRetry(c) {
				backendAttempts++
				continue
			}
			return nil, err
		}
		canRetry := c.idempotent && body.replayable() && backendAttempts+1 < maxBackendAttempts &&
			ctx.Err() == nil && g.hasUntried(c.instances, tried)
		code := headerCode(c.wire, resp)
		if code == 0 && canRetry && c.unary {
			code = peekStatus(c.wire, resp)
		}
		if retryableCode(code) && canRetry && g.spendRetry(c) {
			backendAttempts++
			resp.Body.Close()
			be.inflight.Add(-1)
			permit.Done(rpc.OutcomeFailure)
			lastErr = fmt.Errorf("%w: %s", ErrBackendUnavailable, code)
			continue
		}
		route, wire := c.route, c.wire
		eb := watchErrorBody(resp, wire)
		rpc.WatchResponse(ctx, resp, wire, true, func(end rpc.End) {
			be.inflight.Add(-1)
			permit.Done(end.Outcome)
			if eb != nil && end.Err == nil {
				g.metrics.doneLabel(route, eb.label(end.Status))
				return
			}
			g.metrics.done(route, wire, end)
		})
		return resp, nil
	}
}

func (g *Gateway) spendRetry(c *call) bool {
	if !g.budget.withdraw() {
		g.metrics.exhausted.Inc()
		return false
	}
	g.metrics.retries.WithLabelValues(c.route, "backend").Inc()
	return true
}

// pick chooses an instance not tried yet whose breaker admits a call: of two picked at
// random, the one with fewer requests in flight (least outstanding by the power of two
// choices, which needs no global order and avoids herding on one instance). It takes the
// breaker's permit; an instance whose half-open probes are all out is passed over.
func (g *Gateway) pick(ins []registry.Instance, tried []bool) (*backend, rpc.Permit, error) {
	refused := false
	for {
		var candBuf [8]int
		cand := candBuf[:0]
		for i := range ins {
			if tried[i] {
				continue
			}
			if !g.backendFor(&ins[i]).breaker.Admits() {
				tried[i] = true
				refused = true
				continue
			}
			cand = append(cand, i)
		}
		switch len(cand) {
		case 0:
			if refused {
				return nil, rpc.Permit{}, rpc.ErrBreakerOpen
			}
			return nil, rpc.Permit{}, ErrBackendUnavailable
		case 1:
		default:
			a := rand.IntN(len(cand))
			b := rand.IntN(len(cand) - 1)
			if b >= a {
				b++
			}
			if g.backendFor(&ins[cand[b]]).inflight.Load() < g.backendFor(&ins[cand[a]]).inflight.Load() {
				a = b
			}
			cand[0] = cand[a]
		}
		i := cand[0]
		tried[i] = true
		be := g.backendFor(&ins[i])
		if permit, ok := be.breaker.Acquire(); ok {
			return be, permit, nil
		}
		refused = true
	}
}

func (g *Gateway) hasUntried(ins []registry.Instance, tried []bool) bool {
	for i := range ins {
		if !tried[i] && g.backendFor(&ins[i]).breaker.Admits() {
			return true
		}
	}
	return false
}

// headerCode is the RPC error code a response shows in its headers (0 when it shows
// none yet): Connect unary statuses and trailers-only gRPC and gRPC-Web errors.
func headerCode(wire rpc.Wire, resp *http.Response) connect.Code {
	switch wire {
	case rpc.WireHTTP:
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable:
			return connect.CodeUnavailable
		}
		return 0
	case rpc.WireConnectUnary:
		switch {
		case resp.StatusCode == http.StatusInternalServerError:
			return connect.CodeInternal
		case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable:
			return connect.CodeUnavailable
		}
		return 0
	case rpc.WireGRPC, rpc.WireGRPCWeb, rpc.WireGRPCWebText:
		switch resp.Header.Get("Grpc-Status") {
		case "2":
			return connect.CodeUnknown
		case "13":
			return connect.CodeInternal
		case "14":
			return connect.CodeUnavailable
		}
	}
	return 0
}

// retryableCode says whether an idempotent call that got this code from one instance may
// be sent to another: the instance was unavailable or broken. deadline_exceeded is not
// retried: the deadline spans every attempt.
func retryableCode(c connect.Code) bool {
	return c == connect.CodeUnavailable || c == connect.CodeInternal || c == connect.CodeUnknown
}

// peekStatus reads the start of a unary gRPC or gRPC-Web response for an error status
// sent after the headers (a response with no message), so an idempotent call can still
// be retried; the bytes read are put back in front of the body. A response that starts
// with a message returns 0 at once.
func peekStatus(wire rpc.Wire, resp *http.Response) connect.Code {
	p := &peekedBody{rc: resp.Body}
	resp.Body = p
	switch wire {
	case rpc.WireGRPC:
		n, err := readSome(p.rc, p.hdr[:1])
		p.pre = p.hdr[:n]
		if errors.Is(err, io.EOF) && n == 0 {
			p.err = io.EOF
			if s := resp.Trailer.Get("Grpc-Status"); s != "" {
				return parseCode(s)
			}
		} else if err != nil {
			p.err = err
		}
	case rpc.WireGRPCWeb:
		n, err := io.ReadFull(p.rc, p.hdr[:])
		p.pre = p.hdr[:n]
		if err != nil {
			p.err = err
			if errors.Is(err, io.ErrUnexpectedEOF) {
				p.err = io.EOF
			}
			return 0
		}
		size := binary.BigEndian.Uint32(p.hdr[1:5])
		if p.hdr[0]&0x80 == 0 || size > 16<<10 {
			return 0
		}
		frame := make([]byte, 5+int(size))
		copy(frame, p.hdr[:])
		m, err := io.ReadFull(p.rc, frame[5:])
		p.pre = frame[:5+m]
		if err != nil {
			p.err = err
			return 0
		}
		return parseCode(grpcWebStatus(frame, resp.Header.Get("Grpc-Encoding")))
	}
	return 0
}

// readSome reads until it gets a byte or an error.
func readSome(r io.Reader, p []byte) (int, error) {
	for {
		n, err := r.Read(p)
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// grpcWebStatus reads grpc-status from a complete gRPC-Web trailer frame.
func grpcWebStatus(frame []byte, encoding string) string {
	data := frame[5:]
	if frame[0]&0x01 != 0 {
		if encoding != "gzip" {
			return ""
		}
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return ""
		}
		if data, err = io.ReadAll(io.LimitReader(zr, 64<<10)); err != nil {
			return ""
		}
	}
	for _, line := range strings.Split(string(data), "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "grpc-status") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func parseCode(s string) connect.Code {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > 16 {
		return connect.CodeUnknown
	}
	return connect.Code(n)
}

// peekedBody replays the bytes peekStatus read (and the error it met), then reads on.
type peekedBody struct {
	rc  io.ReadCloser
	hdr [5]byte
	pre []byte
	err error
}

func (p *peekedBody) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	if p.err != nil {
		return 0, p.err
	}
	return p.rc.Read(b)
}

func (p *peekedBody) Close() error { return p.rc.Close() }

// neverSent says whether a transport error proves the request never reached a backend:
// the connection could not be made.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// attemptBody gives each attempt the request body. A small body of an idempotent unary
// call is buffered and replayed; any other body streams through once, and is handed to a
// second attempt only if the first never read a byte of it.
type attemptBody struct {
	empty  bool
	buf    []byte
	length int64
	guard  *guardBody
}

func newAttemptBody(req *http.Request, c *call) (*attemptBody, error) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		return &attemptBody{empty: true}, nil
	}
	if c.idempotent && !c.streamBody && req.ContentLength <= maxReplayBytes {
		buf, complete, err := readSmall(req.Body, req.ContentLength)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, errLateBody
			}
			return nil, fmt.Errorf("%w: %w", errBadBody, err)
		}
		if complete {
			c.bodyIn()
			return &attemptBody{buf: buf, length: int64(len(buf))}, nil
		}
		// Longer than the cap: what was read goes first, the rest streams.
		req.Body = readCloser{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body}
	}
	return &attemptBody{guard: &guardBody{rc: req.Body, watch: c.watch, gen: c.watchGen}, length: req.ContentLength}, nil
}

// readSmall reads a body of at most maxReplayBytes; complete is false when it is longer,
// and buf then holds the part read so far. A declared length is read into a buffer of
// exactly that size.
func readSmall(body io.Reader, length int64) (buf []byte, complete bool, err error) {
	if length >= 0 {
		buf = make([]byte, length, length+1)
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, false, err
		}
		// The declared length must also be the end.
		var one [1]byte
		n, err := readSome(body, one[:])
		if n > 0 {
			return append(buf, one[0]), false, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, false, err
		}
		return buf, true, nil
	}
	b := bytes.NewBuffer(make([]byte, 0, 512))
	n, err := b.ReadFrom(io.LimitReader(body, maxReplayBytes+1))
	if err != nil {
		return nil, false, err
	}
	return b.Bytes(), n <= maxReplayBytes, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

func (b *attemptBody) prepare(out *http.Request) {
	switch {
	case b.empty:
		out.Body, out.GetBody, out.ContentLength = nil, nil, 0
	case b.guard != nil:
		out.Body, out.GetBody, out.ContentLength = b.guard, nil, b.length
	default:
		buf := b.buf
		out.Body = io.NopCloser(bytes.NewReader(buf))
		// GetBody lets the HTTP/2 transport resend on a refused stream by itself.
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
		out.ContentLength = int64(len(buf))
	}
}

// replayable says whether the body can be sent again in full.
func (b *attemptBody) replayable() bool { return b.guard == nil }

// intact says whether no attempt has consumed any of the body.
func (b *attemptBody) intact() bool { return b.guard == nil || !b.guard.touched.Load() }

// late says whether the caller's body did not arrive before the call's deadline.
func (b *attemptBody) late() bool { return b.guard != nil && b.guard.late.Load() }

// broken returns the error that ended a read of the caller's body, if one did: the
// caller's framing or connection failed, not the backend.
func (b *attemptBody) broken() error {
	if b.guard == nil {
		return nil
	}
	if p := b.guard.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// guardBody notes whether a streamed body was read, and keeps an untouched body open when
// a failed attempt's transport closes it, so another attempt can still send it. It tells
// a unary call's body watch when the body is in, and notes a read the watch cut.
type guardBody struct {
	rc      io.ReadCloser
	watch   *bodyWatch
	gen     uint64
	touched atomic.Bool
	late    atomic.Bool
	// failed holds the error of a read of the caller's body that failed other than by
	// ending, the deadline, or the gateway stopping it.
	failed atomic.Pointer[error]
}

func (g *guardBody) Read(p []byte) (int, error) {
	g.touched.Store(true)
	n, err := g.rc.Read(p)
	if err == nil {
		return n, nil
	}
	switch {
	case errors.Is(err, io.EOF):
		if g.watch != nil {
			g.watch.stop(g.gen)
		}
	case errors.Is(err, os.ErrDeadlineExceeded) && g.watch != nil:
		g.late.Store(true)
		err = errLateBody
	case !errors.Is(err, errAnswered) && !errors.Is(err, os.ErrDeadlineExceeded):
		g.failed.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (g *guardBody) Close() error {
	if !g.touched.Load() {
		return nil
	}
	return g.rc.Close()
}
