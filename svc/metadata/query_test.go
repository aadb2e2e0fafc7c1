package metadata_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

const (
	newestFirst = metadatav1.VideoOrder_VIDEO_ORDER_NEWEST_FIRST
	oldestFirst = metadatav1.VideoOrder_VIDEO_ORDER_OLDEST_FIRST
	ready       = metadatav1.VideoStatus_VIDEO_STATUS_READY
	processing  = metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING
	public      = metadatav1.Visibility_VISIBILITY_PUBLIC
	unlisted    = metadatav1.Visibility_VISIBILITY_UNLISTED
	private     = metadatav1.Visibility_VISIBILITY_PRIVATE
)

// lister is what listAll needs: the Connect client and the service itself both have it.
type lister interface {
	ListVideos(ctx context.Context, req *metadatav1.ListVideosRequest) (*metadatav1.ListVideosResponse, error)
}

var (
	_ lister = (metadatav1connect.MetadataServiceClient)(nil)
	_ lister = (metadatav1connect.MetadataServiceHandler)(nil)
)

// listAll pages through req with its page size, calling between after each page but the
// last, and returns the videos of all pages in order.
func listAll(t *testing.T, c lister, req *metadatav1.ListVideosRequest, between func()) []*metadatav1.Video {
	t.Helper()
	req = proto.CloneOf(req)
	var out []*metadatav1.Video
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		res, err := c.ListVideos(t.Context(), req)
		if err != nil {
			t.Fatalf("list %v: %v", req, err)
		}
		out = append(out, res.GetVideos()...)
		if res.GetNextPageToken() == "" {
			return out
		}
		if len(res.GetVideos()) == 0 {
			t.Fatalf("empty page with a next page token for %v", req)
		}
		req.PageToken = res.GetNextPageToken()
		if between != nil {
			between()
		}
	}
}

func idsOf(vs []*metadatav1.Video) []string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		out = append(out, v.GetId())
	}
	return out
}

// byOrder compares videos in the list order.
func byOrder(order metadatav1.VideoOrder) func(a, b *metadatav1.Video) int {
	return func(a, b *metadatav1.Video) int {
		c := cmp.Or(a.GetCreateTime().AsTime().Compare(b.GetCreateTime().AsTime()), cmp.Compare(a.GetId(), b.GetId()))
		if order == oldestFirst {
			return c
		}
		return -c
	}
}

func create(t *testing.T, c metadatav1connect.MetadataServiceClient, v *metadatav1.Video) *metadatav1.Video {
	t.Helper()
	res, err := c.CreateVideo(t.Context(), &metadatav1.CreateVideoRequest{Video: v})
	if err != nil {
		t.Fatalf("create %s: %v", v.GetId(), err)
	}
	return res.GetVideo()
}

