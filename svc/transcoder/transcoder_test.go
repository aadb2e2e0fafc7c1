package transcoder_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/jpeg"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/gen/reelway/transcoder/v1/transcoderv1connect"
	"github.com/reelway/reelway/svc/media"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/reelway/reelway/svc/transcoder"
)

// clips are the media files the tests transcode, made once per test binary by TestMain.
type clips struct {
	av      string // 1280x720, 4 s, H.264 + AAC
	long    string // the av clip looped to 20 s, for runs that must still be going
	silent  string // 640x360, 2 s, no audio
	rotated string // the av clip flagged as rotated by 90°
	audio   string // sound only
	hd      string // 1920x1080, 2 s, H.264 + AAC
	phone   string // 1280x720 stored, rotated by 90°: a 720x1280 portrait phone video, 2 s
	vfr     string // 640x360, 3 s, variable frame rate, with sound
	short   string // 320x240, 0.5 s, with sound
	odd     string // 321x241, 1 s, with sound
	skip    string // why the media tests cannot run, or ""
}

var testClips clips

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "transcoder-clips-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testClips, err = makeClips(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "make clips:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func makeClips(dir string) (clips, error) {
	c := clips{
		av:      filepath.Join(dir, "av.mp4"),
		long:    filepath.Join(dir, "long.mp4"),
		silent:  filepath.Join(dir, "silent.mp4"),
		rotated: filepath.Join(dir, "rotated.mp4"),
		audio:   filepath.Join(dir, "audio.m4a"),
		hd:      filepath.Join(dir, "hd.mp4"),
		phone:   filepath.Join(dir, "phone.mp4"),
		vfr:     filepath.Join(dir, "vfr.mp4"),
		short:   filepath.Join(dir, "short.mp4"),
		odd:     filepath.Join(dir, "odd.mp4"),
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		c.skip = "ffmpeg not installed"
		return c, nil
	}
	cmds := [][]string{
		{"-f", "lavfi", "-i", "testsrc=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
			"-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-f", "mp4", c.av},
		{"-stream_loop", "4", "-i", c.av, "-c", "copy", "-f", "mp4", c.long},
		{"-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-t", "2", "-c:v", "libx264", "-preset", "ultrafast",
			"-pix_fmt", "yuv420p", "-f", "mp4", c.silent},
		{"-i", c.av, "-c", "copy", "-metadata:s:v:0", "rotate=90", "-f", "mp4", c.rotated},
		{"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1", "-c:a", "aac", "-f", "mp4", c.audio},
		{"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
			"-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-f", "mp4", c.hd},
		{"-f", "lavfi", "-i", "testsrc=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000",
			"-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
			"-f", "mp4", c.phone + ".raw"},
		// ffmpeg sets the display matrix only when copying, as a phone's camera app would.
		{"-i", c.phone + ".raw", "-c", "copy", "-metadata:s:v:0", "rotate=90", "-f", "mp4", c.phone},
		// Frames at irregular intervals: two of every five dropped, timestamps kept.
		{"-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=500:sample_rate=48000",
			"-t", "3", "-vf", "select='lt(mod(n\\,5)\\,3)'", "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast",
			"-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-f", "mp4", c.vfr},
		{"-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=600:sample_rate=48000",
			"-t", "0.5", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mp4", c.short},
		{"-f", "lavfi", "-i", "testsrc=size=321x241:rate=30", "-f", "lavfi", "-i", "sine=frequency=700:sample_rate=22050:duration=1",
			"-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", "-c:a", "aac", "-ac", "1", "-f", "mp4", c.odd},
	}
	for _, args := range cmds {
		out, err := exec.Command("ffmpeg", append([]string{"-nostdin", "-v", "error", "-y"}, args...)...).CombinedOutput()
		if err != nil {
			return c, fmt.Errorf("ffmpeg %v: %w: %s", args, err, out)
		}
	}
	return c, nil
}

// env is one transcoder served in-process over HTTP/2, with a client per protocol.
type env struct {
	dataDir string
	svc     *transcoder.Service
	pub     *recorder
	clients map[string]transcoderv1connect.TranscoderServiceClient
}

var protocols = []string{"connect", "grpc"}

func newEnv(t *testing.T) *env {
	t.Helper()
	if testClips.skip != "" {
		t.Skip(testClips.skip)
	}
	e := &env{dataDir: t.TempDir(), pub: &recorder{}}
	log := slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(io.Discard, nil)})
	if testing.Verbose() {
		log = slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(os.Stderr, nil)})
	}
	e.svc = transcoder.New(log, transcoder.Config{DataDir: e.dataDir, ProgressInterval: 50 * time.Millisecond}, e.pub)
	srv := rpc.NewServer(log, nil)
	if err := e.svc.Mount(srv); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	e.clients = map[string]transcoderv1connect.TranscoderServiceClient{
		"connect": transcoderv1connect.NewTranscoderServiceClient(ts.Client(), ts.URL),
		"grpc":    transcoderv1connect.NewTranscoderServiceClient(ts.Client(), ts.URL, connect.WithGRPC()),
	}
	return e
}

