package rpc

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// ErrBreakerOpen means an instance's circuit breaker refused the call without sending it.
var ErrBreakerOpen = errors.New("rpc: circuit breaker open")

// Outcome is what one exchange says about the backend instance that served it.
type Outcome uint8

const (
	// OutcomeSuccess means the backend answered, including with a caller error such as
	// invalid_argument or not_found.
	OutcomeSuccess Outcome = iota
	// OutcomeFailure means the backend failed: a connection error, an HTTP 5xx, or one of
	// the codes unknown, internal, unavailable and deadline_exceeded.
	OutcomeFailure
	// OutcomeIgnored means the exchange says nothing about the backend: the caller
	// cancelled or went away.
	OutcomeIgnored
)

// String implements fmt.Stringer.
func (o Outcome) String() string {
	switch o {
	case OutcomeSuccess:
		return "success"
	case OutcomeFailure:
		return "failure"
	default:
		return "ignored"
	}
}

// BreakerConfig tunes every breaker of a Breakers set.
type BreakerConfig struct {
	// FailureThreshold failures among the last Window recorded exchanges open the breaker.
	FailureThreshold uint
	Window           uint
	// Delay is how long an open breaker refuses calls before it admits probes; Jitter
	// (a fraction of Delay) spreads the probes of breakers that opened together.
	Delay  time.Duration
	Jitter float64
	// Probes is how many calls a half-open breaker admits at once; all of them must
	// succeed to close it, one failure opens it again.
	Probes uint
}

// DefaultBreakerConfig opens after 5 failures in the last 10 exchanges, stays open
// 5 s ± 20 %, then admits 2 probes.
func DefaultBreakerConfig() BreakerConfig {
	return BreakerConfig{FailureThreshold: 5, Window: 10, Delay: 5 * time.Second, Jitter: 0.2, Probes: 2}
}

// Breaker is one instance's failsafe-go circuit breaker with permit bookkeeping that keeps
// half-open probes strictly bounded: a permit remembers the breaker state it was taken in,
// and only outcomes of that same state are recorded.
type Breaker struct {
	id string
	cb circuitbreaker.CircuitBreaker[any]

	// mu serialises calls into cb with gen, so a permit knows which state it belongs to.
	mu  sync.Mutex
	gen uint64

	// state mirrors cb's state and openUntil the end of the open delay (unix nanos), so
	// balancers can skip open instances without taking a lock.
	state     atomic.Int32
	openUntil atomic.Int64
}

// Permit is the right to send one exchange through a breaker. Exactly one Done must
// follow a successful Acquire.
type Permit struct {
	b   *Breaker
	gen uint64
}

// ID returns the instance id the breaker guards.
func (b *Breaker) ID() string { return b.id }

// State returns the breaker's state.
func (b *Breaker) State() circuitbreaker.State { return circuitbreaker.State(b.state.Load()) }

// Admits says, without taking a permit, whether Acquire could succeed now: the breaker is
// not open, or its open delay is over.
func (b *Breaker) Admits() bool {
	if b.State() != circuitbreaker.OpenState {
		return true
	}
	return time.Now().UnixNano() >= b.openUntil.Load()
}

// Acquire takes a permit, or reports false when the breaker is open or half-open with
// every probe in flight.
func (b *Breaker) Acquire() (Permit, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.cb.TryAcquirePermit() {
		return Permit{}, false
	}
	return Permit{b: b, gen: b.gen}, true
}

// Done records the exchange's outcome. An outcome from a state the breaker has since left
// is dropped: recording it in half-open would hand out an extra probe. An ignored outcome
// of a half-open probe counts as a failure, because the probe's permit must be returned
// and a probe that proved nothing must not close the breaker.
func (p Permit) Done(o Outcome) {
	b := p.b
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.gen != b.gen {
		return
	}
	switch o {
	case OutcomeSuccess:
		b.cb.RecordSuccess()
	case OutcomeFailure:
		b.cb.RecordFailure()
	default:
		if b.cb.State() == circuitbreaker.HalfOpenState {
			b.cb.RecordFailure()
		}
	}
}

