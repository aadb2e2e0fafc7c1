package streaming_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
)

// mediaDir writes one video's files with pseudo-random content large enough for ranges
// to matter, and returns the data directory.
func mediaDir(t *testing.T, id string) string {
	t.Helper()
	dir := t.TempDir()
	rnd := rand.New(rand.NewPCG(1, 2))
	blob := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.IntN(256))
		}
		return b
	}
	files := map[string][]byte{
		"master.m3u8":        []byte(masterPlaylist),
		"360p/index.m3u8":    []byte(variantPlaylist),
		"360p/seg_00000.ts":  blob(100_000),
		"720p/index.m3u8":    []byte(variantPlaylist),
		"720p/seg_00000.ts":  blob(250_001),
		"thumbnail.jpg":      blob(5_000),
		"poster.jpg":         blob(20_000),
		"download.mp4":       blob(300_007),
		"720p/seg_00001.ts":  blob(1),
		"720p/seg_00002.ts":  {},
		"360p/unrelated.txt": blob(10),
	}
	for name, b := range files {
		p := filepath.Join(dir, "hls", id, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestRangesByteForByte asks every file for every kind of range RFC 9110 defines and
// compares each answer with the bytes on disk.
func TestRangesByteForByte(t *testing.T) {
	dataDir := mediaDir(t, "vid")
	s := newServer(t, dataDir)
	type rangeCase struct {
		name   string
		header string
		status int
		// first and last byte of the single part, negative counting from the end
		first, last int
	}
	cases := []rangeCase{
		{"whole file", "", 200, 0, -1},
		{"first byte", "bytes=0-0", 206, 0, 0},
		{"single range", "bytes=10-19", 206, 10, 19},
		{"suffix range", "bytes=-500", 206, -500, -1},
		{"suffix of one byte", "bytes=-1", 206, -1, -1},
		{"suffix longer than the file", "bytes=-100000000", 206, 0, -1},
		{"open range", "bytes=700-", 206, 700, -1},
		{"open range at the last byte", "bytes=-1-", 206, -1, -1}, // filled in per file below
		{"last past the end is clipped", "bytes=3-99999999", 206, 3, -1},
		{"unit is case-insensitive", "Bytes=10-19", 206, 10, 19},
		{"unknown unit is ignored", "items=0-5", 200, 0, -1},
		{"first past the end", "bytes=99999999-", 416, 0, 0},
		{"first at the end", "bytes=SIZE-", 416, 0, 0},
		{"empty suffix", "bytes=-0", 416, 0, 0},
		{"only unsatisfiable ranges", "bytes=-0,99999999-", 416, 0, 0},
		{"overflowing first", "bytes=99999999999999999999999-", 416, 0, 0},
		{"overflowing last", "bytes=5-99999999999999999999999", 206, 5, -1},
		{"overflowing suffix", "bytes=-99999999999999999999999", 206, 0, -1},
		{"leading zeros", "bytes=0005-0009", 206, 5, 9},
		{"spaces around the range", "bytes= 5-9 ", 206, 5, 9},
		{"satisfiable and unsatisfiable", "bytes=99999999-,5-9", 206, 5, 9},
		{"invalid: last before first is ignored", "bytes=9-5", 200, 0, -1},
		{"invalid: garbage is ignored", "bytes=abc", 200, 0, -1},
		{"invalid: no range is ignored", "bytes=", 200, 0, -1},
		{"invalid: negative is ignored", "bytes=--5", 200, 0, -1},
	}
	files := []string{"360p/seg_00000.ts", "720p/seg_00000.ts", "master.m3u8", "360p/index.m3u8", "thumbnail.jpg", "poster.jpg", "download.mp4"}
	for _, file := range files {
		want, err := os.ReadFile(filepath.Join(dataDir, "hls", "vid", filepath.FromSlash(file)))
		if err != nil {
			t.Fatal(err)
		}
		size := len(want)
		at := func(i int) int {
			if i < 0 {
				return max(size+i, 0)
			}
			return i
		}
		for _, tc := range cases {
			t.Run(file+"/"+tc.name, func(t *testing.T) {
				header := strings.ReplaceAll(tc.header, "SIZE", strconv.Itoa(size))
				if tc.name == "open range at the last byte" {
					header = "bytes=" + strconv.Itoa(size-1) + "-"
				}
				status := tc.status
				if status == 206 && tc.first >= size {
					status = 416 // a small playlist ends before the range starts
				}
				res, body := s.do(t, "GET", "/v1/hls/vid/"+file, map[string]string{"Range": header})
				if res.StatusCode != status {
					t.Fatalf("Range %q: status %d, want %d (body %q)", header, res.StatusCode, status, trim(body))
				}
				switch status {
				case 416:
					if got, want := res.Header.Get("Content-Range"), fmt.Sprintf("bytes */%d", size); got != want {
						t.Errorf("Content-Range = %q, want %q", got, want)
					}
				case 206, 200:
					first, last := at(tc.first), at(tc.last)
					if !bytes.Equal(body, want[first:last+1]) {
						t.Errorf("Range %q: %d bytes differ from bytes %d-%d of the file", header, len(body), first, last)
					}
					if res.ContentLength != int64(last-first+1) {
						t.Errorf("Content-Length = %d, want %d", res.ContentLength, last-first+1)
					}
					wantRange := ""
					if status == 206 {
						wantRange = fmt.Sprintf("bytes %d-%d/%d", first, last, size)
					}
					if got := res.Header.Get("Content-Range"); got != wantRange {
						t.Errorf("Content-Range = %q, want %q", got, wantRange)
					}
					if res.Header.Get("Accept-Ranges") != "bytes" {
						t.Errorf("Accept-Ranges = %q", res.Header.Get("Accept-Ranges"))
					}
				}
				if res.Header.Get("Access-Control-Allow-Origin") != "*" {
					t.Errorf("no CORS header on a %d", res.StatusCode)
				}
			})
		}
		t.Run(file+"/multiple ranges", func(t *testing.T) {
			res, body := s.do(t, "GET", "/v1/hls/vid/"+file, map[string]string{"Range": "bytes=0-9,20-29,-5"})
			if res.StatusCode != 206 {
				t.Fatalf("status %d", res.StatusCode)
			}
			mt, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
			if err != nil || mt != "multipart/byteranges" {
				t.Fatalf("Content-Type = %q", res.Header.Get("Content-Type"))
			}
			mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
			for _, r := range [][2]int{{0, 9}, {20, 29}, {size - 5, size - 1}} {
				part, err := mr.NextPart()
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(part)
				if !bytes.Equal(got, want[r[0]:r[1]+1]) || part.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", r[0], r[1], size) {
					t.Errorf("part %v: %q, %q", r, part.Header.Get("Content-Range"), got)
				}
			}
			if _, err := mr.NextPart(); err != io.EOF {
				t.Errorf("more parts than asked: %v", err)
			}
		})
		t.Run(file+"/head", func(t *testing.T) {
			res, body := s.do(t, "HEAD", "/v1/hls/vid/"+file, nil)
			if res.StatusCode != 200 || len(body) != 0 || res.Header.Get("Content-Length") != strconv.Itoa(size) ||
				res.Header.Get("ETag") == "" || res.Header.Get("Last-Modified") == "" {
				t.Errorf("HEAD = %d, %d body bytes, headers %v", res.StatusCode, len(body), res.Header)
			}
			res, body = s.do(t, "HEAD", "/v1/hls/vid/"+file, map[string]string{"Range": "bytes=-5"})
			if res.StatusCode != 206 || len(body) != 0 || res.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", size-5, size-1, size) {
				t.Errorf("ranged HEAD = %d %q", res.StatusCode, res.Header.Get("Content-Range"))
			}
		})
	}
	t.Run("empty and one-byte files", func(t *testing.T) {
		// No range of an empty file is satisfiable; like http.ServeContent, the server
		// uses its right to ignore Range (RFC 9110 §14.2) and sends the empty file.
		res, body := s.do(t, "GET", "/v1/hls/vid/720p/seg_00002.ts", map[string]string{"Range": "bytes=0-"})
		if res.StatusCode != 200 || len(body) != 0 || res.ContentLength != 0 {
			t.Errorf("empty file range = %d %q %q", res.StatusCode, res.Header.Get("Content-Range"), body)
		}
		res, body = s.do(t, "GET", "/v1/hls/vid/720p/seg_00001.ts", map[string]string{"Range": "bytes=-1"})
		if res.StatusCode != 206 || len(body) != 1 || res.Header.Get("Content-Range") != "bytes 0-0/1" {
			t.Errorf("one-byte file suffix = %d %q", res.StatusCode, res.Header.Get("Content-Range"))
		}
	})
}