// upload places a file as a video's source, as the upload service would.
func (e *env) upload(t *testing.T, id, from string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	e.uploadBytes(t, id, b)
}

func (e *env) uploadBytes(t *testing.T, id string, b []byte) {
	t.Helper()
	src, err := media.SourcePath(e.dataDir, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// hlsEntries lists the names in the HLS root (final folders and leftovers).
func (e *env) hlsEntries(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(media.HLSRoot(e.dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return names
}

// recorder is a Publisher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	events []*eventsv1.Event
}

var _ transcoder.Publisher = (*recorder)(nil)

func (r *recorder) Publish(_ context.Context, ev *eventsv1.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) progress() []*eventsv1.TranscodeProgress {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*eventsv1.TranscodeProgress
	for _, ev := range r.events {
		if p := ev.GetTranscodeProgress(); p != nil {
			out = append(out, p)
		}
	}
	return out
}

func TestProbe(t *testing.T) {
	e := newEnv(t)
	e.upload(t, "av", testClips.av)
	e.upload(t, "silent", testClips.silent)
	e.upload(t, "rotated", testClips.rotated)
	tests := []struct {
		id   string
		want *transcoderv1.ProbeResponse
	}{
		{"av", &transcoderv1.ProbeResponse{DurationSeconds: 4, Width: 1280, Height: 720, VideoCodec: "h264", AudioCodec: "aac", HasAudio: true}},
		{"silent", &transcoderv1.ProbeResponse{DurationSeconds: 2, Width: 640, Height: 360, VideoCodec: "h264"}},
		{"rotated", &transcoderv1.ProbeResponse{DurationSeconds: 4, Width: 720, Height: 1280, VideoCodec: "h264", AudioCodec: "aac", HasAudio: true}},
	}
	for _, proto := range protocols {
		for _, tt := range tests {
			t.Run(proto+"/"+tt.id, func(t *testing.T) {
				got, err := e.clients[proto].Probe(t.Context(), &transcoderv1.ProbeRequest{VideoId: tt.id})
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(got.GetDurationSeconds()-tt.want.GetDurationSeconds()) > 0.2 {
					t.Errorf("duration = %v, want ≈%v", got.GetDurationSeconds(), tt.want.GetDurationSeconds())
				}
				if got.GetWidth() != tt.want.GetWidth() || got.GetHeight() != tt.want.GetHeight() {
					t.Errorf("size = %dx%d, want %dx%d", got.GetWidth(), got.GetHeight(), tt.want.GetWidth(), tt.want.GetHeight())
				}
				if got.GetVideoCodec() != tt.want.GetVideoCodec() || got.GetAudioCodec() != tt.want.GetAudioCodec() || got.GetHasAudio() != tt.want.GetHasAudio() {
					t.Errorf("codecs = %q/%q audio=%v, want %q/%q audio=%v", got.GetVideoCodec(), got.GetAudioCodec(), got.GetHasAudio(),
						tt.want.GetVideoCodec(), tt.want.GetAudioCodec(), tt.want.GetHasAudio())
				}
			})
		}
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	e.uploadBytes(t, "text", []byte("this is not a video, just some words\n"))
	av, err := os.ReadFile(testClips.av)
	if err != nil {
		t.Fatal(err)
	}
	e.uploadBytes(t, "truncated", av[:len(av)*3/10])
	e.upload(t, "audio", testClips.audio)
	e.uploadBytes(t, "empty", nil)

	tests := []struct {
		name    string
		id      string
		code    connect.Code
		message string // a fragment of the error message
	}{
		{"unknown video", "nope", connect.CodeNotFound, "source not found"},
		{"bad id", "../etc", connect.CodeInvalidArgument, "video_id"},
		{"empty id", "", connect.CodeInvalidArgument, "video_id"},
		{"text file", "text", connect.CodeFailedPrecondition, "source is not a decodable video: source: Invalid data"},
		{"truncated mp4", "truncated", connect.CodeFailedPrecondition, "moov atom not found"},
		{"empty file", "empty", connect.CodeFailedPrecondition, "not a decodable video"},
		{"audio only", "audio", connect.CodeFailedPrecondition, "no video stream"},
	}
	calls := map[string]func(ctx context.Context, c transcoderv1connect.TranscoderServiceClient, id string) error{
		"Probe": func(ctx context.Context, c transcoderv1connect.TranscoderServiceClient, id string) error {
			_, err := c.Probe(ctx, &transcoderv1.ProbeRequest{VideoId: id})
			return err
		},
		"Transcode": func(ctx context.Context, c transcoderv1connect.TranscoderServiceClient, id string) error {
			_, err := c.Transcode(ctx, &transcoderv1.TranscodeRequest{VideoId: id, JobId: "job-1"})
			return err
		},
	}
	for _, proto := range protocols {
		for rpcName, call := range calls {
			for _, tt := range tests {
				t.Run(proto+"/"+rpcName+"/"+tt.name, func(t *testing.T) {
					err := call(t.Context(), e.clients[proto], tt.id)
					if got := connect.CodeOf(err); got != tt.code {
						t.Fatalf("code = %v (%v), want %v", got, err, tt.code)
					}
					if !strings.Contains(err.Error(), tt.message) {
						t.Errorf("error %q does not mention %q", err, tt.message)
					}
					if strings.Contains(err.Error(), e.dataDir) {
						t.Errorf("error %q leaks the data directory", err)
					}
				})
			}
		}
	}
	if left := e.hlsEntries(t); len(left) != 0 {
		t.Errorf("failed transcodes left %v in the HLS root", left)
	}
}

// TestInvalidIDWithoutValidation calls the service directly, as an in-process caller
// would, to show it checks ids itself before building paths.
func TestInvalidIDWithoutValidation(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"../x", "a/b", "", strings.Repeat("a", 65), ".hidden"} {
		_, err := e.svc.Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: id})
		if got := connect.CodeOf(err); got != connect.CodeInvalidArgument {
			t.Errorf("Transcode(%q) code = %v (%v), want invalid_argument", id, got, err)
		}
		_, err = e.svc.Probe(t.Context(), &transcoderv1.ProbeRequest{VideoId: id})
		if got := connect.CodeOf(err); got != connect.CodeInvalidArgument {
			t.Errorf("Probe(%q) code = %v (%v), want invalid_argument", id, got, err)
		}
	}
}

func TestTranscode(t *testing.T) {
	e := newEnv(t)
	e.upload(t, "vid-av", testClips.av)
	res, err := e.clients["grpc"].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "vid-av", JobId: "job-7"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(media.HLSRoot(e.dataDir), "vid-av")
	if res.GetMasterPlaylist() != "master.m3u8" || res.GetThumbnail() != "thumbnail.jpg" {
		t.Errorf("master/thumbnail = %q/%q", res.GetMasterPlaylist(), res.GetThumbnail())
	}
	if res.GetWidth() != 1280 || res.GetHeight() != 720 || math.Abs(res.GetDurationSeconds()-4) > 0.2 {
		t.Errorf("facts = %dx%d %vs", res.GetWidth(), res.GetHeight(), res.GetDurationSeconds())
	}
	type want struct {
		name          string
		width, height int32
	}
	wants := []want{{"240p", 426, 240}, {"360p", 640, 360}, {"480p", 854, 480}, {"720p", 1280, 720}}
	if len(res.GetRenditions()) != len(wants) {
		t.Fatalf("renditions = %v, want %v", res.GetRenditions(), wants)
	}
	for i, r := range res.GetRenditions() {
		w := wants[i]
		if r.GetName() != w.name || r.GetWidth() != w.width || r.GetHeight() != w.height ||
			r.GetPlaylistPath() != w.name+"/index.m3u8" || r.GetBandwidth() <= 0 ||
			!strings.HasPrefix(r.GetCodecs(), "avc1.") || !strings.HasSuffix(r.GetCodecs(), ",mp4a.40.2") {
			t.Errorf("rendition %d = %v, want %v with bandwidth and avc1+mp4a codecs", i, r, w)
		}
	}
	variants := checkMaster(t, dir, len(wants))
	for i, v := range variants {
		if v.Bandwidth != res.GetRenditions()[i].GetBandwidth() || v.Codecs != res.GetRenditions()[i].GetCodecs() {
			t.Errorf("master variant %d = %+v, response says %v", i, v, res.GetRenditions()[i])
		}
		checkVariant(t, filepath.Join(dir, filepath.FromSlash(v.URI)), true)
	}
	checkThumbnail(t, filepath.Join(dir, "thumbnail.jpg"), 640, 360)

	progress := e.pub.progress()
	if len(progress) == 0 {
		t.Fatal("no transcode.progress events")
	}
	for _, p := range progress {
		if p.GetVideoId() != "vid-av" || p.GetJobId() != "job-7" || p.GetPercent() <= 0 || p.GetPercent() > 100 {
			t.Errorf("progress event = %v", p)
		}
	}
	if left := e.hlsEntries(t); len(left) != 1 || left[0] != "vid-av" {
		t.Errorf("HLS root holds %v, want only vid-av", left)
	}
}

// TestTranscodeSilentReplaces transcodes a source without sound twice: the second run
// replaces the first output and leaves no temporary folders.
func TestTranscodeSilentReplaces(t *testing.T) {
	e := newEnv(t)
	e.upload(t, "quiet", testClips.silent)
	dir := filepath.Join(media.HLSRoot(e.dataDir), "quiet")
	marker := filepath.Join(dir, "marker")
	for run := range 2 {
		res, err := e.clients["connect"].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "quiet"})
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if len(res.GetRenditions()) != 2 || res.GetRenditions()[1].GetName() != "360p" {
			t.Fatalf("run %d: renditions = %v, want 240p and 360p", run, res.GetRenditions())
		}
		if c := res.GetRenditions()[0].GetCodecs(); !strings.HasPrefix(c, "avc1.") || strings.Contains(c, "mp4a") {
			t.Errorf("run %d: codecs = %q, want video only", run, c)
		}
		if res.GetHasAudio() || res.GetAudioCodec() != "" {
			t.Errorf("run %d: has_audio/audio_codec = %v/%q for a silent source", run, res.GetHasAudio(), res.GetAudioCodec())
		}
		variants := checkMaster(t, dir, 2)
		checkVariant(t, filepath.Join(dir, filepath.FromSlash(variants[1].URI)), false)
		checkThumbnail(t, filepath.Join(dir, "thumbnail.jpg"), 640, 360)
		if left := e.hlsEntries(t); len(left) != 1 || left[0] != "quiet" {
			t.Errorf("run %d: HLS root holds %v, want only quiet", run, left)
		}
		if run == 0 {
			// A file only the first output has shows whether the second replaced it.
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		} else if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("second run did not replace the first output (marker: %v)", err)
		}
	}
}

