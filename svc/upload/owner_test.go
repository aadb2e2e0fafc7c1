package upload_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/reelway/reelway/gen/reelway/auth/v1"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
	"github.com/reelway/reelway/gen/reelway/upload/v1/uploadv1connect"
	"github.com/reelway/reelway/svc/auth"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/reelway/reelway/svc/upload"
)

// outcome is how one entry point answered an upload: the Connect code (HTTP routes: the
// code named by their status), the HTTP status (0 for RPCs), the reason, and the video id.
type outcome struct {
	code    connect.Code
	ok      bool
	status  int
	message string
	videoID string
	header  http.Header
}

// entryPoint uploads body through one of the service's doors, with authz as the
// Authorization header ("" sends none) and vis as the visibility word ("" sends none).
type entryPoint struct {
	name string
	send func(t *testing.T, base string, authz, vis string, body []byte) outcome
}

// rpcVisibility is the enum a visibility word stands for; a word the schema does not know
// becomes a number it does not define either.
func rpcVisibility(vis string) metadatav1.Visibility {
	switch strings.ToLower(vis) {
	case "":
		return metadatav1.Visibility_VISIBILITY_UNSPECIFIED
	case "public":
		return metadatav1.Visibility_VISIBILITY_PUBLIC
	case "unlisted":
		return metadatav1.Visibility_VISIBILITY_UNLISTED
	case "private":
		return metadatav1.Visibility_VISIBILITY_PRIVATE
	}
	return metadatav1.Visibility(99)
}

// statusCode names the Connect code an HTTP status of the upload routes stands for.
func statusCode(status int) connect.Code {
	switch status {
	case http.StatusBadRequest:
		return connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusServiceUnavailable:
		return connect.CodeUnavailable
	case http.StatusRequestEntityTooLarge:
		return connect.CodeResourceExhausted
	}
	return connect.CodeInternal
}

func rpcOutcome(err error, id string) outcome {
	if err != nil {
		var ce *connect.Error
		msg := err.Error()
		if errors.As(err, &ce) {
			msg = ce.Message()
		}
		return outcome{code: connect.CodeOf(err), message: msg}
	}
	return outcome{ok: true, videoID: id}
}