func trim(b []byte) []byte { return b[:min(len(b), 80)] }

// TestConditional covers the validators: ETag and Last-Modified on every answer, 304 for
// a matching If-None-Match or a not-newer If-Modified-Since, If-Range falling back to the
// whole file when stale, and 412 for failed If-Match / If-Unmodified-Since.
func TestConditional(t *testing.T) {
	dataDir := mediaDir(t, "vid")
	s := newServer(t, dataDir)
	const path = "/v1/hls/vid/360p/seg_00000.ts"
	disk, err := os.ReadFile(filepath.Join(dataDir, "hls/vid/360p/seg_00000.ts"))
	if err != nil {
		t.Fatal(err)
	}
	res, _ := s.do(t, "GET", path, nil)
	etag, modified := res.Header.Get("ETag"), res.Header.Get("Last-Modified")
	if etag == "" || modified == "" {
		t.Fatalf("ETag %q Last-Modified %q", etag, modified)
	}
	lm, err := http.ParseTime(modified)
	if err != nil {
		t.Fatal(err)
	}
	earlier := lm.Add(-time.Hour).UTC().Format(http.TimeFormat)
	tests := []struct {
		name   string
		header map[string]string
		status int
		body   []byte
	}{
		{"if-none-match", map[string]string{"If-None-Match": etag}, 304, nil},
		{"if-none-match list", map[string]string{"If-None-Match": `"x", ` + etag}, 304, nil},
		{"if-none-match star", map[string]string{"If-None-Match": "*"}, 304, nil},
		{"if-none-match weak", map[string]string{"If-None-Match": "W/" + etag}, 304, nil},
		{"if-none-match other", map[string]string{"If-None-Match": `"other"`}, 200, disk},
		{"if-modified-since same", map[string]string{"If-Modified-Since": modified}, 304, nil},
		{"if-modified-since earlier", map[string]string{"If-Modified-Since": earlier}, 200, disk},
		{"if-none-match wins over if-modified-since", map[string]string{"If-None-Match": `"other"`, "If-Modified-Since": modified}, 200, disk},
		{"if-range etag", map[string]string{"Range": "bytes=5-9", "If-Range": etag}, 206, disk[5:10]},
		{"if-range stale etag", map[string]string{"Range": "bytes=5-9", "If-Range": `"old"`}, 200, disk},
		{"if-range date", map[string]string{"Range": "bytes=5-9", "If-Range": modified}, 206, disk[5:10]},
		{"if-range old date", map[string]string{"Range": "bytes=5-9", "If-Range": earlier}, 200, disk},
		{"if-match", map[string]string{"If-Match": etag}, 200, disk},
		{"if-match other", map[string]string{"If-Match": `"other"`}, 412, nil},
		{"if-unmodified-since earlier", map[string]string{"If-Unmodified-Since": earlier}, 412, nil},
		{"if-unmodified-since same", map[string]string{"If-Unmodified-Since": modified}, 200, disk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := s.do(t, "GET", path, tt.header)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Errorf("body: %d bytes differ from the file", len(body))
			}
			if tt.status == 304 {
				if len(body) != 0 || res.Header.Get("ETag") != etag || res.Header.Get("Cache-Control") == "" {
					t.Errorf("304: body %d bytes, ETag %q, Cache-Control %q", len(body), res.Header.Get("ETag"), res.Header.Get("Cache-Control"))
				}
			}
		})
	}
}

