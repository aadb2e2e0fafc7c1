package media_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reelway/reelway/svc/media"
)

func TestPaths(t *testing.T) {
	tests := []struct {
		id     string
		source string
		hls    string
	}{
		{"abc", "/d/uploads/abc/source", "/d/hls/abc"},
		{"A_b-9", "/d/uploads/A_b-9/source", "/d/hls/A_b-9"},
		{strings.Repeat("x", 64), "/d/uploads/" + strings.Repeat("x", 64) + "/source", "/d/hls/" + strings.Repeat("x", 64)},
	}
	for _, tt := range tests {
		src, err := media.SourcePath("/d", tt.id)
		if err != nil || src != filepath.FromSlash(tt.source) {
			t.Errorf("SourcePath(%q) = %q, %v; want %q", tt.id, src, err, tt.source)
		}
		dir, err := media.HLSDir("/d", tt.id)
		if err != nil || dir != filepath.FromSlash(tt.hls) {
			t.Errorf("HLSDir(%q) = %q, %v; want %q", tt.id, dir, err, tt.hls)
		}
	}
	if got := media.PlaybackPath("abc"); got != "/v1/hls/abc/master.m3u8" {
		t.Errorf("PlaybackPath = %q", got)
	}
}

func TestInvalidIDs(t *testing.T) {
	for _, id := range []string{"", "..", ".", "a/b", "a\\b", "a.b", ".tmp-x", "a b", "é", strings.Repeat("x", 65), "x\x00"} {
		if media.ValidID(id) {
			t.Errorf("ValidID(%q) = true", id)
		}
		if _, err := media.SourcePath("/d", id); !errors.Is(err, media.ErrInvalidID) {
			t.Errorf("SourcePath(%q) error = %v, want ErrInvalidID", id, err)
		}
		if _, err := media.HLSDir("/d", id); !errors.Is(err, media.ErrInvalidID) {
			t.Errorf("HLSDir(%q) error = %v, want ErrInvalidID", id, err)
		}
	}
}

func TestParseMaster(t *testing.T) {
	const ffmpegMaster = "#EXTM3U\n#EXT-X-VERSION:3\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=1020800,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"\n360p/index.m3u8\n\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=3220800,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\"\r\n720p/index.m3u8\n"
	got, err := media.ParseMaster(strings.NewReader(ffmpegMaster))
	if err != nil {
		t.Fatal(err)
	}
	want := []media.Variant{
		{URI: "360p/index.m3u8", Bandwidth: 1020800, Width: 640, Height: 360, Codecs: "avc1.64001e,mp4a.40.2"},
		{URI: "720p/index.m3u8", Bandwidth: 3220800, Width: 1280, Height: 720, Codecs: "avc1.64001f,mp4a.40.2"},
	}
	if len(got) != len(want) {
		t.Fatalf("ParseMaster = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("variant %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	bad := map[string]string{
		"empty":              "",
		"no header":          "#EXT-X-VERSION:3\n",
		"no bandwidth":       "#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na.m3u8\n",
		"bad bandwidth":      "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=x\na.m3u8\n",
		"bad resolution":     "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640\na.m3u8\n",
		"unterminated quote": "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1\na.m3u8\n",
		"missing uri":        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n",
		"two infs":           "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n#EXT-X-STREAM-INF:BANDWIDTH=2\na.m3u8\n",
	}
	for name, text := range bad {
		if v, err := media.ParseMaster(strings.NewReader(text)); !errors.Is(err, media.ErrBadPlaylist) {
			t.Errorf("%s: ParseMaster = %+v, %v; want ErrBadPlaylist", name, v, err)
		}
	}
}

func FuzzParseMaster(f *testing.F) {
	f.Add("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1020800,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"\n360p/index.m3u8\n")
	f.Add("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"a\"x\nu\n")
	f.Add("#EXTM3U\n#EXT-X-STREAM-INF:=,BANDWIDTH=\n")
	f.Fuzz(func(t *testing.T, text string) {
		variants, err := media.ParseMaster(strings.NewReader(text))
		if err != nil {
			if !errors.Is(err, media.ErrBadPlaylist) || variants != nil {
				t.Fatalf("error %v with variants %v", err, variants)
			}
			return
		}
		for _, v := range variants {
			if v.URI == "" || strings.HasPrefix(v.URI, "#") || v.Bandwidth < 0 || v.Width < 0 || v.Height < 0 {
				t.Fatalf("bad variant %+v from %q", v, text)
			}
		}
	})
}

func TestAppendQuery(t *testing.T) {
	in := "#EXTM3U\r\n#EXT-X-MAP:URI=\"init.mp4\"\r\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",URI=\"a/index.m3u8\"\r\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1\"\r\n360p/index.m3u8\r\n\r\n#EXTINF:4,\nseg.ts?x=1\nhttps://cdn/s.ts\n#EXT-X-ENDLIST"
	want := "#EXTM3U\r\n#EXT-X-MAP:URI=\"init.mp4?t=1\"\r\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",URI=\"a/index.m3u8?t=1\"\r\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1\"\r\n360p/index.m3u8?t=1\r\n\r\n#EXTINF:4,\nseg.ts?x=1&t=1\nhttps://cdn/s.ts?t=1\n#EXT-X-ENDLIST"
	if got := string(media.AppendQuery([]byte(in), "t=1")); got != want {
		t.Errorf("AppendQuery =\n%q\nwant\n%q", got, want)
	}
}

// FuzzAppendQuery checks rewriting keeps every tag and line ending and gives every URI
// line the query.
func FuzzAppendQuery(f *testing.F) {
	f.Add("#EXTM3U\n#EXTINF:4,\nseg_00000.ts\n#EXT-X-ENDLIST\n")
	f.Add("#EXT-X-MAP:URI=\"a\",URI=\"b\nx")
	f.Fuzz(func(t *testing.T, playlist string) {
		out := string(media.AppendQuery([]byte(playlist), "token=T"))
		in := strings.Split(playlist, "\n")
		got := strings.Split(out, "\n")
		if len(in) != len(got) {
			t.Fatalf("line count %d → %d", len(in), len(got))
		}
		for i, line := range in {
			trimmed := strings.TrimSpace(strings.TrimRight(line, "\r"))
			switch {
			case trimmed == "":
				if got[i] != line {
					t.Fatalf("blank line %q became %q", line, got[i])
				}
			case strings.HasPrefix(trimmed, "#"):
				if strings.ReplaceAll(got[i], "?token=T", "") != strings.ReplaceAll(line, "?token=T", "") && !strings.Contains(line, "URI=") {
					t.Fatalf("tag %q became %q", line, got[i])
				}
			default:
				if !strings.Contains(got[i], "token=T") {
					t.Fatalf("URI line %q became %q", line, got[i])
				}
			}
		}
	})
}
