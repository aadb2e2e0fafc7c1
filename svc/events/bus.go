package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"google.golang.org/protobuf/proto"
)

// Errors of the event bus.
var (
	// ErrConnect means the NATS server could not be reached.
	ErrConnect = errors.New("events: connect")
	// ErrPublish means an event was not acknowledged by JetStream; the caller must not
	// assume it was stored.
	ErrPublish = errors.New("events: publish")
	// ErrDecode means a message was not a valid event envelope.
	ErrDecode = errors.New("events: decode")
)

// Status is the bus connection's state and counters, for health reports and metrics.
type Status struct {
	Connected  bool   `json:"connected"`
	State      string `json:"state"`
	Reconnects uint64 `json:"reconnects"`
	LastError  string `json:"lastError,omitempty"`
	// Published and PublishErrors count Publish calls acknowledged by JetStream and
	// refused (or unanswered), since the process started.
	Published     uint64 `json:"published"`
	PublishErrors uint64 `json:"publishErrors"`
}

// Bus publishes and consumes domain events over one NATS connection.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	log    *slog.Logger
	source string

	reconnects    atomic.Uint64
	published     atomic.Uint64
	publishErrors atomic.Uint64

	mu      sync.Mutex
	lastErr string
	// up is closed, and replaced, each time the connection is (re)established, so loops
	// waiting out an outage (the outbox) resume at once.
	up chan struct{}
}

// Connect dials NATS at url. The connection reconnects forever with exponential backoff
// plus jitter, and a failed first dial is retried in the background too, so a service
// can start before NATS does.
func Connect(ctx context.Context, url, source string, log *slog.Logger) (*Bus, error) {
	b := &Bus{log: log, source: source, up: make(chan struct{})}
	nc, err := nats.Connect(url,
		nats.Name("reelway-"+source),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(8<<20),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := min(100*time.Millisecond<<min(attempts, 7), 10*time.Second)
			return d/2 + rand.N(d/2+1)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				// Our own drain or close: expected, not worth a warning.
				log.Debug("nats.disconnected")
				return
			}
			b.setErr(err)
			log.Warn("nats.disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			b.reconnects.Add(1)
			b.signalUp()
			log.Info("nats.reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ConnectHandler(func(c *nats.Conn) {
			// Only called when the first dial failed and a later one succeeded.
			b.signalUp()
			log.Info("nats.connected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.setErr(err)
			log.Warn("nats.error", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConnect, url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: jetstream: %w", ErrConnect, err)
	}
	b.nc, b.js = nc, js
	return b, nil
}

func (b *Bus) signalUp() {
	b.mu.Lock()
	close(b.up)
	b.up = make(chan struct{})
	b.mu.Unlock()
}

// Up returns a channel that is closed the next time the connection is established again.
func (b *Bus) Up() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.up
}

// Connected reports whether the connection is up right now.
func (b *Bus) Connected() bool { return b.nc.IsConnected() }

func (b *Bus) setErr(err error) {
	if err == nil {
		return
	}
	b.mu.Lock()
	b.lastErr = err.Error()
	b.mu.Unlock()
}

// Default retention of the events stream, used when EnsureStream gets zero limits.
const (
	DefaultMaxAge   = 7 * 24 * time.Hour
	DefaultMaxBytes = 1 << 30
)

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id: a republish of the same
// event within it is stored once. The outbox retries well within it.
const DuplicateWindow = 2 * time.Minute

// EnsureStream creates or updates the events stream. Retention is by limits: events older
// than maxAge go first, then the oldest once the stream holds maxBytes (zero takes
// DefaultMaxAge and DefaultMaxBytes). Discarding old events never refuses a new one.
func (b *Bus) EnsureStream(ctx context.Context, maxAge time.Duration, maxBytes int64) error {
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       StreamName,
		Subjects:   []string{SubjectPrefix + ">"},
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		MaxAge:     maxAge,
		MaxBytes:   maxBytes,
		Storage:    jetstream.FileStorage,
		Duplicates: DuplicateWindow,
	})
	if err != nil {
		return fmt.Errorf("%w: ensure stream: %w", ErrConnect, err)
	}
	return nil
}

// Publish stores an event and waits for JetStream's acknowledgement. An error means the
// event may or may not be stored: republishing the same envelope is safe (JetStream keeps
// one copy per id within DuplicateWindow), and a caller that must not lose the event
// publishes through an Outbox instead.
func (b *Bus) Publish(ctx context.Context, ev *eventsv1.Event) error {
	if ev.GetId() == "" || ev.GetType() == eventsv1.EventType_EVENT_TYPE_UNSPECIFIED {
		b.publishErrors.Add(1)
		return fmt.Errorf("%w: an event needs an id and a type", ErrPublish)
	}
	if !b.nc.IsConnected() {
		// Fail now rather than buffer the message and time out: the caller decides what
		// to do (the outbox keeps it and tries again on reconnect).
		b.publishErrors.Add(1)
		return fmt.Errorf("%w: %s %s: %w", ErrPublish, Name(ev.GetType()), ev.GetId(), nats.ErrConnectionReconnecting)
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("%w: marshal: %w", ErrPublish, err)
	}
	msg := nats.NewMsg(Subject(ev.GetType()))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.GetId())
	if _, err := b.js.PublishMsg(ctx, msg); err != nil {
		b.publishErrors.Add(1)
		return fmt.Errorf("%w: %s %s: %w", ErrPublish, Name(ev.GetType()), ev.GetId(), err)
	}
	b.published.Add(1)
	b.log.Debug("event.published", "type", Name(ev.GetType()), "id", ev.GetId(), "subject_id", ev.GetSubjectId())
	return nil
}

// Decode parses an event envelope.
func Decode(data []byte) (*eventsv1.Event, error) {
	ev := &eventsv1.Event{}
	if err := proto.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	return ev, nil
}

// JetStream exposes the JetStream context for consumers.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn exposes the NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Status reports the connection state.
func (b *Bus) Status() Status {
	b.mu.Lock()
	last := b.lastErr
	b.mu.Unlock()
	st := b.nc.Status()
	return Status{
		Connected:     st == nats.CONNECTED,
		State:         st.String(),
		Reconnects:    b.reconnects.Load(),
		LastError:     last,
		Published:     b.published.Load(),
		PublishErrors: b.publishErrors.Load(),
	}
}

// Close drains the connection (in-flight handlers finish, pending publishes flush) and
// gives up after the context's deadline.
func (b *Bus) Close(ctx context.Context) error {
	if b.nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	b.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := b.nc.Drain(); err != nil {
		b.nc.Close()
		return nil
	}
	select {
	case <-closed:
	case <-ctx.Done():
		b.nc.Close()
	}
	return nil
}
