package metadata_test

import (
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// textField is a free-text field of Video other than the title, and how to set and read it.
type textField struct {
	name  string // the update mask path
	set   func(v *metadatav1.Video, s string)
	get   func(v *metadatav1.Video) string
	plain string
	// lines allows line feeds and tabs (a description), which one-line fields refuse.
	lines bool
}

// testTextFields: tags and owner_id are one line of text like the title, and a description
// may hold line feeds and tabs but no other control character (C0, DEL, C1). Bad text is
// invalid_argument on create and on update and leaves the stored video as it was; any
// other Unicode is kept exactly as given.
func testTextFields(t *testing.T, b backend) {
	h := newHarness(t, b, nil)
	fields := []textField{
		{
			name: "tags",
			set:  func(v *metadatav1.Video, s string) { v.Tags = []string{"first", s} },
			get: func(v *metadatav1.Video) string {
				if tags := v.GetTags(); len(tags) == 2 && tags[0] == "first" {
					return tags[1]
				}
				return fmt.Sprintf("tags %q", v.GetTags())
			},
			plain: "plain",
		},
		{
			name:  "owner_id",
			set:   func(v *metadatav1.Video, s string) { v.OwnerId = s },
			get:   (*metadatav1.Video).GetOwnerId,
			plain: "user-plain",
		},
		{
			name:  "description",
			set:   func(v *metadatav1.Video, s string) { v.Description = s },
			get:   (*metadatav1.Video).GetDescription,
			plain: "plain",
			lines: true,
		},
	}
	texts := []struct {
		name string
		text string
		// valid says whether one-line fields take it; multiLine whether a description
		// does.
		valid, multiLine bool
	}{
		{"ascii", "tag-1 (cut)", true, true},
		{"accents", "Café crème", true, true},
		{"cjk", "東京", true, true},
		{"rtl", "مرحبا", true, true},
		{"emoji with joiners", "👨‍👩‍👧🎬", true, true},
		{"nbsp and soft hyphen", "a\u00a0b\u00adc", true, true},
		{"ascii edges", " ~", true, true},
		{"newline", "a\nb", false, true},
		{"tab", "a\tb", false, true},
		{"nul", "a\x00b", false, false},
		{"bell", "a\ab", false, false},
		{"carriage return", "a\rb", false, false},
		{"vertical tab", "a\vb", false, false},
		{"form feed", "a\fb", false, false},
		{"escape sequence", "\x1b[31mred", false, false},
		{"unit separator", "a\x1fb", false, false},
		{"delete", "a\x7fb", false, false},
		{"C1 next line", "a\u0085b", false, false},
		{"C1 control sequence introducer", "a\u009b31m", false, false},
	}
	for _, p := range protocols() {
		c := h.client(p.opts)
		for _, f := range fields {
			for i, tt := range texts {
				valid := tt.valid || f.lines && tt.multiLine
				t.Run(p.name+"/"+f.name+"/"+tt.name, func(t *testing.T) {
					ctx := t.Context()
					id := fmt.Sprintf("text-%s-%s-%d", p.name, strings.ReplaceAll(f.name, "_", ""), i)

					v := &metadatav1.Video{Id: id, Title: "Title"}
					f.set(v, tt.text)
					_, err := c.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: v})
					if !valid {
						wantCode(t, err, connect.CodeInvalidArgument)
						_, err = c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: id})
						wantCode(t, err, connect.CodeNotFound)
						v = &metadatav1.Video{Id: id, Title: "Title"}
						f.set(v, f.plain)
						create(t, c, v)
					} else if err != nil {
						t.Fatalf("create with %s %q: %v", f.name, tt.text, err)
					}

					upd := &metadatav1.Video{Id: id}
					f.set(upd, tt.text)
					_, err = c.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
						Video:      upd,
						UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{f.name}},
					})
					want := tt.text
					if !valid {
						wantCode(t, err, connect.CodeInvalidArgument)
						want = f.plain
					} else if err != nil {
						t.Fatalf("update %s to %q: %v", f.name, tt.text, err)
					}
					got, err := c.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: id})
					if err != nil {
						t.Fatal(err)
					}
					if s := f.get(got.GetVideo()); s != want {
						t.Errorf("stored %s = %q, want %q", f.name, s, want)
					}

					if f.name == "owner_id" {
						list, err := c.ListVideos(ctx, &metadatav1.ListVideosRequest{OwnerId: tt.text})
						if !tt.valid {
							wantCode(t, err, connect.CodeInvalidArgument)
						} else if err != nil || len(list.GetVideos()) == 0 {
							t.Errorf("ListVideos(owner %q) = %v, %v", tt.text, list.GetVideos(), err)
						}
					}
				})
			}
		}
	}
}
