package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ErrNotPayload means On was given a message type that is not one of the envelope's
// payloads: a wiring mistake, reported when the router is built.
var ErrNotPayload = errors.New("events: not an event payload type")

// Handler handles one event. Returning nil acknowledges it; an error has it delivered
// again after a backoff, so a handler must be idempotent: handling an event twice must
// have the effect of handling it once.
type Handler func(ctx context.Context, ev *eventsv1.Event) error

// Router dispatches decoded events to the handler registered for their type. Events of
// other types (including types this build does not know, from a newer publisher) are
// skipped and logged, never fatal.
type Router struct {
	log      *slog.Logger
	handlers map[eventsv1.EventType]Handler
}

// NewRouter returns a router with no handlers.
func NewRouter(log *slog.Logger) *Router {
	return &Router{log: log, handlers: make(map[eventsv1.EventType]Handler)}
}

// On registers fn for the events whose payload is a T, for example
//
//	events.On(r, func(ctx context.Context, ev *eventsv1.Event, p *eventsv1.UploadCompleted) error { … })
//
// fn gets the envelope and its typed payload; an event of that type without its payload
// is undecodable. A later registration for the same type replaces the earlier one.
func On[T proto.Message](r *Router, fn func(ctx context.Context, ev *eventsv1.Event, payload T) error) error {
	var zero T
	typ, field, err := payloadOf(zero.ProtoReflect().Descriptor())
	if err != nil {
		return err
	}
	r.handlers[typ] = func(ctx context.Context, ev *eventsv1.Event) error {
		m := ev.ProtoReflect()
		if !m.Has(field) {
			return fmt.Errorf("%w: %s event %s without its payload", ErrDecode, Name(typ), ev.GetId())
		}
		p, ok := m.Get(field).Message().Interface().(T)
		if !ok {
			return fmt.Errorf("%w: %s payload of an unexpected type", ErrDecode, Name(typ))
		}
		return fn(ctx, ev, p)
	}
	return nil
}

// payloadOf finds the envelope's oneof field carrying messages of type desc and the event
// type named after it (field upload_completed ↔ EVENT_TYPE_UPLOAD_COMPLETED).
func payloadOf(desc protoreflect.MessageDescriptor) (eventsv1.EventType, protoreflect.FieldDescriptor, error) {
	payload := (&eventsv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")
	fields := payload.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if f.Message() == nil || f.Message().FullName() != desc.FullName() {
			continue
		}
		name := protoreflect.Name("EVENT_TYPE_" + strings.ToUpper(string(f.Name())))
		v := eventsv1.EventType_EVENT_TYPE_UNSPECIFIED.Descriptor().Values().ByName(name)
		if v == nil {
			return 0, nil, fmt.Errorf("%w: payload %s has no event type %s", ErrNotPayload, desc.FullName(), name)
		}
		return eventsv1.EventType(v.Number()), f, nil
	}
	return 0, nil, fmt.Errorf("%w: %s", ErrNotPayload, desc.FullName())
}

// Subjects lists the subjects of the registered event types, sorted.
func (r *Router) Subjects() []string {
	out := make([]string, 0, len(r.handlers))
	for t := range r.handlers {
		out = append(out, Subject(t))
	}
	slices.Sort(out)
	return out
}

// Dispatch decodes one message and runs its handler. Undecodable data is ErrDecode; an
// event without a handler is skipped (nil) and logged.
func (r *Router) Dispatch(ctx context.Context, data []byte) error {
	ev, err := Decode(data)
	if err != nil {
		return err
	}
	h, ok := r.handlers[ev.GetType()]
	if !ok {
		r.log.WarnContext(ctx, "event.skipped", "type", Name(ev.GetType()), "type_number", int32(ev.GetType()), "id", ev.GetId())
		return nil
	}
	return h(ctx, ev)
}

// ConsumeConfig describes a durable consumer of the events stream.
type ConsumeConfig struct {
	// Durable names the consumer. Every process using the same name shares its events
	// (each event goes to one of them), and the consumer's position survives restarts.
	Durable string
	// AckWait is how long an event may be handled before JetStream hands it out again
	// (default 30s); a handler gets this long as its deadline.
	AckWait time.Duration
	// Backoff is the delay before a failed event is delivered again, by delivery number;
	// the last entry repeats (default 1s, 5s, 30s).
	Backoff []time.Duration
	// Prefetch is how many events are pulled ahead of the handler (default 100).
	Prefetch int
	// DeliverNew makes a consumer created for the first time start with events published
	// from then on rather than with the whole stream.
	DeliverNew bool
}

