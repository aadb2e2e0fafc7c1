package upload_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/upload"
	"github.com/tus/tusd/v2/pkg/handler"
)

// tusClient speaks tus 1.0 to one upload service over HTTP/1.1 or h2c.
type tusClient struct {
	base string
	c    *http.Client
}

func (e *env) tusClients() map[string]*tusClient {
	return map[string]*tusClient{
		"http1": {base: e.url, c: e.h1},
		"h2c":   {base: e.url, c: e.h2c},
	}
}

// tusMeta encodes Upload-Metadata from key, value pairs.
func tusMeta(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, kv[i]+" "+base64.StdEncoding.EncodeToString([]byte(kv[i+1])))
	}
	return strings.Join(parts, ",")
}

// do sends one tus request; hdr values override the defaults, "" removes a header.
func (c *tusClient) do(t *testing.T, method, target string, body []byte, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	if !strings.HasPrefix(target, "http") {
		target = c.base + target
	}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, target, r)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	if body != nil {
		req.Header.Set("Content-Type", "application/offset+octet-stream")
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := c.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, target, err)
	}
	return res, string(b)
}

// create starts an upload of size bytes; body, if not nil, goes along (creation-with-upload).
func (c *tusClient) create(t *testing.T, size int, meta string, body []byte, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	h := map[string]string{"Upload-Length": strconv.Itoa(size), "Upload-Metadata": meta}
	for k, v := range hdr {
		h[k] = v
	}
	return c.do(t, http.MethodPost, upload.TusPath, body, h)
}

// mustCreate starts an upload and returns its URL.
func (c *tusClient) mustCreate(t *testing.T, size int, title string) string {
	t.Helper()
	res, body := c.create(t, size, tusMeta("title", title, "filename", "clip.mp4"), nil, nil)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	return res.Header.Get("Location")
}

func (c *tusClient) patch(t *testing.T, u string, offset int, body []byte, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	h := map[string]string{"Upload-Offset": strconv.Itoa(offset)}
	for k, v := range hdr {
		h[k] = v
	}
	return c.do(t, http.MethodPatch, u, body, h)
}

// offset asks the server for an upload's offset with HEAD; -1 when it answers otherwise.
func (c *tusClient) offset(t *testing.T, u string) (int, int) {
	t.Helper()
	res, _ := c.do(t, http.MethodHead, u, nil, nil)
	if res.StatusCode != http.StatusOK {
		return res.StatusCode, -1
	}
	n, err := strconv.Atoi(res.Header.Get("Upload-Offset"))
	if err != nil {
		t.Fatalf("HEAD Upload-Offset %q: %v", res.Header.Get("Upload-Offset"), err)
	}
	if res.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("HEAD Cache-Control = %q, want no-store", res.Header.Get("Cache-Control"))
	}
	return res.StatusCode, n
}

func idOf(t *testing.T, location string) string {
	t.Helper()
	u, err := url.Parse(location)
	if err != nil {
		t.Fatalf("Location %q: %v", location, err)
	}
	id, ok := strings.CutPrefix(u.Path, upload.TusPath)
	if !ok || !idPattern.MatchString(id) {
		t.Fatalf("Location %q is not %s<video id>", location, upload.TusPath)
	}
	return id
}

// tusBytes is what the tus store holds of an upload still receiving bytes, nil if none.
func (e *env) tusBytes(t *testing.T, id string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dataDir, "tus", id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("read tus bytes: %v", err)
	}
	return b
}

func (e *env) tusFiles(t *testing.T, id string) []string {
	t.Helper()
	var found []string
	for _, name := range []string{id, id + ".info", id + ".lock", id + ".sha256"} {
		if _, err := os.Stat(filepath.Join(e.dataDir, "tus", name)); err == nil {
			found = append(found, name)
		}
	}
	return found
}

func (e *env) video(t *testing.T, id string) *metadatav1.Video {
	t.Helper()
	res, err := e.meta.GetVideo(t.Context(), &metadatav1.GetVideoRequest{Id: id})
	if err != nil {
		t.Fatalf("get video %s: %v", id, err)
	}
	return res.GetVideo()
}

// poll retries cond until it returns nil or the deadline passes.
func poll(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startUpload serves another upload service over e's data directory, metadata and NATS,
// with its cleanup loop running, and returns its base URL.
func (e *env) startUpload(t *testing.T, cfg upload.Config, pub upload.Publisher, videos upload.Videos) string {
	t.Helper()
	cfg.DataDir = e.dataDir
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = testMaxBytes
	}
	log := testLogger(t)
	svc := upload.New(log, cfg, pub, videos, e.auth)
	base := serve(t, log, svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start returned %v", err)
		}
	})
	return base
}

// subscribe listens on an event subject before the action that publishes it. The function
// it returns waits for the event about id ("": the next event).
func (e *env) subscribe(t *testing.T, typ eventsv1.EventType) func(id string) *eventsv1.Event {
	t.Helper()
	sub, err := e.bus.Conn().SubscribeSync(events.Subject(typ))
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.bus.Conn().Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return func(id string) *eventsv1.Event {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			msg, err := sub.NextMsg(time.Until(deadline))
			if err != nil {
				break
			}
			ev, err := events.Decode(msg.Data)
			if err != nil {
				t.Fatalf("decode event: %v", err)
			}
			if id == "" || ev.GetSubjectId() == id {
				return ev
			}
		}
		t.Fatalf("no %v event for %s", typ, id)
		return nil
	}
}

