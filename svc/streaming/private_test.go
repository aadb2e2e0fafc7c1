package streaming_test

import (
	"bytes"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	streamingv1 "github.com/reelway/reelway/gen/reelway/streaming/v1"
	"github.com/reelway/reelway/svc/streaming"
)

func signer() streaming.Tokens { return streaming.NewTokens(testSecret) }

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// privateEnv serves "priv" (private, owned by user-1), "pub" (public) and "unl"
// (unlisted), all with the same files, on a settable clock.
type privateEnv struct {
	s      server
	clock  *clock
	videos *fakeVideos
	logs   *syncBuffer
	data   string
}

func newPrivateEnv(t *testing.T) privateEnv {
	t.Helper()
	dataDir := mediaDir(t, "priv")
	copyTree(t, filepath.Join(dataDir, "hls", "priv"), filepath.Join(dataDir, "hls", "pub"))
	copyTree(t, filepath.Join(dataDir, "hls", "priv"), filepath.Join(dataDir, "hls", "unl"))
	videos := &fakeVideos{}
	videos.set(&metadatav1.Video{Id: "priv", OwnerId: "user-1", Title: "Ma vidéo: « privée »/1", DurationSeconds: 3 * 3600,
		Visibility: metadatav1.Visibility_VISIBILITY_PRIVATE})
	videos.set(&metadatav1.Video{Id: "pub", Title: "Public", Visibility: metadatav1.Visibility_VISIBILITY_PUBLIC})
	videos.set(&metadatav1.Video{Id: "unl", Title: "Unlisted", Visibility: metadatav1.Visibility_VISIBILITY_UNLISTED})
	c := newClock()
	logs := &syncBuffer{}
	s := newServerWith(t, dataDir, options{
		videos: videos,
		users:  fakeUsers{"auth-owner": "user-1", "auth-other": "user-2"},
		now:    c.Now,
		logs:   logs,
	})
	return privateEnv{s: s, clock: c, videos: videos, logs: logs, data: dataDir}
}

// TestPrivateFiles: a private video's files need a valid token for that video; anything
// else is 403, while public and unlisted videos need none.
func TestPrivateFiles(t *testing.T) {
	e := newPrivateEnv(t)
	now := e.clock.Now()
	valid := signer().Sign("priv", now.Add(time.Hour))
	other := streaming.NewTokens(bytes.Repeat([]byte("x"), 32)).Sign("priv", now.Add(time.Hour))
	tampered := []byte(valid)
	tampered[3] ^= 1 // a later expiry, same signature
	tests := []struct {
		name   string
		path   string
		status int
	}{
		{"no token", "/v1/hls/priv/360p/seg_00000.ts", 403},
		{"empty token", "/v1/hls/priv/360p/seg_00000.ts?token=", 403},
		{"valid token", "/v1/hls/priv/360p/seg_00000.ts?token=" + valid, 200},
		{"valid token among other parameters", "/v1/hls/priv/360p/seg_00000.ts?a=1&token=" + valid + "&b=2", 200},
		{"valid token, master", "/v1/hls/priv/master.m3u8?token=" + valid, 200},
		{"valid token, download", "/v1/hls/priv/download.mp4?token=" + valid, 200},
		{"valid token, missing file", "/v1/hls/priv/1080p/index.m3u8?token=" + valid, 404},
		{"token of another video", "/v1/hls/priv/master.m3u8?token=" + signer().Sign("pub", now.Add(time.Hour)), 403},
		{"expired token", "/v1/hls/priv/master.m3u8?token=" + signer().Sign("priv", now.Add(-time.Second)), 403},
		{"token expiring now", "/v1/hls/priv/master.m3u8?token=" + signer().Sign("priv", now), 403},
		{"forged with another key", "/v1/hls/priv/master.m3u8?token=" + other, 403},
		{"stretched expiry", "/v1/hls/priv/master.m3u8?token=" + string(tampered), 403},
		{"garbage", "/v1/hls/priv/master.m3u8?token=" + url.QueryEscape("../../etc/passwd"), 403},
		{"token in the path", "/v1/hls/priv/" + signer().Sign("priv", now.Add(2*time.Hour)) + "/master.m3u8", 403},
		{"public without token", "/v1/hls/pub/360p/seg_00000.ts", 200},
		{"public with a stray token", "/v1/hls/pub/360p/seg_00000.ts?token=junk", 200},
		{"unlisted without token", "/v1/hls/unl/master.m3u8", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := e.s.do(t, "GET", tt.path, nil)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%q)", res.StatusCode, tt.status, trim(body))
			}
			if tt.status == 403 {
				if string(body) != "forbidden\n" || res.Header.Get("Access-Control-Allow-Origin") != "*" || res.Header.Get("Cache-Control") != "no-store" {
					t.Errorf("403 body %q headers %v", body, res.Header)
				}
			}
		})
	}
	// Tokens are secrets: request logs must not carry them.
	if strings.Contains(e.logs.String(), valid) || strings.Contains(e.logs.String(), "token=") || strings.Contains(e.logs.String(), string(tampered)) {
		t.Errorf("logs carry a token:\n%s", e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "/v1/hls/priv/master.m3u8") {
		t.Errorf("requests were not logged at all; the check above proves nothing:\n%s", e.logs.String())
	}
}