// testFilters checks every filter and both orders against a model of the same videos, at
// page sizes that split the results in different places.
func testFilters(t *testing.T, b backend) {
	h := newHarness(t, b, nil)
	c := h.client(nil)
	owners := []string{"alice", "bob", ""}
	visibilities := []metadatav1.Visibility{public, unlisted, private}
	statuses := []metadatav1.VideoStatus{ready, processing, ready, metadatav1.VideoStatus_VIDEO_STATUS_FAILED}
	var all []*metadatav1.Video
	for i := range 24 {
		all = append(all, create(t, c, &metadatav1.Video{
			Id: fmt.Sprintf("f%02d", i), Title: "video", OwnerId: owners[i%3],
			Visibility: visibilities[i/3%3], Status: statuses[i%4],
		}))
	}

	tests := []struct {
		name string
		req  *metadatav1.ListVideosRequest
		keep func(*metadatav1.Video) bool
	}{
		{"all", &metadatav1.ListVideosRequest{}, func(*metadatav1.Video) bool { return true }},
		{"status", &metadatav1.ListVideosRequest{Status: ready}, func(v *metadatav1.Video) bool { return v.GetStatus() == ready }},
		{"owner", &metadatav1.ListVideosRequest{OwnerId: "alice"}, func(v *metadatav1.Video) bool { return v.GetOwnerId() == "alice" }},
		{"unknown owner", &metadatav1.ListVideosRequest{OwnerId: "nobody"}, func(*metadatav1.Video) bool { return false }},
		{"visibility", &metadatav1.ListVideosRequest{Visibility: private}, func(v *metadatav1.Video) bool { return v.GetVisibility() == private }},
		{"owner and visibility", &metadatav1.ListVideosRequest{OwnerId: "bob", Visibility: public}, func(v *metadatav1.Video) bool {
			return v.GetOwnerId() == "bob" && v.GetVisibility() == public
		}},
		{"all three", &metadatav1.ListVideosRequest{OwnerId: "alice", Visibility: unlisted, Status: ready}, func(v *metadatav1.Video) bool {
			return v.GetOwnerId() == "alice" && v.GetVisibility() == unlisted && v.GetStatus() == ready
		}},
	}
	for _, p := range protocols() {
		c := h.client(p.opts)
		for _, tt := range tests {
			for _, order := range []metadatav1.VideoOrder{metadatav1.VideoOrder_VIDEO_ORDER_UNSPECIFIED, newestFirst, oldestFirst} {
				for _, size := range []int32{3, 0} {
					t.Run(fmt.Sprintf("%s/%s/%v/%d", p.name, tt.name, order, size), func(t *testing.T) {
						want := slices.Collect(func(yield func(*metadatav1.Video) bool) {
							for _, v := range all {
								if tt.keep(v) && !yield(v) {
									return
								}
							}
						})
						slices.SortFunc(want, byOrder(order))
						req := proto.CloneOf(tt.req)
						req.Order, req.PageSize = order, size
						got := listAll(t, c, req, nil)
						if !slices.EqualFunc(got, want, func(a, b *metadatav1.Video) bool { return proto.Equal(a, b) }) {
							t.Fatalf("got %v\nwant %v", idsOf(got), idsOf(want))
						}
					})
				}
			}
		}
	}
}

