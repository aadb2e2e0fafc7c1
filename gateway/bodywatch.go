package gateway

import (
	"errors"
	"net/http"
	"sync"
	"time"
)

// errLateBody is what the transport reports when a unary call's request body was not in
// by the call's deadline: the caller's doing, answered deadline_exceeded, never counted
// against a backend.
var errLateBody = errors.New("gateway: the request body did not arrive before the deadline")

// errBadBody is what the transport reports when reading the caller's request body failed
// (malformed chunked framing, a body cut short): the caller's doing, answered
// invalid_argument, never counted against a backend.
var errBadBody = errors.New("gateway: read request body")

// bodyWatch bounds the read of a unary call's request body by the call's deadline. A read
// of the caller's body ignores contexts, and an HTTP/1 body cannot be closed while a read
// holds it, so when the deadline passes first the watch sets the caller connection's read
// deadline to now: the blocked read fails with os.ErrDeadlineExceeded (HTTP/1 and HTTP/2
// alike), and an HTTP/1 server then closes the connection instead of draining the body.
//
// Watches are pooled with their timers, so a call whose body arrives in time costs a
// timer reset and stop, and no allocation. Once the body is in the watch is stopped: on
// HTTP/1 the server then reads the connection in the background, and a read deadline
// passing there would cancel the call.
type bodyWatch struct {
	timer *time.Timer

	mu sync.Mutex
	// gen tells the arming a stop belongs to: a streamed body may be read to its end by
	// the transport after the call ended and the watch went back to the pool.
	gen uint64
	// w is the call's writer while the watch is armed; nil once stopped.
	w http.ResponseWriter
	// spent: the timer fired, so its function may still run: the watch is not reused.
	spent bool
}

// watchBody arms a watch for a call writing to w; it fires at deadline. The returned
// generation identifies this arming to stop.
func (g *Gateway) watchBody(w http.ResponseWriter, deadline time.Time) (*bodyWatch, uint64) {
	bw, _ := g.watches.Get().(*bodyWatch)
	if bw == nil {
		bw = &bodyWatch{}
		bw.timer = time.AfterFunc(time.Hour, bw.expire)
	}
	bw.mu.Lock()
	bw.gen++
	gen := bw.gen
	bw.w = w
	bw.mu.Unlock()
	bw.timer.Reset(time.Until(deadline))
	return bw, gen
}

// releaseWatch stops a watch for good at the end of its call (before the handler
// returns: the writer is not to be touched after that) and pools it when it can be reused.
func (g *Gateway) releaseWatch(bw *bodyWatch, gen uint64) {
	bw.stop(gen)
	bw.mu.Lock()
	reuse := !bw.spent
	bw.mu.Unlock()
	if reuse {
		g.watches.Put(bw)
	}
}

// stop disarms the watch if it is still armed for gen: the body is in, or the call is over.
func (bw *bodyWatch) stop(gen uint64) {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	if bw.gen != gen || bw.w == nil {
		return
	}
	if !bw.timer.Stop() {
		bw.spent = true
	}
	bw.w = nil
}

// expire runs when the deadline passes with the watch armed: it ends the body read.
func (bw *bodyWatch) expire() {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	if bw.w == nil {
		return
	}
	bw.spent = true
	// Clearly past (an HTTP/2 stream takes "now" for a timer of its own).
	_ = http.NewResponseController(bw.w).SetReadDeadline(time.Now().Add(-time.Second))
	bw.w = nil
}
