package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	gatewayv1 "github.com/reelway/reelway/gen/reelway/gateway/v1"
	"github.com/reelway/reelway/gen/reelway/gateway/v1/gatewayv1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
	"github.com/reelway/reelway/gen/reelway/upload/v1/uploadv1connect"
	"github.com/reelway/reelway/svc/kernel"
)

// devPlatform is the whole platform in this process, as `reelway dev` runs it, on free ports.
type devPlatform struct {
	gateway string // base URL
	dataDir string
}

const devUploadLimit = 8 << 20

func startDev(t *testing.T) *devPlatform {
	t.Helper()
	p, _ := startDevOn(t, "", nil)

	// The gateway routes once the catalog shows every backend passing.
	gw := gatewayv1connect.NewGatewayServiceClient(http.DefaultClient, p.gateway)
	waitFor(t, 30*time.Second, "every service routable", func() error {
		res, err := gw.ListRoutes(context.Background(), &gatewayv1.ListRoutesRequest{})
		if err != nil {
			return err
		}
		if n := len(res.GetRoutes()); n < len(kernel.Services()) {
			return fmt.Errorf("%d routes", n)
		}
		return nil
	})
	return p
}

// connectJSON calls an RPC as Connect unary JSON, as curl would.
func connectJSON(t *testing.T, base, procedure string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(base+procedure, "application/json", bytes.NewReader(b))
	must(t, err, "POST %s", procedure)
	var out map[string]any
	raw := readAll(t, resp)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s answered %d with non-JSON %q", procedure, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func (p *devPlatform) upload(t *testing.T, title, path string) (int, map[string]any) {
	t.Helper()
	f, err := os.Open(path)
	must(t, err, "open clip")
	defer f.Close()
	resp, err := http.Post(p.gateway+"/v1/uploads?title="+title, "video/mp4", f)
	must(t, err, "upload")
	var out map[string]any
	raw := readAll(t, resp)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("upload answered %d with non-JSON %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

// waitStatus polls GetVideo as Connect JSON until the video leaves PROCESSING.
func (p *devPlatform) waitStatus(t *testing.T, id string, want string) map[string]any {
	t.Helper()
	var video map[string]any
	waitFor(t, 3*time.Minute, "video "+id+" "+want, func() error {
		code, out := connectJSON(t, p.gateway, "/reelway.metadata.v1.MetadataService/GetVideo", map[string]string{"id": id})
		if code != http.StatusOK {
			return fmt.Errorf("GetVideo: %d %v", code, out)
		}
		video, _ = out["video"].(map[string]any)
		status, _ := video["status"].(string)
		switch {
		case status == want:
			return nil
		case status == "VIDEO_STATUS_READY" || status == "VIDEO_STATUS_FAILED":
			t.Fatalf("video %s ended %s, want %s: %v", id, status, want, video)
		}
		return fmt.Errorf("status %q", status)
	})
	return video
}

func (p *devPlatform) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(p.gateway + path)
	must(t, err, "GET %s", path)
	return resp, readAll(t, resp)
}

func TestDevPlatformEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg transcodes")
	}
	clip := fiveSecondClip(t)
	p := startDev(t)

	// Plain HTTP upload through the gateway.
	code, out := p.upload(t, "first", clip)
	if code != http.StatusCreated {
		t.Fatalf("upload: %d %v", code, out)
	}
	id, _ := out["videoId"].(string)
	if id == "" {
		t.Fatalf("upload answered no videoId: %v", out)
	}
	video := p.waitStatus(t, id, "VIDEO_STATUS_READY")
	if r, _ := video["renditions"].([]any); len(r) < 2 {
		t.Errorf("want at least two renditions, got %v", video["renditions"])
	}

	// Playback through the gateway: master, a variant, a segment that ffprobe decodes.
	resp, master := p.get(t, "/v1/hls/"+id+"/master.m3u8")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/vnd.apple.mpegurl" {
		t.Fatalf("master: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// A player on another origin may preflight the stream through the gateway.
	pre, _ := http.NewRequest(http.MethodOptions, p.gateway+"/v1/hls/"+id+"/master.m3u8", nil)
	pre.Header.Set("Origin", "https://player.example")
	pre.Header.Set("Access-Control-Request-Method", "GET")
	pre.Header.Set("Access-Control-Request-Headers", "range")
	preResp, err := http.DefaultClient.Do(pre)
	must(t, err, "preflight")
	preResp.Body.Close()
	if preResp.StatusCode/100 != 2 || preResp.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Errorf("HLS preflight through the gateway: %d %v", preResp.StatusCode, preResp.Header)
	}
	var variant string
	for _, line := range strings.Split(string(master), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			variant = line
			break
		}
	}
	if variant == "" {
		t.Fatalf("master lists no variant:\n%s", master)
	}
	resp, playlist := p.get(t, "/v1/hls/"+id+"/"+variant)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(playlist), "#EXT-X-ENDLIST") {
		t.Fatalf("variant %s: %d\n%s", variant, resp.StatusCode, playlist)
	}
	var segment string
	for _, line := range strings.Split(string(playlist), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			segment = line
			break
		}
	}
	segPath := "/v1/hls/" + id + "/" + filepath.Dir(variant) + "/" + segment
	resp, seg := p.get(t, segPath)
	if resp.StatusCode != http.StatusOK || len(seg) == 0 {
		t.Fatalf("segment %s: %d, %d bytes", segPath, resp.StatusCode, len(seg))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "video/mp2t" && ct != "video/mp4" {
		t.Errorf("segment content type %q", ct)
	}
	segFile := filepath.Join(t.TempDir(), "segment"+filepath.Ext(segment))
	must(t, os.WriteFile(segFile, seg, 0o644), "write segment")
	ffprobeDecode(t, segFile)

	// The same through a gRPC client streaming the upload, read back with gRPC-Web.
	up := uploadv1connect.NewUploadServiceClient(h2cClient(), p.gateway, connect.WithGRPC())
	stream, err := up.Upload(context.Background())
	must(t, err, "open upload stream")
	must(t, stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Metadata{Metadata: &uploadv1.UploadMetadata{Title: "second", Filename: "clip.mp4"}}}), "send metadata")
	data, err := os.ReadFile(clip)
	must(t, err, "read clip")
	for len(data) > 0 {
		n := min(len(data), 256<<10)
		must(t, stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Chunk{Chunk: data[:n]}}), "send chunk")
		data = data[n:]
	}
	res, err := stream.CloseAndReceive()
	must(t, err, "gRPC upload")
	id2 := res.GetVideoId()
	p.waitStatus(t, id2, "VIDEO_STATUS_READY")
	web := metadatav1connect.NewMetadataServiceClient(http.DefaultClient, p.gateway, connect.WithGRPCWeb())
	got, err := web.GetVideo(context.Background(), &metadatav1.GetVideoRequest{Id: id2})
	must(t, err, "gRPC-Web GetVideo")
	if got.GetVideo().GetTitle() != "second" || got.GetVideo().GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
		t.Errorf("gRPC-Web read back %v", got.GetVideo())
	}

	// Deleting a video stops its playback at once, then a job removes its files.
	code, out = connectJSON(t, p.gateway, "/reelway.metadata.v1.MetadataService/DeleteVideo", map[string]string{"id": id})
	if code != http.StatusOK {
		t.Fatalf("DeleteVideo: %d %v", code, out)
	}
	waitFor(t, 10*time.Second, "playback of a deleted video refused", func() error {
		resp, _ := p.get(t, "/v1/hls/"+id+"/master.m3u8")
		if resp.StatusCode != http.StatusNotFound {
			return fmt.Errorf("master answered %d", resp.StatusCode)
		}
		return nil
	})
	waitFor(t, 30*time.Second, "deleted video's files removed", func() error {
		for _, dir := range []string{filepath.Join(p.dataDir, "hls", id), filepath.Join(p.dataDir, "uploads", id)} {
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s still there (%v)", dir, err)
			}
		}
		return nil
	})
}

func TestDevPlatformBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg")
	}
	clip := fiveSecondClip(t)
	p := startDev(t)
	dir := t.TempDir()

	t.Run("empty body", func(t *testing.T) {
		resp, err := http.Post(p.gateway+"/v1/uploads?title=empty", "video/mp4", http.NoBody)
		must(t, err, "post")
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "invalid_argument") {
			t.Fatalf("empty body: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("oversize", func(t *testing.T) {
		big := bytes.Repeat([]byte{0}, devUploadLimit+1)
		resp, err := http.Post(p.gateway+"/v1/uploads?title=big", "video/mp4", bytes.NewReader(big))
		must(t, err, "post")
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("oversize: %d %s", resp.StatusCode, body)
		}
		up := uploadv1connect.NewUploadServiceClient(h2cClient(), p.gateway, connect.WithGRPC())
		stream, err := up.Upload(context.Background())
		must(t, err, "open upload stream")
		_ = stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Metadata{Metadata: &uploadv1.UploadMetadata{Title: "big"}}})
		chunk := make([]byte, 1<<20)
		for range devUploadLimit/len(chunk) + 2 {
			if stream.Send(&uploadv1.UploadRequest{Payload: &uploadv1.UploadRequest_Chunk{Chunk: chunk}}) != nil {
				break
			}
		}
		_, err = stream.CloseAndReceive()
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("gRPC oversize: %v", err)
		}
	})

	failing := map[string]string{}
	t.Run("text posing as video", func(t *testing.T) {
		txt := filepath.Join(dir, "notes.mp4")
		must(t, os.WriteFile(txt, []byte(strings.Repeat("this is not a video\n", 200)), 0o644), "write")
		code, out := p.upload(t, "text", txt)
		if code != http.StatusCreated {
			t.Fatalf("text upload: %d %v", code, out)
		}
		failing["text"] = out["videoId"].(string)
	})
	t.Run("truncated mp4", func(t *testing.T) {
		data, err := os.ReadFile(clip)
		must(t, err, "read")
		trunc := filepath.Join(dir, "truncated.mp4")
		must(t, os.WriteFile(trunc, data[:len(data)/3], 0o644), "write")
		code, out := p.upload(t, "truncated", trunc)
		if code != http.StatusCreated {
			t.Fatalf("truncated upload: %d %v", code, out)
		}
		failing["truncated"] = out["videoId"].(string)
	})
	for name, id := range failing {
		video := p.waitStatus(t, id, "VIDEO_STATUS_FAILED")
		if reason, _ := video["failureReason"].(string); reason == "" {
			t.Errorf("%s: FAILED without a reason: %v", name, video)
		}
		resp, _ := p.get(t, "/v1/hls/"+id+"/master.m3u8")
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: master of a failed video answered %d", name, resp.StatusCode)
		}
	}

	t.Run("unknown video", func(t *testing.T) {
		code, out := connectJSON(t, p.gateway, "/reelway.metadata.v1.MetadataService/GetVideo", map[string]string{"id": "doesnotexist"})
		if code != http.StatusNotFound || out["code"] != "not_found" {
			t.Fatalf("Connect: %d %v", code, out)
		}
		grpc := metadatav1connect.NewMetadataServiceClient(h2cClient(), p.gateway, connect.WithGRPC())
		_, err := grpc.GetVideo(context.Background(), &metadatav1.GetVideoRequest{Id: "doesnotexist"})
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("gRPC: %v", err)
		}
		resp, _ := p.get(t, "/v1/hls/doesnotexist/master.m3u8")
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("HLS of unknown video: %d", resp.StatusCode)
		}
	})

	t.Run("invalid fields", func(t *testing.T) {
		code, out := connectJSON(t, p.gateway, "/reelway.metadata.v1.MetadataService/GetVideo", map[string]string{"id": "../etc/passwd"})
		if code != http.StatusBadRequest || out["code"] != "invalid_argument" {
			t.Fatalf("bad id: %d %v", code, out)
		}
		code, out = connectJSON(t, p.gateway, "/reelway.metadata.v1.MetadataService/ListVideos", map[string]any{"pageSize": 100000})
		if code != http.StatusBadRequest || out["code"] != "invalid_argument" {
			t.Fatalf("page size: %d %v", code, out)
		}
		resp, err := http.Post(p.gateway+"/v1/uploads", "video/mp4", strings.NewReader("x"))
		must(t, err, "post")
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("upload without title: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("nothing lost", func(t *testing.T) {
		// The failed uploads left no stray partial files and every stored source is whole.
		err := filepath.Walk(filepath.Join(p.dataDir, "uploads"), func(path string, info os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if strings.HasSuffix(path, ".part") {
				return fmt.Errorf("partial file left behind: %s", path)
			}
			return nil
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	})
}
