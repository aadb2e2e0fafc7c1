package streaming_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	streamingv1 "github.com/reelway/reelway/gen/reelway/streaming/v1"
	"github.com/reelway/reelway/gen/reelway/streaming/v1/streamingv1connect"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/reelway/reelway/svc/streaming"
)

const masterPlaylist = `#EXTM3U
#EXT-X-VERSION:3
#EXT-X-STREAM-INF:BANDWIDTH=1020800,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2"
360p/index.m3u8

#EXT-X-STREAM-INF:BANDWIDTH=3220800,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"
720p/index.m3u8
`

const variantPlaylist = `#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:4
#EXT-X-PLAYLIST-TYPE:VOD
#EXTINF:4.000000,
seg_00000.ts
#EXT-X-ENDLIST
`

// secret is content that must never come out of the file routes.
const secret = "TOP-SECRET-CONTENT"

// tree is a fake data directory: one complete video, one without a thumbnail, one with a
// broken master playlist, and traps outside and inside the HLS root.
type tree struct {
	dataDir string
	segment []byte // vid1/360p/seg_00000.ts
}

func newTree(t *testing.T) tree {
	t.Helper()
	dir := t.TempDir()
	seg := make([]byte, 1000)
	for i := range seg {
		seg[i] = byte(i % 251)
	}
	files := map[string][]byte{
		"hls/vid1/master.m3u8":          []byte(masterPlaylist),
		"hls/vid1/thumbnail.jpg":        {0xff, 0xd8, 0xff, 0xe0, 1, 2, 3},
		"hls/vid1/360p/index.m3u8":      []byte(variantPlaylist),
		"hls/vid1/360p/seg_00000.ts":    seg,
		"hls/vid1/720p/index.m3u8":      []byte(variantPlaylist),
		"hls/vid1/720p/seg_00000.m4s":   []byte("m4s"),
		"hls/vid1/720p/init.mp4":        []byte("mp4"),
		"hls/vid1/notes.txt":            []byte(secret),
		"hls/vid1/.hidden.ts":           []byte(secret),
		"hls/vid1/x.ts/keep":            nil, // a directory named like a segment
		"hls/.tmp-vid1-abc/secret.ts":   []byte(secret),
		"hls/nothumb/master.m3u8":       []byte(masterPlaylist),
		"hls/broken/master.m3u8":        []byte("not a playlist"),
		"secret.ts":                     []byte(secret),
		"uploads/vid1/source":           []byte(secret),
		"hls/other/360p/seg_00000.ts":   []byte(secret),
		"hls/vid1/360p/seg_00001.ts.ts": []byte("double"),
	}
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"hls/vid1/escape.ts":  "../../secret.ts",            // out of the video and HLS root
		"hls/vid1/sibling.ts": "../other/360p/seg_00000.ts", // into another video's folder
		"hls/vid1/inside.ts":  "360p/seg_00000.ts",          // stays inside: allowed
		"hls/evil":            "..",                         // a video folder that is the data dir
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, filepath.FromSlash(name))); err != nil {
			t.Fatal(err)
		}
	}
	return tree{dataDir: dir, segment: seg}
}

// server serves a streaming service the way the kernel does: mounted on an rpc.Server.
type server struct {
	url     string
	http    *http.Client // follows no redirects, to see what the server says itself
	clients map[string]streamingv1connect.StreamingServiceClient
}

func newServer(t *testing.T, dataDir string) server {
	t.Helper()
	return newServerWith(t, dataDir, options{})
}

// options change what newServerWith builds; zero fields get test defaults.
type options struct {
	videos *fakeVideos // default: every video public
	users  streaming.Users
	now    func() time.Time
	logs   io.Writer
}

func newServerWith(t *testing.T, dataDir string, o options) server {
	t.Helper()
	if o.videos == nil {
		o.videos = &fakeVideos{public: true}
	}
	if o.logs == nil {
		o.logs = io.Discard
		if testing.Verbose() {
			o.logs = os.Stderr
		}
	}
	log := slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug})})
	srv := rpc.NewServer(log, nil)
	svc, err := streaming.New(log, streaming.Config{DataDir: dataDir, Secret: testSecret, Now: o.now}, o.videos, o.users)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Mount(srv); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	noRedirect := *ts.Client()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return server{
		url:  ts.URL,
		http: &noRedirect,
		clients: map[string]streamingv1connect.StreamingServiceClient{
			"connect": streamingv1connect.NewStreamingServiceClient(ts.Client(), ts.URL),
			"grpc":    streamingv1connect.NewStreamingServiceClient(ts.Client(), ts.URL, connect.WithGRPC()),
		},
	}
}