// TestPrivatePlaylistsCarryToken follows a private video's playlists the way a player
// does: every URI in them carries the token, and each leads to a file that is served.
func TestPrivatePlaylistsCarryToken(t *testing.T) {
	e := newPrivateEnv(t)
	tok := signer().Sign("priv", e.clock.Now().Add(time.Hour))
	res, master := e.s.do(t, "GET", "/v1/hls/priv/master.m3u8?token="+tok, nil)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/vnd.apple.mpegurl" {
		t.Fatalf("master: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	want := strings.ReplaceAll(strings.ReplaceAll(masterPlaylist, "360p/index.m3u8", "360p/index.m3u8?token="+tok), "720p/index.m3u8", "720p/index.m3u8?token="+tok)
	if string(master) != want {
		t.Fatalf("master =\n%s\nwant\n%s", master, want)
	}
	if res.ContentLength != int64(len(want)) || res.Header.Get("ETag") == "" {
		t.Errorf("Content-Length %d ETag %q", res.ContentLength, res.Header.Get("ETag"))
	}
	// Ranges and validators work on the rewritten playlist too.
	res2, part := e.s.do(t, "GET", "/v1/hls/priv/master.m3u8?token="+tok, map[string]string{"Range": "bytes=-20"})
	if res2.StatusCode != 206 || string(part) != want[len(want)-20:] {
		t.Errorf("ranged rewritten master: %d %q", res2.StatusCode, part)
	}
	res3, _ := e.s.do(t, "GET", "/v1/hls/priv/master.m3u8?token="+tok, map[string]string{"If-None-Match": res.Header.Get("ETag")})
	if res3.StatusCode != 304 {
		t.Errorf("If-None-Match on rewritten master: %d", res3.StatusCode)
	}
	fetched := 0
	for line := range strings.Lines(string(master)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		res, variant := e.s.do(t, "GET", "/v1/hls/priv/"+line, nil)
		if res.StatusCode != 200 {
			t.Fatalf("variant %s: %d", line, res.StatusCode)
		}
		for seg := range strings.Lines(string(variant)) {
			seg = strings.TrimSpace(seg)
			if seg == "" || strings.HasPrefix(seg, "#") {
				continue
			}
			if !strings.HasSuffix(seg, "?token="+tok) {
				t.Errorf("segment URI %q lacks the token", seg)
			}
			dir, _, _ := strings.Cut(line, "/")
			res, body := e.s.do(t, "GET", "/v1/hls/priv/"+dir+"/"+seg, nil)
			disk, _ := os.ReadFile(filepath.Join(e.data, "hls", "priv", dir, strings.TrimSuffix(seg, "?token="+tok)))
			if res.StatusCode != 200 || !bytes.Equal(body, disk) {
				t.Errorf("segment %s: %d, %d bytes", seg, res.StatusCode, len(body))
			}
			fetched++
		}
	}
	if fetched != 2 {
		t.Errorf("fetched %d segments, want 2", fetched)
	}
}

// TestDownloadDisposition checks the MP4 download is offered under the video's title.
func TestDownloadDisposition(t *testing.T) {
	e := newPrivateEnv(t)
	tok := signer().Sign("priv", e.clock.Now().Add(time.Hour))
	for path, want := range map[string]string{
		"/v1/hls/pub/download.mp4":               "Public.mp4",
		"/v1/hls/priv/download.mp4?token=" + tok: "Ma vidéo_ « privée »_1.mp4",
	} {
		res, _ := e.s.do(t, "HEAD", path, nil)
		cd := res.Header.Get("Content-Disposition")
		disp, params, err := mime.ParseMediaType(cd)
		if err != nil || disp != "attachment" || params["filename"] != want {
			t.Errorf("%s: Content-Disposition %q parses to %q %v (%v), want filename %q", path, cd, disp, params, err, want)
		}
		if res.Header.Get("Content-Type") != "video/mp4" || res.Header.Get("Accept-Ranges") != "bytes" {
			t.Errorf("%s: %v", path, res.Header)
		}
	}
	res, _ := e.s.do(t, "GET", "/v1/hls/pub/360p/seg_00000.ts", nil)
	if cd := res.Header.Get("Content-Disposition"); cd != "" {
		t.Errorf("segment has Content-Disposition %q", cd)
	}
}

func TestContentDisposition(t *testing.T) {
	tests := []struct {
		title, want string
	}{
		{"Holiday 2024", `attachment; filename="Holiday 2024.mp4"; filename*=UTF-8''Holiday%202024.mp4`},
		{"Café ☕ crème", `attachment; filename="Caf_ _ cr_me.mp4"; filename*=UTF-8''Caf%C3%A9%20%E2%98%95%20cr%C3%A8me.mp4`},
		{`a"b\c/d;e%f`, `attachment; filename="a_b_c_d_e_f.mp4"; filename*=UTF-8''a_b_c_d%3Be%25f.mp4`},
		{"line\r\nbreak\ttab", `attachment; filename="line break tab.mp4"; filename*=UTF-8''line%20break%20tab.mp4`},
		{"../../etc/passwd", `attachment; filename="_.._etc_passwd.mp4"; filename*=UTF-8''_.._etc_passwd.mp4`},
		{"", `attachment; filename="vid-1.mp4"; filename*=UTF-8''vid-1.mp4`},
		{"  ...  ", `attachment; filename="vid-1.mp4"; filename*=UTF-8''vid-1.mp4`},
		{"\x00\x01", `attachment; filename="vid-1.mp4"; filename*=UTF-8''vid-1.mp4`},
	}
	for _, tt := range tests {
		if got := streaming.ContentDisposition(tt.title, "vid-1"); got != tt.want {
			t.Errorf("ContentDisposition(%q) =\n  %s\nwant\n  %s", tt.title, got, tt.want)
		}
	}
	long := streaming.ContentDisposition(strings.Repeat("é", 500), "x")
	if _, params, err := mime.ParseMediaType(long); err != nil || len([]rune(params["filename"])) != 104 {
		t.Errorf("long title: %v %v", params, err)
	}
}

// TestGetPlaybackPrivate: only the owner, signed in, gets a private video's URLs, and
// they carry a token that opens the files until it expires.
func TestGetPlaybackPrivate(t *testing.T) {
	e := newPrivateEnv(t)
	for proto, c := range e.s.clients {
		call := func(id, auth string) (*streamingv1.GetPlaybackResponse, error) {
			ctx, ci := connect.NewClientContext(t.Context())
			if auth != "" {
				ci.RequestHeader().Set("Authorization", auth)
			}
			return c.GetPlayback(ctx, &streamingv1.GetPlaybackRequest{VideoId: id})
		}
		for _, tt := range []struct {
			name, id, auth string
			code           connect.Code
		}{
			{"anonymous", "priv", "", connect.CodeUnauthenticated},
			{"bad auth token", "priv", "Bearer nope", connect.CodeUnauthenticated},
			{"not a bearer", "priv", "Basic dXNlcjpwYXNz", connect.CodeUnauthenticated},
			{"another user", "priv", "Bearer auth-other", connect.CodePermissionDenied},
			{"unknown video", "nope", "Bearer auth-owner", connect.CodeNotFound},
		} {
			if _, err := call(tt.id, tt.auth); connect.CodeOf(err) != tt.code {
				t.Errorf("%s/%s: %v, want %v", proto, tt.name, err, tt.code)
			}
		}
		pub, err := call("pub", "")
		if err != nil || pub.GetMasterUrl() != "/v1/hls/pub/master.m3u8" || pub.GetExpireTime() != nil {
			t.Errorf("%s: public playback = %v, %v", proto, pub, err)
		}
		res, err := call("priv", "Bearer auth-owner")
		if err != nil {
			t.Fatalf("%s: owner: %v", proto, err)
		}
		// A 3 h video gets a token for twice its length, not the 1 h default.
		if exp := res.GetExpireTime().AsTime(); !exp.Equal(e.clock.Now().Add(6 * time.Hour)) {
			t.Errorf("%s: expires %v, want %v", proto, exp, e.clock.Now().Add(6*time.Hour))
		}
		u, err := url.Parse(res.GetMasterUrl())
		if err != nil || u.Path != "/v1/hls/priv/master.m3u8" || u.Query().Get("token") == "" {
			t.Fatalf("%s: master url %q", proto, res.GetMasterUrl())
		}
		tok := u.Query().Get("token")
		urls := append([]string{res.GetMasterUrl(), res.GetThumbnailUrl(), res.GetPosterUrl(), res.GetDownloadUrl()}, res.GetVariantUrls()...)
		if len(urls) != 6 {
			t.Errorf("%s: urls %v", proto, urls)
		}
		for _, p := range urls {
			if !strings.HasSuffix(p, "?token="+tok) {
				t.Errorf("%s: %q lacks the token", proto, p)
			}
			if r, _ := e.s.do(t, "GET", p, nil); r.StatusCode != 200 {
				t.Errorf("%s: GET %s = %d", proto, p, r.StatusCode)
			}
		}
		if strings.Contains(e.logs.String(), tok) {
			t.Errorf("%s: logs carry the token", proto)
		}
	}
	// Six hours later the tokens handed out have expired.
	e.clock.advance(6 * time.Hour)
	res, _ := e.s.do(t, "GET", "/v1/hls/priv/master.m3u8?token="+signer().Sign("priv", e.clock.Now()), nil)
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("expired token: %d", res.StatusCode)
	}
}

