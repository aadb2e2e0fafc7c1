package metadata_test

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/metadata"
	"github.com/reelway/reelway/svc/rpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// protocols are the wire protocols every handler test runs over.
func protocols() []struct {
	name string
	opts []connect.ClientOption
} {
	return []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	}
}

type harness struct {
	bus     *events.Bus
	store   metadata.Store
	baseURL string
	http    *http.Client
}

// newHarness starts a real NATS server with JetStream, opens the service on a new store of
// backend b and serves it over h2c on a loopback port.
func newHarness(t *testing.T, b backend, pub func(*events.Bus) metadata.Publisher) *harness {
	t.Helper()
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)

	ns, err := events.StartServer("127.0.0.1", -1, t.TempDir()) // -1: a free port
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	bus, err := events.Connect(ctx, ns.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	if err := bus.EnsureStream(ctx, time.Hour, 1<<30); err != nil {
		t.Fatal(err)
	}

	var p metadata.Publisher = bus
	if pub != nil {
		p = pub(bus)
	}
	// openStore closes the store; the service's Close would close it a second time.
	store := openStore(t, b.newConfig(t))
	svc := metadata.New(store, log, p)
	return &harness{bus: bus, store: store, baseURL: serve(t, svc), http: h2cClient(t)}
}

func serve(t *testing.T, p interface{ Mount(*rpc.Server) error }) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	srv := rpc.NewServer(log, nil)
	if err := p.Mount(srv); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "http://" + ln.Addr().String()
}

func h2cClient(t *testing.T) *http.Client {
	tr := rpc.NewH2CTransport()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (h *harness) client(opts []connect.ClientOption) metadatav1connect.MetadataServiceClient {
	return metadatav1connect.NewMetadataServiceClient(h.http, h.baseURL, opts...)
}

func wantCode(t *testing.T, err error, want connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if got := connect.CodeOf(err); got != want {
		t.Fatalf("got code %v (%v), want %v", got, err, want)
	}
}

// subscribe listens on subject and returns a function that waits for the next event there.
func subscribe(t *testing.T, h *harness, subject string) func() *eventsv1.Event {
	t.Helper()
	sub, err := h.bus.Conn().SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	return func() *eventsv1.Event {
		t.Helper()
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no event on %s: %v", subject, err)
		}
		ev, err := events.Decode(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
}

func testLifecyclePublishesEvents(t *testing.T, b backend) {
	h := newHarness(t, b, nil)
	created := subscribe(t, h, "reelway.events.video.created")
	updated := subscribe(t, h, "reelway.events.video.updated")
	deleted := subscribe(t, h, "reelway.events.video.deleted")

	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			ctx := t.Context()
			c := h.client(p.opts)
			id := "vid-" + p.name

			res, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{
				Id: id, Title: "First", Tags: []string{"a", "b"},
				Renditions: []*metadatav1.Rendition{{Name: "720p", Width: 1280, Height: 720, Bandwidth: 2_500_000}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			v := res.GetVideo()
			if v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING || v.GetVisibility() != metadatav1.Visibility_VISIBILITY_PUBLIC {
				t.Fatalf("defaults not applied: status %v visibility %v", v.GetStatus(), v.GetVisibility())
			}
			if v.GetCreateTime() == nil || !v.GetCreateTime().AsTime().Equal(v.GetUpdateTime().AsTime()) {
				t.Fatalf("create/update time: %v %v", v.GetCreateTime(), v.GetUpdateTime())
			}
			ev := created()
			if ev.GetSource() != "metadata" || ev.GetSubjectId() != id || ev.GetVideoCreated().GetVideoId() != id || ev.GetVideoCreated().GetTitle() != "First" {
				t.Fatalf("video.created event: %v", ev)
			}

			got, err := c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: id})
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got.GetVideo(), v) {
				t.Fatalf("get:\n got %v\nwant %v", got.GetVideo(), v)
			}

			// A retried create with the same content returns the stored video.
			again, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{
				Id: id, Title: "First", Tags: []string{"a", "b"},
				Renditions: []*metadatav1.Rendition{{Name: "720p", Width: 1280, Height: 720, Bandwidth: 2_500_000}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(again.GetVideo(), v) {
				t.Fatalf("idempotent create:\n got %v\nwant %v", again.GetVideo(), v)
			}
			_, err = c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: id, Title: "Other"}})
			wantCode(t, err, connect.CodeAlreadyExists)

			up, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
				Video: &metadatav1.Video{
					Id: id, Title: "Renamed", Description: "ignored: not in mask",
					Status: metadatav1.VideoStatus_VIDEO_STATUS_READY, PlaybackPath: "/v1/hls/" + id + "/master.m3u8",
					Tags: nil, OwnerId: "user-" + p.name,
				},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title", "status", "playback_path", "tags", "owner_id"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			u := up.GetVideo()
			if u.GetTitle() != "Renamed" || u.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY ||
				u.GetPlaybackPath() != "/v1/hls/"+id+"/master.m3u8" || len(u.GetTags()) != 0 || u.GetOwnerId() != "user-"+p.name {
				t.Fatalf("update not applied: %v", u)
			}
			if u.GetDescription() != "" || len(u.GetRenditions()) != 1 {
				t.Fatalf("fields outside the mask changed: %v", u)
			}
			if u.GetUpdateTime().AsTime().Before(v.GetUpdateTime().AsTime()) || !u.GetCreateTime().AsTime().Equal(v.GetCreateTime().AsTime()) {
				t.Fatalf("times: create %v→%v update %v→%v", v.GetCreateTime(), u.GetCreateTime(), v.GetUpdateTime(), u.GetUpdateTime())
			}
			ev = updated()
			if ev.GetVideoUpdated().GetVideoId() != id || ev.GetVideoUpdated().GetStatus() != "VIDEO_STATUS_READY" ||
				!slices.Equal(ev.GetVideoUpdated().GetFields(), []string{"title", "status", "playback_path", "tags", "owner_id"}) {
				t.Fatalf("video.updated event: %v", ev)
			}
			got, err = c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: id})
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got.GetVideo(), u) {
				t.Fatalf("get after update:\n got %v\nwant %v", got.GetVideo(), u)
			}

			if _, err := c.DeleteVideo(ctx, &metadatav1.DeleteVideoRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
			if ev := deleted(); ev.GetVideoDeleted().GetVideoId() != id {
				t.Fatalf("video.deleted event: %v", ev)
			}
			_, err = c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: id})
			wantCode(t, err, connect.CodeNotFound)
			_, err = c.DeleteVideo(ctx, &metadatav1.DeleteVideoRequest{Id: id})
			wantCode(t, err, connect.CodeNotFound)
		})
	}
}