// testSearch checks which videos a query finds: words of titles, tags and descriptions, as
// prefixes, in any case, in any script, all words required, combined with filters.
func testSearch(t *testing.T, b backend) {
	h := newHarness(t, b, nil)
	c := h.client(nil)
	for _, v := range []*metadatav1.Video{
		{Id: "a", Title: "Cat videos compilation", Tags: []string{"funny", "pets"}, Description: "The best cats of 2024"},
		{Id: "b", Title: "Dog training basics", Tags: []string{"pets", "training"}, Description: "Teach your dog to sit"},
		{Id: "c", Title: "Café au lait: a recipe", Tags: []string{"cooking"}, Description: "Morning coffee ☕ with milk"},
		{Id: "d", Title: "Катя и кот", Tags: []string{"Русский"}},
		{Id: "e", Title: "Deep-sea documentary", Tags: []string{"ocean", "nature"}, Description: "filmed in 4K at 3000m",
			OwnerId: "alice", Visibility: private},
		{Id: "f", Title: "Learn Go in 10 minutes", Tags: []string{"golang", "programming"}, OwnerId: "bob", Status: ready},
		{Id: "g", Title: "東京の夜", Tags: []string{"japan", "night-life"}},
		{Id: "h", Title: "Łódź, Øresund: ﬁnal Straße"},
		{Id: "i", Title: "हाथी", Description: "ΟΔΟΣ"},
		{Id: "j", Title: "हम थे"},
	} {
		create(t, c, v)
	}
	// Videos are created in order, so newest first is the reverse (ties cannot reorder:
	// the ids are in create order too).
	tests := []struct {
		query string
		req   *metadatav1.ListVideosRequest
		want  []string
	}{
		{"cat", nil, []string{"a"}},
		{"CATS", nil, []string{"a"}},
		{"compilation", nil, []string{"a"}},
		{"pets", nil, []string{"b", "a"}},
		{"pet dog", nil, []string{"b"}},
		{"dog pet", nil, []string{"b"}},
		{"sit", nil, []string{"b"}},
		{"café", nil, []string{"c"}},
		{"CAFÉ AU", nil, []string{"c"}},
		{"cafe", nil, []string{"c"}}, // accents fold, both ways
		{"CAFE AU", nil, []string{"c"}},
		{"lait café", nil, []string{"c"}},
		{"cafè", nil, []string{"c"}},
		{"café\u0301", nil, []string{"c"}}, // decomposed, with an extra mark
		{"coffee", nil, []string{"c"}},
		{"кот", nil, []string{"d"}},
		{"lodz oresund", nil, []string{"h"}}, // letters with the accent inside, folded too
		{"ŁÓDŹ", nil, []string{"h"}},
		{"strasse final", nil, []string{"h"}},
		{"ＦＩＮＡＬ", nil, []string{"h"}}, // full width
		{"हाथी", nil, []string{"i"}},  // vowel signs belong to their word
		{"οδος", nil, []string{"i"}},  // final sigma folds
		{"КАТЯ", nil, []string{"d"}},
		{"русский", nil, []string{"d"}},
		{"deep sea", nil, []string{"e"}},
		{"deep-sea", nil, []string{"e"}},
		{"4k", nil, []string{"e"}},
		{"3000", nil, []string{"e"}},
		{"go", nil, []string{"f"}},
		{"programming golang", nil, []string{"f"}},
		{"東京", nil, []string{"g"}},
		{"night life", nil, []string{"g"}},
		{"xyz", nil, nil},
		{"cat dog", nil, nil},
		{"documentary", &metadatav1.ListVideosRequest{OwnerId: "alice"}, []string{"e"}},
		{"documentary", &metadatav1.ListVideosRequest{OwnerId: "bob"}, nil},
		{"documentary", &metadatav1.ListVideosRequest{Visibility: public}, nil},
		{"pets", &metadatav1.ListVideosRequest{Visibility: public}, []string{"b", "a"}},
		{"go", &metadatav1.ListVideosRequest{Status: ready}, []string{"f"}},
		{"pets", &metadatav1.ListVideosRequest{Order: oldestFirst}, []string{"a", "b"}},
		{"a", &metadatav1.ListVideosRequest{PageSize: 1}, []string{"e", "c"}}, // "at", "au" and "a", paged
		{"t", &metadatav1.ListVideosRequest{PageSize: 1, Order: oldestFirst}, []string{"a", "b"}},
	}
	for _, p := range protocols() {
		c := h.client(p.opts)
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.query, func(t *testing.T) {
				req := &metadatav1.ListVideosRequest{}
				if tt.req != nil {
					req = proto.CloneOf(tt.req)
				}
				req.Query = tt.query
				got := idsOf(listAll(t, c, req, nil))
				if !slices.Equal(got, tt.want) {
					t.Fatalf("query %q (%v): got %v, want %v", tt.query, req, got, tt.want)
				}
			})
		}
	}
	// A video's new title is searchable at once and its old one is not.
	if _, err := c.UpdateVideo(t.Context(), &metadatav1.UpdateVideoRequest{
		Video:      &metadatav1.Video{Id: "b", Title: "Puppy school", Tags: []string{"pets"}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
	}); err != nil {
		t.Fatal(err)
	}
	for query, want := range map[string][]string{"puppy": {"b"}, "training": {"b"}, "basics": nil} {
		got := idsOf(listAll(t, c, &metadatav1.ListVideosRequest{Query: query}, nil))
		if !slices.Equal(got, want) {
			t.Fatalf("after retitling, query %q: got %v, want %v", query, got, want)
		}
	}
}

