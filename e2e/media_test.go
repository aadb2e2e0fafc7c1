package e2e_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/reelway/reelway/gen/reelway/auth/v1"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	streamingv1 "github.com/reelway/reelway/gen/reelway/streaming/v1"
	"github.com/reelway/reelway/gen/reelway/streaming/v1/streamingv1connect"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/gen/reelway/transcoder/v1/transcoderv1connect"
	"github.com/reelway/reelway/svc/streaming"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// The media test set, generated once per test binary and kept small: the machine has two
// cores shared with other test runs.
func hdClip(t testing.TB) string {
	return media.clip(t, "hd.mp4",
		"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest")
}

func phoneClip(t testing.TB) string {
	raw := media.clip(t, "phone-raw.mp4",
		"-f", "lavfi", "-i", "testsrc=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000",
		"-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-f", "mp4")
	// The display matrix a phone writes for portrait video; ffmpeg sets it only when copying.
	return media.clip(t, "phone.mp4", "-i", raw, "-c", "copy", "-metadata:s:v:0", "rotate=90", "-f", "mp4")
}

func silentClip(t testing.TB) string {
	return media.clip(t, "silent.mp4", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-t", "2",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
}

func vfrClip(t testing.TB) string {
	return media.clip(t, "vfr.mp4",
		"-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=500:sample_rate=48000",
		"-t", "3", "-vf", "select='lt(mod(n\\,5)\\,3)'", "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-f", "mp4")
}

func shortClip(t testing.TB) string {
	return media.clip(t, "short.mp4",
		"-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=600:sample_rate=48000",
		"-t", "0.5", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")
}

// playHLS plays a stream to the end the way a player does, with ffmpeg's HLS client, and
// returns how many seconds of media it decoded.
func playHLS(t *testing.T, u string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", "-nostdin", "-v", "error", "-i", u, "-f", "null", "-progress", "pipe:1", "-nostats", "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(stderr.String()) != "" {
		t.Fatalf("ffmpeg playing %s: %v\n%s", redact(u), err, stderr.String())
	}
	var us int64 = -1
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "out_time_us="); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				us = n
			}
		}
	}
	if us < 0 {
		t.Fatalf("ffmpeg reported no progress playing %s:\n%s", redact(u), out)
	}
	return float64(us) / 1e6
}

func redact(u string) string {
	if i := strings.Index(u, "token="); i >= 0 {
		return u[:i] + "token=…"
	}
	return u
}

