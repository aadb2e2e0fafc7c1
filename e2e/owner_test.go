package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	authv1 "github.com/reelway/reelway/gen/reelway/auth/v1"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	streamingv1 "github.com/reelway/reelway/gen/reelway/streaming/v1"
	"github.com/reelway/reelway/gen/reelway/streaming/v1/streamingv1connect"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
	"github.com/reelway/reelway/gen/reelway/upload/v1/uploadv1connect"
)

// postOwned uploads body with POST /v1/uploads through the gateway, with query parameters
// q and, unless empty, Authorization: Bearer token; it returns the status and the JSON answer.
func postOwned(t *testing.T, gateway string, q url.Values, token string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, gateway+"/v1/uploads?"+q.Encode(), bytes.NewReader(body))
	must(t, err, "new request")
	req.Header.Set("Content-Type", "video/mp4")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err, "POST /v1/uploads")
	raw := readAll(t, resp)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("upload answered %d with non-JSON %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

// rpcUpload streams body with the Upload RPC, the token in Authorization.
func rpcUpload(ctx context.Context, c uploadv1connect.UploadServiceClient, token string, meta *uploadv1.UploadMetadata, body []byte) (*uploadv1.UploadResponse, error) {
	ctx, ci := connect.NewClientContext(ctx)
	ci.RequestHeader().Set("Authorization", "Bearer "+token)
	stream, err := c.Upload(ctx)
	if err != nil {
		return nil, err
	}
	if stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Metadata{Metadata: meta}}) == nil {
		_ = stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Chunk{Chunk: body}})
	}
	return stream.CloseAndReceive()
}

