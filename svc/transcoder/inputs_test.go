package transcoder_test

import (
	"encoding/json"
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
	"testing"
	"time"

	"connectrpc.com/connect"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/gen/reelway/transcoder/v1/transcoderv1connect"
	"github.com/reelway/reelway/svc/media"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/reelway/reelway/svc/transcoder"
)

// TestTranscodeInputs transcodes every awkward kind of source and checks the whole
// output: the ladder chosen, complete VOD variants whose segments are 4 s long and start
// on keyframes 2 s apart, a master with every attribute, stills of the right size, the
// MP4 download, and the ffprobe facts of the response.
func TestTranscodeInputs(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name       string
		clip       string
		renditions []string // name:WxH
		duration   float64
		audio      bool
		width      int32 // as displayed
		height     int32
		videoCodec string
		poster     [2]int
		thumb      [2]int
	}{
		{"landscape 1080p", testClips.hd, []string{"240p:426x240", "360p:640x360", "480p:854x480", "720p:1280x720", "1080p:1920x1080"},
			2, true, 1920, 1080, "h264", [2]int{1920, 1080}, [2]int{640, 360}},
		{"portrait phone video", testClips.phone, []string{"240p:240x426", "360p:360x640", "480p:480x854", "720p:720x1280"},
			2, true, 720, 1280, "h264", [2]int{720, 1280}, [2]int{360, 640}},
		{"no audio", testClips.silent, []string{"240p:426x240", "360p:640x360"}, 2, false, 640, 360, "h264", [2]int{640, 360}, [2]int{640, 360}},
		{"variable frame rate", testClips.vfr, []string{"240p:426x240", "360p:640x360"}, 3, true, 640, 360, "h264", [2]int{640, 360}, [2]int{640, 360}},
		{"half a second", testClips.short, []string{"240p:320x240"}, 0.5, true, 320, 240, "h264", [2]int{320, 240}, [2]int{320, 240}},
		{"odd width and height", testClips.odd, []string{"240p:320x240"}, 1, true, 321, 241, "h264", [2]int{320, 240}, [2]int{320, 240}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "in" + strconv.Itoa(i)
			e.upload(t, id, tt.clip)
			res, err := e.clients[protocols[i%2]].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: id, JobId: "job-" + id})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range res.GetRenditions() {
				got = append(got, r.GetName()+":"+strconv.Itoa(int(r.GetWidth()))+"x"+strconv.Itoa(int(r.GetHeight())))
			}
			if !slices.Equal(got, tt.renditions) {
				t.Errorf("renditions = %v, want %v", got, tt.renditions)
			}
			src, _ := os.Stat(tt.clip)
			if math.Abs(res.GetDurationSeconds()-tt.duration) > 0.15 || res.GetWidth() != tt.width || res.GetHeight() != tt.height ||
				res.GetVideoCodec() != tt.videoCodec || res.GetHasAudio() != tt.audio || (res.GetAudioCodec() == "aac") != tt.audio ||
				res.GetSizeBytes() != src.Size() || res.GetFrameRate() <= 0 || res.GetBitRate() <= 0 {
				t.Errorf("facts = %v", res)
			}
			if res.GetPoster() != "poster.jpg" || res.GetDownload() != "download.mp4" || res.GetThumbnail() != "thumbnail.jpg" {
				t.Errorf("poster/download/thumbnail = %q/%q/%q", res.GetPoster(), res.GetDownload(), res.GetThumbnail())
			}

			dir := filepath.Join(media.HLSRoot(e.dataDir), id)
			variants := checkMaster(t, dir, len(tt.renditions))
			for j, v := range variants {
				r := res.GetRenditions()[j]
				if v.Bandwidth != r.GetBandwidth() || v.Codecs != r.GetCodecs() || v.Width != int(r.GetWidth()) || v.Height != int(r.GetHeight()) {
					t.Errorf("master variant %d = %+v, response says %v", j, v, r)
				}
				playlist := filepath.Join(dir, filepath.FromSlash(v.URI))
				checkVariant(t, playlist, tt.audio)
				checkSegmentDurations(t, playlist, tt.duration)
				checkPeakBandwidth(t, playlist, v.Bandwidth)
			}
			checkThumbnail(t, filepath.Join(dir, "poster.jpg"), tt.poster[0], tt.poster[1])
			checkThumbnail(t, filepath.Join(dir, "thumbnail.jpg"), tt.thumb[0], tt.thumb[1])
			// What ffprobe sees: the thumbnail is never larger than the poster and the top
			// rendition, and has their shape.
			top := variants[len(variants)-1]
			tw, th := probeSize(t, filepath.Join(dir, "thumbnail.jpg"))
			pw, ph := probeSize(t, filepath.Join(dir, "poster.jpg"))
			if pw != top.Width || ph != top.Height {
				t.Errorf("poster %dx%d, top rendition %dx%d: want the same size", pw, ph, top.Width, top.Height)
			}
			if tw > pw || th > ph || tw%2 != 0 || th%2 != 0 || math.Abs(float64(tw)/float64(th)-float64(pw)/float64(ph)) > 0.02 {
				t.Errorf("thumbnail %dx%d, poster %dx%d: want even sides, no larger, same aspect", tw, th, pw, ph)
			}
			checkDownload(t, filepath.Join(dir, "download.mp4"), tt.duration, tt.audio, tt.poster)
		})
	}
}

