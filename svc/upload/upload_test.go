package upload_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/upload"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// subscribeCompleted listens on the upload.completed subject before an upload starts.
func (e *env) subscribeCompleted(t *testing.T) *nats.Subscription {
	t.Helper()
	sub, err := e.bus.Conn().SubscribeSync(events.Subject(eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED))
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.bus.Conn().Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return sub
}

// checkStored asserts that an upload is complete everywhere: the file on disk, the video
// record, and the upload.completed event.
func (e *env) checkStored(t *testing.T, sub *nats.Subscription, id string, size int64, sha, title string) {
	t.Helper()
	if !idPattern.MatchString(id) {
		t.Errorf("video id %q does not match %s", id, idPattern)
	}
	data, err := os.ReadFile(filepath.Join(e.dataDir, "uploads", id, "source"))
	if err != nil {
		t.Fatalf("read stored source: %v", err)
	}
	if got := sum(data); got != sha || int64(len(data)) != size {
		t.Errorf("stored file: %d bytes sha %s, want %d bytes sha %s", len(data), got, size, sha)
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "uploads", id, "source.part")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("source.part left behind: %v", err)
	}

	res, err := e.meta.GetVideo(t.Context(), &metadatav1.GetVideoRequest{Id: id})
	if err != nil {
		t.Fatalf("get video: %v", err)
	}
	v := res.GetVideo()
	if v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING || v.GetTitle() != title ||
		v.GetSizeBytes() != size || v.GetSha256() != sha {
		t.Errorf("video record = status %v title %q size %d sha %s; want PROCESSING %q %d %s",
			v.GetStatus(), v.GetTitle(), v.GetSizeBytes(), v.GetSha256(), title, size, sha)
	}

	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no upload.completed event: %v", err)
	}
	ev, err := events.Decode(msg.Data)
	if err != nil {
		t.Fatalf("decode event: %v", err)
	}
	uc := ev.GetUploadCompleted()
	if ev.GetSource() != upload.Source || uc.GetVideoId() != id || uc.GetSizeBytes() != size || uc.GetSha256() != sha {
		t.Errorf("event = source %q %v; want source %q video %s size %d sha %s", ev.GetSource(), uc, upload.Source, id, size, sha)
	}
}

// chunked returns a body of n bytes with no length known up front, as a streaming
// client sends it.
func chunked(t *testing.T, data []byte) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for b := data; len(b) > 0; {
			n := min(len(b), 8<<10)
			if _, err := pw.Write(b[:n]); err != nil {
				return // the server stopped reading
			}
			b = b[n:]
		}
		_ = pw.Close()
	}()
	t.Cleanup(func() { _ = pr.Close() })
	return pr
}