// newService builds the service alone, for driving its handler or methods directly.
func newService(t *testing.T, dataDir string) *streaming.Service {
	t.Helper()
	svc, err := streaming.New(slog.New(slog.NewTextHandler(io.Discard, nil)), streaming.Config{DataDir: dataDir, Secret: testSecret},
		&fakeVideos{public: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// do sends path exactly as written (no client-side cleaning or re-encoding).
func (s server) do(t *testing.T, method, path string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.url+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = path
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func etag(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano())
}

func TestFiles(t *testing.T) {
	tr := newTree(t)
	s := newServer(t, tr.dataDir)
	segTag := etag(t, filepath.Join(tr.dataDir, "hls/vid1/360p/seg_00000.ts"))
	const (
		m3u8      = "application/vnd.apple.mpegurl"
		playlist  = "public, max-age=5"
		immutable = "public, max-age=31536000, immutable"
	)
	tests := []struct {
		name         string
		method       string
		path         string
		header       map[string]string
		status       int
		contentType  string
		cacheControl string
		contentRange string
		body         []byte
	}{
		{"master playlist", "GET", "/v1/hls/vid1/master.m3u8", nil, 200, m3u8, playlist, "", []byte(masterPlaylist)},
		{"variant playlist", "GET", "/v1/hls/vid1/360p/index.m3u8", nil, 200, m3u8, playlist, "", []byte(variantPlaylist)},
		{"ts segment", "GET", "/v1/hls/vid1/360p/seg_00000.ts", nil, 200, "video/mp2t", immutable, "", tr.segment},
		{"m4s segment", "GET", "/v1/hls/vid1/720p/seg_00000.m4s", nil, 200, "video/mp4", immutable, "", []byte("m4s")},
		{"init segment", "GET", "/v1/hls/vid1/720p/init.mp4", nil, 200, "video/mp4", immutable, "", []byte("mp4")},
		{"thumbnail", "GET", "/v1/hls/vid1/thumbnail.jpg", nil, 200, "image/jpeg", immutable, "", []byte{0xff, 0xd8, 0xff, 0xe0, 1, 2, 3}},
		{"symlink inside the folder", "GET", "/v1/hls/vid1/inside.ts", nil, 200, "video/mp2t", immutable, "", tr.segment},
		{"range", "GET", "/v1/hls/vid1/360p/seg_00000.ts", map[string]string{"Range": "bytes=10-19"}, 206, "video/mp2t", immutable, "bytes 10-19/1000", tr.segment[10:20]},
		{"suffix range", "GET", "/v1/hls/vid1/360p/seg_00000.ts", map[string]string{"Range": "bytes=-10"}, 206, "video/mp2t", immutable, "bytes 990-999/1000", tr.segment[990:]},
		{"open range", "GET", "/v1/hls/vid1/360p/seg_00000.ts", map[string]string{"Range": "bytes=10-"}, 206, "video/mp2t", immutable, "bytes 10-999/1000", tr.segment[10:]},
		{"unsatisfiable range", "GET", "/v1/hls/vid1/360p/seg_00000.ts", map[string]string{"Range": "bytes=5000-6000"}, 416, "", "", "bytes */1000", nil},
		{"head", "HEAD", "/v1/hls/vid1/360p/seg_00000.ts", nil, 200, "video/mp2t", immutable, "", []byte{}},
		{"if-none-match", "GET", "/v1/hls/vid1/360p/seg_00000.ts", map[string]string{"If-None-Match": segTag}, 304, "", immutable, "", []byte{}},
		{"stale etag", "GET", "/v1/hls/vid1/360p/seg_00000.ts", map[string]string{"If-None-Match": `"old"`}, 200, "video/mp2t", immutable, "", tr.segment},
		{"unknown video", "GET", "/v1/hls/nope/master.m3u8", nil, 404, "", "", "", []byte("not found\n")},
		{"unknown file", "GET", "/v1/hls/vid1/1080p/index.m3u8", nil, 404, "", "", "", []byte("not found\n")},
		{"video folder itself", "GET", "/v1/hls/vid1/", nil, 404, "", "", "", []byte("not found\n")},
		{"directory named like a segment", "GET", "/v1/hls/vid1/x.ts", nil, 404, "", "", "", []byte("not found\n")},
		{"unsupported extension", "GET", "/v1/hls/vid1/notes.txt", nil, 404, "", "", "", []byte("not found\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := s.do(t, tt.method, tt.path, tt.header)
			if res.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (body %q)", res.StatusCode, tt.status, body)
			}
			if tt.contentType != "" && res.Header.Get("Content-Type") != tt.contentType {
				t.Errorf("Content-Type = %q, want %q", res.Header.Get("Content-Type"), tt.contentType)
			}
			if tt.cacheControl != "" && res.Header.Get("Cache-Control") != tt.cacheControl {
				t.Errorf("Cache-Control = %q, want %q", res.Header.Get("Cache-Control"), tt.cacheControl)
			}
			if res.Header.Get("Content-Range") != tt.contentRange {
				t.Errorf("Content-Range = %q, want %q", res.Header.Get("Content-Range"), tt.contentRange)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Errorf("body = %q, want %q", body, tt.body)
			}
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("Access-Control-Allow-Origin = %q", got)
			}
			if got := res.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Content-Range") || !strings.Contains(got, "Content-Length") {
				t.Errorf("Access-Control-Expose-Headers = %q", got)
			}
			if res.StatusCode == 200 {
				if res.Header.Get("ETag") == "" || res.Header.Get("Last-Modified") == "" || res.Header.Get("Accept-Ranges") != "bytes" {
					t.Errorf("ETag/Last-Modified/Accept-Ranges = %q/%q/%q", res.Header.Get("ETag"), res.Header.Get("Last-Modified"), res.Header.Get("Accept-Ranges"))
				}
				if tt.method == "HEAD" && res.ContentLength != int64(len(tr.segment)) {
					t.Errorf("HEAD Content-Length = %d, want %d", res.ContentLength, len(tr.segment))
				}
			}
		})
	}
}