// checkSegmentDurations checks every segment but the last lasts the 4 s target and the
// segments add up to the source's duration.
func checkSegmentDurations(t *testing.T, playlist string, duration float64) {
	t.Helper()
	b, err := os.ReadFile(playlist)
	if err != nil {
		t.Fatal(err)
	}
	var durs []float64
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "#EXTINF:"); ok {
			v, _, _ = strings.Cut(v, ",")
			d, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("EXTINF %q", line)
			}
			durs = append(durs, d)
		}
	}
	var total float64
	for i, d := range durs {
		total += d
		if i < len(durs)-1 && math.Abs(d-4) > 0.05 {
			t.Errorf("%s: segment %d lasts %vs, want 4s (%v)", playlist, i, d, durs)
		}
	}
	if math.Abs(total-duration) > 0.15 {
		t.Errorf("%s: segments add up to %vs, want %vs", playlist, total, duration)
	}
	want := "#EXT-X-TARGETDURATION:" + strconv.Itoa(int(math.Round(min(slices.Max(durs), 4)+0.499)))
	if !strings.Contains(string(b), want+"\n") {
		t.Errorf("%s: want %s:\n%s", playlist, want, b)
	}
}

// checkPeakBandwidth checks BANDWIDTH is at least every segment's bit rate, as RFC 8216
// requires of the peak.
func checkPeakBandwidth(t *testing.T, playlist string, bandwidth int64) {
	t.Helper()
	b, _ := os.ReadFile(playlist)
	var dur float64
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "#EXTINF:"); ok {
			v, _, _ = strings.Cut(v, ",")
			dur, _ = strconv.ParseFloat(v, 64)
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fi, err := os.Stat(filepath.Join(filepath.Dir(playlist), line))
		if err != nil {
			t.Fatal(err)
		}
		if rate := float64(fi.Size()*8) / max(dur, 0.1); rate > float64(bandwidth) {
			t.Errorf("%s: segment %s runs at %.0f bit/s, above BANDWIDTH %d", playlist, line, rate, bandwidth)
		}
	}
}

