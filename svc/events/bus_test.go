package events_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"github.com/reelway/reelway/svc/events"
	"google.golang.org/protobuf/proto"
)

func TestName(t *testing.T) {
	tests := []struct {
		typ  eventsv1.EventType
		want string
	}{
		{eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED, "upload.completed"},
		{eventsv1.EventType_EVENT_TYPE_VIDEO_READY, "video.ready"},
		{eventsv1.EventType_EVENT_TYPE_TRANSCODE_PROGRESS, "transcode.progress"},
		{eventsv1.EventType_EVENT_TYPE_SERVICE_DEREGISTERED, "service.deregistered"},
	}
	for _, tt := range tests {
		if got := events.Name(tt.typ); got != tt.want {
			t.Errorf("Name(%v) = %q, want %q", tt.typ, got, tt.want)
		}
	}
	// Every type has a distinct two-part name.
	seen := map[string]bool{}
	for v := range eventsv1.EventType_name {
		if v == 0 {
			continue
		}
		n := events.Name(eventsv1.EventType(v))
		if seen[n] {
			t.Errorf("duplicate name %q", n)
		}
		seen[n] = true
	}
	if len(seen) < 14 {
		t.Errorf("only %d event types", len(seen))
	}
}

func TestBusPublishIsStoredOnceAndDelivered(t *testing.T) {
	srv, err := events.StartServer("127.0.0.1", 0, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bus, err := events.Connect(ctx, srv.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close(ctx)
	if err := bus.EnsureStream(ctx, time.Hour, 1<<20); err != nil {
		t.Fatal(err)
	}
	sub, err := bus.Conn().SubscribeSync("reelway.events.upload.completed")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	ev := events.UploadCompleted("upload", "vid1", 42, "abc")
	for range 2 { // a retried publish of the same event
		if err := bus.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, ev) {
		t.Fatalf("got %v, want %v", got, ev)
	}
	if got.GetUploadCompleted().GetSizeBytes() != 42 || got.GetSource() != "upload" || got.GetSubjectId() != "vid1" {
		t.Fatalf("payload %v", got)
	}

	stream, err := bus.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1 (deduplicated by Nats-Msg-Id)", info.State.Msgs)
	}
	// A new event about the same video is a new message.
	if err := bus.Publish(ctx, events.UploadCompleted("upload", "vid1", 42, "abc")); err != nil {
		t.Fatal(err)
	}
	info, _ = stream.Info(ctx)
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2", info.State.Msgs)
	}
	if st := bus.Status(); !st.Connected {
		t.Fatalf("status %+v", st)
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	if _, err := events.Decode([]byte{0xff, 0xff, 0xff}); err == nil {
		t.Fatal("garbage decoded")
	}
}

func TestPublishFailsWhenNATSIsDown(t *testing.T) {
	srv, err := events.StartServer("127.0.0.1", 0, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bus, err := events.Connect(ctx, srv.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStream(ctx, time.Hour, 1<<20); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := bus.Publish(pctx, events.VideoDeleted("metadata", "v")); err == nil {
		t.Fatal("publish without a server reported success")
	}
	if st := bus.Status(); st.Connected {
		t.Fatalf("status says connected: %+v", st)
	}
	_ = bus.Close(ctx)
}