// Breakers keeps one circuit breaker per backend instance, so one bad instance is ejected
// while its siblings keep serving.
type Breakers struct {
	log      *slog.Logger
	cfg      BreakerConfig
	onChange func(id string, from, to circuitbreaker.State)

	mu sync.RWMutex
	m  map[string]*Breaker
}

// NewBreakers returns an empty set of breakers with the default configuration.
func NewBreakers(log *slog.Logger) *Breakers {
	return NewBreakersWith(log, DefaultBreakerConfig(), nil)
}

// NewBreakersWith returns an empty set of breakers. onChange, if not nil, hears of every
// state transition (metrics); transitions are always logged.
func NewBreakersWith(log *slog.Logger, cfg BreakerConfig, onChange func(id string, from, to circuitbreaker.State)) *Breakers {
	def := DefaultBreakerConfig()
	if cfg.FailureThreshold == 0 || cfg.Window < cfg.FailureThreshold {
		cfg.FailureThreshold, cfg.Window = def.FailureThreshold, def.Window
	}
	if cfg.Delay <= 0 {
		cfg.Delay = def.Delay
	}
	if cfg.Probes == 0 {
		cfg.Probes = def.Probes
	}
	return &Breakers{log: log, cfg: cfg, onChange: onChange, m: make(map[string]*Breaker)}
}

// For returns the breaker of an instance, creating it on first use.
func (b *Breakers) For(instanceID string) *Breaker {
	b.mu.RLock()
	br, ok := b.m[instanceID]
	b.mu.RUnlock()
	if ok {
		return br
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if br, ok := b.m[instanceID]; ok {
		return br
	}
	br = &Breaker{id: instanceID}
	br.state.Store(int32(circuitbreaker.ClosedState))
	builder := circuitbreaker.NewBuilder[any]().
		WithFailureThresholdRatio(b.cfg.FailureThreshold, b.cfg.Window).
		WithDelay(b.cfg.Delay).
		WithSuccessThreshold(b.cfg.Probes).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			// Runs inside a cb call made under br.mu, so gen changes atomically with the state.
			br.gen++
			br.state.Store(int32(e.NewState))
			if e.NewState == circuitbreaker.OpenState {
				br.openUntil.Store(time.Now().Add(br.cb.RemainingDelay()).UnixNano())
			}
			level := slog.LevelInfo
			if e.NewState == circuitbreaker.OpenState {
				level = slog.LevelWarn
			}
			b.log.Log(context.Background(), level, "breaker.state", "instance", instanceID,
				"from", e.OldState.String(), "to", e.NewState.String())
			if b.onChange != nil {
				b.onChange(instanceID, e.OldState, e.NewState)
			}
		})
	if b.cfg.Jitter > 0 {
		builder = builder.WithJitterFactor(b.cfg.Jitter)
	}
	br.cb = builder.Build()
	b.m[instanceID] = br
	return br
}

// States returns every breaker's state by instance id.
func (b *Breakers) States() map[string]string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make(map[string]string, len(b.m))
	for id, br := range b.m {
		out[id] = br.State().String()
	}
	return out
}

// Each calls fn for every breaker.
func (b *Breakers) Each(fn func(*Breaker)) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, br := range b.m {
		fn(br)
	}
}

// Retain forgets the breakers of instances keep rejects (instances gone from the registry).
func (b *Breakers) Retain(keep func(instanceID string) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id := range b.m {
		if !keep(id) {
			delete(b.m, id)
		}
	}
}

// RoundTrip sends req through rt guarded by the instance's breaker. Bodies stream through
// untouched; the outcome is recorded when the response body ends, so statuses that arrive
// in trailers or end-of-stream messages count.
func (b *Breakers) RoundTrip(rt http.RoundTripper, instanceID string, req *http.Request) (*http.Response, error) {
	permit, ok := b.For(instanceID).Acquire()
	if !ok {
		return nil, ErrBreakerOpen
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		permit.Done(ErrorOutcome(req.Context(), err))
		return nil, err
	}
	WatchResponse(req.Context(), resp, WireOfRequest(req), false, func(end End) { permit.Done(end.Outcome) })
	return resp, nil
}