func TestTusDiscovery(t *testing.T) {
	e := newEnv(t)
	for name, c := range e.tusClients() {
		t.Run(name, func(t *testing.T) {
			res, _ := c.do(t, http.MethodOptions, upload.TusPath, nil, map[string]string{"Tus-Resumable": ""})
			if res.StatusCode/100 != 2 {
				t.Fatalf("OPTIONS: %d", res.StatusCode)
			}
			ext := "," + res.Header.Get("Tus-Extension") + ","
			for _, want := range []string{"creation", "creation-with-upload", "termination", "checksum", "expiration"} {
				if !strings.Contains(ext, ","+want+",") {
					t.Errorf("Tus-Extension %q lacks %s", res.Header.Get("Tus-Extension"), want)
				}
			}
			if got := res.Header.Get("Tus-Checksum-Algorithm"); !strings.Contains(got, "sha1") {
				t.Errorf("Tus-Checksum-Algorithm = %q, want sha1 among them", got)
			}
			if got := res.Header.Get("Tus-Max-Size"); got != strconv.Itoa(testMaxBytes) {
				t.Errorf("Tus-Max-Size = %q, want %d", got, testMaxBytes)
			}
			if got := res.Header.Get("Tus-Version"); got != "1.0.0" {
				t.Errorf("Tus-Version = %q", got)
			}
		})
	}
}

// TestTusResumeAfterDrop cuts a PATCH's connection halfway through its body, then resumes
// from the offset the server reports.
func TestTusResumeAfterDrop(t *testing.T) {
	e := newEnv(t)
	completed := e.subscribeCompleted(t)
	c := e.tusClients()["h2c"]
	data := randomBytes(t, 48<<10)
	half := len(data) / 2
	loc := c.mustCreate(t, len(data), "Dropped")
	id := idOf(t, loc)
	if v := e.video(t, id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING || v.GetTitle() != "Dropped" {
		t.Fatalf("video after creation = %v %q, want UPLOADING %q", v.GetStatus(), v.GetTitle(), "Dropped")
	}

	// A raw HTTP/1.1 PATCH announcing the whole body, of which only half is sent before
	// the connection is closed.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	path := upload.TusPath + id
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n\r\n",
		path, strings.TrimPrefix(e.url, "http://"), len(data))
	if _, err := conn.Write(data[:half]); err != nil {
		t.Fatalf("write half: %v", err)
	}
	poll(t, 10*time.Second, "half the body stored", func() error {
		if n := len(e.tusBytes(t, id)); n != half {
			return fmt.Errorf("%d bytes stored", n)
		}
		return nil
	})
	_ = conn.Close()

	status, off := c.offset(t, loc)
	if status != http.StatusOK || off != half {
		t.Fatalf("HEAD after the drop = %d offset %d, want 200 offset %d", status, off, half)
	}
	res, body := c.patch(t, loc, off, data[off:], nil)
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
		t.Fatalf("resume: %d offset %q %s", res.StatusCode, res.Header.Get("Upload-Offset"), body)
	}
	e.checkStored(t, completed, id, int64(len(data)), sum(data), "Dropped")

	// The finished upload still answers HEAD with its full offset, so a client that lost
	// the last answer knows it is done; the bytes left the tus store.
	if status, off := c.offset(t, loc); status != http.StatusOK || off != len(data) {
		t.Errorf("HEAD after completion = %d offset %d, want 200 offset %d", status, off, len(data))
	}
	if b := e.tusBytes(t, id); b != nil {
		t.Errorf("%d bytes left in the tus store after completion", len(b))
	}
	// Repeating the last PATCH changes nothing.
	if res, body := c.patch(t, loc, len(data), []byte{}, nil); res.StatusCode != http.StatusNoContent {
		t.Errorf("PATCH at the end of a finished upload: %d %s", res.StatusCode, body)
	}
	// Bytes past the end are more than the upload needs, not silently dropped.
	if res, body := c.patch(t, loc, len(data), []byte("extra!"), nil); res.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(body, "ERR_UPLOAD_SIZE_EXCEEDED") {
		t.Errorf("PATCH with bytes past the end of a finished upload: %d %s, want 413", res.StatusCode, body)
	}
	// The same without a length: an empty body is still fine, bytes are not.
	for body, want := range map[string]int{"0\r\n\r\n": http.StatusNoContent, "6\r\nextra!\r\n0\r\n\r\n": http.StatusRequestEntityTooLarge} {
		res, answer := rawRequest(t, e.url, fmt.Sprintf("PATCH %s HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"+
			"Upload-Offset: %d\r\nTransfer-Encoding: chunked\r\n", path, len(data)), []byte(body))
		if res.StatusCode != want {
			t.Errorf("chunked PATCH %q at the end of a finished upload: %d %s, want %d", body, res.StatusCode, answer, want)
		}
	}
}

func TestTusOffsetMismatch(t *testing.T) {
	e := newEnv(t)
	for name, c := range e.tusClients() {
		t.Run(name, func(t *testing.T) {
			data := randomBytes(t, 4000)
			loc := c.mustCreate(t, len(data), "Offsets")
			id := idOf(t, loc)
			if res, body := c.patch(t, loc, 0, data[:1000], nil); res.StatusCode != http.StatusNoContent || res.Header.Get("Upload-Offset") != "1000" {
				t.Fatalf("first PATCH: %d %q %s", res.StatusCode, res.Header.Get("Upload-Offset"), body)
			}
			for _, off := range []int{0, 500, 1001, 3999} {
				res, body := c.patch(t, loc, off, data[off:off+1], nil)
				if res.StatusCode != http.StatusConflict {
					t.Errorf("PATCH at %d: %d %s, want 409", off, res.StatusCode, body)
				}
			}
			if status, off := c.offset(t, loc); status != http.StatusOK || off != 1000 {
				t.Errorf("HEAD = %d offset %d, want 200 offset 1000", status, off)
			}
			if got := e.tusBytes(t, id); !bytes.Equal(got, data[:1000]) {
				t.Errorf("stored %d bytes, want the first 1000 sent", len(got))
			}
			for _, bad := range []string{"-1", "x", ""} {
				res, _ := c.patch(t, loc, 0, data[:1], map[string]string{"Upload-Offset": bad})
				if res.StatusCode != http.StatusBadRequest {
					t.Errorf("Upload-Offset %q: %d, want 400", bad, res.StatusCode)
				}
			}
		})
	}
}

