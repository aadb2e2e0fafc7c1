package events

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/reelway/reelway/svc/sqlitedb"
	"google.golang.org/protobuf/proto"
)

// ErrOutbox means an event could not be stored in the outbox; the caller must treat it as
// not published.
var ErrOutbox = errors.New("events: outbox")

// outboxMigrations is the outbox file's schema; append, never edit.
var outboxMigrations = []string{
	`CREATE TABLE outbox (
		id         TEXT PRIMARY KEY,
		type       INTEGER NOT NULL,
		data       BLOB NOT NULL,
		created_us INTEGER NOT NULL,
		attempts   INTEGER NOT NULL DEFAULT 0,
		next_us    INTEGER NOT NULL,
		last_error TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX outbox_due ON outbox (next_us, created_us);`,
}

// OutboxConfig tunes an outbox. Zero values take the defaults.
type OutboxConfig struct {
	// AttemptTimeout bounds one publish attempt (default 2s).
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts while the bus refuses
	// (default 250ms and 30s, doubling, with jitter). A reconnect retries at once.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// FlushTimeout bounds the last attempt to send what is pending when Start's context
	// ends (default 3s). What is left then goes out when the service starts again.
	FlushTimeout time.Duration
	// Poll is how often the loop looks for rows other processes sharing the file left
	// behind (default 5s).
	Poll time.Duration
}

func (c OutboxConfig) withDefaults() OutboxConfig {
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = 2 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 250 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.FlushTimeout <= 0 {
		c.FlushTimeout = 3 * time.Second
	}
	if c.Poll <= 0 {
		c.Poll = 5 * time.Second
	}
	return c
}

// Outbox makes publishing durable for a service that must never lose an event: Publish
// commits the event to a SQLite file in the data directory before it returns, then hands
// it to the bus; Start's loop republishes whatever JetStream did not acknowledge, with
// backoff, until it does. The event id never changes across attempts, so JetStream stores
// one copy (within DuplicateWindow; consumers are idempotent beyond it). The file
// survives a crash or kill of the process (SQLite WAL), and the next start sends what is
// left.
type Outbox struct {
	db   *sql.DB
	bus  *Bus
	log  *slog.Logger
	cfg  OutboxConfig
	wake chan struct{}
}

// OpenOutbox opens (creating if needed) the outbox file at path, publishing through bus.
func OpenOutbox(ctx context.Context, path string, bus *Bus, log *slog.Logger, cfg OutboxConfig) (*Outbox, error) {
	db, err := sqlitedb.Open(ctx, path, outboxMigrations)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOutbox, err)
	}
	return &Outbox{db: db, bus: bus, log: log.With("outbox", path), cfg: cfg.withDefaults(), wake: make(chan struct{}, 1)}, nil
}

// Mount does nothing: the outbox serves no requests. It is a plugin of the service that
// publishes through it only so that the service's lifecycle runs Start and Close.
func (o *Outbox) Mount(*rpc.Server) error { return nil }

// Close closes the file. Pending events stay in it for the next start.
func (o *Outbox) Close() error { return o.db.Close() }

// Publish stores ev durably, then tries to publish it at once. It returns nil as soon as
// the event is stored: from then on it reaches JetStream, now or later. An error means
// the event was not stored and will not be published.
func (o *Outbox) Publish(ctx context.Context, ev *eventsv1.Event) error {
	if ev.GetId() == "" || ev.GetType() == eventsv1.EventType_EVENT_TYPE_UNSPECIFIED {
		return fmt.Errorf("%w: an event needs an id and a type", ErrOutbox)
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("%w: marshal: %w", ErrOutbox, err)
	}
	now := time.Now().UnixMicro()
	if _, err := o.db.ExecContext(ctx, `INSERT INTO outbox (id, type, data, created_us, next_us) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`, ev.GetId(), int32(ev.GetType()), data, now, now); err != nil {
		return fmt.Errorf("%w: store %s %s: %w", ErrOutbox, Name(ev.GetType()), ev.GetId(), err)
	}
	if !o.bus.Connected() {
		o.log.DebugContext(ctx, "outbox.deferred", "type", Name(ev.GetType()), "id", ev.GetId())
		o.signal()
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, o.cfg.AttemptTimeout)
	defer cancel()
	if err := o.send(actx, ev.GetId(), ev); err != nil {
		o.log.WarnContext(ctx, "outbox.deferred", "type", Name(ev.GetType()), "id", ev.GetId(), "err", err)
		o.postpone(context.WithoutCancel(ctx), ev.GetId(), err, o.cfg.MinBackoff)
		o.signal()
	}
	return nil
}

func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// send publishes one stored event and deletes its row once JetStream has it.
func (o *Outbox) send(ctx context.Context, id string, ev *eventsv1.Event) error {
	if err := o.bus.Publish(ctx, ev); err != nil {
		return err
	}
	// A failed delete only means one more (deduplicated) publish later.
	if _, err := o.db.ExecContext(context.WithoutCancel(ctx), `DELETE FROM outbox WHERE id = ?`, id); err != nil {
		o.log.WarnContext(ctx, "outbox.delete", "id", id, "err", err)
	}
	return nil
}