// IsFailureCode says whether a status code from a backend counts against it.
func IsFailureCode(c connect.Code) bool {
	switch c {
	case connect.CodeUnknown, connect.CodeDeadlineExceeded, connect.CodeInternal, connect.CodeUnavailable:
		return true
	}
	return false
}

// ErrorOutcome classifies a transport error: the caller's cancellation is ignored,
// anything else (refused connection, reset stream, expired deadline) is a failure.
func ErrorOutcome(ctx context.Context, _ error) Outcome {
	if errors.Is(ctx.Err(), context.Canceled) {
		return OutcomeIgnored
	}
	return OutcomeFailure
}

// Wire is the protocol of an exchange, as far as reading its final status goes.
type Wire uint8

// Wires.
const (
	// WireHTTP is a plain HTTP exchange: the status line is the outcome.
	WireHTTP Wire = iota
	// WireConnectUnary is a unary Connect call: the HTTP status carries the code.
	WireConnectUnary
	// WireConnectStream is a streaming Connect call: the end-of-stream message does.
	WireConnectStream
	// WireGRPC is gRPC: grpc-status in the trailers (or headers, trailers-only).
	WireGRPC
	// WireGRPCWeb is binary gRPC-Web: grpc-status in a trailer frame (or headers).
	WireGRPCWeb
	// WireGRPCWebText is base64 gRPC-Web: only trailers-only statuses are readable.
	WireGRPCWebText
)

// WireOf returns the RPC protocol a request content type selects; GET requests are
// Connect unary. Anything else is WireHTTP.
func WireOf(method, contentType string) Wire {
	ct, _, _ := strings.Cut(contentType, ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
	switch {
	case strings.HasPrefix(ct, "application/grpc-web-text"):
		return WireGRPCWebText
	case strings.HasPrefix(ct, "application/grpc-web"):
		return WireGRPCWeb
	case ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+"):
		return WireGRPC
	case strings.HasPrefix(ct, "application/connect+"):
		return WireConnectStream
	case method == http.MethodGet || ct == "application/json" || ct == "application/proto" ||
		strings.HasPrefix(ct, "application/") && method == http.MethodPost:
		return WireConnectUnary
	}
	return WireHTTP
}

// WireOfRequest is WireOf for a request.
func WireOfRequest(r *http.Request) Wire { return WireOf(r.Method, r.Header.Get("Content-Type")) }

// End is how a response ended.
type End struct {
	// Status is the HTTP status of the response.
	Status int
	// Code is the RPC status code (0 is ok); meaningless for WireHTTP.
	Code connect.Code
	// Outcome is what the exchange says about the backend.
	Outcome Outcome
	// Err is the transport error that cut the body, if any.
	Err error
	// Synthesized says the gateway ended the stream itself with Code after Err.
	Synthesized bool
}

// WatchResponse replaces resp.Body with a reader that follows the response to its end
// without buffering it: it reads the final status from the HTTP status, the headers, the
// trailers, a gRPC-Web trailer frame or a Connect end-of-stream message, and calls onEnd
// exactly once when the body reaches EOF, fails, or is closed early (the caller went
// away: ignored). With synthesize, a body cut between two messages of a streaming
// protocol is ended in that protocol with unavailable or deadline_exceeded instead of an
// abrupt reset.
func WatchResponse(ctx context.Context, resp *http.Response, wire Wire, synthesize bool, onEnd func(End)) {
	w := &watchedBody{ctx: ctx, resp: resp, body: resp.Body, wire: wire, synthesize: synthesize, onEnd: onEnd}
	switch wire {
	case WireGRPCWeb:
		w.sniff = &envelopeSniffer{endFlag: 0x80}
	case WireConnectStream:
		w.sniff = &envelopeSniffer{endFlag: 0x02}
	}
	if resp.Body == nil || resp.Body == http.NoBody {
		w.finish(w.endAtEOF())
		return
	}
	resp.Body = w
}

type watchedBody struct {
	ctx        context.Context
	resp       *http.Response
	body       io.ReadCloser
	wire       Wire
	synthesize bool
	sniff      *envelopeSniffer
	onEnd      func(End)

	ended   atomic.Bool
	pending []byte // a synthesized final frame still to be read
	eof     bool
}

func (w *watchedBody) Read(p []byte) (int, error) {
	if w.pending != nil {
		n := copy(p, w.pending)
		w.pending = w.pending[n:]
		if len(w.pending) == 0 {
			w.pending = nil
			w.eof = true
		}
		return n, nil
	}
	if w.eof {
		return 0, io.EOF
	}
	n, err := w.body.Read(p)
	if n > 0 && w.sniff != nil {
		w.sniff.feed(p[:n])
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF):
		w.eof = true
		w.finish(w.endAtEOF())
		return n, io.EOF
	}
	end := End{Status: w.resp.StatusCode, Err: err, Outcome: ErrorOutcome(w.ctx, err), Code: connect.CodeUnavailable}
	if errors.Is(w.ctx.Err(), context.DeadlineExceeded) {
		end.Code = connect.CodeDeadlineExceeded
	} else if end.Outcome == OutcomeIgnored {
		end.Code = connect.CodeCanceled
	}
	if w.synthesize && end.Outcome != OutcomeIgnored {
		if frame, ok := w.synthesizeEnd(end.Code, err); ok {
			end.Synthesized = true
			w.finish(end)
			if frame == nil {
				w.eof = true
				if n > 0 {
					return n, nil
				}
				return 0, io.EOF
			}
			w.pending = frame
			return n, nil
		}
	}
	w.finish(end)
	return n, err
}