// TestTusConcurrentPatches resumes an upload while an older PATCH to it is still open,
// halfway through its body, as a client does when it wrongly believes that connection
// dead. The new PATCH must not write until the old one has stopped: the old one is
// interrupted (keeping what it stored), the new one completes the file, and the rest of
// the old body, sent afterwards, lands nowhere.
func TestTusConcurrentPatches(t *testing.T) {
	e := newEnv(t)
	other := e.startUpload(t, upload.Config{}, e.bus, e.meta)
	for _, tc := range []struct{ name, resumeVia string }{
		{"same instance", e.url},
		// Two upload processes sharing the data directory: the lock lives on disk.
		{"another instance", other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			concurrentPatches(t, e, &tusClient{base: e.url, c: e.h1}, &tusClient{base: tc.resumeVia, c: e.h1})
		})
	}
}

func concurrentPatches(t *testing.T, e *env, c, resume *tusClient) {
	data, junk := randomBytes(t, 48<<10), randomBytes(t, 48<<10)
	half := len(data) / 2
	loc := c.mustCreate(t, len(data), "Race")
	id := idOf(t, loc)

	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, loc, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(data))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", "0")
	oldDone := make(chan int, 1)
	go func() {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			oldDone <- -1
			return
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		oldDone <- res.StatusCode
	}()
	if _, err := pw.Write(data[:half]); err != nil {
		t.Fatalf("write first half: %v", err)
	}
	poll(t, 10*time.Second, "the old PATCH's half stored", func() error {
		if n := len(e.tusBytes(t, id)); n != half {
			return fmt.Errorf("%d bytes stored", n)
		}
		return nil
	})
	// No HEAD here: it would take the lock and stop the old PATCH itself. The resuming
	// PATCH must do that.
	if res, body := resume.patch(t, resume.base+upload.TusPath+id, half, data[half:], nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("resuming PATCH: %d %s, want 204", res.StatusCode, body)
	}
	// The old connection now sends the rest of its body; it must not be stored.
	go func() {
		_, _ = pw.Write(junk[half:])
		_ = pw.Close()
	}()
	if code := <-oldDone; code == http.StatusNoContent {
		t.Errorf("the interrupted PATCH answered 204")
	}
	src, err := os.ReadFile(filepath.Join(e.dataDir, "uploads", id, "source"))
	if err != nil || len(src) != len(data) || sum(src) != sum(data) {
		t.Errorf("source: %d bytes sha %s (%v); want %d bytes sha %s", len(src), sum(src), err, len(data), sum(data))
	}
	if v := e.video(t, id); v.GetSha256() != sum(data) {
		t.Errorf("video sha256 %s, want %s", v.GetSha256(), sum(data))
	}
}

func TestTusChecksum(t *testing.T) {
	e := newEnv(t)
	data := randomBytes(t, 3000)
	digest := func(algo string, b []byte) string {
		var d []byte
		switch algo {
		case "sha1":
			s := sha1.Sum(b)
			d = s[:]
		case "sha256":
			s := sha256.Sum256(b)
			d = s[:]
		case "md5":
			s := md5.Sum(b)
			d = s[:]
		}
		return algo + " " + base64.StdEncoding.EncodeToString(d)
	}
	wrong := append([]byte{data[0] ^ 0xff}, data[1:1000]...)
	cases := []struct {
		name     string
		checksum string
		want     int
	}{
		{"sha1 matches", digest("sha1", data[:1000]), http.StatusNoContent},
		{"sha256 matches", digest("sha256", data[:1000]), http.StatusNoContent},
		{"md5 matches", digest("md5", data[:1000]), http.StatusNoContent},
		{"upper-case algorithm", strings.Replace(digest("sha1", data[:1000]), "sha1", "SHA1", 1), http.StatusNoContent},
		{"sha1 mismatch", digest("sha1", wrong), 460},
		{"sha256 mismatch", digest("sha256", wrong), 460},
		{"unsupported algorithm", "crc32 AAAAAA==", http.StatusBadRequest},
		{"digest of the wrong size", "sha1 AAAA", http.StatusBadRequest},
		{"not base64", "sha1 ***", http.StatusBadRequest},
		{"no digest", "sha1", http.StatusBadRequest},
	}
	for name, c := range e.tusClients() {
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				loc := c.mustCreate(t, len(data), "Checksums")
				id := idOf(t, loc)
				res, body := c.patch(t, loc, 0, data[:1000], map[string]string{"Upload-Checksum": tc.checksum})
				if res.StatusCode != tc.want {
					t.Fatalf("PATCH: %d %s, want %d", res.StatusCode, body, tc.want)
				}
				wantOffset := 0
				if tc.want == http.StatusNoContent {
					wantOffset = 1000
				} else if !strings.Contains(body, "upload:") {
					t.Errorf("refusal without a reason: %q", body)
				}
				if _, off := c.offset(t, loc); off != wantOffset {
					t.Errorf("offset after PATCH = %d, want %d", off, wantOffset)
				}
				if got := e.tusBytes(t, id); len(got) != wantOffset {
					t.Errorf("%d bytes stored, want %d", len(got), wantOffset)
				}
			})
		}
		t.Run(name+"/creation-with-upload mismatch", func(t *testing.T) {
			before := e.infoFiles(t)
			res, body := c.create(t, len(data), tusMeta("title", "x"), data, map[string]string{"Upload-Checksum": digest("sha1", wrong)})
			if res.StatusCode != 460 {
				t.Fatalf("POST with a wrong checksum: %d %s, want 460", res.StatusCode, body)
			}
			if after := e.infoFiles(t); after != before {
				t.Errorf("a refused creation left an upload: %d → %d", before, after)
			}
		})
		t.Run(name+"/creation-with-upload match", func(t *testing.T) {
			res, body := c.create(t, len(data), tusMeta("title", "x"), data[:100], map[string]string{"Upload-Checksum": digest("sha256", data[:100])})
			if res.StatusCode != http.StatusCreated || res.Header.Get("Upload-Offset") != "100" {
				t.Fatalf("POST with a checksum: %d %q %s", res.StatusCode, res.Header.Get("Upload-Offset"), body)
			}
		})
	}
}