// TestVisibilityLookups covers the metadata side: answers are cached briefly, a change of
// visibility or a deletion is seen once the cache expires, videos metadata does not know
// are 404 even with files on disk, and an outage is 503 unless a recent answer is cached.
func TestVisibilityLookups(t *testing.T) {
	e := newPrivateEnv(t)
	const path = "/v1/hls/pub/360p/seg_00000.ts"
	before := e.videos.calls.Load()
	for range 20 {
		if res, _ := e.s.do(t, "GET", path, nil); res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	if n := e.videos.calls.Load() - before; n != 1 {
		t.Errorf("20 requests made %d metadata calls, want 1", n)
	}

	// Made private: still served from the cache for a moment, then refused.
	e.videos.set(&metadatav1.Video{Id: "pub", Visibility: metadatav1.Visibility_VISIBILITY_PRIVATE, OwnerId: "user-1"})
	if res, _ := e.s.do(t, "GET", path, nil); res.StatusCode != 200 {
		t.Errorf("within the cache time: %d", res.StatusCode)
	}
	e.clock.advance(3 * time.Second)
	if res, _ := e.s.do(t, "GET", path, nil); res.StatusCode != 403 {
		t.Errorf("after the cache time: %d, want 403", res.StatusCode)
	}

	// Deleted: gone from playback once the cache expires, though files remain.
	e.videos.remove("pub")
	e.clock.advance(3 * time.Second)
	if res, _ := e.s.do(t, "GET", path, nil); res.StatusCode != 404 {
		t.Errorf("deleted video: %d, want 404", res.StatusCode)
	}

	// Metadata down: a recent answer still serves, an old one or none does not.
	if res, _ := e.s.do(t, "GET", "/v1/hls/unl/master.m3u8", nil); res.StatusCode != 200 {
		t.Fatalf("unlisted: %d", res.StatusCode)
	}
	e.videos.fail(connect.NewError(connect.CodeUnavailable, errors.New("metadata down")))
	e.clock.advance(3 * time.Second)
	if res, _ := e.s.do(t, "GET", "/v1/hls/unl/master.m3u8", nil); res.StatusCode != 200 {
		t.Errorf("metadata down, recent answer: %d, want 200", res.StatusCode)
	}
	e.clock.advance(2 * time.Minute)
	res, body := e.s.do(t, "GET", "/v1/hls/unl/master.m3u8", nil)
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" || string(body) != "service unavailable\n" {
		t.Errorf("metadata down, stale answer: %d %q %q", res.StatusCode, res.Header.Get("Retry-After"), body)
	}
	for _, c := range e.s.clients {
		if _, err := c.GetPlayback(t.Context(), &streamingv1.GetPlaybackRequest{VideoId: "unl"}); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("GetPlayback with metadata down: %v", err)
		}
	}
}