// checkDownload checks the MP4 download: index at the front, H.264 (+AAC) at the top
// rendition's size, the source's duration, and a keyframe every 2 s.
func checkDownload(t *testing.T, path string, duration float64, audio bool, size [2]int) {
	t.Helper()
	head := make([]byte, 64<<10)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.ReadFull(f, head)
	f.Close()
	moov, mdat := strings.Index(string(head[:n]), "moov"), strings.Index(string(head[:n]), "mdat")
	if moov < 0 || (mdat >= 0 && mdat < moov) {
		t.Errorf("download: moov at %d, mdat at %d: not faststart", moov, mdat)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height,channels:format=duration",
		"-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe download: %v", err)
	}
	var probed struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
			Channels  int    `json:"channels"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := json.Unmarshal(out, &probed); err != nil {
		t.Fatal(err)
	}
	var codecs []string
	for _, st := range probed.Streams {
		codecs = append(codecs, st.CodecName)
		switch st.CodecName {
		case "h264":
			if st.Width != size[0] || st.Height != size[1] {
				t.Errorf("download is %dx%d, want %dx%d", st.Width, st.Height, size[0], size[1])
			}
		case "aac":
			if st.Channels != 2 {
				t.Errorf("download audio has %d channels, want stereo", st.Channels)
			}
		}
	}
	want := []string{"h264"}
	if audio {
		want = append(want, "aac")
	}
	if !slices.Equal(codecs, want) {
		t.Errorf("download streams = %v, want %v", codecs, want)
	}
	if d, _ := strconv.ParseFloat(probed.Format.Duration, 64); math.Abs(d-duration) > 0.15 {
		t.Errorf("download lasts %vs, want %vs", d, duration)
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-skip_frame", "nokey",
		"-show_entries", "frame=pts_time", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatalf("ffprobe keyframes: %v", err)
	}
	var keys []float64
	for line := range strings.Lines(string(out)) {
		if v, err := strconv.ParseFloat(strings.Trim(strings.TrimSpace(line), ","), 64); err == nil {
			keys = append(keys, v)
		}
	}
	wantKeys := int(math.Ceil(duration/2 - 0.05))
	if len(keys) != wantKeys {
		t.Errorf("download has keyframes at %v, want %d (one every 2 s)", keys, wantKeys)
	}
	for i, k := range keys {
		if math.Abs(k-keys[0]-float64(2*i)) > 0.05 {
			t.Errorf("keyframe %d at %vs, want %vs after the first", i, k, 2*i)
		}
	}
}

// TestWatchTranscode follows a transcode with a Connect and a gRPC watcher at once: both
// see the stages in order, the percent never going back, the renditions being made, and
// the final state; afterwards a watcher gets the final state alone.
func TestWatchTranscode(t *testing.T) {
	e := newEnv(t)
	e.upload(t, "watched", testClips.av)

	done := make(chan error, 1)
	var (
		mu   sync.Mutex
		seen = map[string][]*transcoderv1.WatchTranscodeResponse{}
	)
	started := make(chan struct{})
	var wg sync.WaitGroup
	for _, proto := range protocols {
		wg.Go(func() {
			<-started
			var stream *connect.ServerStreamForClient[transcoderv1.WatchTranscodeResponse]
			// The transcode may not have registered yet: not_found until it has.
			waitFor(t, 20*time.Second, "the transcode to be watchable", func() bool {
				s, err := e.clients[proto].WatchTranscode(t.Context(), &transcoderv1.WatchTranscodeRequest{VideoId: "watched"})
				if err != nil {
					return false
				}
				if !s.Receive() {
					s.Close()
					return false
				}
				mu.Lock()
				seen[proto] = append(seen[proto], s.Msg())
				mu.Unlock()
				stream = s
				return true
			})
			defer stream.Close()
			for stream.Receive() {
				mu.Lock()
				seen[proto] = append(seen[proto], stream.Msg())
				mu.Unlock()
			}
			if err := stream.Err(); err != nil {
				t.Errorf("%s: stream ended with %v", proto, err)
			}
		})
	}
	go func() {
		_, err := e.clients["grpc"].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "watched", JobId: "job-w"})
		done <- err
	}()
	close(started)
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	order := map[transcoderv1.TranscodeStage]int{
		transcoderv1.TranscodeStage_TRANSCODE_STAGE_PROBING:   1,
		transcoderv1.TranscodeStage_TRANSCODE_STAGE_QUEUED:    2,
		transcoderv1.TranscodeStage_TRANSCODE_STAGE_ENCODING:  3,
		transcoderv1.TranscodeStage_TRANSCODE_STAGE_PACKAGING: 4,
		transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE:      5,
	}
	for _, proto := range protocols {
		msgs := seen[proto]
		if len(msgs) < 3 {
			t.Errorf("%s: %d messages, want the encoding progressing over several: %v", proto, len(msgs), msgs)
			continue
		}
		last := msgs[len(msgs)-1]
		if last.GetStage() != transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE || last.GetPercent() != 100 {
			t.Errorf("%s: last message %v, want DONE at 100%%", proto, last)
		}
		encoding := 0
		for i, m := range msgs {
			if m.GetVideoId() != "watched" || m.GetJobId() != "job-w" || order[m.GetStage()] == 0 {
				t.Errorf("%s: message %d = %v", proto, i, m)
			}
			if i > 0 {
				prev := msgs[i-1]
				if m.GetPercent() < prev.GetPercent() || order[m.GetStage()] < order[prev.GetStage()] {
					t.Errorf("%s: went back from %v to %v", proto, prev, m)
				}
			}
			if m.GetStage() == transcoderv1.TranscodeStage_TRANSCODE_STAGE_ENCODING {
				encoding++
				if !slices.Equal(m.GetRenditions(), []string{"240p", "360p", "480p", "720p"}) {
					t.Errorf("%s: encoding renditions = %v", proto, m.GetRenditions())
				}
			}
			// From packaging on, every rendition is made.
			if (m.GetStage() == transcoderv1.TranscodeStage_TRANSCODE_STAGE_PACKAGING || m.GetStage() == transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE) &&
				!slices.Equal(m.GetRenditions(), []string{"240p", "360p", "480p", "720p"}) {
				t.Errorf("%s: %v renditions = %v, want all of them", proto, m.GetStage(), m.GetRenditions())
			}
		}
		if encoding < 2 {
			t.Errorf("%s: %d encoding messages, want progress message by message", proto, encoding)
		}
	}

	// Finished: one message with the final state, then the end.
	for _, proto := range protocols {
		msgs := collect(t, e.clients[proto], "watched")
		if len(msgs) != 1 || msgs[0].GetStage() != transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE ||
			!slices.Equal(msgs[0].GetRenditions(), []string{"240p", "360p", "480p", "720p"}) {
			t.Errorf("%s: after the end = %v, want one DONE with every rendition", proto, msgs)
		}
	}
}

// collect reads a whole WatchTranscode stream.
func collect(t *testing.T, c transcoderv1connect.TranscoderServiceClient, id string) []*transcoderv1.WatchTranscodeResponse {
	t.Helper()
	s, err := c.WatchTranscode(t.Context(), &transcoderv1.WatchTranscodeRequest{VideoId: id})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out []*transcoderv1.WatchTranscodeResponse
	for s.Receive() {
		out = append(out, s.Msg())
	}
	if err := s.Err(); err != nil {
		t.Fatalf("watch %s: %v", id, err)
	}
	return out
}

func TestWatchTranscodeEnds(t *testing.T) {
	e := newEnv(t)
	e.uploadBytes(t, "text", []byte("not a video"))
	if _, err := e.clients["connect"].Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "text"}); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("transcode of text: %v", err)
	}
	// Output left by an earlier process counts as done.
	done := filepath.Join(media.HLSRoot(e.dataDir), "earlier")
	if err := os.MkdirAll(done, 0o755); err != nil {
		t.Fatal(err)
	}
	master := "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=500000,RESOLUTION=426x240\n240p/index.m3u8\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360\n360p/index.m3u8\n"
	if err := os.WriteFile(filepath.Join(done, "master.m3u8"), []byte(master), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, proto := range protocols {
		msgs := collect(t, e.clients[proto], "text")
		if len(msgs) != 1 || msgs[0].GetStage() != transcoderv1.TranscodeStage_TRANSCODE_STAGE_FAILED ||
			!strings.Contains(msgs[0].GetError(), "not a decodable video") {
			t.Errorf("%s: failed transcode = %v", proto, msgs)
		}
		msgs = collect(t, e.clients[proto], "earlier")
		if len(msgs) != 1 || msgs[0].GetStage() != transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE || msgs[0].GetPercent() != 100 ||
			!slices.Equal(msgs[0].GetRenditions(), []string{"240p", "360p"}) {
			t.Errorf("%s: output on disk = %v, want DONE with the master's renditions", proto, msgs)
		}
		for id, code := range map[string]connect.Code{"never": connect.CodeNotFound, "../x": connect.CodeInvalidArgument} {
			s, err := e.clients[proto].WatchTranscode(t.Context(), &transcoderv1.WatchTranscodeRequest{VideoId: id})
			if err == nil {
				for s.Receive() {
					t.Errorf("%s: %s sent %v", proto, id, s.Msg())
				}
				err = s.Err()
				s.Close()
			}
			if connect.CodeOf(err) != code {
				t.Errorf("%s: watch %s = %v, want %v", proto, id, err, code)
			}
		}
	}
}

// TestJobTimeout runs a transcode longer than its job timeout: ffmpeg is killed, the call
// fails with deadline_exceeded naming the timeout, nothing is left in the HLS root, and
// watchers see FAILED.
func TestJobTimeout(t *testing.T) {
	if testClips.skip != "" {
		t.Skip(testClips.skip)
	}
	dataDir := t.TempDir()
	log := slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(io.Discard, nil)})
	svc := transcoder.New(log, transcoder.Config{DataDir: dataDir, JobTimeout: 1500 * time.Millisecond}, nil)
	srv := rpc.NewServer(log, nil)
	if err := svc.Mount(srv); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	client := transcoderv1connect.NewTranscoderServiceClient(ts.Client(), ts.URL)
	e := &env{dataDir: dataDir}
	e.upload(t, "slow", testClips.long)

	start := time.Now()
	_, err := client.Transcode(t.Context(), &transcoderv1.TranscodeRequest{VideoId: "slow"})
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded || !strings.Contains(err.Error(), "job timeout") {
		t.Fatalf("Transcode = %v, want deadline_exceeded naming the job timeout", err)
	}
	if elapsed := time.Since(start); elapsed > 30*time.Second {
		t.Errorf("timed-out transcode took %s to return", elapsed)
	}
	waitFor(t, 10*time.Second, "ffmpeg gone and output removed", func() bool {
		return len(ffmpegProcesses(t, dataDir)) == 0 && len(e.hlsEntries(t)) == 0
	})
	msgs := collect(t, client, "slow")
	if len(msgs) != 1 || msgs[0].GetStage() != transcoderv1.TranscodeStage_TRANSCODE_STAGE_FAILED || !strings.Contains(msgs[0].GetError(), "job timeout") {
		t.Errorf("watch after timeout = %v", msgs)
	}
}

// probeSize returns the width and height of the first video stream of a file as ffprobe
// reads it.
func probeSize(t *testing.T, path string) (int, int) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
		"-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var res struct {
		Streams []struct {
			Width  int `json:"width"`
			Height int `json:"height"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Streams) != 1 {
		t.Fatalf("ffprobe %s: %s (%v)", path, out, err)
	}
	return res.Streams[0].Width, res.Streams[0].Height
}