// infoFiles counts the uploads in the tus store.
func (e *env) infoFiles(t *testing.T) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(e.dataDir, "tus", "*.info"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// videoCount counts the videos metadata lists.
func (e *env) videoCount(t *testing.T) int {
	t.Helper()
	n, token := 0, ""
	for {
		res, err := e.meta.ListVideos(t.Context(), &metadatav1.ListVideosRequest{PageSize: 100, PageToken: token})
		if err != nil {
			t.Fatalf("list videos: %v", err)
		}
		n += len(res.GetVideos())
		if token = res.GetNextPageToken(); token == "" {
			return n
		}
	}
}

func TestTusCreationWithUpload(t *testing.T) {
	e := newEnv(t)
	for name, c := range e.tusClients() {
		t.Run(name, func(t *testing.T) {
			completed := e.subscribeCompleted(t)
			data := randomBytes(t, 40<<10)
			title := "Ünïcødé clip 🎬"
			res, body := c.create(t, len(data), tusMeta("title", title, "filename", "видео.mp4"), data,
				map[string]string{"X-Forwarded-Host": "videos.example:8443", "X-Forwarded-Proto": "https"})
			if res.StatusCode != http.StatusCreated || res.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
				t.Fatalf("POST: %d offset %q %s", res.StatusCode, res.Header.Get("Upload-Offset"), body)
			}
			loc := res.Header.Get("Location")
			if !strings.HasPrefix(loc, "https://videos.example:8443"+upload.TusPath) {
				t.Errorf("Location %q does not name the forwarded host", loc)
			}
			if res.Header.Get("Upload-Expires") == "" {
				t.Errorf("no Upload-Expires on creation")
			}
			e.checkStored(t, completed, idOf(t, loc), int64(len(data)), sum(data), title)
		})
	}
}

