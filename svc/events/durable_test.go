package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"github.com/reelway/reelway/svc/events"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// natsServer is a real NATS server on a fixed port and store directory, so a test can
// stop it and start it again where clients expect it.
type natsServer struct {
	t    *testing.T
	port int
	dir  string
	srv  *events.Server
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	n := &natsServer{t: t, port: port, dir: t.TempDir()}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) start() {
	n.t.Helper()
	srv, err := events.StartServer("127.0.0.1", n.port, n.dir)
	if err != nil {
		n.t.Fatalf("start nats on %d: %v", n.port, err)
	}
	n.srv = srv
}

func (n *natsServer) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv = nil
	}
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func connect(t *testing.T, url string, log *slog.Logger) *events.Bus {
	t.Helper()
	bus, err := events.Connect(t.Context(), url, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = bus.Close(ctx)
	})
	return bus
}

func ensureStream(t *testing.T, bus *events.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := bus.EnsureStream(ctx, time.Hour, 1<<30); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storedIDs lists the event ids the stream holds on subject, one entry per message.
func storedIDs(t *testing.T, bus *events.Bus, subject string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cons, err := bus.JetStream().OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			ev, err := events.Decode(msg.Data())
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, ev.GetId())
		}
		if n == 0 {
			return ids
		}
	}
}