// TestTranscodeWhileRunning covers what happens around a transcode in flight: a second
// transcode of the same video is aborted, another video waits for the ffmpeg slot within
// its deadline, and cancelling the call kills ffmpeg and removes everything it wrote.
func TestTranscodeWhileRunning(t *testing.T) {
	e := newEnv(t)
	e.upload(t, "long", testClips.long)
	e.upload(t, "other", testClips.silent)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := e.clients["grpc"].Transcode(ctx, &transcoderv1.TranscodeRequest{VideoId: "long"})
		errc <- err
	}()

	// ffmpeg is running once it has made the rendition folders in the temporary folder.
	waitFor(t, 20*time.Second, "ffmpeg to start", func() bool {
		tmp, _ := filepath.Glob(filepath.Join(media.HLSRoot(e.dataDir), ".tmp-long-*", "360p"))
		return len(tmp) == 1 && len(ffmpegProcesses(t, e.dataDir)) > 0
	})

	for _, proto := range protocols {
		_, err := e.clients[proto].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "long"})
		if got := connect.CodeOf(err); got != connect.CodeAborted {
			t.Errorf("%s: second transcode code = %v (%v), want aborted", proto, got, err)
		}
	}
	shortCtx, shortCancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err := e.clients["connect"].Transcode(shortCtx, &transcoderv1.TranscodeRequest{VideoId: "other"})
	shortCancel()
	if got := connect.CodeOf(err); got != connect.CodeDeadlineExceeded {
		t.Errorf("transcode waiting for the slot: code = %v (%v), want deadline_exceeded", got, err)
	}

	cancel()
	select {
	case err := <-errc:
		if got := connect.CodeOf(err); got != connect.CodeCanceled {
			t.Errorf("cancelled transcode code = %v (%v), want canceled", got, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("cancelled transcode did not return")
	}
	// The server notices the cancellation asynchronously; wait for its cleanup.
	waitFor(t, 10*time.Second, "ffmpeg killed and output removed", func() bool {
		return len(ffmpegProcesses(t, e.dataDir)) == 0 && len(e.hlsEntries(t)) == 0
	})
	if left := e.hlsEntries(t); len(left) != 0 {
		t.Errorf("HLS root holds %v after cancel", left)
	}

	// The slot and the video id are free again.
	if _, err := e.clients["connect"].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "other"}); err != nil {
		t.Fatalf("transcode after cancel: %v", err)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ffmpegProcesses returns the pids of ffmpeg processes working under dataDir.
func ffmpegProcesses(t *testing.T, dataDir string) []string {
	t.Helper()
	paths, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := bytes.Split(b, []byte{0})
		if filepath.Base(string(args[0])) == "ffmpeg" && bytes.Contains(b, []byte(dataDir)) {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	return pids
}

// checkMaster reads a master playlist and checks it lists n variants with BANDWIDTH,
// RESOLUTION and CODECS.
func checkMaster(t *testing.T, dir string, n int) []media.Variant {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "master.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	variants, err := media.ParseMaster(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(variants) != n {
		t.Fatalf("master lists %d variants, want %d", len(variants), n)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "master.m3u8"))
	for i, v := range variants {
		if v.Bandwidth <= 0 || v.Width <= 0 || v.Height <= 0 || v.Codecs == "" {
			t.Errorf("variant %d lacks BANDWIDTH/RESOLUTION/CODECS: %+v\n%s", i, v, raw)
		}
	}
	// Media playlist tags have no place in a master playlist (RFC 8216 §4.1).
	for _, tag := range []string{"#EXT-X-PLAYLIST-TYPE", "#EXT-X-ENDLIST", "#EXTINF", "#EXT-X-TARGETDURATION"} {
		if strings.Contains(string(raw), tag) {
			t.Errorf("master playlist carries %s:\n%s", tag, raw)
		}
	}
	return variants
}