func testListPagination(t *testing.T, b backend) {
	h := newHarness(t, b, nil)
	ctx := t.Context()
	c := h.client(nil)
	var ids []string
	for i := range 7 {
		id := fmt.Sprintf("v%d", i)
		ids = append(ids, id)
		if _, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: id, Title: id}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids[:2] {
		if _, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
			Video:      &metadatav1.Video{Id: id, Status: metadatav1.VideoStatus_VIDEO_STATUS_READY},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status"}},
		}); err != nil {
			t.Fatal(err)
		}
	}

	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := h.client(p.opts)
			var (
				got   []*metadatav1.Video
				token string
				pages int
			)
			for {
				res, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{PageSize: 3, PageToken: token})
				if err != nil {
					t.Fatal(err)
				}
				pages++
				got = append(got, res.GetVideos()...)
				token = res.GetNextPageToken()
				if token == "" {
					break
				}
				if pages > 10 {
					t.Fatal("pagination does not end")
				}
			}
			if pages != 3 {
				t.Fatalf("got %d pages, want 3", pages)
			}
			gotIDs := make([]string, 0, len(got))
			for _, v := range got {
				gotIDs = append(gotIDs, v.GetId())
			}
			if sorted := slices.Sorted(slices.Values(gotIDs)); !slices.Equal(sorted, ids) {
				t.Fatalf("ids over all pages: %v, want each of %v once", gotIDs, ids)
			}
			if !slices.IsSortedFunc(got, func(a, b *metadatav1.Video) int {
				return cmp.Or(b.GetCreateTime().AsTime().Compare(a.GetCreateTime().AsTime()), cmp.Compare(b.GetId(), a.GetId()))
			}) {
				t.Fatalf("not newest first: %v", gotIDs)
			}

			all, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(all.GetVideos()) != 7 || all.GetNextPageToken() != "" {
				t.Fatalf("default page: %d videos, token %q", len(all.GetVideos()), all.GetNextPageToken())
			}

			ready, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{Status: metadatav1.VideoStatus_VIDEO_STATUS_READY, PageSize: 1})
			if err != nil {
				t.Fatal(err)
			}
			next, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{Status: metadatav1.VideoStatus_VIDEO_STATUS_READY, PageSize: 1, PageToken: ready.GetNextPageToken()})
			if err != nil {
				t.Fatal(err)
			}
			readyIDs := []string{ready.GetVideos()[0].GetId(), next.GetVideos()[0].GetId()}
			if slices.Sort(readyIDs); !slices.Equal(readyIDs, ids[:2]) || next.GetNextPageToken() != "" {
				t.Fatalf("status filter: %v (next token %q), want %v", readyIDs, next.GetNextPageToken(), ids[:2])
			}
		})
	}
}