func TestHTTPUpload(t *testing.T) {
	okBody := randomBytes(t, 40<<10)
	exact := randomBytes(t, testMaxBytes)
	over := randomBytes(t, 3*testMaxBytes)
	cases := []struct {
		name       string
		query      url.Values
		rawQuery   string // sent as it is instead of query
		body       func(t *testing.T) io.Reader
		want       []byte // the stored bytes when the upload succeeds
		wantStatus int
		wantCode   string
		ctype      string // default video/mp4
		// wantFailedEvent: the upload got past validation, so upload.failed must follow.
		wantFailedEvent bool
	}{
		{
			name:       "stores file with length",
			query:      url.Values{"title": {"My clip"}, "filename": {"clip.mp4"}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			want:       okBody,
			wantStatus: http.StatusCreated,
		},
		{
			name:       "stores chunked file",
			query:      url.Values{"title": {"Chunked"}},
			body:       func(t *testing.T) io.Reader { return chunked(t, okBody) },
			want:       okBody,
			wantStatus: http.StatusCreated,
		},
		{
			name:       "stores file of exactly the limit",
			query:      url.Values{"title": {"Exact"}},
			body:       func(t *testing.T) io.Reader { return chunked(t, exact) },
			want:       exact,
			wantStatus: http.StatusCreated,
		},
		{
			name:       "empty body",
			query:      url.Values{"title": {"Empty"}},
			body:       func(*testing.T) io.Reader { return nil },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:            "empty chunked body",
			query:           url.Values{"title": {"Empty"}},
			body:            func(t *testing.T) io.Reader { return chunked(t, nil) },
			wantStatus:      http.StatusBadRequest,
			wantCode:        "invalid_argument",
			wantFailedEvent: true,
		},
		{
			name:       "missing title",
			query:      url.Values{"filename": {"clip.mp4"}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "malformed query",
			rawQuery:   "title=Fine&description=100%zz",
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "field in capitals",
			rawQuery:   "title=a&Visibility=private",
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "space in a field name",
			rawQuery:   "title=a&visibility%20=unlisted",
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "empty visibility",
			rawQuery:   "title=a&visibility=",
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "title twice",
			rawQuery:   "title=a&title=b",
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "title too long",
			query:      url.Values{"title": {strings.Repeat("é", 201)}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "title not UTF-8",
			query:      url.Values{"title": {"\xff\xfe"}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "control characters in title",
			query:      url.Values{"title": {"\x00\x01bad"}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "newline in title",
			query:      url.Values{"title": {"two\nlines"}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "tab in filename",
			query:      url.Values{"title": {"Tab"}, "filename": {"a\tb.mp4"}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			wantStatus: http.StatusBadRequest,
			wantCode:   "invalid_argument",
		},
		{
			name:       "lines in description",
			query:      url.Values{"title": {"Described"}, "description": {"first line\n\tsecond"}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			want:       okBody,
			wantStatus: http.StatusCreated,
		},
		{
			name:       "form instead of raw file",
			query:      url.Values{"title": {"Form"}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(okBody) },
			ctype:      "multipart/form-data; boundary=x",
			wantStatus: http.StatusUnsupportedMediaType,
			wantCode:   "invalid_argument",
		},
		{
			name:       "oversize with content length",
			query:      url.Values{"title": {"Big"}},
			body:       func(*testing.T) io.Reader { return bytes.NewReader(over) },
			wantStatus: http.StatusRequestEntityTooLarge,
			wantCode:   "resource_exhausted",
		},
		{
			name:            "oversize chunked",
			query:           url.Values{"title": {"Big"}},
			body:            func(t *testing.T) io.Reader { return chunked(t, over) },
			wantStatus:      http.StatusRequestEntityTooLarge,
			wantCode:        "resource_exhausted",
			wantFailedEvent: true,
		},
	}
	for _, proto := range []string{"http1", "h2c"} {
		for _, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				e := newEnv(t)
				client := e.h1
				if proto == "h2c" {
					client = e.h2c
				}
				sub := e.subscribeCompleted(t)
				failedSub, err := e.bus.Conn().SubscribeSync(events.Subject(eventsv1.EventType_EVENT_TYPE_UPLOAD_FAILED))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = failedSub.Unsubscribe() })
				query := tc.query.Encode()
				if tc.rawQuery != "" {
					query = tc.rawQuery
				}
				req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.url+"/v1/uploads?"+query, tc.body(t))
				if err != nil {
					t.Fatal(err)
				}
				ctype := tc.ctype
				if ctype == "" {
					ctype = "video/mp4"
				}
				req.Header.Set("Content-Type", ctype)
				res, err := client.Do(req)
				if err != nil {
					t.Fatalf("POST: %v", err)
				}
				defer res.Body.Close()
				raw, _ := io.ReadAll(res.Body)
				if res.StatusCode != tc.wantStatus {
					t.Fatalf("status = %d (%s), want %d", res.StatusCode, raw, tc.wantStatus)
				}
				if ct := res.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
				if tc.wantCode != "" {
					var body struct{ Code, Message string }
					if err := json.Unmarshal(raw, &body); err != nil {
						t.Fatalf("error body %q: %v", raw, err)
					}
					if body.Code != tc.wantCode || body.Message == "" {
						t.Errorf("error body = %+v, want code %q and a message", body, tc.wantCode)
					}
					if got := e.uploadEntries(t); len(got) != 0 {
						t.Errorf("left on disk after a failed upload: %v", got)
					}
					if tc.wantFailedEvent {
						msg, err := failedSub.NextMsg(10 * time.Second)
						if err != nil {
							t.Fatalf("no upload.failed event: %v", err)
						}
						ev, err := events.Decode(msg.Data)
						if err != nil || ev.GetUploadFailed().GetReason() == "" {
							t.Errorf("upload.failed = %v (%v), want a reason", ev, err)
						}
					}
					return
				}
				var body struct {
					VideoID   string `json:"videoId"`
					SizeBytes int64  `json:"sizeBytes"`
					SHA256    string `json:"sha256"`
				}
				if err := json.Unmarshal(raw, &body); err != nil {
					t.Fatalf("body %q: %v", raw, err)
				}
				if body.SizeBytes != int64(len(tc.want)) || body.SHA256 != sum(tc.want) {
					t.Errorf("answer = %+v, want size %d sha %s", body, len(tc.want), sum(tc.want))
				}
				if loc := res.Header.Get("Location"); loc != "" {
					t.Errorf("Location = %q points at no route", loc)
				}
				e.checkStored(t, sub, body.VideoID, int64(len(tc.want)), sum(tc.want), tc.query.Get("title"))
			})
		}
	}
}

func TestUploadRPC(t *testing.T) {
	meta := func(title string) *uploadv1.UploadRequest {
		return &uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Metadata{Metadata: &uploadv1.UploadMetadata{Title: title, Filename: "clip.mp4"}}}
	}
	chunk := func(b []byte) *uploadv1.UploadRequest {
		return &uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Chunk{Chunk: b}}
	}
	chunks := func(data []byte, size int) []*uploadv1.UploadRequest {
		var out []*uploadv1.UploadRequest
		for len(data) > 0 {
			n := min(size, len(data))
			out = append(out, chunk(data[:n]))
			data = data[n:]
		}
		return out
	}
	data := randomBytes(t, 50<<10)
	exact := randomBytes(t, testMaxBytes)
	over := randomBytes(t, 3*testMaxBytes)
	cases := []struct {
		name     string
		msgs     []*uploadv1.UploadRequest
		want     []byte
		wantCode connect.Code
	}{
		{name: "stores chunks", msgs: append([]*uploadv1.UploadRequest{meta("RPC clip")}, chunks(data, 7<<10)...), want: data},
		{name: "stores exactly the limit", msgs: append([]*uploadv1.UploadRequest{meta("Exact")}, chunks(exact, 16<<10)...), want: exact},
		{name: "no messages", wantCode: connect.CodeInvalidArgument},
		{name: "first message not metadata", msgs: append(chunks(data, 16<<10), meta("Late")), wantCode: connect.CodeInvalidArgument},
		{name: "metadata only", msgs: []*uploadv1.UploadRequest{meta("Nothing")}, wantCode: connect.CodeInvalidArgument},
		{name: "empty chunks only", msgs: []*uploadv1.UploadRequest{meta("Nothing"), chunk(nil), chunk(nil)}, wantCode: connect.CodeInvalidArgument},
		{name: "missing title", msgs: append([]*uploadv1.UploadRequest{meta("")}, chunks(data, 16<<10)...), wantCode: connect.CodeInvalidArgument},
		{name: "metadata twice", msgs: []*uploadv1.UploadRequest{meta("Twice"), chunk(data[:10]), meta("Again"), chunk(data[10:20])}, wantCode: connect.CodeInvalidArgument},
		{name: "oversize", msgs: append([]*uploadv1.UploadRequest{meta("Big")}, chunks(over, 16<<10)...), wantCode: connect.CodeResourceExhausted},
	}
	protocols := []struct {
		name string
		opts []connect.ClientOption
	}{
		{name: "connect"},
		{name: "grpc", opts: []connect.ClientOption{connect.WithGRPC()}},
	}
	for _, p := range protocols {
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				e := newEnv(t)
				sub := e.subscribeCompleted(t)
				stream, err := e.uploadClient(p.opts...).Upload(t.Context())
				if err != nil {
					t.Fatalf("open stream: %v", err)
				}
				for _, m := range tc.msgs {
					if err := stream.Send(m); err != nil {
						break // the server has answered; CloseAndReceive has its error
					}
				}
				res, err := stream.CloseAndReceive()
				if tc.wantCode != 0 {
					if got := connect.CodeOf(err); got != tc.wantCode {
						t.Fatalf("code = %v (err %v), want %v", got, err, tc.wantCode)
					}
					if got := e.uploadEntries(t); len(got) != 0 {
						t.Errorf("left on disk after a failed upload: %v", got)
					}
					return
				}
				if err != nil {
					t.Fatalf("upload: %v", err)
				}
				if res.GetSizeBytes() != int64(len(tc.want)) || res.GetSha256() != sum(tc.want) {
					t.Errorf("answer = %v, want size %d sha %s", res, len(tc.want), sum(tc.want))
				}
				e.checkStored(t, sub, res.GetVideoId(), int64(len(tc.want)), sum(tc.want), tc.msgs[0].GetMetadata().GetTitle())
			})
		}
	}
}