func (c ConsumeConfig) withDefaults() ConsumeConfig {
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if len(c.Backoff) == 0 {
		c.Backoff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}
	}
	if c.Prefetch <= 0 {
		c.Prefetch = 100
	}
	return c
}

// Consume runs the router over a durable pull consumer of the events it handles until ctx
// ends, through NATS outages and server restarts. Each event is acknowledged once its
// handler returns nil, delivered again after a backoff when it fails, and terminated
// (logged) when it cannot be decoded. On return the handler in flight has finished;
// events pulled but not handled are delivered again after AckWait.
func (b *Bus) Consume(ctx context.Context, cfg ConsumeConfig, r *Router) error {
	cfg = cfg.withDefaults()
	subjects := r.Subjects()
	if cfg.Durable == "" || len(subjects) == 0 {
		return fmt.Errorf("%w: a consumer needs a durable name and at least one handler", ErrConnect)
	}
	deliver := jetstream.DeliverAllPolicy
	if cfg.DeliverNew {
		deliver = jetstream.DeliverNewPolicy
	}
	ccfg := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		DeliverPolicy: deliver,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: max(1000, 2*cfg.Prefetch),
	}
	if len(subjects) == 1 {
		// The single-filter form, so a consumer made with FilterSubject keeps working.
		ccfg.FilterSubject = subjects[0]
	} else {
		ccfg.FilterSubjects = subjects
	}
	log := b.log.With("consumer", cfg.Durable)
	delay := 250 * time.Millisecond
	for {
		cons, err := b.consumer(ctx, ccfg)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.WarnContext(ctx, "consumer.create", "err", err, "retry_in", delay)
			sleepCtx(ctx, delay)
			delay = min(2*delay, 10*time.Second)
			continue
		}
		delay = 250 * time.Millisecond
		lost := make(chan error, 1)
		cc, err := cons.Consume(func(msg jetstream.Msg) { r.handle(ctx, log, cfg, msg) },
			jetstream.PullMaxMessages(cfg.Prefetch),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					select {
					case lost <- err:
					default:
					}
					return
				}
				log.DebugContext(ctx, "consumer.error", "err", err)
			}))
		if err != nil {
			log.WarnContext(ctx, "consumer.consume", "err", err)
			sleepCtx(ctx, delay)
			continue
		}
		select {
		case <-ctx.Done():
			cc.Stop()
			<-cc.Closed()
			return nil
		case err := <-lost:
			// The server lost the consumer (its storage was wiped, say): make it again.
			cc.Stop()
			<-cc.Closed()
			log.WarnContext(ctx, "consumer.lost", "err", err)
		}
	}
}

func (b *Bus) consumer(ctx context.Context, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := b.js.CreateOrUpdateConsumer(cctx, StreamName, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: consumer %s: %w", ErrConnect, cfg.Durable, err)
	}
	return cons, nil
}

// handle runs one message through the router and settles it. The handler's context
// outlives ctx by design: an event being handled when the consumer stops is finished
// (within AckWait) rather than abandoned half way.
func (r *Router) handle(ctx context.Context, log *slog.Logger, cfg ConsumeConfig, msg jetstream.Msg) {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.AckWait)
	defer cancel()
	err := r.Dispatch(hctx, msg.Data())
	switch {
	case err == nil:
		if aerr := msg.Ack(); aerr != nil {
			log.DebugContext(ctx, "event.ack", "subject", msg.Subject(), "err", aerr)
		}
	case errors.Is(err, ErrDecode):
		log.WarnContext(ctx, "event.undecodable", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
	default:
		n := 1
		if md, merr := msg.Metadata(); merr == nil {
			n = int(min(md.NumDelivered, 1<<20))
		}
		delay := cfg.Backoff[min(n-1, len(cfg.Backoff)-1)]
		log.WarnContext(ctx, "event.retry", "subject", msg.Subject(), "delivery", n, "retry_in", delay, "err", err)
		if nerr := msg.NakWithDelay(delay); nerr != nil {
			log.DebugContext(ctx, "event.nak", "err", nerr)
		}
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