// TestTraversal tries every way out of a video's folder. The answer is always 404 (or,
// for paths the mux cleans itself, a redirect to a path that is then a 404), never the
// file, never a 500.
func TestTraversal(t *testing.T) {
	tr := newTree(t)
	s := newServer(t, tr.dataDir)
	paths := []string{
		"/v1/hls/vid1/../../etc/passwd",
		"/v1/hls/vid1/../../secret.ts",
		"/v1/hls/vid1/360p/../../../secret.ts",
		"/v1/hls/vid1/%2e%2e/%2e%2e/secret.ts",
		"/v1/hls/vid1/%2E%2E/%2E%2E/etc/passwd",
		"/v1/hls/..%2f/x",
		"/v1/hls/..%2fsecret.ts",
		"/v1/hls/vid1/..%2f..%2fsecret.ts",
		"/v1/hls/vid1%2f..%2f..%2fsecret.ts",
		"/v1/hls/vid1/..%5c..%5csecret.ts",
		"/v1/hls/vid1/a%5cb.ts",
		"/v1/hls/vid1/%2fetc%2fpasswd",
		"/v1/hls/vid1//etc/passwd",
		"/v1/hls/vid1/.hidden.ts",
		"/v1/hls/vid1/./.hidden.ts",
		"/v1/hls/.tmp-vid1-abc/secret.ts",
		"/v1/hls/%2etmp-vid1-abc/secret.ts",
		"/v1/hls/bad.id/master.m3u8",
		"/v1/hls/" + strings.Repeat("a", 65) + "/master.m3u8",
		"/v1/hls/vid1/escape.ts",
		"/v1/hls/vid1/sibling.ts",
		"/v1/hls/evil/secret.ts",
		"/v1/hls/evil/uploads/vid1/source",
		"/v1/hls/vid1/%00.ts",
		"/v1/hls/vid1/seg%0a.ts",
		"/v1/hls/vid1/" + strings.Repeat("a/", 200) + "x.ts",
		"/v1/hls/",
		"/v1/hls/vid1",
	}
	follow := *s.http
	follow.CheckRedirect = nil
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			res, body := s.do(t, "GET", p, nil)
			switch {
			case res.StatusCode == http.StatusNotFound:
			case res.StatusCode >= 300 && res.StatusCode < 400:
				// The mux cleaned a literal "..": follow it and expect a 404 there too.
				req, err := http.NewRequestWithContext(t.Context(), "GET", s.url+res.Header.Get("Location"), nil)
				if err != nil {
					t.Fatal(err)
				}
				res2, err := follow.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ = io.ReadAll(res2.Body)
				_ = res2.Body.Close()
				if res2.StatusCode != http.StatusNotFound {
					t.Errorf("redirect to %s then %d, want 404", res.Header.Get("Location"), res2.StatusCode)
				}
			default:
				t.Errorf("status = %d, want 404", res.StatusCode)
			}
			if bytes.Contains(body, []byte(secret)) || bytes.Contains(body, []byte("root:")) {
				t.Errorf("body leaks a file outside the folder: %q", body)
			}
		})
	}
}

