package transcoder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/svc/media"
)

const (
	// segmentSeconds is the HLS target duration; keyframes every keyframeSeconds make
	// every segment start on a keyframe at the same instant in every rendition, so players
	// can switch rungs at any segment boundary.
	segmentSeconds  = 4
	keyframeSeconds = 2
	// thumbnailBox bounds both sides of the thumbnail; smaller sources are not upscaled.
	thumbnailBox = 640
	// maxFPS caps the output frame rate: faster sources are halved until they fit.
	maxFPS = 60
	// maxPlaylistBytes bounds how much of a playlist written by ffmpeg is read back.
	maxPlaylistBytes = 1 << 20
)

// output is one finished rendition as the master playlist lists it.
type output struct {
	Name          string
	Width, Height int
	// Bandwidth is the peak bits per second of any segment, AverageBandwidth the mean
	// over the whole rendition (RFC 8216 §4.3.4.2).
	Bandwidth        int64
	AverageBandwidth int64
	PlaylistPath     string
	Codecs           string
}

// transcode encodes src into a temporary folder next to the final one and swaps it in
// only when everything (renditions, master playlist, thumbnail, poster, MP4 download) is
// there; on any failure, cancellation or job timeout the temporary folder is removed, so
// a reader of hls/<id> sees either the previous complete output or the new complete one.
func (s *Service) transcode(ctx context.Context, id, jobID, src string, p probeResult) (outs []output, err error) {
	plan := planLadder(p, s.cfg.Ladder)
	names := make([]string, len(plan))
	for i, r := range plan {
		names[i] = r.Name
	}
	s.setStage(id, transcoderv1.TranscodeStage_TRANSCODE_STAGE_QUEUED, 0, names)
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	// The job timeout counts work, not the wait for a slot.
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.JobTimeout, ErrTimeout)
	defer cancel()
	defer func() {
		if err != nil && errors.Is(context.Cause(ctx), ErrTimeout) {
			err = fmt.Errorf("%w: killed after %s", ErrTimeout, s.cfg.JobTimeout)
		}
	}()

	root := media.HLSRoot(s.cfg.DataDir)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("create hls root: %w", err)
	}
	tmp, err := os.MkdirTemp(root, ".tmp-"+id+"-")
	if err != nil {
		return nil, fmt.Errorf("create temp folder: %w", err)
	}
	defer func() {
		if err == nil {
			return
		}
		if rmErr := os.RemoveAll(tmp); rmErr != nil {
			s.log.WarnContext(ctx, "transcode.cleanup", "video_id", id, "dir", tmp, "err", rmErr)
		}
	}()

	start := time.Now()
	s.log.InfoContext(ctx, "transcode.start", "video_id", id, "job_id", jobID,
		"renditions", len(plan), "duration", p.Duration, "width", p.Width, "height", p.Height)
	s.setStage(id, transcoderv1.TranscodeStage_TRANSCODE_STAGE_ENCODING, encodeStart, names)
	if err := s.encode(ctx, id, jobID, src, tmp, p, plan, names); err != nil {
		return nil, err
	}
	encoded := time.Now()
	top := plan[len(plan)-1]
	// Every rendition is encoded now; packaging checks them all and makes the stills and
	// download from the top one.
	s.setStage(id, transcoderv1.TranscodeStage_TRANSCODE_STAGE_PACKAGING, packageStart, names)
	if err := s.stills(ctx, src, tmp, p, top); err != nil {
		return nil, err
	}
	outs, err = s.checkOutput(ctx, tmp, p, plan)
	if err != nil {
		return nil, err
	}
	s.setStage(id, transcoderv1.TranscodeStage_TRANSCODE_STAGE_PACKAGING, packageStart+2, names)
	if err := s.download(ctx, tmp, top); err != nil {
		return nil, err
	}
	// A caller that has gone away gets nothing, as the RPC contract promises.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("chmod output: %w", err)
	}
	// ffmpeg reads the source through its open file, so a video deleted mid-run (its
	// source removed) still gets encoded to the end; its output must not outlive it.
	if err := s.sourceKept(id); err != nil {
		return nil, err
	}
	if err := s.swapIn(ctx, root, tmp, id); err != nil {
		return nil, err
	}
	// The deletion's cleanup removes the source before the output folder, so output
	// swapped in after that cleanup looked is caught here.
	if err := s.sourceKept(id); err != nil {
		if rmErr := os.RemoveAll(filepath.Join(root, id)); rmErr != nil {
			s.log.WarnContext(ctx, "transcode.cleanup", "video_id", id, "err", rmErr)
		}
		return nil, err
	}
	s.log.InfoContext(ctx, "transcode.done", "video_id", id, "job_id", jobID,
		"renditions", len(outs), "elapsed", time.Since(start), "encode", encoded.Sub(start), "package", time.Since(encoded))
	return outs, nil
}

