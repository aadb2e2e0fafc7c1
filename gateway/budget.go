package gateway

import (
	"sync/atomic"
	"time"
)

// retryBudget caps retries to a fraction of traffic, so an outage is not multiplied by
// retries: every request deposits ratio of a token, every retry spends a whole one. A
// small reserve refills with time so a quiet gateway can still retry now and then.
// Tokens are kept in thousandths in one atomic word: no lock on the request path.
type retryBudget struct {
	ratio   int64 // thousandths of a token deposited per request
	max     int64 // thousandths
	minRate int64 // thousandths of a token per second refilled regardless of traffic

	tokens atomic.Int64
	last   atomic.Int64 // unix nanos of the last time-based refill
}

// newRetryBudget allows retries worth ratio of requests, banking at most burst retries,
// plus minPerSecond retries a second whatever the traffic.
func newRetryBudget(ratio float64, burst, minPerSecond int) *retryBudget {
	b := &retryBudget{ratio: int64(ratio * 1000), max: int64(burst) * 1000, minRate: int64(minPerSecond) * 1000}
	b.tokens.Store(b.max)
	b.last.Store(time.Now().UnixNano())
	return b
}

// deposit records one request.
func (b *retryBudget) deposit() { b.add(b.ratio) }

func (b *retryBudget) add(n int64) {
	for {
		cur := b.tokens.Load()
		next := min(cur+n, b.max)
		if next == cur || b.tokens.CompareAndSwap(cur, next) {
			return
		}
	}
}

// withdraw spends one retry, or reports false when the budget is exhausted.
func (b *retryBudget) withdraw() bool {
	now := time.Now().UnixNano()
	if last := b.last.Load(); now > last && b.last.CompareAndSwap(last, now) {
		b.add(min(now-last, int64(10*time.Second)) * b.minRate / int64(time.Second))
	}
	for {
		cur := b.tokens.Load()
		if cur < 1000 {
			return false
		}
		if b.tokens.CompareAndSwap(cur, cur-1000) {
			return true
		}
	}
}