func TestTusCreationRefusals(t *testing.T) {
	e := newEnv(t)
	c := e.tusClients()["h2c"]
	cases := []struct {
		name   string
		size   int
		meta   string
		body   []byte
		hdr    map[string]string
		status int
		reason string
	}{
		{name: "no title", size: 10, meta: tusMeta("filename", "a.mp4"), status: http.StatusBadRequest, reason: "title"},
		{name: "title not base64", size: 10, meta: "title %%%", status: http.StatusBadRequest, reason: "title"},
		{name: "visibility not base64", size: 10, meta: tusMeta("title", "x") + ",visibility private", status: http.StatusBadRequest, reason: "visibility"},
		{name: "visibility unpadded", size: 10, meta: tusMeta("title", "x") + ",visibility cHJpdmF0ZQ", status: http.StatusBadRequest, reason: "visibility"},
		{name: "visibility twice", size: 10, meta: tusMeta("title", "x", "visibility", "private", "visibility", "public"), status: http.StatusBadRequest, reason: "visibility"},
		{name: "title twice", size: 10, meta: tusMeta("title", "x", "title", "y"), status: http.StatusBadRequest, reason: "title"},
		{name: "visibility in capitals", size: 10, meta: tusMeta("title", "x", "VISIBILITY", "private"), status: http.StatusBadRequest, reason: "visibility"},
		{name: "tab between key and value", size: 10, meta: tusMeta("title", "x") + ",visibility\tdW5saXN0ZWQ=", status: http.StatusBadRequest, reason: "visibility"},
		{name: "visibility without a value", size: 10, meta: tusMeta("title", "x") + ",visibility", status: http.StatusBadRequest, reason: "visibility"},
		{name: "pair with two spaces", size: 10, meta: tusMeta("title", "x") + ",visibility cHJpdmF0ZQ== x", status: http.StatusBadRequest, reason: "visibility"},
		{name: "empty title", size: 10, meta: tusMeta("title", ""), status: http.StatusBadRequest, reason: "title"},
		{name: "title too long", size: 10, meta: tusMeta("title", strings.Repeat("é", 201)), status: http.StatusBadRequest, reason: "title"},
		{name: "title not UTF-8", size: 10, meta: tusMeta("title", "\xff\xfe"), status: http.StatusBadRequest, reason: "UTF-8"},
		{name: "filename too long", size: 10, meta: tusMeta("title", "x", "filename", strings.Repeat("a", 256)), status: http.StatusBadRequest, reason: "filename"},
		{name: "empty file", size: 0, meta: tusMeta("title", "x"), status: http.StatusBadRequest, reason: "at least 1 byte"},
		{name: "over the limit", size: testMaxBytes + 1, meta: tusMeta("title", "x"), status: http.StatusRequestEntityTooLarge, reason: strconv.Itoa(testMaxBytes)},
		{name: "over the limit with bytes", size: testMaxBytes + 1, meta: tusMeta("title", "x"), body: make([]byte, 1000), status: http.StatusRequestEntityTooLarge, reason: strconv.Itoa(testMaxBytes)},
		{name: "no length", size: 10, meta: tusMeta("title", "x"), hdr: map[string]string{"Upload-Length": ""}, status: http.StatusBadRequest},
		{name: "deferred length", size: 10, meta: tusMeta("title", "x"), hdr: map[string]string{"Upload-Length": "", "Upload-Defer-Length": "1"}, status: http.StatusNotImplemented},
		{name: "bytes past the length", size: 10, meta: tusMeta("title", "x"), body: make([]byte, 11), status: http.StatusRequestEntityTooLarge, reason: "ERR_UPLOAD_SIZE_EXCEEDED"},
		{name: "no tus version", size: 10, meta: tusMeta("title", "x"), hdr: map[string]string{"Tus-Resumable": ""}, status: http.StatusPreconditionFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, videos := e.infoFiles(t), e.videoCount(t)
			res, body := c.create(t, tc.size, tc.meta, tc.body, tc.hdr)
			if res.StatusCode != tc.status || !strings.Contains(body, tc.reason) {
				t.Fatalf("POST: %d %q, want %d mentioning %q", res.StatusCode, body, tc.status, tc.reason)
			}
			if after := e.infoFiles(t); after != before {
				t.Errorf("a refused creation left an upload: %d → %d", before, after)
			}
			if after := e.videoCount(t); after != videos {
				t.Errorf("a refused creation left a video: %d → %d", videos, after)
			}
		})
	}

	t.Run("filename is metadata only", func(t *testing.T) {
		evil := "../../../../tmp/évil 名前.mp4"
		started := e.subscribe(t, eventsv1.EventType_EVENT_TYPE_UPLOAD_STARTED)
		res, body := c.create(t, 100, tusMeta("title", "Names", "filename", evil, "junk", "dropped"), nil, nil)
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("POST: %d %s", res.StatusCode, body)
		}
		loc := res.Header.Get("Location")
		id := idOf(t, loc)
		head, _ := c.do(t, http.MethodHead, loc, nil, nil)
		meta := handler.ParseMetadataHeader(head.Header.Get("Upload-Metadata"))
		if meta["filename"] != evil || meta["title"] != "Names" {
			t.Errorf("HEAD Upload-Metadata = %v, want the filename and title kept as sent", meta)
		}
		if _, ok := meta["junk"]; ok {
			t.Errorf("unknown metadata kept: %v", meta)
		}
		if got := started(id).GetUploadStarted().GetFilename(); got != evil {
			t.Errorf("upload.started filename = %q, want %q", got, evil)
		}
		if res, body := c.patch(t, loc, 0, make([]byte, 100), nil); res.StatusCode != http.StatusNoContent {
			t.Fatalf("PATCH: %d %s", res.StatusCode, body)
		}
		if _, err := os.Stat(filepath.Join(e.dataDir, "uploads", id, "source")); err != nil {
			t.Errorf("source not under the video id: %v", err)
		}
		if _, err := os.Stat(filepath.Join(e.dataDir, "tmp")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the filename became a path: %v", err)
		}
	})

	t.Run("bad upload ids", func(t *testing.T) {
		for _, p := range []string{"../../etc/passwd", "..%2F..%2Fmeta", "a.b", strings.Repeat("a", 65), "a/b", "%00"} {
			res, body := c.do(t, http.MethodHead, upload.TusPath+p, nil, nil)
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("HEAD %s: %d %s, want 404", p, res.StatusCode, body)
			}
			res, body = c.patch(t, upload.TusPath+p, 0, []byte("x"), nil)
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("PATCH %s: %d %s, want 404", p, res.StatusCode, body)
			}
		}
		if res, _ := c.do(t, http.MethodHead, upload.TusPath+"abcdefghijklmnopqrst", nil, nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("HEAD of an unknown upload: %d, want 404", res.StatusCode)
		}
		for _, tc := range []struct{ method, path, allow string }{
			{http.MethodGet, upload.TusPath + "abcdefghijklmnopqrst", "HEAD, PATCH, DELETE, OPTIONS"}, // downloads are disabled
			{http.MethodPut, upload.TusPath + "abcdefghijklmnopqrst", "HEAD, PATCH, DELETE, OPTIONS"},
			{http.MethodGet, upload.TusPath, "POST, OPTIONS"},
		} {
			if res, _ := c.do(t, tc.method, tc.path, nil, nil); res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != tc.allow {
				t.Errorf("%s %s: %d Allow %q, want 405 Allow %q", tc.method, tc.path, res.StatusCode, res.Header.Get("Allow"), tc.allow)
			}
		}
	})

	t.Run("PATCH past the length", func(t *testing.T) {
		loc := c.mustCreate(t, 100, "Short")
		res, body := c.patch(t, loc, 0, make([]byte, 101), nil)
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("PATCH: %d %s, want 413", res.StatusCode, body)
		}
		if got := e.tusBytes(t, idOf(t, loc)); len(got) != 0 {
			t.Errorf("%d bytes stored from a refused PATCH", len(got))
		}
	})
}