// encode makes every rendition in one ffmpeg run: the source is decoded once and split.
func (s *Service) encode(ctx context.Context, id, jobID, src, dir string, p probeResult, plan []rendition, names []string) error {
	onLine, stop := s.reportProgress(ctx, id, jobID, p.Duration, names)
	defer stop()
	return s.run(ctx, s.cfg.FFmpegPath, encodeArgs(src, dir, p, plan), &lineWriter{fn: onLine}, src)
}

// outputFPS is the constant frame rate of the renditions: the source's average rate
// (variable-rate phone video becomes constant so the GOP is a fixed number of frames),
// halved until it is at most maxFPS.
func outputFPS(p probeResult) float64 {
	fps := p.FPS
	if fps <= 0 {
		fps = 30
	}
	for fps > maxFPS {
		fps /= 2
	}
	return fps
}

// EncodeCommand returns the ffmpeg arguments Transcode would run to encode the video's
// source into dir. The benchmark runs it by hand as the baseline of the pipeline's wall
// time.
func (s *Service) EncodeCommand(ctx context.Context, id, dir string) ([]string, error) {
	src, err := s.source(id)
	if err != nil {
		return nil, err
	}
	p, err := s.probe(ctx, src)
	if err != nil {
		return nil, err
	}
	return encodeArgs(src, dir, p, planLadder(p, s.cfg.Ladder)), nil
}

// encodeArgs builds the ffmpeg command line of encode.
func encodeArgs(src, dir string, p probeResult, plan []rendition) []string {
	fps := outputFPS(p)
	var graph strings.Builder
	n := len(plan)
	fmt.Fprintf(&graph, "[0:v:0]fps=%s", strconv.FormatFloat(fps, 'f', 3, 64))
	if n == 1 {
		graph.WriteString("[s0];")
	} else {
		fmt.Fprintf(&graph, ",split=%d", n)
		for i := range n {
			fmt.Fprintf(&graph, "[s%d]", i)
		}
		graph.WriteString(";")
	}
	for i, r := range plan {
		if i > 0 {
			graph.WriteString(";")
		}
		fmt.Fprintf(&graph, "[s%d]scale=%d:%d,setsar=1,format=yuv420p[v%d]", i, r.Width, r.Height, i)
	}

	gop := strconv.Itoa(max(1, int(math.Round(fps*keyframeSeconds))))
	args := []string{"-nostdin", "-hide_banner", "-v", "error", "-y", "-i", src, "-filter_complex", graph.String()}
	streamMap := make([]string, 0, n)
	for i, r := range plan {
		args = append(args, "-map", fmt.Sprintf("[v%d]", i))
		entry := fmt.Sprintf("v:%d", i)
		if p.HasAudio {
			args = append(args, "-map", "0:a:0")
			entry += fmt.Sprintf(",a:%d", i)
		}
		streamMap = append(streamMap, entry+",name:"+r.Name)
	}
	args = append(args,
		"-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
		"-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
		"-force_key_frames", fmt.Sprintf("expr:gte(t,n_forced*%d)", keyframeSeconds),
	)
	for i, r := range plan {
		idx := strconv.Itoa(i)
		args = append(args,
			"-b:v:"+idx, strconv.FormatInt(r.VideoBitrate, 10),
			"-maxrate:v:"+idx, strconv.FormatInt(r.VideoBitrate*107/100, 10),
			"-bufsize:v:"+idx, strconv.FormatInt(r.VideoBitrate*3/2, 10),
		)
	}
	if p.HasAudio {
		args = append(args, "-c:a", "aac", "-b:a", strconv.Itoa(audioBitrate), "-ac", "2", "-ar", "48000")
	}
	args = append(args,
		"-f", "hls",
		"-hls_time", strconv.Itoa(segmentSeconds),
		"-hls_playlist_type", "vod",
		"-hls_segment_filename", filepath.Join(dir, "%v", media.SegmentPattern),
		"-var_stream_map", strings.Join(streamMap, " "),
		"-progress", "pipe:1", "-nostats",
		filepath.Join(dir, "%v", media.VariantPlaylist),
	)
	return args
}

