package streaming_test

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	streamingv1 "github.com/reelway/reelway/gen/reelway/streaming/v1"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/svc/media"
	"github.com/reelway/reelway/svc/transcoder"
)

// TestRealTranscode serves what the transcoder really writes for a short clip: every URL
// GetPlayback returns is fetchable with the right type, and segments come back intact.
func TestRealTranscode(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not installed")
	}
	dataDir := t.TempDir()
	src, err := media.SourcePath(dataDir, "real")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-f", "mp4", src).CombinedOutput()
	if err != nil {
		t.Fatalf("make clip: %v: %s", err, out)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := transcoder.New(log, transcoder.Config{DataDir: dataDir}, nil).
		Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "real"}); err != nil {
		t.Fatal(err)
	}

	s := newServer(t, dataDir)
	for proto, c := range s.clients {
		pb, err := c.GetPlayback(t.Context(), &streamingv1.GetPlaybackRequest{VideoId: "real"})
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		if pb.GetMasterUrl() != "/v1/hls/real/master.m3u8" || pb.GetThumbnailUrl() != "/v1/hls/real/thumbnail.jpg" ||
			pb.GetPosterUrl() != "/v1/hls/real/poster.jpg" || pb.GetDownloadUrl() != "/v1/hls/real/download.mp4" ||
			!slices.Equal(pb.GetVariantUrls(), []string{"/v1/hls/real/240p/index.m3u8", "/v1/hls/real/360p/index.m3u8"}) {
			t.Fatalf("%s: GetPlayback = %v", proto, pb)
		}
	}

	fetch := func(path, contentType string) []byte {
		t.Helper()
		res, body := s.do(t, "GET", path, nil)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != contentType {
			t.Fatalf("GET %s = %d %q, want 200 %q", path, res.StatusCode, res.Header.Get("Content-Type"), contentType)
		}
		return body
	}
	master := fetch("/v1/hls/real/master.m3u8", "application/vnd.apple.mpegurl")
	if !bytes.Contains(master, []byte("CODECS=")) {
		t.Errorf("master playlist lacks CODECS:\n%s", master)
	}
	variant := fetch("/v1/hls/real/360p/index.m3u8", "application/vnd.apple.mpegurl")
	if mp4 := fetch("/v1/hls/real/download.mp4", "video/mp4"); !bytes.Contains(mp4[:64], []byte("ftyp")) {
		t.Error("download is not an MP4")
	}
	if !bytes.Contains(variant, []byte("#EXT-X-ENDLIST")) {
		t.Errorf("variant playlist is not finished:\n%s", variant)
	}
	var segs int
	for line := range strings.Lines(string(variant)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		segs++
		body := fetch("/v1/hls/real/360p/"+line, "video/mp2t")
		want, err := os.ReadFile(filepath.Join(dataDir, "hls", "real", "360p", line))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, want) || len(body) == 0 || body[0] != 0x47 { // MPEG-TS sync byte
			t.Errorf("segment %s: %d bytes served, %d on disk", line, len(body), len(want))
		}
	}
	if segs == 0 {
		t.Error("variant playlist lists no segments")
	}
	if jpg := fetch("/v1/hls/real/thumbnail.jpg", "image/jpeg"); !bytes.HasPrefix(jpg, []byte{0xff, 0xd8, 0xff}) {
		t.Error("thumbnail is not a JPEG")
	}
}
