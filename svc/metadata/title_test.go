package metadata_test

import (
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// testTitles: a title is one line of text. Control characters (C0, DEL, C1) are
// invalid_argument on create and on update, and leave the stored video as it was; any
// other Unicode is kept exactly as given.
func testTitles(t *testing.T, b backend) {
	h := newHarness(t, b, nil)
	titles := []struct {
		name  string
		title string
		valid bool
	}{
		{"ascii", "Holiday 2024: the (long) cut!", true},
		{"accents", "Café crème à Zürich", true},
		{"cjk", "東京の夜景 4K", true},
		{"rtl", "مرحبا بالعالم", true},
		{"emoji with joiners", "Family 👨‍👩‍👧 🎬", true},
		{"combining marks", "e\u0301te\u0301", true},
		{"nbsp and soft hyphen", "a\u00a0b\u00adc", true},
		{"first after C1", "\u00a0leading no-break space", true},
		{"ascii edges", " ~", true},
		{"max length in runes", strings.Repeat("é", 200), true},
		{"nul", "a\x00b", false},
		{"bell", "a\ab", false},
		{"backspace", "a\bb", false},
		{"tab", "a\tb", false},
		{"newline", "first\nsecond", false},
		{"carriage return", "a\rb", false},
		{"escape sequence", "\x1b[31mred\x1b[0m", false},
		{"unit separator", "a\x1fb", false},
		{"delete", "a\x7fb", false},
		{"C1 next line", "a\u0085b", false},
		{"C1 control sequence introducer", "a\u009b31m", false},
		{"only a newline", "\n", false},
		{"trailing newline", "title\n", false},
	}
	for _, p := range protocols() {
		c := h.client(p.opts)
		for i, tt := range titles {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				ctx := t.Context()
				id := fmt.Sprintf("title-%s-%d", p.name, i)

				_, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: id, Title: tt.title}})
				if !tt.valid {
					wantCode(t, err, connect.CodeInvalidArgument)
					_, err = c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: id})
					wantCode(t, err, connect.CodeNotFound)
					create(t, c, &metadatav1.Video{Id: id, Title: "Plain"})
				} else if err != nil {
					t.Fatalf("create with title %q: %v", tt.title, err)
				}

				_, err = c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
					Video:      &metadatav1.Video{Id: id, Title: tt.title, Description: "a\ndescription\tkeeps its breaks"},
					UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"title", "description"}},
				})
				want := tt.title
				if !tt.valid {
					wantCode(t, err, connect.CodeInvalidArgument)
					want = "Plain"
				} else if err != nil {
					t.Fatalf("update to title %q: %v", tt.title, err)
				}
				got, err := c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: id})
				if err != nil {
					t.Fatal(err)
				}
				if got.GetVideo().GetTitle() != want {
					t.Errorf("stored title = %q, want %q", got.GetVideo().GetTitle(), want)
				}
			})
		}
	}
}