func TestTusTermination(t *testing.T) {
	e := newEnv(t)
	failed := e.subscribe(t, eventsv1.EventType_EVENT_TYPE_UPLOAD_FAILED)
	for name, c := range e.tusClients() {
		t.Run(name, func(t *testing.T) {
			loc := c.mustCreate(t, 5000, "Cancelled")
			id := idOf(t, loc)
			if res, body := c.patch(t, loc, 0, make([]byte, 2000), nil); res.StatusCode != http.StatusNoContent {
				t.Fatalf("PATCH: %d %s", res.StatusCode, body)
			}
			if res, body := c.do(t, http.MethodDelete, loc, nil, nil); res.StatusCode != http.StatusNoContent {
				t.Fatalf("DELETE: %d %s", res.StatusCode, body)
			}
			if got := e.tusFiles(t, id); len(got) != 0 {
				t.Errorf("left after termination: %v", got)
			}
			if status, _ := c.offset(t, loc); status != http.StatusNotFound {
				t.Errorf("HEAD after termination: %d, want 404", status)
			}
			if res, _ := c.patch(t, loc, 2000, make([]byte, 10), nil); res.StatusCode != http.StatusNotFound {
				t.Errorf("PATCH after termination: %d, want 404", res.StatusCode)
			}
			if v := e.video(t, id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_FAILED || v.GetFailureReason() != "upload cancelled" {
				t.Errorf("video = %v %q, want FAILED \"upload cancelled\"", v.GetStatus(), v.GetFailureReason())
			}
			if got := failed(id).GetUploadFailed().GetReason(); got != "upload cancelled" {
				t.Errorf("upload.failed reason %q", got)
			}

			// A finished upload is the video's source now: DELETE is refused.
			data := randomBytes(t, 1000)
			res, _ := c.create(t, len(data), tusMeta("title", "Done"), data, nil)
			done := res.Header.Get("Location")
			if res, body := c.do(t, http.MethodDelete, done, nil, nil); res.StatusCode != http.StatusForbidden {
				t.Errorf("DELETE of a finished upload: %d %s, want 403", res.StatusCode, body)
			}
			if _, err := os.Stat(filepath.Join(e.dataDir, "uploads", idOf(t, done), "source")); err != nil {
				t.Errorf("source of a finished upload: %v", err)
			}
			if res, _ := c.do(t, http.MethodDelete, upload.TusPath+"abcdefghijklmnopqrst", nil, nil); res.StatusCode != http.StatusNotFound {
				t.Errorf("DELETE of an unknown upload: %d, want 404", res.StatusCode)
			}
		})
	}
}

func TestTusExpiry(t *testing.T) {
	e := newEnv(t)
	failed := e.subscribe(t, eventsv1.EventType_EVENT_TYPE_UPLOAD_FAILED)
	expiry := time.Second
	c := &tusClient{base: e.startUpload(t, upload.Config{Expiry: expiry}, e.bus, e.meta), c: e.h2c}

	abandoned := c.mustCreate(t, 5000, "Abandoned")
	aid := idOf(t, abandoned)
	if res, body := c.patch(t, abandoned, 0, make([]byte, 1000), nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", res.StatusCode, body)
	}
	if res, _ := c.patch(t, abandoned, 0, make([]byte, 1), nil); res.Header.Get("Upload-Expires") != "" {
		t.Errorf("a refused PATCH announced an expiry")
	}
	data := randomBytes(t, 2000)
	res, _ := c.create(t, len(data), tusMeta("title", "Finished"), data, nil)
	finished := res.Header.Get("Location")
	fid := idOf(t, finished)
	created := time.Now()

	poll(t, 20*time.Second, "the abandoned upload removed", func() error {
		if got := e.tusFiles(t, aid); len(got) != 0 {
			return fmt.Errorf("still there: %v", got)
		}
		return nil
	})
	if time.Since(created) < expiry/2 {
		t.Errorf("removed after %s, before its expiry of %s", time.Since(created), expiry)
	}
	if v := e.video(t, aid); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_FAILED || v.GetFailureReason() != "upload expired" {
		t.Errorf("abandoned video = %v %q, want FAILED \"upload expired\"", v.GetStatus(), v.GetFailureReason())
	}
	if got := failed(aid).GetUploadFailed().GetReason(); got != "upload expired" {
		t.Errorf("upload.failed reason %q", got)
	}
	if status, _ := c.offset(t, abandoned); status != http.StatusNotFound {
		t.Errorf("HEAD of an expired upload: %d, want 404", status)
	}

	// A finished upload's record is forgotten too, never its bytes or its video.
	poll(t, 20*time.Second, "the finished upload forgotten", func() error {
		if got := e.tusFiles(t, fid); len(got) != 0 {
			return fmt.Errorf("still there: %v", got)
		}
		return nil
	})
	if v := e.video(t, fid); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING {
		t.Errorf("finished video = %v, want PROCESSING", v.GetStatus())
	}
	if src, err := os.ReadFile(filepath.Join(e.dataDir, "uploads", fid, "source")); err != nil || sum(src) != sum(data) {
		t.Errorf("finished source after expiry: %v", err)
	}

	// An upload that keeps receiving bytes does not expire.
	live := c.mustCreate(t, 4000, "Live")
	for off := 0; off < 4000; off += 500 {
		if res, body := c.patch(t, live, off, make([]byte, 500), nil); res.StatusCode != http.StatusNoContent {
			t.Fatalf("PATCH at %d: %d %s", off, res.StatusCode, body)
		}
		time.Sleep(expiry / 4)
	}
}

// flakyVideos fails the UPLOADING → PROCESSING update while down is set, as a metadata
// outage at the last byte would.
type flakyVideos struct {
	upload.Videos
	down atomic.Bool
}

func (f *flakyVideos) UpdateVideo(ctx context.Context, req *metadatav1.UpdateVideoRequest) (*metadatav1.UpdateVideoResponse, error) {
	if f.down.Load() && req.GetVideo().GetStatus() == metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("metadata down"))
	}
	return f.Videos.UpdateVideo(ctx, req)
}

