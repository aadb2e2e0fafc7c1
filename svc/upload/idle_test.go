package upload_test

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
	"github.com/reelway/reelway/gen/reelway/upload/v1/uploadv1connect"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/upload"
)

// testIdle is the idle timeout of the stall tests: short, so they run fast, yet long enough
// for a loaded machine to send the part of the body that does arrive.
const testIdle = 400 * time.Millisecond

// rawRequest sends an HTTP/1.1 request head and part of a body over a plain connection,
// then sends nothing more and reads the answer, as a client that stalls mid-body would.
func rawRequest(t *testing.T, base, head string, body []byte) (*http.Response, string) {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := fmt.Fprintf(conn, "%sHost: %s\r\n\r\n", head, addr); err != nil {
		t.Fatalf("write head: %v", err)
	}
	if _, err := conn.Write(body); err != nil {
		t.Fatalf("write body: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read answer body: %v", err)
	}
	return res, string(b)
}

// TestStalledUpload stops sending halfway through the body on every upload path: after the
// idle timeout the request fails with 408 (deadline_exceeded over RPC) and a message that
// names the timeout and no internal address; the plain route and the RPC keep nothing and
// publish upload.failed.
func TestStalledUpload(t *testing.T) {
	part := randomBytes(t, 1000)
	wantMsg := fmt.Sprintf("upload: no bytes received for %ss", "0.4")
	checkMsg := func(t *testing.T, msg string) {
		t.Helper()
		if !strings.Contains(msg, wantMsg) || strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, "tcp") {
			t.Errorf("message %q, want %q and no connection details", msg, wantMsg)
		}
	}
	plain := func(t *testing.T, res *http.Response, body string) {
		t.Helper()
		var eb struct{ Code, Message string }
		if err := json.Unmarshal([]byte(body), &eb); err != nil {
			t.Fatalf("answer %d %q is not JSON: %v", res.StatusCode, body, err)
		}
		if res.StatusCode != http.StatusRequestTimeout || eb.Code != "deadline_exceeded" {
			t.Errorf("answer = %d %q, want 408 deadline_exceeded", res.StatusCode, body)
		}
		checkMsg(t, eb.Message)
	}
	cases := []struct {
		name string
		send func(t *testing.T, e *env, base string)
	}{
		{"POST over HTTP/1.1", func(t *testing.T, e *env, base string) {
			res, body := rawRequest(t, base, fmt.Sprintf("POST /v1/uploads?title=stalled HTTP/1.1\r\nContent-Length: %d\r\n", 10*len(part)), part)
			plain(t, res, body)
		}},
		{"POST over h2c", func(t *testing.T, e *env, base string) {
			pr, pw := io.Pipe()
			t.Cleanup(func() { _ = pw.Close() })
			go func() { _, _ = pw.Write(part) }()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/v1/uploads?title=stalled", pr)
			if err != nil {
				t.Fatal(err)
			}
			res, err := e.h2c.Do(req)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			plain(t, res, string(b))
		}},
		{"Upload RPC over Connect", func(t *testing.T, e *env, base string) { stallRPC(t, e, base, part, checkMsg) }},
		{"Upload RPC over gRPC", func(t *testing.T, e *env, base string) { stallRPC(t, e, base, part, checkMsg, connect.WithGRPC()) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			sub, err := e.bus.Conn().SubscribeSync(events.Subject(eventsv1.EventType_EVENT_TYPE_UPLOAD_FAILED))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			base := e.startUpload(t, upload.Config{IdleTimeout: testIdle}, e.bus, e.meta)
			start := time.Now()
			tc.send(t, e, base)
			if took := time.Since(start); took < testIdle {
				t.Errorf("answered after %v, before the idle timeout", took)
			}
			msg, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("no upload.failed event: %v", err)
			}
			ev, err := events.Decode(msg.Data)
			if err != nil {
				t.Fatalf("decode event: %v", err)
			}
			if ev.GetType() != eventsv1.EventType_EVENT_TYPE_UPLOAD_FAILED || !strings.Contains(ev.GetUploadFailed().GetReason(), wantMsg) {
				t.Errorf("event = %v, want upload.failed saying %q", ev, wantMsg)
			}
			poll(t, 10*time.Second, "nothing left on disk", func() error {
				if got := e.uploadEntries(t); len(got) != 0 {
					return fmt.Errorf("left: %v", got)
				}
				return nil
			})
		})
	}

	// A tus PATCH without a checksum stalls: 408 too (tusd alone says 500), and the bytes
	// that arrived stay stored, so the client resumes from there.
	for _, tc := range []struct {
		name, length string
	}{
		{"tus PATCH with Content-Length", "Content-Length: 5000\r\n"},
		{"tus PATCH chunked", "Transfer-Encoding: chunked\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			base := e.startUpload(t, upload.Config{IdleTimeout: testIdle}, e.bus, e.meta)
			c := &tusClient{base: base, c: e.h2c}
			loc := c.mustCreate(t, 5000, "Stalled")
			body := part
			if strings.HasPrefix(tc.length, "Transfer-Encoding") {
				body = append(fmt.Appendf(nil, "%x\r\n", len(part)), append(slices.Clone(part), "\r\n"...)...)
			}
			start := time.Now()
			res, answer := rawRequest(t, base, fmt.Sprintf("PATCH %s%s HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"+
				"Upload-Offset: 0\r\n%s", upload.TusPath, idOf(t, loc), tc.length), body)
			// One idle timeout, not two: the server must not wait another one for the
			// rest of a body it will never use.
			if took := time.Since(start); took < testIdle || took >= 2*testIdle {
				t.Errorf("answered after %v, want one idle timeout (%v)", took, testIdle)
			}
			// The unread rest of the body cannot be told from a next request, so the
			// connection must end with this answer.
			if !res.Close {
				t.Errorf("the answer keeps the connection open after an unread body")
			}
			if res.StatusCode != http.StatusRequestTimeout || !strings.HasPrefix(answer, "ERR_READ_TIMEOUT") {
				t.Errorf("PATCH = %d %q, want 408 ERR_READ_TIMEOUT", res.StatusCode, answer)
			}
			checkMsg(t, answer)
			if status, off := c.offset(t, loc); status != http.StatusOK || off != len(part) {
				t.Errorf("HEAD after the stalled PATCH = %d offset %d, want 200 offset %d", status, off, len(part))
			}
		})
	}

	// A tus PATCH whose checksum is verified first stalls while its body is spooled: 408,
	// and none of it reaches the upload.
	t.Run("tus PATCH with a checksum", func(t *testing.T) {
		e := newEnv(t)
		base := e.startUpload(t, upload.Config{IdleTimeout: testIdle}, e.bus, e.meta)
		c := &tusClient{base: base, c: e.h2c}
		loc := c.mustCreate(t, 5000, "Stalled")
		id := idOf(t, loc)
		res, body := rawRequest(t, base, fmt.Sprintf("PATCH %s%s HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"+
			"Upload-Offset: 0\r\nUpload-Checksum: sha1 %s\r\nContent-Length: 5000\r\n", upload.TusPath, id, sha1Base64(part)), part)
		if res.StatusCode != http.StatusRequestTimeout || !strings.HasPrefix(body, "ERR_READ_TIMEOUT") {
			t.Errorf("PATCH = %d %q, want 408 ERR_READ_TIMEOUT", res.StatusCode, body)
		}
		checkMsg(t, body)
		if status, off := c.offset(t, loc); status != http.StatusOK || off != 0 {
			t.Errorf("HEAD after the stalled PATCH = %d offset %d, want 200 offset 0", status, off)
		}
	})
}