// checkVariant checks a variant playlist is a finished VOD playlist whose segments exist
// and decode.
func checkVariant(t *testing.T, path string, audio bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, tag := range []string{"#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-ENDLIST"} {
		if !strings.Contains(text, tag) {
			t.Errorf("%s lacks %s:\n%s", path, tag, text)
		}
	}
	var segs []string
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			segs = append(segs, line)
		}
	}
	if len(segs) == 0 || segs[0] != "seg_00000.ts" {
		t.Fatalf("%s segments = %v", path, segs)
	}
	for _, s := range segs {
		if _, err := os.Stat(filepath.Join(filepath.Dir(path), s)); err != nil {
			t.Errorf("segment: %v", err)
		}
	}
	seg := filepath.Join(filepath.Dir(path), segs[0])
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "json", seg).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", seg, err)
	}
	var probed struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &probed); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range probed.Streams {
		got = append(got, st.CodecName)
	}
	want := []string{"h264"}
	if audio {
		want = append(want, "aac")
	}
	if !slices.Equal(got, want) {
		t.Errorf("segment streams = %q, want %q", got, want)
	}
	if out, err := exec.Command("ffmpeg", "-v", "error", "-i", seg, "-f", "null", "-").CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("decode %s: %v: %s", seg, err, out)
	}
}