func testBadInput(t *testing.T, b backend) {
	h := newHarness(t, b, nil)
	ctx := t.Context()
	for _, id := range []string{"exists", "exists2"} {
		if _, err := h.client(nil).CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: id, Title: "t"}}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := h.client(nil).ListVideos(ctx, &metadatav1.ListVideosRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	token := first.GetNextPageToken()
	if token == "" {
		t.Fatal("no page token for two videos in pages of one")
	}
	mask := func(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }
	garbageToken := base64.RawURLEncoding.EncodeToString([]byte(`{"t":-1,"i":"x"}`))

	tests := []struct {
		name string
		call func(metadatav1connect.MetadataServiceClient) error
		want connect.Code
	}{
		{"create bad id", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: "no spaces", Title: "t"}})
			return err
		}, connect.CodeInvalidArgument},
		{"create empty title", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: "ok"}})
			return err
		}, connect.CodeInvalidArgument},
		{"create no video", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{})
			return err
		}, connect.CodeInvalidArgument},
		{"create bad sha256", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: "ok", Title: "t", Sha256: "XYZ"}})
			return err
		}, connect.CodeInvalidArgument},
		{"get bad id", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: "../etc/passwd"})
			return err
		}, connect.CodeInvalidArgument},
		{"get empty id", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.GetVideo(ctx, &metadatav1.GetVideoRequest{})
			return err
		}, connect.CodeInvalidArgument},
		{"get unknown", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: "missing"})
			return err
		}, connect.CodeNotFound},
		{"list token not base64", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{PageToken: "!!not a token!!"})
			return err
		}, connect.CodeInvalidArgument},
		{"list token not json", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{PageToken: base64.RawURLEncoding.EncodeToString([]byte("nope"))})
			return err
		}, connect.CodeInvalidArgument},
		{"list token bad cursor", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{PageToken: garbageToken})
			return err
		}, connect.CodeInvalidArgument},
		{"list page size too big", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{PageSize: 501})
			return err
		}, connect.CodeInvalidArgument},
		{"list query without words", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{Query: " ☕ -- !! "})
			return err
		}, connect.CodeInvalidArgument},
		{"list query with too many words", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{Query: strings.Repeat("w ", 17)})
			return err
		}, connect.CodeInvalidArgument},
		{"list query too long", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{Query: strings.Repeat("w", 257)})
			return err
		}, connect.CodeInvalidArgument},
		{"list owner too long", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{OwnerId: strings.Repeat("o", 65)})
			return err
		}, connect.CodeInvalidArgument},
		{"list undefined visibility", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{Visibility: 99})
			return err
		}, connect.CodeInvalidArgument},
		{"list undefined order", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{Order: 99})
			return err
		}, connect.CodeInvalidArgument},
		{"list undefined status", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{Status: -1})
			return err
		}, connect.CodeInvalidArgument},
		{"list token with other order", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{PageToken: token, Order: metadatav1.VideoOrder_VIDEO_ORDER_OLDEST_FIRST})
			return err
		}, connect.CodeInvalidArgument},
		{"list token with other filter", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{PageToken: token, Query: "t"})
			return err
		}, connect.CodeInvalidArgument},
		{"update unknown mask path", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{Video: &metadatav1.Video{Id: "exists"}, UpdateMask: mask("nope")})
			return err
		}, connect.CodeInvalidArgument},
		{"update immutable path", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{Video: &metadatav1.Video{Id: "exists"}, UpdateMask: mask("create_time")})
			return err
		}, connect.CodeInvalidArgument},
		{"update empty mask", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{Video: &metadatav1.Video{Id: "exists"}, UpdateMask: mask()})
			return err
		}, connect.CodeInvalidArgument},
		{"update no mask", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{Video: &metadatav1.Video{Id: "exists"}})
			return err
		}, connect.CodeInvalidArgument},
		{"update empty title", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{Video: &metadatav1.Video{Id: "exists"}, UpdateMask: mask("title")})
			return err
		}, connect.CodeInvalidArgument},
		{"update unspecified status", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{Video: &metadatav1.Video{Id: "exists"}, UpdateMask: mask("status")})
			return err
		}, connect.CodeInvalidArgument},
		{"update unknown id", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{Video: &metadatav1.Video{Id: "missing", Title: "t"}, UpdateMask: mask("title")})
			return err
		}, connect.CodeNotFound},
		{"delete unknown", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.DeleteVideo(ctx, &metadatav1.DeleteVideoRequest{Id: "missing"})
			return err
		}, connect.CodeNotFound},
		{"delete bad id", func(c metadatav1connect.MetadataServiceClient) error {
			_, err := c.DeleteVideo(ctx, &metadatav1.DeleteVideoRequest{Id: "a/b"})
			return err
		}, connect.CodeInvalidArgument},
	}
	for _, p := range protocols() {
		c := h.client(p.opts)
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				wantCode(t, tt.call(c), tt.want)
			})
		}
	}
}