// testSoftDelete checks that a deleted video is gone from every read at once, cannot be
// changed or deleted again, and its id is not reused.
func testSoftDelete(t *testing.T, b backend) {
	h := newHarness(t, b, nil)
	ctx := t.Context()
	deleted := subscribe(t, h, "reelway.events.video.deleted")
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := h.client(p.opts)
			gone, kept := "gone-"+p.name, "kept-"+p.name
			create(t, c, &metadatav1.Video{Id: gone, Title: "Doomed clip " + p.name, Tags: []string{"doomed"}, OwnerId: "o-" + p.name})
			create(t, c, &metadatav1.Video{Id: kept, Title: "Kept clip " + p.name, OwnerId: "o-" + p.name})

			if _, err := c.DeleteVideo(ctx, &metadatav1.DeleteVideoRequest{Id: gone}); err != nil {
				t.Fatal(err)
			}
			if ev := deleted(); ev.GetSubjectId() != gone || ev.GetVideoDeleted().GetVideoId() != gone || ev.GetSource() != "metadata" {
				t.Fatalf("video.deleted event: %v", ev)
			}
			_, err := c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: gone})
			wantCode(t, err, connect.CodeNotFound)
			for _, req := range []*metadatav1.ListVideosRequest{
				{}, {OwnerId: "o-" + p.name}, {Query: "clip " + p.name}, {Query: "doomed"},
				{Order: oldestFirst}, {Visibility: public}, {Status: metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING},
			} {
				for _, v := range listAll(t, c, req, nil) {
					if v.GetId() == gone {
						t.Fatalf("deleted video listed by %v", req)
					}
				}
			}
			if got := idsOf(listAll(t, c, &metadatav1.ListVideosRequest{Query: "clip " + p.name}, nil)); !slices.Equal(got, []string{kept}) {
				t.Fatalf("search after delete: %v, want [%s]", got, kept)
			}
			_, err = c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
				Video: &metadatav1.Video{Id: gone, Title: "back"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title"}},
			})
			wantCode(t, err, connect.CodeNotFound)
			_, err = c.DeleteVideo(ctx, &metadatav1.DeleteVideoRequest{Id: gone})
			wantCode(t, err, connect.CodeNotFound)
			// The id stays taken: a cleanup job removing the old files must never hit a new
			// video's files.
			_, err = c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: gone, Title: "Doomed clip " + p.name}})
			wantCode(t, err, connect.CodeAlreadyExists)
		})
	}
}

// testPaginationUnderConcurrentInserts pages through the videos, in both orders, while
// another client keeps creating videos; after every page it waits until at least one more
// video has been created, so inserts really land between pages. Every video that existed
// before paging started must come back exactly once, and no video twice.
func testPaginationUnderConcurrentInserts(t *testing.T, b backend) {
	h := newHarness(t, b, nil)
	ctx := t.Context()
	c := h.client(nil)
	const existing = 40
	before := map[string]bool{}
	for i := range existing {
		// Ids on both sides of the inserted ones ("m...") in byte order.
		id := fmt.Sprintf("%c%02d", "az"[i%2], i)
		create(t, c, &metadatav1.Video{Id: id, Title: "existing"})
		before[id] = true
	}

	for _, order := range []metadatav1.VideoOrder{newestFirst, oldestFirst} {
		t.Run(order.String(), func(t *testing.T) {
			var (
				inserted atomic.Int64
				wg       sync.WaitGroup
			)
			ictx, stop := context.WithCancel(ctx)
			ic := h.client([]connect.ClientOption{connect.WithGRPC()})
			const maxInserts = 60
			wg.Go(func() {
				for i := 0; i < maxInserts && ictx.Err() == nil; i++ {
					if _, err := ic.CreateVideo(ictx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{
						Id: fmt.Sprintf("m-%v-%02d", order, i), Title: "inserted while paging",
					}}); err != nil {
						if ictx.Err() == nil {
							t.Errorf("concurrent create: %v", err)
						}
						return
					}
					inserted.Add(1)
				}
			})
			pages := 0
			waitForInsert := func() {
				pages++
				n := inserted.Load()
				deadline := time.Now().Add(30 * time.Second)
				for inserted.Load() == n && n < maxInserts && !t.Failed() {
					if time.Now().After(deadline) {
						t.Error("no concurrent insert within 30s")
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
			got := listAll(t, c, &metadatav1.ListVideosRequest{PageSize: 7, Order: order}, waitForInsert)
			stop()
			wg.Wait()

			seen := map[string]int{}
			for _, v := range got {
				seen[v.GetId()]++
			}
			for id, n := range seen {
				if n != 1 {
					t.Errorf("%s listed %d times", id, n)
				}
			}
			for id := range before {
				if seen[id] != 1 {
					t.Errorf("existing video %s listed %d times", id, seen[id])
				}
			}
			if !slices.IsSortedFunc(got, byOrder(order)) {
				t.Errorf("not in %v order: %v", order, idsOf(got))
			}
			if pages < existing/7 || inserted.Load() < int64(existing/7) {
				t.Errorf("%d pages with %d concurrent inserts: paging and inserting did not interleave", pages, inserted.Load())
			}
			// Newest first, the inserts are all newer than the first page, so none can
			// appear after it; oldest first, paging runs into them at the end.
			t.Logf("%d pages, %d videos listed, %d inserted while paging", pages, len(got), inserted.Load())
		})
	}
}