// TestHandlerRefusesDotDot drives the file handler without the mux, which would clean a
// literal "..", to show the handler refuses it on its own.
func TestHandlerRefusesDotDot(t *testing.T) {
	tr := newTree(t)
	h := newService(t, tr.dataDir).FileHandler()
	for _, p := range []string{
		"/v1/hls/vid1/../../secret.ts",
		"/v1/hls/vid1/360p/../../other/360p/seg_00000.ts",
		"/v1/hls/../secret.ts",
		"/v1/hls/vid1/./master.m3u8",
		"/elsewhere/vid1/master.m3u8",
	} {
		req := httptest.NewRequestWithContext(t.Context(), "GET", "/", nil)
		req.URL.Path = p
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound || bytes.Contains(rec.Body.Bytes(), []byte(secret)) {
			t.Errorf("%s: status %d body %q, want 404", p, rec.Code, rec.Body.String())
		}
	}
}

// TestPreflight: a player on another origin may send every header the file routes act on.
func TestPreflight(t *testing.T) {
	tr := newTree(t)
	s := newServer(t, tr.dataDir)
	for _, header := range []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		t.Run(header, func(t *testing.T) {
			res, _ := s.do(t, "OPTIONS", "/v1/hls/vid1/360p/seg_00000.ts", map[string]string{
				"Origin": "https://player.example", "Access-Control-Request-Method": "GET",
				"Access-Control-Request-Headers": strings.ToLower(header),
			})
			if res.StatusCode != http.StatusNoContent {
				t.Fatalf("status = %d, want 204", res.StatusCode)
			}
			allowed := false
			for _, h := range strings.Split(res.Header.Get("Access-Control-Allow-Headers"), ",") {
				allowed = allowed || strings.EqualFold(strings.TrimSpace(h), header)
			}
			if !allowed {
				t.Errorf("Access-Control-Allow-Headers = %q lacks %s", res.Header.Get("Access-Control-Allow-Headers"), header)
			}
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("Access-Control-Allow-Origin = %q", got)
			}
		})
	}
}