// TestMediaThroughGateway uploads every awkward kind of source through the gateway, lets
// the platform transcode it, and plays each result to the end with ffmpeg's HLS client;
// byte serving is checked through the gateway against the files on disk.
func TestMediaThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg transcodes")
	}
	clips := []struct {
		name, path, title string
		duration          float64
		top               string // the tallest rendition
	}{
		{"landscape 1080p", hdClip(t), "Landscape 1080p", 2, "1080p"},
		{"portrait phone", phoneClip(t), "Portrait — téléphone", 2, "720p"},
		{"no audio", silentClip(t), "Silent", 2, "360p"},
		{"variable frame rate", vfrClip(t), "VFR", 3, "360p"},
		{"half a second", shortClip(t), "Short", 0.5, "240p"},
	}
	p := startDev(t)
	ids := make([]string, len(clips))
	for i, c := range clips {
		code, out := p.upload(t, url.QueryEscape(c.title), c.path)
		if code != http.StatusCreated {
			t.Fatalf("%s: upload %d %v", c.name, code, out)
		}
		ids[i], _ = out["videoId"].(string)
	}
	for i, c := range clips {
		t.Run(c.name, func(t *testing.T) {
			id := ids[i]
			video := p.waitStatus(t, id, "VIDEO_STATUS_READY")
			if d, _ := video["durationSeconds"].(float64); math.Abs(d-c.duration) > 0.15 {
				t.Errorf("metadata duration %v, want %v", d, c.duration)
			}
			played := playHLS(t, p.gateway+"/v1/hls/"+id+"/master.m3u8")
			if math.Abs(played-c.duration) > 0.2 {
				t.Errorf("played %.3fs, want %.1fs", played, c.duration)
			}
			resp, master := p.get(t, "/v1/hls/"+id+"/master.m3u8")
			if resp.StatusCode != 200 || !strings.Contains(string(master), c.top+"/index.m3u8") ||
				strings.Contains(string(master), "#EXT-X-ENDLIST") || strings.Contains(string(master), "#EXT-X-PLAYLIST-TYPE") {
				t.Errorf("master %d:\n%s", resp.StatusCode, master)
			}
			resp, variant := p.get(t, "/v1/hls/"+id+"/"+c.top+"/index.m3u8")
			if resp.StatusCode != 200 || !strings.Contains(string(variant), "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.Contains(string(variant), "#EXT-X-ENDLIST") {
				t.Errorf("variant %d:\n%s", resp.StatusCode, variant)
			}
			// The download is offered under the title.
			req, _ := http.NewRequest("HEAD", p.gateway+"/v1/hls/"+id+"/download.mp4", nil)
			resp, err := http.DefaultClient.Do(req)
			must(t, err, "HEAD download")
			resp.Body.Close()
			_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition"))
			if resp.StatusCode != 200 || err != nil || params["filename"] != c.title+".mp4" {
				t.Errorf("download: %d %q", resp.StatusCode, resp.Header.Get("Content-Disposition"))
			}
		})
	}

	t.Run("ranges through the gateway", func(t *testing.T) {
		id := ids[0]
		disk, err := os.ReadFile(filepath.Join(p.dataDir, "hls", id, "1080p", "seg_00000.ts"))
		must(t, err, "read segment")
		size := len(disk)
		path := "/v1/hls/" + id + "/1080p/seg_00000.ts"
		for _, tc := range []struct {
			rng          string
			status       int
			first, last  int
			contentRange string
		}{
			{"bytes=0-99", 206, 0, 99, fmt.Sprintf("bytes 0-99/%d", size)},
			{"bytes=-500", 206, size - 500, size - 1, fmt.Sprintf("bytes %d-%d/%d", size-500, size-1, size)},
			{"bytes=1000-", 206, 1000, size - 1, fmt.Sprintf("bytes 1000-%d/%d", size-1, size)},
			{fmt.Sprintf("bytes=%d-", size), 416, 0, -1, fmt.Sprintf("bytes */%d", size)},
			{"", 200, 0, size - 1, ""},
		} {
			req, _ := http.NewRequest("GET", p.gateway+path, nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			req.Header.Set("Origin", "https://player.example")
			resp, err := http.DefaultClient.Do(req)
			must(t, err, "GET")
			body := readAll(t, resp)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Range") != tc.contentRange {
				t.Errorf("%q: %d %q, want %d %q", tc.rng, resp.StatusCode, resp.Header.Get("Content-Range"), tc.status, tc.contentRange)
				continue
			}
			if tc.status != 416 && !bytes.Equal(body, disk[tc.first:tc.last+1]) {
				t.Errorf("%q: %d bytes differ from the file on disk", tc.rng, len(body))
			}
			if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 {
				t.Errorf("%q: Access-Control-Allow-Origin %q, want exactly one", tc.rng, got)
			}
		}
		resp, _ := p.get(t, path)
		etag := resp.Header.Get("ETag")
		req, _ := http.NewRequest("GET", p.gateway+path, nil)
		req.Header.Set("If-None-Match", etag)
		resp, err = http.DefaultClient.Do(req)
		must(t, err, "conditional GET")
		if body := readAll(t, resp); resp.StatusCode != 304 || len(body) != 0 {
			t.Errorf("If-None-Match through the gateway: %d, %d bytes", resp.StatusCode, len(body))
		}
	})
}