func TestRetentionDefaultsAndOverrides(t *testing.T) {
	n := startNATS(t)
	bus := connect(t, n.url(), quietLog())
	cases := []struct {
		name      string
		age       time.Duration
		bytes     int64
		wantAge   time.Duration
		wantBytes int64
	}{
		{name: "defaults", wantAge: events.DefaultMaxAge, wantBytes: events.DefaultMaxBytes},
		{name: "configured", age: 48 * time.Hour, bytes: 1 << 20, wantAge: 48 * time.Hour, wantBytes: 1 << 20},
	}
	for _, tc := range cases {
		if err := bus.EnsureStream(t.Context(), tc.age, tc.bytes); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		s, err := bus.JetStream().Stream(t.Context(), events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		c := info.Config
		if c.MaxAge != tc.wantAge || c.MaxBytes != tc.wantBytes || c.Retention != jetstream.LimitsPolicy ||
			c.Discard != jetstream.DiscardOld || c.Storage != jetstream.FileStorage || c.Duplicates != events.DuplicateWindow {
			t.Errorf("%s: stream config age %v bytes %d retention %v discard %v storage %v dup %v",
				tc.name, c.MaxAge, c.MaxBytes, c.Retention, c.Discard, c.Storage, c.Duplicates)
		}
	}
}

func TestJSON(t *testing.T) {
	ev := events.UploadCompleted("upload", "vid1", 42, "abc")
	ev.Time = timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	b, err := events.JSON(ev)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	payload, _ := got["upload_completed"].(map[string]any)
	if got["id"] != ev.GetId() || got["type"] != "EVENT_TYPE_UPLOAD_COMPLETED" || got["time"] != "2026-01-02T03:04:05Z" ||
		payload["video_id"] != "vid1" || payload["size_bytes"] != "42" {
		t.Errorf("JSON = %s", b)
	}
	if v := events.LogValue(ev).String(); !strings.Contains(v, `"video_id":"vid1"`) {
		t.Errorf("LogValue = %s", v)
	}
}

func TestRouter(t *testing.T) {
	var logBuf syncBuffer
	r := events.NewRouter(slog.New(slog.NewTextHandler(&logBuf, nil)))
	var got []string
	if err := events.On(r, func(_ context.Context, ev *eventsv1.Event, p *eventsv1.UploadCompleted) error {
		got = append(got, "completed:"+p.GetVideoId())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := events.On(r, func(_ context.Context, _ *eventsv1.Event, p *eventsv1.VideoReady) error {
		if p.GetVideoId() == "bad" {
			return errors.New("handler failed")
		}
		got = append(got, "ready:"+p.GetVideoId())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := events.On(r, func(context.Context, *eventsv1.Event, *eventsv1.Event) error { return nil }); !errors.Is(err, events.ErrNotPayload) {
		t.Errorf("On(*Event) = %v, want ErrNotPayload", err)
	}
	if err := events.On(r, func(context.Context, *eventsv1.Event, *timestamppb.Timestamp) error { return nil }); !errors.Is(err, events.ErrNotPayload) {
		t.Errorf("On(*Timestamp) = %v, want ErrNotPayload", err)
	}
	want := []string{"reelway.events.upload.completed", "reelway.events.video.ready"}
	if !slices.Equal(r.Subjects(), want) {
		t.Errorf("Subjects = %v, want %v", r.Subjects(), want)
	}

	marshal := func(ev *eventsv1.Event) []byte {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	future := events.UploadCompleted("upload", "x", 1, "")
	future.Type = eventsv1.EventType(999) // a type from a newer publisher
	future.Payload = nil
	noPayload := events.UploadCompleted("upload", "y", 1, "")
	noPayload.Payload = nil
	cases := []struct {
		name    string
		data    []byte
		wantErr error
		wantGot string
	}{
		{name: "typed handler", data: marshal(events.UploadCompleted("upload", "v1", 1, "")), wantGot: "completed:v1"},
		{name: "second type", data: marshal(events.VideoReady("worker", "v2", "/p")), wantGot: "ready:v2"},
		{name: "registered type, handler error", data: marshal(events.VideoReady("worker", "bad", "/p")), wantErr: errors.New("any")},
		{name: "known type without handler is skipped", data: marshal(events.VideoDeleted("metadata", "v3"))},
		{name: "unknown type is skipped", data: marshal(future)},
		{name: "type without its payload", data: marshal(noPayload), wantErr: events.ErrDecode},
		{name: "garbage", data: []byte{0xff, 0x01}, wantErr: events.ErrDecode},
	}
	for _, tc := range cases {
		got = nil
		err := r.Dispatch(t.Context(), tc.data)
		switch {
		case tc.wantErr == nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != nil && err == nil:
			t.Errorf("%s: no error", tc.name)
		case tc.wantErr != nil && errors.Is(tc.wantErr, events.ErrDecode) && !errors.Is(err, events.ErrDecode):
			t.Errorf("%s: %v, want ErrDecode", tc.name, err)
		}
		if tc.wantGot != "" && !slices.Equal(got, []string{tc.wantGot}) {
			t.Errorf("%s: handled %v, want %s", tc.name, got, tc.wantGot)
		}
		if tc.wantGot == "" && len(got) > 0 {
			t.Errorf("%s: handled %v, want nothing", tc.name, got)
		}
	}
	if s := logBuf.String(); strings.Count(s, "event.skipped") != 2 || !strings.Contains(s, "type_number=999") {
		t.Errorf("skips not logged:\n%s", s)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestConsumeAcrossServerRestart runs a durable consumer while the NATS server is shut
// down and started again on the same port and store: every event published before,
// during (through the outbox) and after the outage is handled, and the bus reports the
// reconnect.
func TestConsumeAcrossServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a NATS server")
	}
	n := startNATS(t)
	log := quietLog()
	pubBus := connect(t, n.url(), log)
	subBus := connect(t, n.url(), log)
	ensureStream(t, pubBus)
	ob, err := events.OpenOutbox(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), pubBus, log, events.OutboxConfig{MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close() })
	obCtx, stopOutbox := context.WithCancel(context.Background())
	obDone := make(chan struct{})
	go func() { defer close(obDone); _ = ob.Start(obCtx) }()
	t.Cleanup(func() { stopOutbox(); <-obDone })

	var mu sync.Mutex
	seen := map[string]int{}
	r := events.NewRouter(log)
	if err := events.On(r, func(_ context.Context, ev *eventsv1.Event, _ *eventsv1.VideoCreated) error {
		mu.Lock()
		seen[ev.GetId()]++
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- subBus.Consume(ctx, events.ConsumeConfig{Durable: "restart-test", AckWait: 2 * time.Second}, r)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Consume returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Consume did not return after its context ended")
		}
	})

	var ids []string
	publish := func(k int) {
		for range k {
			ev := events.VideoCreated("test", "v", "t")
			if err := ob.Publish(t.Context(), ev); err != nil {
				t.Fatalf("outbox publish: %v", err)
			}
			ids = append(ids, ev.GetId())
		}
	}
	handled := func(want int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids[:want] {
				if seen[id] == 0 {
					return false
				}
			}
			return true
		}
	}
	publish(50)
	waitFor(t, 20*time.Second, "events before the outage handled", handled(50))

	n.stop()
	waitFor(t, 10*time.Second, "bus sees the outage", func() bool { return !pubBus.Status().Connected })
	publish(50) // NATS is down: the outbox keeps them
	if p, err := ob.Pending(t.Context()); err != nil || p != 50 {
		t.Fatalf("pending during the outage = %d, %v; want 50", p, err)
	}
	n.start()
	publish(50)
	waitFor(t, 60*time.Second, "every event handled after the restart", handled(150))
	waitFor(t, 10*time.Second, "outbox empty", func() bool { p, err := ob.Pending(t.Context()); return err == nil && p == 0 })

	stored := storedIDs(t, pubBus, events.Subject(eventsv1.EventType_EVENT_TYPE_VIDEO_CREATED))
	if len(stored) != 150 {
		t.Errorf("stream holds %d video.created events, want 150 (one per event)", len(stored))
	}
	slices.Sort(stored)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(stored, want) {
		t.Errorf("stored ids differ from published ids")
	}
	for _, b := range []*events.Bus{pubBus, subBus} {
		st := b.Status()
		if !st.Connected || st.Reconnects < 1 || st.LastError == "" {
			t.Errorf("status after a restart = %+v, want connected with a reconnect and the last error", st)
		}
	}
	if st := pubBus.Status(); st.Published < 150 {
		t.Errorf("published counter = %d, want ≥ 150", st.Published)
	}
}

// TestPublishingWhileNATSIsDown: a plain publish fails (the caller knows), an outbox
// publish is kept and delivered once NATS is back, also by a new process opening the same
// outbox file.
func TestPublishingWhileNATSIsDown(t *testing.T) {
	n := startNATS(t)
	log := quietLog()
	bus := connect(t, n.url(), log)
	ensureStream(t, bus)
	path := filepath.Join(t.TempDir(), "outbox.db")
	n.stop()
	waitFor(t, 10*time.Second, "disconnected", func() bool { return !bus.Connected() })

	pctx, cancel := context.WithTimeout(t.Context(), time.Second)
	err := bus.Publish(pctx, events.VideoDeleted("metadata", "plain"))
	cancel()
	if !errors.Is(err, events.ErrPublish) {
		t.Fatalf("publish without a server = %v, want ErrPublish", err)
	}
	if st := bus.Status(); st.PublishErrors == 0 {
		t.Errorf("publish errors not counted: %+v", st)
	}

	ob, err := events.OpenOutbox(t.Context(), path, bus, log, events.OutboxConfig{})
	if err != nil {
		t.Fatal(err)
	}
	kept := events.VideoDeleted("metadata", "kept")
	start := time.Now()
	if err := ob.Publish(t.Context(), kept); err != nil {
		t.Fatalf("outbox publish while down: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("outbox publish while down took %v; it must not wait for NATS", d)
	}
	// The process stops before NATS is back: the event is in the file.
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}

	n.start()
	waitFor(t, 20*time.Second, "reconnected", bus.Connected)
	ob2, err := events.OpenOutbox(t.Context(), path, bus, log, events.OutboxConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob2.Close() })
	if p, _ := ob2.Pending(t.Context()); p != 1 {
		t.Fatalf("reopened outbox holds %d events, want 1", p)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ob2.Start(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	subject := events.Subject(eventsv1.EventType_EVENT_TYPE_VIDEO_DELETED)
	waitFor(t, 20*time.Second, "kept event delivered", func() bool {
		return slices.Contains(storedIDs(t, bus, subject), kept.GetId())
	})
	if ids := storedIDs(t, bus, subject); len(ids) != 1 || ids[0] != kept.GetId() {
		// The plain publish was refused at once (nothing buffered behind the caller's
		// back); the kept one is there, once.
		t.Errorf("stream holds %v, want only %s", ids, kept.GetId())
	}
	waitFor(t, 5*time.Second, "outbox empty", func() bool { p, _ := ob2.Pending(t.Context()); return p == 0 })

	// An invalid event is refused, not stored.
	if err := ob2.Publish(t.Context(), &eventsv1.Event{}); !errors.Is(err, events.ErrOutbox) {
		t.Errorf("empty event = %v, want ErrOutbox", err)
	}
}

// TestDrainOnClose: Close finishes the handler in flight and returns within its deadline.
func TestDrainOnClose(t *testing.T) {
	n := startNATS(t)
	log := quietLog()
	bus, err := events.Connect(t.Context(), n.url(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	ensureStream(t, bus)
	sub, err := bus.Conn().Subscribe("slow", func(m *nats.Msg) {
		time.Sleep(300 * time.Millisecond)
		_ = m.Respond([]byte("done"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub
	other := connect(t, n.url(), log)
	reply := make(chan error, 1)
	go func() {
		_, err := other.Conn().Request("slow", nil, 5*time.Second)
		reply <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the request reach the handler
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := bus.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("close took %v", d)
	}
	if err := <-reply; err != nil {
		t.Errorf("in-flight handler did not finish before close: %v", err)
	}
	if bus.Conn().IsConnected() {
		t.Errorf("still connected after close")
	}
}