// entryPoints are every way into the service: the plain POST, tus creation (then the
// bytes with PATCH), and both RPCs over Connect and gRPC.
func (e *env) entryPoints() []entryPoint {
	h1 := e.h1
	rpcUpload := func(opts ...connect.ClientOption) func(t *testing.T, base, authz, vis string, body []byte) outcome {
		return func(t *testing.T, base, authz, vis string, body []byte) outcome {
			c := uploadv1connect.NewUploadServiceClient(e.h2c, base, opts...)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			ctx, ci := connect.NewClientContext(ctx)
			if authz != "" {
				ci.RequestHeader().Set("Authorization", authz)
			}
			stream, err := c.Upload(ctx)
			if err != nil {
				t.Fatalf("open upload stream: %v", err)
			}
			meta := &uploadv1.UploadMetadata{Title: "owned", Filename: "clip.mp4", Visibility: rpcVisibility(vis)}
			// A refused upload may close the stream early; CloseAndReceive says why.
			if err := stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Metadata{Metadata: meta}}); err == nil {
				_ = stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Chunk{Chunk: body}})
			}
			res, err := stream.CloseAndReceive()
			return rpcOutcome(err, res.GetVideoId())
		}
	}
	createUpload := func(opts ...connect.ClientOption) func(t *testing.T, base, authz, vis string, body []byte) outcome {
		return func(t *testing.T, base, authz, vis string, body []byte) outcome {
			c := uploadv1connect.NewUploadServiceClient(e.h2c, base, opts...)
			ctx, ci := connect.NewClientContext(t.Context())
			if authz != "" {
				ci.RequestHeader().Set("Authorization", authz)
			}
			res, err := c.CreateUpload(ctx, &uploadv1.CreateUploadRequest{
				Metadata:  &uploadv1.UploadMetadata{Title: "owned", Visibility: rpcVisibility(vis)},
				SizeBytes: int64(len(body)),
			})
			if err != nil {
				return rpcOutcome(err, "")
			}
			tc := &tusClient{base: base, c: h1}
			if r, text := tc.patch(t, res.GetUploadUrl(), 0, body, nil); r.StatusCode != http.StatusNoContent {
				t.Fatalf("PATCH %s: %d %s", res.GetUploadUrl(), r.StatusCode, text)
			}
			return rpcOutcome(nil, res.GetVideoId())
		}
	}
	return []entryPoint{
		{"post", func(t *testing.T, base, authz, vis string, body []byte) outcome {
			q := url.Values{"title": {"owned"}}
			if vis != "" {
				q.Set("visibility", vis)
			}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/v1/uploads?"+q.Encode(), bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if authz != "" {
				req.Header.Set("Authorization", authz)
			}
			res, err := h1.Do(req)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			defer res.Body.Close()
			raw, _ := io.ReadAll(res.Body)
			var out struct{ VideoID, Code, Message string }
			if err := json.Unmarshal(raw, &out); err != nil {
				t.Fatalf("POST answered %d with non-JSON %q", res.StatusCode, raw)
			}
			if res.StatusCode == http.StatusCreated {
				return outcome{ok: true, status: res.StatusCode, videoID: out.VideoID}
			}
			if out.Code != statusCode(res.StatusCode).String() {
				t.Errorf("POST answered %d with code %q", res.StatusCode, out.Code)
			}
			return outcome{code: statusCode(res.StatusCode), status: res.StatusCode, message: out.Message, header: res.Header}
		}},
		{"tus", func(t *testing.T, base, authz, vis string, body []byte) outcome {
			tc := &tusClient{base: base, c: h1}
			kv := []string{"title", "owned", "filename", "clip.mp4"}
			if vis != "" {
				kv = append(kv, "visibility", vis)
			}
			res, text := tc.create(t, len(body), tusMeta(kv...), nil, map[string]string{"Authorization": authz})
			if res.StatusCode != http.StatusCreated {
				return outcome{code: statusCode(res.StatusCode), status: res.StatusCode, message: text, header: res.Header}
			}
			loc := res.Header.Get("Location")
			if r, text := tc.patch(t, loc, 0, body, nil); r.StatusCode != http.StatusNoContent {
				t.Fatalf("PATCH %s: %d %s", loc, r.StatusCode, text)
			}
			return outcome{ok: true, status: res.StatusCode, videoID: idOf(t, loc)}
		}},
		{"upload connect", rpcUpload()},
		{"upload grpc", rpcUpload(connect.WithGRPC())},
		{"create connect", createUpload()},
		{"create grpc", createUpload(connect.WithGRPC())},
	}
}

// startOwnerUpload serves another upload service over e's data directory, metadata and
// NATS, verifying tokens with users, and keeps its log lines in logs too.
func (e *env) startOwnerUpload(t *testing.T, users upload.Users, logs *logBuffer) string {
	t.Helper()
	w := &quietWriter{w: t.Output()}
	t.Cleanup(w.stop)
	log := slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(io.MultiWriter(w, logs), &slog.HandlerOptions{Level: slog.LevelDebug})})
	return serve(t, log, upload.New(log, upload.Config{DataDir: e.dataDir, MaxBytes: testMaxBytes}, e.bus, e.meta, users))
}

// stored counts what uploads left behind: video records, source folders and tus uploads.
func (e *env) stored(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	list, err := e.meta.ListVideos(ctx, &metadatav1.ListVideosRequest{PageSize: 500})
	if err != nil {
		t.Fatalf("list videos: %v", err)
	}
	tus, err := filepath.Glob(filepath.Join(e.dataDir, "tus", "*.info"))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d videos, %d sources, %d tus uploads", len(list.GetVideos()), len(e.uploadEntries(t)), len(tus))
}