// TestCacheControl checks each kind of file's policy, for public and private videos.
func TestCacheControl(t *testing.T) {
	dataDir := mediaDir(t, "vid")
	copyTree(t, filepath.Join(dataDir, "hls", "vid"), filepath.Join(dataDir, "hls", "priv"))
	videos := &fakeVideos{public: true}
	videos.set(&metadatav1.Video{Id: "priv", Visibility: metadatav1.Visibility_VISIBILITY_PRIVATE})
	s := newServerWith(t, dataDir, options{videos: videos})
	tok := signer().Sign("priv", time.Now().Add(time.Hour))
	tests := []struct {
		file, public, private string
	}{
		{"master.m3u8", "public, max-age=5", "private, no-store"},
		{"360p/index.m3u8", "public, max-age=5", "private, no-store"},
		{"360p/seg_00000.ts", "public, max-age=31536000, immutable", "private, max-age=31536000, immutable"},
		{"thumbnail.jpg", "public, max-age=31536000, immutable", "private, max-age=31536000, immutable"},
		{"poster.jpg", "public, max-age=31536000, immutable", "private, max-age=31536000, immutable"},
		{"download.mp4", "public, max-age=3600", "private, max-age=3600"},
	}
	for _, tt := range tests {
		res, _ := s.do(t, "GET", "/v1/hls/vid/"+tt.file, nil)
		if got := res.Header.Get("Cache-Control"); res.StatusCode != 200 || got != tt.public {
			t.Errorf("public %s: %d %q, want %q", tt.file, res.StatusCode, got, tt.public)
		}
		res, _ = s.do(t, "GET", "/v1/hls/priv/"+tt.file+"?token="+tok, nil)
		if got := res.Header.Get("Cache-Control"); res.StatusCode != 200 || got != tt.private {
			t.Errorf("private %s: %d %q, want %q", tt.file, res.StatusCode, got, tt.private)
		}
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