// stallRPC opens an Upload stream, sends the metadata and one chunk, and sends nothing
// more until the server has given up (its upload.failed is out); the stream then ends
// with deadline_exceeded.
func stallRPC(t *testing.T, e *env, base string, part []byte, checkMsg func(*testing.T, string), opts ...connect.ClientOption) {
	t.Helper()
	failed, err := e.bus.Conn().SubscribeSync(events.Subject(eventsv1.EventType_EVENT_TYPE_UPLOAD_FAILED))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = failed.Unsubscribe() }()
	stream, err := uploadv1connect.NewUploadServiceClient(e.h2c, base, opts...).Upload(t.Context())
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	_ = stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Metadata{Metadata: &uploadv1.UploadMetadata{Title: "Stalled"}}})
	_ = stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Chunk{Chunk: part}})
	if _, err := failed.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("the server did not give up on the stalled stream: %v", err)
	}
	_, err = stream.CloseAndReceive()
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("stalled stream = %v, want deadline_exceeded", err)
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		checkMsg(t, ce.Message())
	}
}

func sha1Base64(b []byte) string {
	h := sha1.Sum(b)
	return base64.StdEncoding.EncodeToString(h[:])
}

// TestStalledPatchToCompleteUpload announces a chunk to an upload that is already complete,
// then sends nothing: 408 after the idle timeout, not a 204 that would drop the chunk.
func TestStalledPatchToCompleteUpload(t *testing.T) {
	e := newEnv(t)
	base := e.startUpload(t, upload.Config{IdleTimeout: testIdle}, e.bus, e.meta)
	c := &tusClient{base: base, c: e.h2c}
	loc := c.mustCreate(t, 10, "Complete")
	if res, body := c.patch(t, loc, 0, randomBytes(t, 10), nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", res.StatusCode, body)
	}
	res, answer := rawRequest(t, base, fmt.Sprintf("PATCH %s%s HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"+
		"Upload-Offset: 10\r\nTransfer-Encoding: chunked\r\n", upload.TusPath, idOf(t, loc)), []byte("3\r\n"))
	if res.StatusCode != http.StatusRequestTimeout {
		t.Errorf("stalled chunk to a complete upload: %d %q, want 408", res.StatusCode, answer)
	}
}
