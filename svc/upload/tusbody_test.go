package upload_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/svc/upload"
)

// send sends one tus request whose body is body as given: a bytes.Reader has a known
// length, a pipe (chunked) has none.
func (c *tusClient) send(t *testing.T, method, target string, body io.Reader, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	if !strings.HasPrefix(target, "http") {
		target = c.base + target
	}
	req, err := http.NewRequestWithContext(t.Context(), method, target, body)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	for k, v := range hdr {
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

// TestTusBodyPastLength sends bodies longer than the upload they are for, with a
// Content-Length and without one (chunked over HTTP/1.1, no length over h2c). A creation
// is refused with 413 and leaves nothing: no upload, no video, no bytes (when the excess
// shows only as the bytes arrive, the upload and video made meanwhile are removed and
// upload.failed says why). A PATCH is refused with 413 without completing the upload
// from its first bytes; the client resumes from HEAD's offset.
func TestTusBodyPastLength(t *testing.T) {
	e := newEnv(t)
	for name, c := range e.tusClients() {
		t.Run(name+"/creation with Content-Length", func(t *testing.T) {
			data := randomBytes(t, 200)
			before, videos := e.infoFiles(t), e.videoCount(t)
			res, body := c.create(t, 100, tusMeta("title", "over"), data, nil)
			if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(body, "ERR_UPLOAD_SIZE_EXCEEDED") || res.Header.Get("Location") != "" {
				t.Errorf("POST = %d %q Location %q, want 413 ERR_UPLOAD_SIZE_EXCEEDED without Location", res.StatusCode, body, res.Header.Get("Location"))
			}
			if after := e.infoFiles(t); after != before {
				t.Errorf("uploads %d → %d, want none created", before, after)
			}
			if after := e.videoCount(t); after != videos {
				t.Errorf("videos %d → %d, want none created", videos, after)
			}
		})

		t.Run(name+"/creation with a checksum and no length", func(t *testing.T) {
			data := randomBytes(t, 200)
			before, videos := e.infoFiles(t), e.videoCount(t)
			res, body := c.send(t, http.MethodPost, upload.TusPath, chunked(t, data), map[string]string{
				"Upload-Length": "100", "Upload-Metadata": tusMeta("title", "over"), "Upload-Checksum": "sha1 " + sha1Base64(data),
			})
			if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(body, "ERR_UPLOAD_SIZE_EXCEEDED") {
				t.Errorf("POST = %d %q, want 413 ERR_UPLOAD_SIZE_EXCEEDED", res.StatusCode, body)
			}
			if after := e.infoFiles(t); after != before {
				t.Errorf("uploads %d → %d, want none created", before, after)
			}
			if after := e.videoCount(t); after != videos {
				t.Errorf("videos %d → %d, want none created", videos, after)
			}
		})

		for _, size := range []int{101, 200, 64 << 10} {
			t.Run(name+"/creation without a length, "+strconv.Itoa(size)+" bytes for 100", func(t *testing.T) {
				started := e.subscribe(t, eventsv1.EventType_EVENT_TYPE_UPLOAD_STARTED)
				failed := e.subscribe(t, eventsv1.EventType_EVENT_TYPE_UPLOAD_FAILED)
				completed := e.subscribeCompleted(t)
				videos := e.videoCount(t)
				res, body := c.send(t, http.MethodPost, upload.TusPath, chunked(t, randomBytes(t, size)), map[string]string{
					"Upload-Length": "100", "Upload-Metadata": tusMeta("title", "over"),
				})
				if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(body, "ERR_UPLOAD_SIZE_EXCEEDED") || res.Header.Get("Location") != "" {
					t.Errorf("POST = %d %q Location %q, want 413 ERR_UPLOAD_SIZE_EXCEEDED without Location", res.StatusCode, body, res.Header.Get("Location"))
				}
				// The upload existed for a moment: the body's length showed only as it came.
				id := started("").GetSubjectId()
				if _, err := e.meta.GetVideo(t.Context(), &metadatav1.GetVideoRequest{Id: id}); connect.CodeOf(err) != connect.CodeNotFound {
					t.Errorf("GetVideo of the refused upload = %v, want not_found", err)
				}
				if after := e.videoCount(t); after != videos {
					t.Errorf("videos %d → %d, want the refused one gone", videos, after)
				}
				if got := failed(id).GetUploadFailed().GetReason(); !strings.Contains(got, "longer than the upload") {
					t.Errorf("upload.failed reason %q", got)
				}
				poll(t, 10*time.Second, "the refused upload's files gone", func() error {
					if left := e.tusFiles(t, id); len(left) != 0 {
						return fmt.Errorf("left: %v", left)
					}
					return nil
				})
				for _, left := range e.uploadEntries(t) {
					if left == id {
						t.Errorf("uploads/%s left behind", id)
					}
				}
				if msg, err := completed.NextMsg(200 * time.Millisecond); err == nil {
					t.Errorf("upload.completed published for a refused upload: %q", msg.Data)
				}
			})
		}

		t.Run(name+"/creation without a length, exactly the length", func(t *testing.T) {
			completed := e.subscribeCompleted(t)
			data := randomBytes(t, 100)
			res, body := c.send(t, http.MethodPost, upload.TusPath, chunked(t, data), map[string]string{
				"Upload-Length": "100", "Upload-Metadata": tusMeta("title", "exact"),
			})
			if res.StatusCode != http.StatusCreated || res.Header.Get("Upload-Offset") != "100" {
				t.Fatalf("POST = %d %q offset %q, want 201 offset 100", res.StatusCode, body, res.Header.Get("Upload-Offset"))
			}
			e.checkStored(t, completed, idOf(t, res.Header.Get("Location")), 100, sum(data), "exact")
		})

		t.Run(name+"/PATCH without a length past the rest", func(t *testing.T) {
			completed := e.subscribeCompleted(t)
			data := randomBytes(t, 100)
			loc := c.mustCreate(t, 100, "patched")
			id := idOf(t, loc)
			res, body := c.send(t, http.MethodPatch, loc, chunked(t, append(append([]byte{}, data...), randomBytes(t, 50)...)),
				map[string]string{"Upload-Offset": "0"})
			if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(body, "ERR_UPLOAD_SIZE_EXCEEDED") {
				t.Errorf("PATCH = %d %q, want 413 ERR_UPLOAD_SIZE_EXCEEDED", res.StatusCode, body)
			}
			if v := e.video(t, id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING {
				t.Errorf("video after the refused PATCH = %v, want UPLOADING (not completed from its first bytes)", v.GetStatus())
			}
			status, off := c.offset(t, loc)
			if status != http.StatusOK || off >= 100 {
				t.Fatalf("HEAD = %d offset %d, want 200 and the upload incomplete", status, off)
			}
			if got := e.tusBytes(t, id); string(got) != string(data[:off]) {
				t.Errorf("stored %d bytes that are not the body's first %d", len(got), off)
			}
			if res, body := c.patch(t, loc, off, data[off:], nil); res.StatusCode != http.StatusNoContent {
				t.Fatalf("resume: %d %s", res.StatusCode, body)
			}
			e.checkStored(t, completed, id, 100, sum(data), "patched")
		})
	}
}