// stills makes the poster (a full-size JPEG at the top rendition's size) and the
// thumbnail (the same frame, the poster fitted into thumbnailBox) in one ffmpeg run. The frame comes
// from inside the video: ffmpeg's thumbnail filter picks the most representative of about
// a second of frames starting at a third of the duration, past most intros and fades,
// which skips black and flash frames. When seeking there yields nothing (a damaged tail),
// the first second is used.
func (s *Service) stills(ctx context.Context, src, dir string, p probeResult, top rendition) error {
	tw, th := thumbnailSize(top)
	poster, thumb := filepath.Join(dir, media.Poster), filepath.Join(dir, media.Thumbnail)
	window := max(1, min(int(math.Round(outputFPS(p))), 30))
	graph := fmt.Sprintf("[0:v:0]thumbnail=%d,split=2[a][b];[a]scale=%d:%d,setsar=1[p];[b]scale=%d:%d,setsar=1[t]",
		window, top.Width, top.Height, tw, th)
	for _, at := range []float64{p.Duration / 3, 0} {
		args := []string{"-nostdin", "-hide_banner", "-v", "error", "-y",
			"-ss", strconv.FormatFloat(at, 'f', 3, 64), "-i", src, "-filter_complex", graph,
			"-map", "[p]", "-frames:v", "1", "-q:v", "3", "-f", "image2", "-c:v", "mjpeg", poster,
			"-map", "[t]", "-frames:v", "1", "-q:v", "4", "-f", "image2", "-c:v", "mjpeg", thumb}
		if err := s.run(ctx, s.cfg.FFmpegPath, args, io.Discard, src); err != nil {
			return err
		}
		if nonEmpty(poster) && nonEmpty(thumb) {
			return nil
		}
	}
	return fmt.Errorf("%w: no frame for a thumbnail", ErrUndecodable)
}

func nonEmpty(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Size() > 0
}

// download remuxes the top rendition's segments, without re-encoding, into a progressive
// MP4 with its index at the front (faststart), for players and tools that do not speak
// HLS.
func (s *Service) download(ctx context.Context, dir string, top rendition) error {
	playlist := filepath.Join(dir, top.Name, media.VariantPlaylist)
	args := []string{"-nostdin", "-hide_banner", "-v", "error", "-y", "-i", playlist,
		"-map", "0", "-c", "copy", "-bsf:a", "aac_adtstoasc", "-movflags", "+faststart",
		"-f", "mp4", filepath.Join(dir, media.Download)}
	if err := s.run(ctx, s.cfg.FFmpegPath, args, io.Discard, ""); err != nil {
		return outputError("make mp4 download", err)
	}
	return nil
}

// outputError wraps the failure of a tool reading the transcoder's own output: that is
// not the source's fault, so ErrUndecodable is dropped (context errors are kept).
func outputError(what string, err error) error {
	if errors.Is(err, ErrUndecodable) {
		return fmt.Errorf("%s: %s", what, err.Error())
	}
	return fmt.Errorf("%s: %w", what, err)
}

// checkOutput verifies what ffmpeg wrote (a complete VOD variant playlist with segments
// for every planned rendition) and writes the master playlist itself, so every variant
// has BANDWIDTH (the peak segment bit rate, measured), AVERAGE-BANDWIDTH, RESOLUTION,
// FRAME-RATE and CODECS (read from the first segment), and the master never carries the
// media playlist tags #EXT-X-PLAYLIST-TYPE or #EXT-X-ENDLIST.
func (s *Service) checkOutput(ctx context.Context, dir string, p probeResult, plan []rendition) ([]output, error) {
	outs := make([]output, len(plan))
	for i, r := range plan {
		uri := r.Name + "/" + media.VariantPlaylist
		segs, err := readVariant(filepath.Join(dir, r.Name, media.VariantPlaylist))
		if err != nil {
			return nil, err
		}
		peak, avg, err := measureBandwidth(filepath.Join(dir, r.Name), segs)
		if err != nil {
			return nil, err
		}
		codecs, err := s.segmentCodecs(ctx, filepath.Join(dir, r.Name, segs[0].uri), p.HasAudio)
		if err != nil {
			return nil, err
		}
		outs[i] = output{Name: r.Name, Width: r.Width, Height: r.Height, Bandwidth: peak,
			AverageBandwidth: avg, PlaylistPath: uri, Codecs: codecs}
	}
	if err := writeMaster(filepath.Join(dir, media.MasterPlaylist), outs, outputFPS(p)); err != nil {
		return nil, err
	}
	return outs, nil
}

// segment is one entry of a variant playlist.
type segment struct {
	uri      string
	duration float64
}

// readVariant checks a variant playlist is a finished VOD playlist and returns its
// segments.
func readVariant(path string) ([]segment, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read variant playlist: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPlaylistBytes))
	if err != nil {
		return nil, fmt.Errorf("read variant playlist: %w", err)
	}
	name := filepath.Base(filepath.Dir(path))
	text := string(b)
	if !strings.Contains(text, "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.Contains(text, "#EXT-X-ENDLIST") {
		return nil, fmt.Errorf("variant playlist %s is not a complete VOD playlist", name)
	}
	var (
		segs []segment
		dur  = -1.0
	)
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "#EXTINF:"); ok {
			v, _, _ = strings.Cut(v, ",")
			if dur, err = strconv.ParseFloat(v, 64); err != nil || dur < 0 {
				return nil, fmt.Errorf("variant playlist %s: bad #EXTINF %q", name, line)
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if dur < 0 || strings.ContainsAny(line, "/\\") || strings.HasPrefix(line, ".") {
			return nil, fmt.Errorf("variant playlist %s: unexpected entry %q", name, line)
		}
		segs = append(segs, segment{uri: line, duration: dur})
		dur = -1
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("variant playlist %s has no segments", name)
	}
	return segs, nil
}