func checkThumbnail(t *testing.T, path string, width, height int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := jpeg.DecodeConfig(f)
	if err != nil {
		t.Fatalf("thumbnail is not a JPEG: %v", err)
	}
	if cfg.Width != width || cfg.Height != height {
		t.Errorf("thumbnail = %dx%d, want %dx%d", cfg.Width, cfg.Height, width, height)
	}
}

// TestStartSweepsLeftovers shows Start removing the temporary folders of crashed runs
// once they are a day old, and nothing else.
func TestStartSweepsLeftovers(t *testing.T) {
	e := newEnv(t)
	root := media.HLSRoot(e.dataDir)
	old := time.Now().Add(-48 * time.Hour)
	for _, name := range []string{".tmp-a-123", ".old-b-c-456", ".tmp-fresh-789", "video1", ".other"} {
		if err := os.MkdirAll(filepath.Join(root, name, "360p"), 0o755); err != nil {
			t.Fatal(err)
		}
		if name != ".tmp-fresh-789" {
			if err := os.Chtimes(filepath.Join(root, name), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.svc.Start(ctx) }()
	waitFor(t, 5*time.Second, "stale folders removed", func() bool {
		return slices.Equal(e.hlsEntries(t), []string{".other", ".tmp-fresh-789", "video1"})
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Start returned %v", err)
	}
}

// TestTruncatedFaststartSource covers a cut-off upload whose index (moov) sits at the
// front: ffprobe reads it happily and ffmpeg decodes the first part and exits 0, yet the
// video must fail rather than play a third of its length.
func TestTruncatedFaststartSource(t *testing.T) {
	e := newEnv(t)
	fast := filepath.Join(t.TempDir(), "fast.mp4")
	cmd := exec.Command("ffmpeg", "-v", "error", "-y", "-i", testClips.av, "-c", "copy", "-movflags", "+faststart", fast)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("remux: %v\n%s", err, out)
	}
	b, err := os.ReadFile(fast)
	if err != nil {
		t.Fatal(err)
	}
	e.uploadBytes(t, "cut", b[:len(b)/3])
	for _, proto := range protocols {
		_, err := e.clients[proto].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "cut", JobId: "job-cut"})
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("%s: want failed_precondition naming truncation, got %v", proto, err)
		}
	}
	if left := e.hlsEntries(t); len(left) != 0 {
		t.Errorf("a failed transcode left %v in the HLS root", left)
	}
}