// failingPublisher stands in for a bus that is down.
type failingPublisher struct{}

func (failingPublisher) Publish(context.Context, *eventsv1.Event) error {
	return errors.New("bus down")
}

func testPublishFailureDoesNotFailWrites(t *testing.T, b backend) {
	h := newHarness(t, b, func(*events.Bus) metadata.Publisher { return failingPublisher{} })
	ctx := t.Context()
	c := h.client(nil)
	if _, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: "v", Title: "t"}}); err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
		Video: &metadatav1.Video{Id: "v", Title: "u"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
	}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if _, err := c.DeleteVideo(ctx, &metadatav1.DeleteVideoRequest{Id: "v"}); err != nil {
		t.Fatalf("delete: %v", err)
	}
}

func testReopenKeepsVideos(t *testing.T, b backend) {
	ctx := t.Context()
	cfg := b.newConfig(t)
	log := slog.New(slog.DiscardHandler)
	open := func() *metadata.Service {
		store, err := metadata.OpenStore(ctx, cfg, log) // migrations must not run twice
		if err != nil {
			t.Fatal(err)
		}
		return metadata.New(store, log, nil)
	}
	svc := open()
	want, err := svc.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{
		Id: "keep", Title: "t", DurationSeconds: 12.345, Sha256: "ab" + fmt.Sprintf("%062d", 0),
		Renditions: []*metadatav1.Rendition{{Name: "360p", Width: 640, Height: 360, Bandwidth: 800_000, PlaylistPath: "360p/index.m3u8", Codecs: "avc1.4d401e"}},
		Tags:       []string{"kept"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	svc = open()
	defer svc.Close()
	got, err := svc.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetVideo(), want.GetVideo()) {
		t.Fatalf("after reopen:\n got %v\nwant %v", got.GetVideo(), want.GetVideo())
	}
	found, err := svc.ListVideos(ctx, &metadatav1.ListVideosRequest{Query: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	if len(found.GetVideos()) != 1 || !proto.Equal(found.GetVideos()[0], want.GetVideo()) {
		t.Fatalf("search after reopen: %v", found.GetVideos())
	}
}