// measureBandwidth returns the peak and the average bits per second of a rendition's
// segments as they travel (container overhead included).
func measureBandwidth(dir string, segs []segment) (peak, avg int64, err error) {
	var bits, seconds float64
	for _, sg := range segs {
		fi, err := os.Stat(filepath.Join(dir, sg.uri))
		if err != nil {
			return 0, 0, fmt.Errorf("segment: %w", err)
		}
		b := float64(fi.Size()) * 8
		bits += b
		seconds += sg.duration
		// Bit rates of slivers shorter than a frame would be meaningless spikes.
		if d := max(sg.duration, 0.1); b/d > float64(peak) {
			peak = int64(math.Ceil(b / d))
		}
	}
	if seconds > 0 {
		avg = int64(math.Ceil(bits / seconds))
	}
	return peak, min(avg, peak), nil
}

// writeMaster writes the master playlist of outs.
func writeMaster(path string, outs []output, fps float64) error {
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n")
	for _, o := range outs {
		fmt.Fprintf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%d,AVERAGE-BANDWIDTH=%d,RESOLUTION=%dx%d,FRAME-RATE=%.3f,CODECS=\"%s\"\n%s\n",
			o.Bandwidth, o.AverageBandwidth, o.Width, o.Height, fps, o.Codecs, o.PlaylistPath)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write master playlist: %w", err)
	}
	return nil
}

// segmentCodecs derives the RFC 6381 codecs of a segment from its H.264 profile and level
// (avc1.PPCCLL) plus AAC-LC when the rendition has sound.
func (s *Service) segmentCodecs(ctx context.Context, seg string, hasAudio bool) (string, error) {
	var stdout strings.Builder
	args := []string{"-v", "error", "-select_streams", "v:0", "-show_entries", "stream=profile,level", "-print_format", "json", seg}
	if err := s.run(ctx, s.cfg.FFprobePath, args, &stdout, ""); err != nil {
		return "", outputError("probe segment", err)
	}
	var out struct {
		Streams []struct {
			Profile string `json:"profile"`
			Level   int    `json:"level"`
		} `json:"streams"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &out); err != nil || len(out.Streams) == 0 {
		return "", errors.New("probe segment: no video stream")
	}
	return avcCodecs(out.Streams[0].Profile, out.Streams[0].Level, hasAudio), nil
}

// avcCodecs formats avc1.PPCCLL: profile_idc, constraint flags and level_idc in hex.
func avcCodecs(profile string, level int, hasAudio bool) string {
	pc := "6400" // High
	switch profile {
	case "Constrained Baseline":
		pc = "42e0"
	case "Baseline":
		pc = "4200"
	case "Main":
		pc = "4d00"
	}
	c := fmt.Sprintf("avc1.%s%02x", pc, level)
	if hasAudio {
		c += ",mp4a.40.2"
	}
	return c
}

// sourceKept fails with ErrNotFound when the video's source has been removed since the
// transcode began: the video was deleted.
func (s *Service) sourceKept(id string) error {
	if _, err := s.source(id); err != nil {
		return fmt.Errorf("%w (removed while transcoding: the video was deleted)", err)
	}
	return nil
}

// swapIn moves the finished folder to hls/<id>. A previous output is first renamed aside
// (a directory cannot be renamed over a non-empty one), then removed; if the final rename
// fails the previous output is put back.
func (s *Service) swapIn(ctx context.Context, root, tmp, id string) error {
	final := filepath.Join(root, id)
	var aside string
	switch _, err := os.Lstat(final); {
	case err == nil:
		aside = filepath.Join(root, ".old-"+id+"-"+randomSuffix())
		if err := os.Rename(final, aside); err != nil {
			return fmt.Errorf("move previous output aside: %w", err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("stat previous output: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if aside != "" {
			if rerr := os.Rename(aside, final); rerr != nil {
				s.log.ErrorContext(ctx, "transcode.restore", "video_id", id, "err", rerr)
			}
		}
		return fmt.Errorf("move output into place: %w", err)
	}
	if aside != "" {
		if err := os.RemoveAll(aside); err != nil {
			s.log.WarnContext(ctx, "transcode.cleanup", "video_id", id, "dir", aside, "err", err)
		}
	}
	return nil
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