// synthesizeEnd ends a cut stream in its own protocol when the cut fell between two
// messages: gRPC gets trailers (returned frame nil), gRPC-Web a trailer frame, Connect
// streaming an end-of-stream message.
func (w *watchedBody) synthesizeEnd(code connect.Code, cause error) ([]byte, bool) {
	msg := "backend stream failed: " + cause.Error()
	if code == connect.CodeDeadlineExceeded {
		msg = "deadline exceeded"
	}
	switch w.wire {
	case WireGRPC:
		if w.resp.Trailer == nil {
			w.resp.Trailer = make(http.Header)
		}
		w.resp.Trailer.Set("Grpc-Status", strconv.Itoa(int(code)))
		w.resp.Trailer.Set("Grpc-Message", grpcPercentEncode(msg))
		return nil, true
	case WireGRPCWeb:
		if !w.sniff.atBoundary() {
			return nil, false
		}
		payload := "grpc-status: " + strconv.Itoa(int(code)) + "\r\ngrpc-message: " + grpcPercentEncode(msg) + "\r\n"
		return envelope(0x80, []byte(payload)), true
	case WireConnectStream:
		if !w.sniff.atBoundary() {
			return nil, false
		}
		payload, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code.String(), "message": msg}})
		return envelope(0x02, payload), true
	}
	return nil, false
}

func envelope(flags byte, payload []byte) []byte {
	out := make([]byte, 5+len(payload))
	out[0] = flags
	binary.BigEndian.PutUint32(out[1:5], uint32(len(payload)))
	copy(out[5:], payload)
	return out
}

func (w *watchedBody) Close() error {
	err := w.body.Close()
	if !w.ended.Load() {
		w.finish(End{Status: w.resp.StatusCode, Code: connect.CodeCanceled, Outcome: OutcomeIgnored, Err: context.Canceled})
	}
	return err
}

func (w *watchedBody) finish(end End) {
	if w.ended.Swap(true) {
		return
	}
	w.onEnd(end)
}