// TestTusHandOffRetried loses the metadata service at the last byte: the client is told
// to retry, the bytes stay, and the cleanup loop hands the upload off once metadata is back.
func TestTusHandOffRetried(t *testing.T) {
	e := newEnv(t)
	completed := e.subscribeCompleted(t)
	videos := &flakyVideos{Videos: e.meta}
	videos.down.Store(true)
	c := &tusClient{base: e.startUpload(t, upload.Config{Expiry: 300 * time.Millisecond}, e.bus, videos), c: e.h2c}
	data := randomBytes(t, 5000)
	loc := c.mustCreate(t, len(data), "Retried")
	id := idOf(t, loc)
	res, body := c.patch(t, loc, 0, data, nil)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "processed later") {
		t.Fatalf("last PATCH with metadata down: %d %s, want 503", res.StatusCode, body)
	}
	// The client retrying learns the upload is complete.
	if status, off := c.offset(t, loc); status != http.StatusOK || off != len(data) {
		t.Errorf("HEAD = %d offset %d, want 200 offset %d", status, off, len(data))
	}
	time.Sleep(time.Second) // several cleanup rounds with metadata down
	if v := e.video(t, id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING {
		t.Fatalf("video = %v with metadata down, want UPLOADING", v.GetStatus())
	}
	videos.down.Store(false)
	poll(t, 20*time.Second, "the hand-off retried", func() error {
		if v := e.video(t, id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING {
			return fmt.Errorf("status %v", v.GetStatus())
		}
		return nil
	})
	e.checkStored(t, completed, id, int64(len(data)), sum(data), "Retried")
}

func TestCreateUploadRPC(t *testing.T) {
	e := newEnv(t)
	meta := func(title string) *uploadv1.UploadMetadata {
		return &uploadv1.UploadMetadata{Title: title, Filename: "clip.mp4"}
	}
	cases := []struct {
		name string
		req  *uploadv1.CreateUploadRequest
		code connect.Code
	}{
		{name: "creates", req: &uploadv1.CreateUploadRequest{Metadata: meta("RPC tus"), SizeBytes: 3000}},
		{name: "no metadata", req: &uploadv1.CreateUploadRequest{SizeBytes: 3000}, code: connect.CodeInvalidArgument},
		{name: "no title", req: &uploadv1.CreateUploadRequest{Metadata: meta(""), SizeBytes: 3000}, code: connect.CodeInvalidArgument},
		{name: "empty file", req: &uploadv1.CreateUploadRequest{Metadata: meta("x"), SizeBytes: 0}, code: connect.CodeInvalidArgument},
		{name: "negative size", req: &uploadv1.CreateUploadRequest{Metadata: meta("x"), SizeBytes: -1}, code: connect.CodeInvalidArgument},
		{name: "over the limit", req: &uploadv1.CreateUploadRequest{Metadata: meta("x"), SizeBytes: testMaxBytes + 1}, code: connect.CodeResourceExhausted},
	}
	for _, p := range []struct {
		name string
		opts []connect.ClientOption
	}{{name: "connect"}, {name: "grpc", opts: []connect.ClientOption{connect.WithGRPC()}}} {
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				completed := e.subscribeCompleted(t)
				res, err := e.uploadClient(p.opts...).CreateUpload(t.Context(), tc.req)
				if tc.code != 0 {
					if connect.CodeOf(err) != tc.code {
						t.Fatalf("err = %v, want %v", err, tc.code)
					}
					return
				}
				if err != nil {
					t.Fatalf("CreateUpload: %v", err)
				}
				id := res.GetVideoId()
				if res.GetUploadUrl() != upload.TusPath+id || !idPattern.MatchString(id) {
					t.Fatalf("answer %v: want upload_url %s<video id>", res, upload.TusPath)
				}
				if left := time.Until(res.GetExpireTime().AsTime()); left < 23*time.Hour || left > 25*time.Hour {
					t.Errorf("expire_time %v from now, want the default 24h", left)
				}
				if v := e.video(t, id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING {
					t.Errorf("video = %v, want UPLOADING", v.GetStatus())
				}
				c := e.tusClients()["h2c"]
				data := randomBytes(t, int(tc.req.GetSizeBytes()))
				if res, body := c.patch(t, res.GetUploadUrl(), 0, data, nil); res.StatusCode != http.StatusNoContent {
					t.Fatalf("PATCH: %d %s", res.StatusCode, body)
				}
				e.checkStored(t, completed, id, int64(len(data)), sum(data), tc.req.GetMetadata().GetTitle())
			})
		}
	}
}

// TestTusManyUploadsAtOnce runs uploads in parallel, each in several PATCHes, against one
// service: every one must end intact.
func TestTusManyUploadsAtOnce(t *testing.T) {
	e := newEnv(t)
	c := e.tusClients()["h2c"]
	t.Run("group", func(t *testing.T) {
		for i := range 6 {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				data := randomBytes(t, 20000+i*1000)
				res, body := c.create(t, len(data), tusMeta("title", fmt.Sprint("parallel ", i)), data[:3000], nil)
				if res.StatusCode != http.StatusCreated {
					t.Fatalf("POST: %d %s", res.StatusCode, body)
				}
				loc := res.Header.Get("Location")
				for off := 3000; off < len(data); off += 7000 {
					end := min(off+7000, len(data))
					if res, body := c.patch(t, loc, off, data[off:end], nil); res.StatusCode != http.StatusNoContent {
						t.Fatalf("PATCH at %d: %d %s", off, res.StatusCode, body)
					}
				}
				src, err := os.ReadFile(filepath.Join(e.dataDir, "uploads", idOf(t, loc), "source"))
				if err != nil || sum(src) != sum(data) {
					t.Errorf("source %v sha %s, want %s", err, sum(src), sum(data))
				}
			})
		}
	})
}

