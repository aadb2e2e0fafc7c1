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

// Status is the bus connection's state, for health reports.
type Status struct {
	Connected  bool   `json:"connected"`
	State      string `json:"state"`
	Reconnects uint64 `json:"reconnects"`
	LastError  string `json:"lastError,omitempty"`
}

// Bus publishes and consumes domain events over one NATS connection.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	log    *slog.Logger
	source string

	reconnects atomic.Uint64
	mu         sync.Mutex
	lastErr    string
}

// Connect dials NATS at url. The connection reconnects forever with exponential backoff
// plus jitter, and a failed first dial is retried in the background too, so a service
// can start before NATS does.
func Connect(ctx context.Context, url, source string, log *slog.Logger) (*Bus, error) {
	b := &Bus{log: log, source: source}
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
			b.setErr(err)
			log.Warn("nats.disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			b.reconnects.Add(1)
			log.Info("nats.reconnected", "url", c.ConnectedUrlRedacted())
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

func (b *Bus) setErr(err error) {
	if err == nil {
		return
	}
	b.mu.Lock()
	b.lastErr = err.Error()
	b.mu.Unlock()
}

// EnsureStream creates or updates the events stream. Retention is by age and size.
func (b *Bus) EnsureStream(ctx context.Context, maxAge time.Duration, maxBytes int64) error {
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       StreamName,
		Subjects:   []string{SubjectPrefix + ">"},
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     maxAge,
		MaxBytes:   maxBytes,
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("%w: ensure stream: %w", ErrConnect, err)
	}
	return nil
}

// Publish stores an event and waits for JetStream's acknowledgement.
func (b *Bus) Publish(ctx context.Context, ev *eventsv1.Event) error {
	data, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("%w: marshal: %w", ErrPublish, err)
	}
	msg := nats.NewMsg(Subject(ev.GetType()))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.GetId())
	if _, err := b.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrPublish, Name(ev.GetType()), ev.GetId(), err)
	}
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
		Connected:  st == nats.CONNECTED,
		State:      st.String(),
		Reconnects: b.reconnects.Load(),
		LastError:  last,
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