// postpone records a failed attempt of one row.
func (o *Outbox) postpone(ctx context.Context, id string, cause error, wait time.Duration) {
	_, err := o.db.ExecContext(ctx, `UPDATE outbox SET attempts = attempts + 1, next_us = ?, last_error = ? WHERE id = ?`,
		time.Now().Add(wait).UnixMicro(), cause.Error(), id)
	if err != nil {
		o.log.WarnContext(ctx, "outbox.postpone", "id", id, "err", err)
	}
}

// Pending counts the stored events JetStream has not acknowledged yet.
func (o *Outbox) Pending(ctx context.Context) (int, error) {
	var n int
	if err := o.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("%w: count: %w", ErrOutbox, err)
	}
	return n, nil
}

// Start sends pending events until ctx ends: at once when one is stored or the bus
// reconnects, otherwise when the backoff of the last failure has passed. When ctx ends it
// makes one last bounded attempt to flush.
func (o *Outbox) Start(ctx context.Context) error {
	streak := 0
	for {
		wait, err := o.drain(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			streak++
			wait = o.backoff(streak)
			if streak&(streak-1) == 0 {
				// 1st, 2nd, 4th, 8th… failure in a row: an outage is logged, not flooded.
				n, _ := o.Pending(ctx)
				o.log.WarnContext(ctx, "outbox.retry", "pending", n, "failures", streak, "retry_in", wait, "err", err)
			}
			o.delayDue(ctx, wait)
		case err == nil:
			streak = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			o.flush(ctx)
			return nil
		case <-o.wake:
		case <-o.bus.Up():
			o.delayDue(ctx, 0)
		case <-t.C:
		}
		t.Stop()
	}
}

// flush makes one bounded attempt to send what is pending after ctx ended.
func (o *Outbox) flush(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.FlushTimeout)
	defer cancel()
	if _, err := o.drain(fctx); err != nil {
		o.log.WarnContext(fctx, "outbox.flush", "err", err)
	}
	if n, err := o.Pending(fctx); err == nil && n > 0 {
		o.log.WarnContext(fctx, "outbox.left", "pending", n)
	}
}

// backoff is the wait after the n-th failed drain in a row: doubling from MinBackoff up to
// MaxBackoff, with jitter so processes sharing a NATS server do not retry in step.
func (o *Outbox) backoff(n int) time.Duration {
	d := min(o.cfg.MinBackoff<<min(n-1, 16), o.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// delayDue moves every row's next attempt to now+wait: after a failure, so the loop waits
// out the backoff instead of trying row after row; after a reconnect (wait 0), so
// everything goes at once.
func (o *Outbox) delayDue(ctx context.Context, wait time.Duration) {
	now := time.Now()
	var err error
	if wait == 0 {
		_, err = o.db.ExecContext(ctx, `UPDATE outbox SET next_us = ? WHERE next_us > ?`, now.UnixMicro(), now.UnixMicro())
	} else {
		_, err = o.db.ExecContext(ctx, `UPDATE outbox SET next_us = ? WHERE next_us < ?`, now.Add(wait).UnixMicro(), now.Add(wait).UnixMicro())
	}
	if err != nil && ctx.Err() == nil {
		o.log.WarnContext(ctx, "outbox.reschedule", "err", err)
	}
}

// drain sends the due rows, oldest first, and returns how long until the next row is due
// (Poll when none is). It stops at the first refusal and returns it.
func (o *Outbox) drain(ctx context.Context) (time.Duration, error) {
	const batch = 100
	for {
		if ctx.Err() != nil {
			return o.cfg.Poll, nil
		}
		due, err := o.due(ctx, batch)
		if err != nil {
			return o.cfg.Poll, err
		}
		for _, r := range due {
			if !o.bus.Connected() {
				return o.cfg.Poll, fmt.Errorf("%w: bus disconnected", ErrPublish)
			}
			ev := &eventsv1.Event{}
			if err := proto.Unmarshal(r.data, ev); err != nil {
				// Only this build writes the file; a row it cannot read never will be.
				o.log.ErrorContext(ctx, "outbox.corrupt", "id", r.id, "err", err)
				_, _ = o.db.ExecContext(ctx, `DELETE FROM outbox WHERE id = ?`, r.id)
				continue
			}
			actx, cancel := context.WithTimeout(ctx, o.cfg.AttemptTimeout)
			err := o.send(actx, r.id, ev)
			cancel()
			if err != nil {
				o.postpone(ctx, r.id, err, 0)
				return o.cfg.Poll, err
			}
			o.log.DebugContext(ctx, "outbox.sent", "type", Name(ev.GetType()), "id", r.id, "attempts", r.attempts+1)
		}
		if len(due) < batch {
			break
		}
	}
	var next sql.NullInt64
	if err := o.db.QueryRowContext(ctx, `SELECT MIN(next_us) FROM outbox`).Scan(&next); err != nil || !next.Valid {
		return o.cfg.Poll, nil
	}
	return min(max(time.Until(time.UnixMicro(next.Int64)), time.Millisecond), o.cfg.Poll), nil
}

type outboxRow struct {
	id       string
	data     []byte
	attempts int
}

func (o *Outbox) due(ctx context.Context, limit int) ([]outboxRow, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT id, data, attempts FROM outbox WHERE next_us <= ? ORDER BY created_us, id LIMIT ?`,
		time.Now().UnixMicro(), limit)
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrOutbox, err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.id, &r.data, &r.attempts); err != nil {
			return nil, fmt.Errorf("%w: read: %w", ErrOutbox, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrOutbox, err)
	}
	return out, nil
}