// TestOwnerAndVisibility drives every entry point with no token, good tokens and every kind
// of bad one, and each visibility: a verified caller owns the video; a bad token is
// unauthenticated, never anonymous; a private video needs an owner; a refused upload leaves
// nothing behind; and no token reaches the log.
func TestOwnerAndVisibility(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	signed, err := e.auth.SignUp(ctx, &authv1.SignUpRequest{Email: "owner@example.com", Password: "correct horse battery"})
	if err != nil {
		t.Fatalf("sign up: %v", err)
	}
	logged, err := e.auth.LogIn(ctx, &authv1.LogInRequest{Email: "owner@example.com", Password: "correct horse battery"})
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	uid := signed.GetUser().GetId()
	claims := auth.Claims{Subject: uid, Email: "owner@example.com", IssuedAt: time.Now().Add(-48 * time.Hour).Unix(), ExpiresAt: time.Now().Add(-24 * time.Hour).Unix()}
	expired, err := auth.SignToken(testAuthSecret, claims)
	if err != nil {
		t.Fatal(err)
	}
	claims.ExpiresAt = time.Now().Add(time.Hour).Unix()
	forged, err := auth.SignToken([]byte("not-the-auth-services-secret-!!!"), claims)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []string{signed.GetToken(), logged.GetToken(), expired, forged, "not-a-token", "dXNlcjpwYXNz"}

	logs := &logBuffer{}
	base := e.startOwnerUpload(t, e.auth, logs)
	body := randomBytes(t, 10<<10)

	const needsOwner = "a private video needs an owner: send Authorization: Bearer <token>"
	cases := []struct {
		name, authz, vis string
		rpcOnly, noRPC   bool
		want             connect.Code // 0: accepted
		wantMsg          string
		owner            string
		visibility       metadatav1.Visibility
	}{
		{name: "anonymous", visibility: metadatav1.Visibility_VISIBILITY_PUBLIC},
		{name: "anonymous unlisted", vis: "unlisted", visibility: metadatav1.Visibility_VISIBILITY_UNLISTED},
		{name: "anonymous public", vis: "public", visibility: metadatav1.Visibility_VISIBILITY_PUBLIC},
		{name: "signed up private", authz: "Bearer " + signed.GetToken(), vis: "private", owner: uid, visibility: metadatav1.Visibility_VISIBILITY_PRIVATE},
		{name: "logged in default", authz: "Bearer " + logged.GetToken(), owner: uid, visibility: metadatav1.Visibility_VISIBILITY_PUBLIC},
		{name: "lower-case scheme, mixed-case word", authz: "bearer " + logged.GetToken(), vis: "UnListed", noRPC: true, owner: uid, visibility: metadatav1.Visibility_VISIBILITY_UNLISTED},
		{name: "private without a token", vis: "private", want: connect.CodeInvalidArgument, wantMsg: needsOwner},
		{name: "unknown visibility", authz: "Bearer " + logged.GetToken(), vis: "secret", want: connect.CodeInvalidArgument, wantMsg: "visibility"},
		{name: "garbage token", authz: "Bearer not-a-token", vis: "private", want: connect.CodeUnauthenticated, wantMsg: "auth: invalid token"},
		{name: "expired token", authz: "Bearer " + expired, want: connect.CodeUnauthenticated, wantMsg: "auth: token expired"},
		{name: "forged token", authz: "Bearer " + forged, vis: "unlisted", want: connect.CodeUnauthenticated, wantMsg: "auth: invalid token"},
		{name: "tampered token", authz: "Bearer " + logged.GetToken() + "x", want: connect.CodeUnauthenticated, wantMsg: "invalid"},
		{name: "not a bearer", authz: "Basic dXNlcjpwYXNz", want: connect.CodeUnauthenticated, wantMsg: "Bearer"},
		{name: "empty bearer", authz: "Bearer  ", want: connect.CodeUnauthenticated, wantMsg: "empty"},
		{name: "oversize token", authz: "Bearer " + strings.Repeat("a", 5000), want: connect.CodeUnauthenticated, wantMsg: "longer"},
	}
	for _, ep := range e.entryPoints() {
		t.Run(ep.name, func(t *testing.T) {
			rpc := strings.HasPrefix(ep.name, "upload ") || strings.HasPrefix(ep.name, "create ")
			for _, c := range cases {
				if rpc && c.noRPC {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					before := e.stored(t)
					got := ep.send(t, base, c.authz, c.vis, body)
					if c.want != 0 {
						if got.ok || got.code != c.want || !strings.Contains(got.message, c.wantMsg) {
							t.Fatalf("answer = ok %v %v %q, want %v naming %q", got.ok, got.code, got.message, c.want, c.wantMsg)
						}
						if !rpc && c.want == connect.CodeUnauthenticated {
							if got.status != http.StatusUnauthorized || got.header.Get("WWW-Authenticate") == "" {
								t.Errorf("HTTP answer = %d, WWW-Authenticate %q; want 401 with a challenge", got.status, got.header.Get("WWW-Authenticate"))
							}
						}
						if after := e.stored(t); after != before {
							t.Errorf("a refused upload left something: before %s, after %s", before, after)
						}
						return
					}
					if !got.ok {
						t.Fatalf("answer = %v %q, want accepted", got.code, got.message)
					}
					v := e.video(t, got.videoID)
					if v.GetOwnerId() != c.owner || v.GetVisibility() != c.visibility {
						t.Errorf("video owner %q visibility %v; want %q %v", v.GetOwnerId(), v.GetVisibility(), c.owner, c.visibility)
					}
					if v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING {
						t.Errorf("video status %v, want PROCESSING", v.GetStatus())
					}
				})
			}
		})
	}

	// The owner finds their videos by the owner filter.
	list, err := e.meta.ListVideos(ctx, &metadatav1.ListVideosRequest{OwnerId: uid, PageSize: 500})
	if err != nil {
		t.Fatalf("list videos: %v", err)
	}
	// Two owned cases through all six entry points, one through the two HTTP ones.
	if n, want := len(list.GetVideos()), 6*2+2; n != want {
		t.Errorf("ListVideos(owner) found %d videos, want %d", n, want)
	}

	if !logs.has("upload.started") || !logs.has("owner_id="+uid) {
		t.Errorf("uploads were not logged with their owner; the token check below proves nothing")
	}
	for i, tok := range tokens {
		if logs.has(tok) {
			t.Errorf("token %d is in the log", i)
		}
	}
}