// TestOwnedUploadsThroughGateway signs a user up and in through the gateway, uploads a real
// clip as a private video with the user's bearer token, and plays it only as its owner;
// it checks every upload door's handling of tokens and visibility on the way.
func TestOwnedUploadsThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an ffmpeg transcode")
	}
	clip, err := os.ReadFile(tinyClip(t))
	must(t, err, "read clip")
	p := startDev(t)
	ctx := t.Context()
	users := authv1connect.NewAuthServiceClient(http.DefaultClient, p.gateway)
	meta := metadatav1connect.NewMetadataServiceClient(http.DefaultClient, p.gateway)

	signed, err := users.SignUp(ctx, &authv1.SignUpRequest{Email: "uploader@example.com", Password: "correct horse battery", DisplayName: "Uploader"})
	must(t, err, "sign up")
	logged, err := users.LogIn(ctx, &authv1.LogInRequest{Email: "uploader@example.com", Password: "correct horse battery"})
	must(t, err, "log in")
	uid, token := signed.GetUser().GetId(), logged.GetToken()
	if uid == "" || token == "" || logged.GetUser().GetId() != uid {
		t.Fatalf("sign up gave user %q, log in user %q with token set %v", uid, logged.GetUser().GetId(), token != "")
	}

	// A private upload with the bearer token, through the gateway's plain route.
	code, out := postOwned(t, p.gateway, url.Values{"title": {"mine"}, "visibility": {"private"}}, token, clip)
	id, _ := out["videoId"].(string)
	if code != http.StatusCreated || id == "" {
		t.Fatalf("private upload: %d %v", code, out)
	}
	video := p.waitStatus(t, id, "VIDEO_STATUS_READY")
	if video["ownerId"] != uid || video["visibility"] != "VISIBILITY_PRIVATE" {
		t.Errorf("video owner %v visibility %v, want %s VISIBILITY_PRIVATE", video["ownerId"], video["visibility"], uid)
	}
	list, err := meta.ListVideos(ctx, &metadatav1.ListVideosRequest{OwnerId: uid})
	must(t, err, "ListVideos by owner")
	if len(list.GetVideos()) != 1 || list.GetVideos()[0].GetId() != id {
		t.Errorf("ListVideos(owner %s) = %v, want just %s", uid, list.GetVideos(), id)
	}

	// Nobody plays it without a playback token; its owner gets one and plays it to the end.
	if resp, body := p.get(t, "/v1/hls/"+id+"/master.m3u8"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("master playlist without a playback token: %d %q", resp.StatusCode, body)
	}
	sc := streamingv1connect.NewStreamingServiceClient(http.DefaultClient, p.gateway)
	pctx, ci := connect.NewClientContext(ctx)
	ci.RequestHeader().Set("Authorization", "Bearer "+token)
	pb, err := sc.GetPlayback(pctx, &streamingv1.GetPlaybackRequest{VideoId: id})
	must(t, err, "owner GetPlayback")
	master, err := url.Parse(pb.GetMasterUrl())
	must(t, err, "master url")
	if master.Path != "/v1/hls/"+id+"/master.m3u8" || master.Query().Get("token") == "" {
		t.Fatalf("owner's master url %q is not tokenized", redact(pb.GetMasterUrl()))
	}
	if played := playHLS(t, p.gateway+pb.GetMasterUrl()); played < 0.5 {
		t.Errorf("played the private video for %.3fs, want about 1s", played)
	}

	// A private upload without a token: nobody could play it.
	code, out = postOwned(t, p.gateway, url.Values{"title": {"orphan"}, "visibility": {"Private"}}, "", clip)
	if msg, _ := out["message"].(string); code != http.StatusBadRequest || !strings.Contains(msg, "needs an owner") {
		t.Errorf("private upload without a token: %d %v, want 400 naming the owner", code, out)
	}

	// tus: a bad token is refused at creation; an unlisted upload via metadata works.
	base := p.gateway + "/v1/uploads/tus/"
	tusMeta := func(vis string) string {
		return "title " + b64("resumable") + ",filename " + b64("clip.mp4") + ",visibility " + b64(vis)
	}
	res := tusRequest(t, http.MethodPost, base, nil, map[string]string{
		"Upload-Length": strconv.Itoa(len(clip)), "Upload-Metadata": tusMeta("unlisted"), "Authorization": "Bearer " + token + "forged",
	})
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("Location") != "" {
		t.Errorf("tus creation with a bad token: %d Location %q, want 401", res.StatusCode, res.Header.Get("Location"))
	}
	res = tusRequest(t, http.MethodPost, base, nil, map[string]string{
		"Upload-Length": strconv.Itoa(len(clip)), "Upload-Metadata": tusMeta("UNLISTED"), "Authorization": "Bearer " + token,
	})
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusCreated || !strings.HasPrefix(loc, base) {
		t.Fatalf("tus creation: %d Location %q", res.StatusCode, loc)
	}
	if res := tusRequest(t, http.MethodPatch, loc, clip, map[string]string{"Upload-Offset": "0"}); res.StatusCode != http.StatusNoContent {
		t.Fatalf("tus PATCH: %d", res.StatusCode)
	}
	got, err := meta.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: strings.TrimPrefix(loc, base)})
	must(t, err, "GetVideo of the tus upload")
	if v := got.GetVideo(); v.GetOwnerId() != uid || v.GetVisibility() != metadatav1.Visibility_VISIBILITY_UNLISTED {
		t.Errorf("tus video owner %q visibility %v, want %s UNLISTED", v.GetOwnerId(), v.GetVisibility(), uid)
	}

	// The RPCs through the gateway: Connect with the token, gRPC with a bad one.
	connectUp := uploadv1connect.NewUploadServiceClient(h2cClient(), p.gateway)
	grpcUp := uploadv1connect.NewUploadServiceClient(h2cClient(), p.gateway, connect.WithGRPC())
	up, err := rpcUpload(ctx, connectUp, token, &uploadv1.UploadMetadata{Title: "streamed", Visibility: metadatav1.Visibility_VISIBILITY_UNLISTED}, clip)
	must(t, err, "Connect Upload with the token")
	got, err = meta.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: up.GetVideoId()})
	must(t, err, "GetVideo of the streamed upload")
	if v := got.GetVideo(); v.GetOwnerId() != uid || v.GetVisibility() != metadatav1.Visibility_VISIBILITY_UNLISTED {
		t.Errorf("streamed video owner %q visibility %v, want %s UNLISTED", v.GetOwnerId(), v.GetVisibility(), uid)
	}
	_, err = rpcUpload(ctx, grpcUp, "not-a-token", &uploadv1.UploadMetadata{Title: "refused", Visibility: metadatav1.Visibility_VISIBILITY_PRIVATE}, clip)
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("gRPC Upload with a bad token: %v, want unauthenticated", err)
	}
	cctx, ci := connect.NewClientContext(ctx)
	ci.RequestHeader().Set("Authorization", "Bearer "+token+"x")
	_, err = connectUp.CreateUpload(cctx, &uploadv1.CreateUploadRequest{Metadata: &uploadv1.UploadMetadata{Title: "refused"}, SizeBytes: 100})
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("Connect CreateUpload with a bad token: %v, want unauthenticated", err)
	}
	_, err = grpcUp.CreateUpload(ctx, &uploadv1.CreateUploadRequest{Metadata: &uploadv1.UploadMetadata{Title: "orphan", Visibility: metadatav1.Visibility_VISIBILITY_PRIVATE}, SizeBytes: 100})
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("gRPC CreateUpload of a private video without a token: %v, want invalid_argument", err)
	}

	// Only the three accepted uploads exist: the refused ones stored nothing.
	all, err := meta.ListVideos(ctx, &metadatav1.ListVideosRequest{})
	must(t, err, "ListVideos")
	if n := len(all.GetVideos()); n != 3 {
		t.Errorf("%d videos, want the 3 accepted uploads", n)
	}
	owned, err := meta.ListVideos(ctx, &metadatav1.ListVideosRequest{OwnerId: uid})
	must(t, err, "ListVideos by owner")
	if n := len(owned.GetVideos()); n != 3 {
		t.Errorf("%d videos owned by %s, want 3", n, uid)
	}

	logs, err := os.ReadFile(filepath.Join(p.dataDir, "platform.log"))
	must(t, err, "read platform log")
	if bytes.Contains(logs, []byte(token)) || bytes.Contains(logs, []byte(signed.GetToken())) || bytes.Contains(logs, []byte("not-a-token")) {
		t.Errorf("an auth token is in the platform log")
	}
	if !bytes.Contains(logs, []byte("owner_id="+uid)) {
		t.Errorf("the uploads were not logged with their owner; the token check proves nothing")
	}
}