// TestPrivatePlaybackThroughGateway makes a private video owned by a signed-up user,
// transcodes it while watching the progress stream through the gateway, and plays it
// with the owner's playback token; forged, expired and wrong-video tokens get 403 and no
// token reaches the logs.
func TestPrivatePlaybackThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg transcodes")
	}
	clip := fiveSecondClip(t)
	p := startDev(t)
	ctx := t.Context()
	h2c := h2cClient()
	auth := authv1connect.NewAuthServiceClient(http.DefaultClient, p.gateway)
	meta := metadatav1connect.NewMetadataServiceClient(http.DefaultClient, p.gateway)
	tc := transcoderv1connect.NewTranscoderServiceClient(h2c, p.gateway, connect.WithGRPC())
	sc := streamingv1connect.NewStreamingServiceClient(http.DefaultClient, p.gateway)

	owner, err := auth.SignUp(ctx, &authv1.SignUpRequest{Email: "owner@example.com", Password: "correct horse battery", DisplayName: "Owner"})
	must(t, err, "sign up owner")
	other, err := auth.SignUp(ctx, &authv1.SignUpRequest{Email: "other@example.com", Password: "correct horse battery", DisplayName: "Other"})
	must(t, err, "sign up other")

	for _, id := range []string{"privatevideo1", "privatevideo2"} {
		_, err := meta.CreateVideo(ctx, &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{
			Id: id, Title: "Private " + id, OwnerId: owner.GetUser().GetId(), Visibility: metadatav1.Visibility_VISIBILITY_PRIVATE,
		}})
		must(t, err, "create %s", id)
		src := filepath.Join(p.dataDir, "uploads", id, "source")
		must(t, os.MkdirAll(filepath.Dir(src), 0o755), "mkdir")
		b, err := os.ReadFile(clip)
		must(t, err, "read clip")
		must(t, os.WriteFile(src, b, 0o644), "place source")
	}

	// Transcode privatevideo1 while a watcher follows it through the gateway.
	var (
		wg       sync.WaitGroup
		progress []*transcoderv1.WatchTranscodeResponse
	)
	transcoded := make(chan error, 1)
	go func() {
		_, err := tc.Transcode(ctx, &transcoderv1.TranscodeRequest{VideoId: "privatevideo1", JobId: "e2e"})
		transcoded <- err
	}()
	wg.Go(func() {
		watcher := transcoderv1connect.NewTranscoderServiceClient(http.DefaultClient, p.gateway)
		waitFor(t, 60*time.Second, "a watchable transcode", func() error {
			s, err := watcher.WatchTranscode(ctx, &transcoderv1.WatchTranscodeRequest{VideoId: "privatevideo1"})
			if err != nil {
				return err
			}
			defer s.Close()
			var got []*transcoderv1.WatchTranscodeResponse
			for s.Receive() {
				got = append(got, s.Msg())
			}
			if err := s.Err(); err != nil {
				return err
			}
			progress = got
			return nil
		})
	})
	must(t, <-transcoded, "transcode privatevideo1")
	wg.Wait()
	if len(progress) == 0 || progress[len(progress)-1].GetStage() != transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE {
		t.Errorf("watched progress ends %v, want DONE", progress)
	}
	_, err = tc.Transcode(ctx, &transcoderv1.TranscodeRequest{VideoId: "privatevideo2"})
	must(t, err, "transcode privatevideo2")
	// The test drives the transcoder itself, so it does the worker's part too: a video is
	// only playable once metadata says READY.
	for _, id := range []string{"privatevideo1", "privatevideo2"} {
		_, err := meta.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
			Video:      &metadatav1.Video{Id: id, Status: metadatav1.VideoStatus_VIDEO_STATUS_READY},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status"}},
		})
		must(t, err, "mark %s ready", id)
	}

	playback := func(id, bearer string) (*streamingv1.GetPlaybackResponse, error) {
		cctx, ci := connect.NewClientContext(ctx)
		if bearer != "" {
			ci.RequestHeader().Set("Authorization", "Bearer "+bearer)
		}
		return sc.GetPlayback(cctx, &streamingv1.GetPlaybackRequest{VideoId: id})
	}
	if _, err := playback("privatevideo1", ""); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("anonymous GetPlayback: %v", err)
	}
	if _, err := playback("privatevideo1", other.GetToken()); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("other user's GetPlayback: %v", err)
	}
	pb, err := playback("privatevideo1", owner.GetToken())
	must(t, err, "owner GetPlayback")
	pb2, err := playback("privatevideo2", owner.GetToken())
	must(t, err, "owner GetPlayback 2")
	masterURL, err := url.Parse(pb.GetMasterUrl())
	must(t, err, "master url")
	token := masterURL.Query().Get("token")
	if masterURL.Path != "/v1/hls/privatevideo1/master.m3u8" || token == "" {
		t.Fatalf("master url %q", redact(pb.GetMasterUrl()))
	}

	if played := playHLS(t, p.gateway+pb.GetMasterUrl()); math.Abs(played-5) > 0.2 {
		t.Errorf("played the private video for %.3fs, want 5s", played)
	}

	secret, err := os.ReadFile(filepath.Join(p.dataDir, streaming.SecretFile))
	must(t, err, "read the playback secret")
	key, err := hex.DecodeString(strings.TrimSpace(string(secret)))
	must(t, err, "decode secret")
	tokens := streaming.NewTokens(key)
	token2, _ := url.Parse(pb2.GetMasterUrl())
	for name, tok := range map[string]string{
		"no token":    "",
		"forged":      streaming.NewTokens(bytes.Repeat([]byte("f"), 32)).Sign("privatevideo1", time.Now().Add(time.Hour)),
		"expired":     tokens.Sign("privatevideo1", time.Now().Add(-time.Minute)),
		"wrong video": token2.Query().Get("token"),
		"truncated":   token[:len(token)-2],
	} {
		for _, file := range []string{"master.m3u8", "720p/index.m3u8", "720p/seg_00000.ts", "download.mp4"} {
			resp, body := p.get(t, "/v1/hls/privatevideo1/"+file+"?token="+url.QueryEscape(tok))
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s token, %s: %d %q", name, file, resp.StatusCode, body)
			}
		}
	}
	// The player's path carried the token everywhere; ffmpeg refuses the stream without.
	cmd := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-i", p.gateway+"/v1/hls/privatevideo1/master.m3u8", "-f", "null", "-")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("ffmpeg played a private video without a token:\n%s", out)
	}

	logs, err := os.ReadFile(filepath.Join(p.dataDir, "platform.log"))
	must(t, err, "read platform log")
	if bytes.Contains(logs, []byte(token)) || bytes.Contains(logs, []byte("token=")) {
		t.Errorf("the platform log carries a playback token")
	}
	if !bytes.Contains(logs, []byte("/v1/hls/privatevideo1/")) {
		t.Errorf("HLS requests were not logged at all; the token check proves nothing")
	}
}
