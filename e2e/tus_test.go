package e2e_test

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tusRequest sends one tus 1.0 request through the gateway.
func tusRequest(t *testing.T, method, target string, body []byte, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, target, bytes.NewReader(body))
	must(t, err, "new request")
	req.Header.Set("Tus-Resumable", "1.0.0")
	if body != nil {
		req.Header.Set("Content-Type", "application/offset+octet-stream")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	must(t, err, "%s %s", method, target)
	readAll(t, res)
	return res
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestTusThroughGateway uploads a real clip resumably through the dev platform's gateway:
// the connection drops halfway through a PATCH, the client resumes from the offset HEAD
// reports, and the video goes through the same pipeline as a plain upload to READY.
func TestTusThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an ffmpeg transcode")
	}
	data, err := os.ReadFile(fiveSecondClip(t))
	must(t, err, "read clip")
	p := startDev(t)
	base := p.gateway + "/v1/uploads/tus/"

	res := tusRequest(t, http.MethodOptions, base, nil, nil)
	if ext := res.Header.Get("Tus-Extension"); !strings.Contains(ext, "checksum") || !strings.Contains(ext, "creation-with-upload") {
		t.Errorf("Tus-Extension through the gateway = %q", ext)
	}

	res = tusRequest(t, http.MethodPost, base, nil, map[string]string{
		"Upload-Length":   strconv.Itoa(len(data)),
		"Upload-Metadata": "title " + b64("tus through the gateway") + ",filename " + b64("clip ünïcode.mp4"),
	})
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusCreated || !strings.HasPrefix(loc, base) {
		t.Fatalf("create: %d Location %q, want 201 under %s", res.StatusCode, loc, base)
	}
	id := strings.TrimPrefix(loc, base)

	// Half the body, then the client's connection drops.
	half := len(data) / 2
	gw := strings.TrimPrefix(p.gateway, "http://")
	conn, err := net.Dial("tcp", gw)
	must(t, err, "dial gateway")
	fmt.Fprintf(conn, "PATCH /v1/uploads/tus/%s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n\r\n", id, gw, len(data))
	_, err = conn.Write(data[:half])
	must(t, err, "write half")
	waitFor(t, 30*time.Second, "half the clip stored", func() error {
		fi, err := os.Stat(filepath.Join(p.dataDir, "tus", id))
		if err != nil {
			return err
		}
		if fi.Size() != int64(half) {
			return fmt.Errorf("%d bytes stored", fi.Size())
		}
		return nil
	})
	_ = conn.Close()

	res = tusRequest(t, http.MethodHead, loc, nil, nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Upload-Offset") != strconv.Itoa(half) {
		t.Fatalf("HEAD after the drop: %d offset %q, want %d", res.StatusCode, res.Header.Get("Upload-Offset"), half)
	}
	if res := tusRequest(t, http.MethodPatch, loc, data[:10], map[string]string{"Upload-Offset": "0"}); res.StatusCode != http.StatusConflict {
		t.Errorf("PATCH at a stale offset: %d, want 409", res.StatusCode)
	}
	wrong := sha1.Sum(data[:half])
	res = tusRequest(t, http.MethodPatch, loc, data[half:], map[string]string{
		"Upload-Offset":   strconv.Itoa(half),
		"Upload-Checksum": "sha1 " + base64.StdEncoding.EncodeToString(wrong[:]),
	})
	if res.StatusCode != 460 {
		t.Errorf("PATCH with a wrong checksum: %d, want 460", res.StatusCode)
	}
	right := sha1.Sum(data[half:])
	res = tusRequest(t, http.MethodPatch, loc, data[half:], map[string]string{
		"Upload-Offset":   strconv.Itoa(half),
		"Upload-Checksum": "sha1 " + base64.StdEncoding.EncodeToString(right[:]),
	})
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
		t.Fatalf("resume: %d offset %q", res.StatusCode, res.Header.Get("Upload-Offset"))
	}

	want := sha256.Sum256(data)
	video := p.waitStatus(t, id, "VIDEO_STATUS_READY")
	if video["sha256"] != hex.EncodeToString(want[:]) || video["sizeBytes"] != strconv.Itoa(len(data)) {
		t.Errorf("video sha256 %v size %v, want %x %d", video["sha256"], video["sizeBytes"], want, len(data))
	}
	src, err := os.ReadFile(filepath.Join(p.dataDir, "uploads", id, "source"))
	must(t, err, "read source")
	if !bytes.Equal(src, data) {
		t.Errorf("stored source differs from the clip")
	}
	if resp, _ := p.get(t, "/v1/hls/"+id+"/master.m3u8"); resp.StatusCode != http.StatusOK {
		t.Errorf("master playlist: %d", resp.StatusCode)
	}

	// CreateUpload through the gateway, then termination.
	code, out := connectJSON(t, p.gateway, "/reelway.upload.v1.UploadService/CreateUpload",
		map[string]any{"metadata": map[string]string{"title": "cancelled"}, "sizeBytes": "1000"})
	url, _ := out["uploadUrl"].(string)
	if code != http.StatusOK || !strings.HasPrefix(url, "/v1/uploads/tus/") {
		t.Fatalf("CreateUpload: %d %v", code, out)
	}
	if res := tusRequest(t, http.MethodPatch, p.gateway+url, make([]byte, 400), map[string]string{"Upload-Offset": "0"}); res.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d", res.StatusCode)
	}
	if res := tusRequest(t, http.MethodDelete, p.gateway+url, nil, nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", res.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "tus", strings.TrimPrefix(url, "/v1/uploads/tus/"))); !os.IsNotExist(err) {
		t.Errorf("bytes left after termination: %v", err)
	}
	code, out = connectJSON(t, p.gateway, "/reelway.metadata.v1.MetadataService/GetVideo", map[string]string{"id": out["videoId"].(string)})
	if v, _ := out["video"].(map[string]any); code != http.StatusOK || v["status"] != "VIDEO_STATUS_FAILED" || v["failureReason"] != "upload cancelled" {
		t.Errorf("cancelled video: %d %v", code, out)
	}
}