// endAtEOF reads the final status of a response whose body ended normally.
func (w *watchedBody) endAtEOF() End {
	resp := w.resp
	end := End{Status: resp.StatusCode}
	// callerFault: the backend blamed the caller's framing ("protocol error: …", which
	// connect reports as internal). A caller sending truncated frames must not be able to
	// eject a healthy backend.
	var callerFault bool
	switch w.wire {
	case WireHTTP:
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented {
			end.Outcome = OutcomeFailure
		}
		return end
	case WireConnectUnary:
		end.Code = connectUnaryCode(resp.StatusCode)
	case WireConnectStream:
		switch {
		case resp.StatusCode != http.StatusOK:
			end.Code = httpToCode(resp.StatusCode)
		case w.sniff.found && w.sniff.oversize:
			end.Code = 0 // an end message too large to read for its code: do not blame the backend
		case w.sniff.found:
			var msg string
			end.Code, msg = connectEndStreamCode(w.sniff.payload, resp.Header.Get("Connect-Content-Encoding"))
			callerFault = callerProtocolError(msg)
		default:
			end.Code = connect.CodeInternal // stream ended without its end message
		}
	case WireGRPC, WireGRPCWeb, WireGRPCWebText:
		s := resp.Trailer.Get("Grpc-Status")
		if s == "" {
			s = resp.Header.Get("Grpc-Status")
		}
		if s == "" && w.sniff != nil && w.sniff.found {
			if w.sniff.oversize {
				s = "0" // a trailer frame too large to read: do not blame the backend
			} else {
				s = grpcWebTrailerStatus(w.sniff.payload, resp.Header.Get("Grpc-Encoding"))
			}
		}
		msg := resp.Trailer.Get("Grpc-Message")
		if msg == "" {
			msg = resp.Header.Get("Grpc-Message")
		}
		if msg == "" && w.sniff != nil && w.sniff.found && !w.sniff.oversize {
			msg = grpcWebTrailerField(w.sniff.payload, resp.Header.Get("Grpc-Encoding"), "grpc-message")
		}
		callerFault = callerProtocolError(msg)
		switch {
		case resp.StatusCode != http.StatusOK:
			end.Code = httpToCode(resp.StatusCode)
		case s != "":
			end.Code = parseGRPCStatus(s)
		case w.wire == WireGRPCWebText || w.sniff != nil && w.sniff.found:
			// The status is in base64 text this reader does not decode, or in a trailer
			// frame of an encoding it does not know: do not blame the backend.
			end.Code = 0
		default:
			end.Code = connect.CodeInternal // no status at all: a broken response
		}
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		// An HTTP 4xx (415 for a content type the method does not take, say) is the
		// backend refusing the request, whatever RPC code the status maps to.
		callerFault = true
	}
	switch {
	case IsFailureCode(end.Code) && callerFault:
		end.Outcome = OutcomeIgnored
	case IsFailureCode(end.Code):
		end.Outcome = OutcomeFailure
	}
	return end
}

// callerProtocolError recognises connect's messages for malformed request framing.
func callerProtocolError(msg string) bool {
	return strings.HasPrefix(msg, "protocol error")
}

// envelopeSniffer follows the 5-byte-prefixed message framing of gRPC-Web and Connect
// streaming as bytes pass, and captures the one final frame (trailers / end of stream).
// Message payloads are skipped by arithmetic, never copied.
type envelopeSniffer struct {
	endFlag   byte
	hdr       [5]byte
	hn        int
	remaining uint32
	capturing bool
	payload   []byte
	found     bool
	oversize  bool
	broken    bool
}

// maxEndFrame bounds the captured final frame; a larger one is not read for its status.
const maxEndFrame = 64 << 10

func (s *envelopeSniffer) atBoundary() bool { return !s.broken && s.hn == 0 && s.remaining == 0 }

func (s *envelopeSniffer) feed(p []byte) {
	for len(p) > 0 && !s.broken {
		if s.remaining == 0 && s.hn < 5 {
			k := copy(s.hdr[s.hn:], p)
			s.hn += k
			p = p[k:]
			if s.hn < 5 {
				return
			}
			s.remaining = binary.BigEndian.Uint32(s.hdr[1:5])
			s.capturing = s.hdr[0]&s.endFlag != 0
			if s.capturing && s.remaining > maxEndFrame {
				s.capturing = false
				s.oversize = true
			}
			if s.remaining == 0 {
				s.frameDone()
			}
			continue
		}
		k := min(uint32(len(p)), s.remaining)
		if s.capturing {
			s.payload = append(s.payload, p[:k]...)
		}
		s.remaining -= k
		p = p[k:]
		if s.remaining == 0 {
			s.frameDone()
		}
	}
}