func TestGetPlayback(t *testing.T) {
	tr := newTree(t)
	s := newServer(t, tr.dataDir)
	tests := []struct {
		id   string
		want *streamingv1.GetPlaybackResponse
		code connect.Code
	}{
		{"vid1", &streamingv1.GetPlaybackResponse{
			MasterUrl:    "/v1/hls/vid1/master.m3u8",
			ThumbnailUrl: "/v1/hls/vid1/thumbnail.jpg",
			VariantUrls:  []string{"/v1/hls/vid1/360p/index.m3u8", "/v1/hls/vid1/720p/index.m3u8"},
		}, 0},
		{"nothumb", &streamingv1.GetPlaybackResponse{
			MasterUrl:   "/v1/hls/nothumb/master.m3u8",
			VariantUrls: []string{"/v1/hls/nothumb/360p/index.m3u8", "/v1/hls/nothumb/720p/index.m3u8"},
		}, 0},
		{"nope", nil, connect.CodeNotFound},
		{"evil", nil, connect.CodeNotFound},  // its folder is a symlink out of the HLS root
		{"other", nil, connect.CodeNotFound}, // output without a master playlist
		{"broken", nil, connect.CodeInternal},
		{"../etc", nil, connect.CodeInvalidArgument},
		{"", nil, connect.CodeInvalidArgument},
	}
	for proto, c := range s.clients {
		for _, tt := range tests {
			t.Run(proto+"/"+tt.id, func(t *testing.T) {
				got, err := c.GetPlayback(t.Context(), &streamingv1.GetPlaybackRequest{VideoId: tt.id})
				if tt.want == nil {
					if connect.CodeOf(err) != tt.code {
						t.Fatalf("code = %v (%v), want %v", connect.CodeOf(err), err, tt.code)
					}
					if err != nil && strings.Contains(err.Error(), tr.dataDir) {
						t.Errorf("error %q leaks the data directory", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got.GetMasterUrl() != tt.want.GetMasterUrl() || got.GetThumbnailUrl() != tt.want.GetThumbnailUrl() ||
					!slices.Equal(got.GetVariantUrls(), tt.want.GetVariantUrls()) {
					t.Errorf("GetPlayback = %v, want %v", got, tt.want)
				}
			})
		}
	}
}

// TestGetPlaybackNotReady: a video still uploading or processing, or failed, is
// failed_precondition saying so, whatever files its folder holds; an unknown video stays
// not_found; a private video's state is told to its owner only.
func TestGetPlaybackNotReady(t *testing.T) {
	tr := newTree(t)
	ids := []string{"ready", "uploading", "processing", "failed", "failed-bare", "unspecified", "priv-processing"}
	for _, id := range ids {
		copyTree(t, filepath.Join(tr.dataDir, "hls", "vid1"), filepath.Join(tr.dataDir, "hls", id))
	}
	videos := &fakeVideos{}
	public := metadatav1.Visibility_VISIBILITY_PUBLIC
	for _, v := range []*metadatav1.Video{
		{Id: "ready", Status: metadatav1.VideoStatus_VIDEO_STATUS_READY, Visibility: public},
		{Id: "uploading", Status: metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING, Visibility: public},
		{Id: "processing", Status: metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING, Visibility: public},
		{Id: "failed", Status: metadatav1.VideoStatus_VIDEO_STATUS_FAILED, FailureReason: "transcode: no video stream", Visibility: public},
		{Id: "failed-bare", Status: metadatav1.VideoStatus_VIDEO_STATUS_FAILED, Visibility: public},
		{Id: "unspecified", Visibility: public},
		{Id: "priv-processing", Status: metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING, OwnerId: "user-1",
			Visibility: metadatav1.Visibility_VISIBILITY_PRIVATE},
	} {
		videos.set(v)
	}
	s := newServerWith(t, tr.dataDir, options{videos: videos, users: fakeUsers{"auth-owner": "user-1"}})
	tests := []struct {
		id, auth string
		code     connect.Code
		message  string
	}{
		{"ready", "", 0, ""},
		{"unspecified", "", 0, ""},
		{"uploading", "", connect.CodeFailedPrecondition, "video uploading is not ready (status UPLOADING)"},
		{"processing", "", connect.CodeFailedPrecondition, "video processing is not ready (status PROCESSING)"},
		{"failed", "", connect.CodeFailedPrecondition, "video failed failed: transcode: no video stream"},
		{"failed-bare", "", connect.CodeFailedPrecondition, "video failed-bare failed"},
		{"nope", "", connect.CodeNotFound, "video nope"},
		{"priv-processing", "", connect.CodeUnauthenticated, ""},
		{"priv-processing", "Bearer auth-owner", connect.CodeFailedPrecondition, "video priv-processing is not ready (status PROCESSING)"},
	}
	for proto, c := range s.clients {
		for _, tt := range tests {
			t.Run(proto+"/"+tt.id+tt.auth, func(t *testing.T) {
				ctx, ci := connect.NewClientContext(t.Context())
				if tt.auth != "" {
					ci.RequestHeader().Set("Authorization", tt.auth)
				}
				res, err := c.GetPlayback(ctx, &streamingv1.GetPlaybackRequest{VideoId: tt.id})
				if tt.code == 0 {
					if err != nil || res.GetMasterUrl() != "/v1/hls/"+tt.id+"/master.m3u8" {
						t.Fatalf("GetPlayback = %v, %v", res, err)
					}
					return
				}
				if connect.CodeOf(err) != tt.code {
					t.Fatalf("code = %v (%v), want %v", connect.CodeOf(err), err, tt.code)
				}
				var ce *connect.Error
				if !errors.As(err, &ce) || !strings.Contains(ce.Message(), tt.message) {
					t.Fatalf("message %q, want it to contain %q", ce.Message(), tt.message)
				}
				if tt.code == connect.CodeUnauthenticated && strings.Contains(ce.Message(), "PROCESSING") {
					t.Fatalf("a stranger learns a private video's state: %q", ce.Message())
				}
			})
		}
	}
}

// TestGetPlaybackChecksID calls the service directly, bypassing protovalidate.
func TestGetPlaybackChecksID(t *testing.T) {
	svc := newService(t, newTree(t).dataDir)
	for _, id := range []string{"..", "../hls/vid1", "a/b", ".tmp-vid1-abc"} {
		_, err := svc.GetPlayback(t.Context(), &streamingv1.GetPlaybackRequest{VideoId: id})
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("GetPlayback(%q) = %v, want invalid_argument", id, err)
		}
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		rest    string
		dir     string
		rel     string
		invalid bool
	}{
		{rest: "vid1/master.m3u8", dir: "/data/hls/vid1", rel: "master.m3u8"},
		{rest: "vid_1-x/720p/seg_00001.ts", dir: "/data/hls/vid_1-x", rel: "720p/seg_00001.ts"},
		{rest: "vid1/../x.ts", invalid: true},
		{rest: "vid1/a/../../x.ts", invalid: true},
		{rest: "../x", invalid: true},
		{rest: "vid1/.tmp/x.ts", invalid: true},
		{rest: "vid1//x.ts", invalid: true},
		{rest: "vid1/x.ts/", invalid: true},
		{rest: "vid1/a\\b.ts", invalid: true},
		{rest: "vid1/", invalid: true},
		{rest: "vid1", invalid: true},
		{rest: "", invalid: true},
	}
	for _, tt := range tests {
		dir, rel, err := streaming.Resolve("/data", tt.rest)
		if tt.invalid {
			if err == nil {
				t.Errorf("Resolve(%q) = %q, %q; want an error", tt.rest, dir, rel)
			}
			continue
		}
		if err != nil || dir != tt.dir || rel != tt.rel {
			t.Errorf("Resolve(%q) = %q, %q, %v; want %q, %q", tt.rest, dir, rel, err, tt.dir, tt.rel)
		}
	}
}

func FuzzResolve(f *testing.F) {
	for _, seed := range []string{
		"vid1/master.m3u8", "vid1/360p/seg_00000.ts", "vid1/../../etc/passwd", "../x", "vid1/..",
		"vid1/.hidden", "vid1//x", "vid1/a\\..\\..\\x", "vid1/\x00", "/etc/passwd", "vid1/C:/x", "vid1/./x",
	} {
		f.Add(seed)
	}
	const dataDir = "/data"
	hlsRoot := filepath.Join(dataDir, "hls")
	f.Fuzz(func(t *testing.T, rest string) {
		dir, rel, err := streaming.Resolve(dataDir, rest)
		if err != nil {
			if dir != "" || rel != "" {
				t.Fatalf("Resolve(%q) returned %q, %q with error %v", rest, dir, rel, err)
			}
			return
		}
		if filepath.Dir(dir) != hlsRoot || strings.HasPrefix(filepath.Base(dir), ".") {
			t.Fatalf("Resolve(%q) dir %q is not a video folder of %s", rest, dir, hlsRoot)
		}
		full := filepath.Join(dir, filepath.FromSlash(rel))
		inside, err := filepath.Rel(dir, full)
		if err != nil || !filepath.IsLocal(inside) || inside != filepath.FromSlash(rel) {
			t.Fatalf("Resolve(%q) = %q + %q escapes the video folder", rest, dir, rel)
		}
		for _, seg := range strings.Split(rel, "/") {
			if seg == "" || strings.HasPrefix(seg, ".") || strings.ContainsAny(seg, "\\\x00") {
				t.Fatalf("Resolve(%q) accepted segment %q", rest, seg)
			}
		}
	})
}