// TestKilledFFmpegIsTransient kills ffmpeg from outside mid-transcode: the input is fine,
// so the answer must be a transient unavailable, never failed_precondition (which would
// make the worker give up on a good video).
func TestKilledFFmpegIsTransient(t *testing.T) {
	e := newEnv(t)
	e.upload(t, "long", testClips.long)
	errc := make(chan error, 1)
	go func() {
		_, err := e.clients["connect"].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "long"})
		errc <- err
	}()
	var pids []string
	waitFor(t, 20*time.Second, "ffmpeg to start", func() bool {
		pids = ffmpegProcesses(t, e.dataDir)
		return len(pids) > 0
	})
	for _, pid := range pids {
		n, _ := strconv.Atoi(pid)
		_ = syscall.Kill(n, syscall.SIGKILL)
	}
	select {
	case err := <-errc:
		if got := connect.CodeOf(err); got != connect.CodeUnavailable {
			t.Fatalf("killed ffmpeg: code = %v (%v), want unavailable", got, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("transcode did not return after ffmpeg was killed")
	}
	waitFor(t, 10*time.Second, "nothing left behind", func() bool { return len(e.hlsEntries(t)) == 0 })
}

// TestSourceRemovedMidTranscode: a video deleted while it transcodes loses its source
// (ffmpeg, reading its open file, still encodes to the end); the transcode must then leave
// no output behind and answer not_found, so the deleted video never gets renditions.
func TestSourceRemovedMidTranscode(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			e := newEnv(t)
			e.upload(t, "gone", testClips.av)
			errc := make(chan error, 1)
			go func() {
				_, err := e.clients[proto].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "gone", JobId: "job-gone"})
				errc <- err
			}()
			// ffmpeg is encoding once it has made the rendition folders in the temporary folder.
			waitFor(t, 20*time.Second, "ffmpeg encoding", func() bool {
				tmp, _ := filepath.Glob(filepath.Join(media.HLSRoot(e.dataDir), ".tmp-gone-*", "360p"))
				return len(tmp) == 1
			})
			src, err := media.SourcePath(e.dataDir, "gone")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Dir(src)); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if got := connect.CodeOf(err); got != connect.CodeNotFound {
					t.Fatalf("transcode of a removed source: code = %v (%v), want not_found", got, err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("transcode did not return")
			}
			if left := e.hlsEntries(t); len(left) != 0 {
				t.Errorf("HLS root holds %v after the source was removed", left)
			}
		})
	}
}
