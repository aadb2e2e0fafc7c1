package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// ErrBreakerOpen means an instance's circuit breaker refused the call without sending it.
var ErrBreakerOpen = errors.New("rpc: circuit breaker open")

// Breakers keeps one failsafe-go circuit breaker per backend instance, so one bad instance
// is ejected while its siblings keep serving.
type Breakers struct {
	log *slog.Logger
	mu  sync.Mutex
	m   map[string]circuitbreaker.CircuitBreaker[*http.Response]
}

// NewBreakers returns an empty set of breakers.
func NewBreakers(log *slog.Logger) *Breakers {
	return &Breakers{log: log, m: make(map[string]circuitbreaker.CircuitBreaker[*http.Response])}
}

// For returns the breaker of an instance, creating it on first use.
func (b *Breakers) For(instanceID string) circuitbreaker.CircuitBreaker[*http.Response] {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cb, ok := b.m[instanceID]; ok {
		return cb
	}
	cb := circuitbreaker.NewBuilder[*http.Response]().
		WithFailureThresholdRatio(5, 10).
		WithDelay(5 * time.Second).
		WithJitterFactor(0.2).
		WithSuccessThreshold(2).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			b.log.Warn("breaker.state", "instance", instanceID, "from", e.OldState.String(), "to", e.NewState.String())
		}).
		Build()
	b.m[instanceID] = cb
	return cb
}

// States returns every breaker's state by instance id.
func (b *Breakers) States() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]string, len(b.m))
	for id, cb := range b.m {
		out[id] = cb.State().String()
	}
	return out
}

// RoundTrip sends req through rt guarded by the instance's breaker. Bodies stream through
// untouched: nothing is buffered for replay.
func (b *Breakers) RoundTrip(rt http.RoundTripper, instanceID string, req *http.Request) (*http.Response, error) {
	cb := b.For(instanceID)
	if !cb.TryAcquirePermit() {
		return nil, ErrBreakerOpen
	}
	resp, err := rt.RoundTrip(req)
	if IsBackendFailure(req.Context(), resp, err) {
		cb.RecordFailure()
	} else {
		cb.RecordSuccess()
	}
	return resp, err
}

// IsBackendFailure says whether an exchange counts against the backend: connection errors,
// HTTP 5xx (but 501) and gRPC statuses unknown, deadline_exceeded, internal and unavailable.
// Caller mistakes (4xx, invalid_argument, not_found, ...) and caller cancellations do not.
func IsBackendFailure(ctx context.Context, resp *http.Response, err error) bool {
	if err != nil {
		return ctx.Err() == nil
	}
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented {
		return true
	}
	switch resp.Header.Get("Grpc-Status") { // trailers-only gRPC responses
	case "2", "4", "13", "14":
		return true
	}
	return false
}