// TestTusCancelledPatch cancels a PATCH halfway through its body, as a client that gives
// up does, then goes on with the same client (over HTTP/2 the same connection): the bytes
// that arrived stay, and the next requests, a resume and a new upload, succeed.
func TestTusCancelledPatch(t *testing.T) {
	e := newEnv(t)
	for name, c := range e.tusClients() {
		t.Run(name, func(t *testing.T) {
			data := randomBytes(t, 48<<10)
			half := len(data) / 2
			loc := c.mustCreate(t, len(data), "Cancelled")
			id := idOf(t, loc)
			ctx, cancel := context.WithCancel(t.Context())
			pr, pw := io.Pipe()
			req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc, pr)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = int64(len(data))
			req.Header.Set("Tus-Resumable", "1.0.0")
			req.Header.Set("Content-Type", "application/offset+octet-stream")
			req.Header.Set("Upload-Offset", "0")
			done := make(chan error, 1)
			go func() {
				res, err := c.c.Do(req)
				if err == nil {
					_ = res.Body.Close()
					err = fmt.Errorf("the cancelled PATCH answered %d", res.StatusCode)
				}
				done <- err
			}()
			if _, err := pw.Write(data[:half]); err != nil {
				t.Fatalf("write half: %v", err)
			}
			poll(t, 10*time.Second, "half the body stored", func() error {
				if n := len(e.tusBytes(t, id)); n != half {
					return fmt.Errorf("%d bytes stored", n)
				}
				return nil
			})
			cancel()
			// The transport waits for its body writer, which waits for the pipe.
			_ = pw.CloseWithError(context.Canceled)
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled PATCH: %v", err)
			}

			var off int
			poll(t, 10*time.Second, "the upload free for a resume", func() error {
				status, o := c.offset(t, loc)
				if status != http.StatusOK || o != half {
					return fmt.Errorf("HEAD = %d offset %d, want 200 offset %d", status, o, half)
				}
				off = o
				return nil
			})
			if res, body := c.patch(t, loc, off, data[off:], nil); res.StatusCode != http.StatusNoContent {
				t.Fatalf("resume: %d %s", res.StatusCode, body)
			}
			if res, body := c.create(t, 10, tusMeta("title", "Next"), nil, nil); res.StatusCode != http.StatusCreated {
				t.Fatalf("creation after the cancelled PATCH: %d %s", res.StatusCode, body)
			}
		})
	}
}

// TestTusCreationBodyBreaks cuts off or stalls the body of a creation-with-upload. tusd's
// error answer carries no Location, so no client could resume or cancel that upload: it
// and its video go at once, instead of waiting for the expiry.
func TestTusCreationBodyBreaks(t *testing.T) {
	part := randomBytes(t, 1000)
	for _, tc := range []struct {
		name  string
		stall bool
	}{{"dropped", false}, {"stalled", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			base := e.startUpload(t, upload.Config{IdleTimeout: testIdle}, e.bus, e.meta)
			failed := e.subscribe(t, eventsv1.EventType_EVENT_TYPE_UPLOAD_FAILED)
			before, videos := e.infoFiles(t), e.videoCount(t)
			addr := strings.TrimPrefix(base, "http://")
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"+
				"Upload-Length: 5000\r\nUpload-Metadata: %s\r\nContent-Length: 5000\r\n\r\n", upload.TusPath, addr, tusMeta("title", "Broken"))
			if _, err := conn.Write(part); err != nil {
				t.Fatal(err)
			}
			poll(t, 10*time.Second, "the upload created", func() error {
				if e.infoFiles(t) == before {
					return errors.New("not yet")
				}
				return nil
			})
			if tc.stall {
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				res, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil || res.StatusCode != http.StatusRequestTimeout {
					t.Fatalf("stalled creation: %v %v, want 408", res, err)
				}
			} else {
				_ = conn.Close()
			}
			poll(t, 10*time.Second, "the upload and its video gone", func() error {
				if n, v := e.infoFiles(t), e.videoCount(t); n != before || v != videos {
					return fmt.Errorf("%d uploads and %d videos, want %d and %d", n, v, before, videos)
				}
				return nil
			})
			if ev := failed(""); ev == nil || !strings.Contains(ev.GetUploadFailed().GetReason(), "upload aborted") {
				t.Errorf("upload.failed = %v, want one saying the upload was aborted", ev)
			}
		})
	}
}

// TestTusCreationWithoutHost creates an upload over HTTP/1.0 without a Host header: the
// Location names the address the client reached, not an empty host.
func TestTusCreationWithoutHost(t *testing.T) {
	e := newEnv(t)
	addr := strings.TrimPrefix(e.url, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.0\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 10\r\nUpload-Metadata: %s\r\n\r\n", upload.TusPath, tusMeta("title", "No host"))
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if loc := res.Header.Get("Location"); res.StatusCode != http.StatusCreated || !strings.HasPrefix(loc, e.url+upload.TusPath) {
		t.Errorf("creation without Host: %d Location %q, want 201 under %s", res.StatusCode, loc, e.url+upload.TusPath)
	}
}

// TestTusClientMetadataKeys creates uploads with the keys tus clients add of their own
// (Uppy's name, type, relativePath; camelCase fileName from others): they are accepted.
func TestTusClientMetadataKeys(t *testing.T) {
	e := newEnv(t)
	c := e.tusClients()["h2c"]
	for _, meta := range []string{
		tusMeta("title", "Uppy", "name", "a.mp4", "type", "video/mp4", "filetype", "video/mp4", "relativePath", "null", "filename", "a.mp4"),
		tusMeta("title", "Camel", "fileName", "a.mp4", "fileType", "video/mp4"),
		tusMeta("title", "Bare key") + ",relativePath",
	} {
		if res, body := c.create(t, 10, meta, nil, nil); res.StatusCode != http.StatusCreated {
			t.Errorf("Upload-Metadata %q: %d %s, want 201", meta, res.StatusCode, body)
		}
	}
}