func (s *envelopeSniffer) frameDone() {
	if s.hdr[0]&s.endFlag != 0 {
		s.found = true
		if s.hdr[0]&0x01 != 0 {
			s.payload = append([]byte{0x01}, s.payload...) // remember compression
		} else {
			s.payload = append([]byte{0x00}, s.payload...)
		}
	}
	s.hn = 0
	s.capturing = false
}

// endFramePayload returns a captured final frame's payload (flag byte first, as captured),
// decompressed when its compression flag is set. ok is false when it cannot be read: an
// unknown encoding or corrupt data.
func endFramePayload(framed []byte, encoding string) (data []byte, ok bool) {
	if len(framed) == 0 {
		return nil, false
	}
	data = framed[1:]
	if framed[0] != 0x01 {
		return data, true
	}
	if encoding != "gzip" {
		return nil, false
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, false
	}
	data, err = io.ReadAll(io.LimitReader(zr, maxEndFrame))
	return data, err == nil
}

// connectEndStreamCode reads the error code and message of a Connect end-of-stream message.
func connectEndStreamCode(framed []byte, encoding string) (connect.Code, string) {
	data, ok := endFramePayload(framed, encoding)
	if !ok {
		return connect.CodeInternal, ""
	}
	var msg struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &msg); err != nil {
		return connect.CodeInternal, ""
	}
	if msg.Error == nil {
		return 0, ""
	}
	var c connect.Code
	if err := c.UnmarshalText([]byte(msg.Error.Code)); err != nil {
		return connect.CodeUnknown, msg.Error.Message
	}
	return c, msg.Error.Message
}

// grpcWebTrailerStatus finds grpc-status in a gRPC-Web trailer frame.
func grpcWebTrailerStatus(framed []byte, encoding string) string {
	return grpcWebTrailerField(framed, encoding, "grpc-status")
}

// grpcWebTrailerField finds one field in a gRPC-Web trailer frame.
func grpcWebTrailerField(framed []byte, encoding, field string) string {
	data, ok := endFramePayload(framed, encoding)
	if !ok {
		return ""
	}
	for _, line := range strings.Split(string(data), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), field) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func parseGRPCStatus(s string) connect.Code {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > 16 {
		return connect.CodeUnknown
	}
	return connect.Code(n)
}

// connectUnaryCode maps a Connect unary response's HTTP status back to a code (the body
// is not read for it); 500 stands for internal, unknown and data_loss alike.
func connectUnaryCode(status int) connect.Code {
	switch status {
	case http.StatusOK:
		return 0
	case http.StatusBadRequest:
		return connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusNotFound:
		return connect.CodeNotFound
	case http.StatusConflict:
		return connect.CodeAborted
	case http.StatusTooManyRequests:
		return connect.CodeResourceExhausted
	case 499:
		return connect.CodeCanceled
	case http.StatusNotImplemented:
		return connect.CodeUnimplemented
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return connect.CodeUnavailable
	case http.StatusGatewayTimeout:
		return connect.CodeDeadlineExceeded
	case http.StatusInternalServerError:
		return connect.CodeInternal
	}
	if status >= 500 {
		return connect.CodeUnavailable
	}
	return connect.CodeUnknown
}

// httpToCode is gRPC's mapping of a non-200 HTTP status to a code.
func httpToCode(status int) connect.Code {
	switch status {
	case 400:
		return connect.CodeInternal
	case 401:
		return connect.CodeUnauthenticated
	case 403:
		return connect.CodePermissionDenied
	case 404:
		return connect.CodeUnimplemented
	case 429, 502, 503, 504:
		return connect.CodeUnavailable
	}
	return connect.CodeUnknown
}

// grpcPercentEncode encodes a grpc-message value as the gRPC spec requires.
func grpcPercentEncode(msg string) string {
	const upperhex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperhex[c>>4])
		b.WriteByte(upperhex[c&15])
	}
	return b.String()
}