// TestOwnerAuthUnavailable: with the auth service out of reach, an upload carrying a token
// is refused as retryable (503, unavailable) with nothing stored, while anonymous uploads
// still work.
func TestOwnerAuthUnavailable(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	_ = ln.Close()
	base := e.startOwnerUpload(t, authv1connect.NewAuthServiceClient(e.h2c, dead), &logBuffer{})
	body := randomBytes(t, 4<<10)
	for _, ep := range e.entryPoints() {
		t.Run(ep.name, func(t *testing.T) {
			before := e.stored(t)
			got := ep.send(t, base, "Bearer some.token", "private", body)
			if got.ok || got.code != connect.CodeUnavailable {
				t.Errorf("with auth down: ok %v %v %q, want unavailable", got.ok, got.code, got.message)
			}
			if got.status != 0 && got.status != http.StatusServiceUnavailable {
				t.Errorf("with auth down: HTTP %d, want 503", got.status)
			}
			if after := e.stored(t); after != before {
				t.Errorf("a refused upload left something: before %s, after %s", before, after)
			}
			if got := ep.send(t, base, "", "", body); !got.ok {
				t.Errorf("anonymous upload with auth down: %v %q", got.code, got.message)
			}
		})
	}
}

// TestOwnerWithoutUsers: a service built without a token verifier refuses tokens rather
// than dropping them.
func TestOwnerWithoutUsers(t *testing.T) {
	e := newEnv(t)
	base := e.startOwnerUpload(t, nil, &logBuffer{})
	got := e.entryPoints()[0].send(t, base, "Bearer x.y", "", []byte("bytes"))
	if got.ok || got.status != http.StatusServiceUnavailable {
		t.Errorf("token without a verifier: ok %v %d %q, want 503", got.ok, got.status, got.message)
	}
	if got := e.uploadEntries(t); len(got) != 0 {
		t.Errorf("left on disk: %v", got)
	}
}