// failingPublisher loses every event of one type, as a bus outage at that moment would.
type failingPublisher struct {
	upload.Publisher
	fail eventsv1.EventType
}

func (p failingPublisher) Publish(ctx context.Context, ev *eventsv1.Event) error {
	if ev.GetType() == p.fail {
		return errors.New("nats: no responders")
	}
	return p.Publisher.Publish(ctx, ev)
}

func TestUploadDependencyFailures(t *testing.T) {
	body := randomBytes(t, 10<<10)
	post := func(t *testing.T, svcURL string) (int, string) {
		t.Helper()
		res, err := http.Post(svcURL+"/v1/uploads?title=x", "video/mp4", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		defer res.Body.Close()
		var eb struct{ Code string }
		_ = json.NewDecoder(res.Body).Decode(&eb)
		return res.StatusCode, eb.Code
	}

	t.Run("metadata unreachable", func(t *testing.T) {
		e := newEnv(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + ln.Addr().String()
		_ = ln.Close()
		meta := metadatav1connect.NewMetadataServiceClient(e.h2c, dead)
		svc := upload.New(testLogger(t), upload.Config{DataDir: e.dataDir, MaxBytes: testMaxBytes}, e.bus, meta, e.auth)
		status, code := post(t, serve(t, testLogger(t), svc))
		if status != http.StatusServiceUnavailable || code != "unavailable" {
			t.Errorf("answer = %d %q, want 503 unavailable", status, code)
		}
		if got := e.uploadEntries(t); len(got) != 0 {
			t.Errorf("left on disk: %v", got)
		}
	})

	t.Run("completed event lost", func(t *testing.T) {
		e := newEnv(t)
		pub := failingPublisher{Publisher: e.bus, fail: eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED}
		svc := upload.New(testLogger(t), upload.Config{DataDir: e.dataDir, MaxBytes: testMaxBytes}, pub, e.meta, e.auth)
		status, code := post(t, serve(t, testLogger(t), svc))
		if status != http.StatusServiceUnavailable || code != "unavailable" {
			t.Errorf("answer = %d %q, want 503 unavailable", status, code)
		}
		if got := e.uploadEntries(t); len(got) != 0 {
			t.Errorf("left on disk: %v", got)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		list, err := e.meta.ListVideos(ctx, &metadatav1.ListVideosRequest{})
		if err != nil {
			t.Fatalf("list videos: %v", err)
		}
		if len(list.GetVideos()) != 1 {
			t.Fatalf("videos = %v, want the one created", list.GetVideos())
		}
		v := list.GetVideos()[0]
		if v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_FAILED || !strings.Contains(v.GetFailureReason(), "upload.completed") {
			t.Errorf("video = %v %q, want FAILED with a reason naming the lost event", v.GetStatus(), v.GetFailureReason())
		}
	})
}
