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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/media"
)

const (
	// segmentSeconds is the HLS target duration; keyframes every keyframeSeconds make
	// every segment start on a keyframe at the same instant in every rendition, so players
	// can switch rungs at any segment boundary.
	segmentSeconds  = 4
	keyframeSeconds = 2
	// thumbnailWidth is the widest thumbnail made; smaller sources are not upscaled.
	thumbnailWidth = 640
	// maxPlaylistBytes bounds how much of a playlist written by ffmpeg is read back.
	maxPlaylistBytes = 1 << 20
)

// output is one finished rendition as the master playlist lists it.
type output struct {
	Name          string
	Width, Height int
	Bandwidth     int64
	PlaylistPath  string
	Codecs        string
}

// transcode encodes src into a temporary folder next to the final one and swaps it in
// only when everything (renditions, master playlist, thumbnail) is there; on any failure
// or cancellation the temporary folder is removed, so a reader of hls/<id> sees either the
// previous complete output or the new complete one.
func (s *Service) transcode(ctx context.Context, id, jobID, src string, p probeResult) (outs []output, err error) {
	plan := planLadder(p)
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()

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
	if err := s.encode(ctx, id, jobID, src, tmp, p, plan); err != nil {
		return nil, err
	}
	if err := s.thumbnail(ctx, src, tmp, p); err != nil {
		return nil, err
	}
	outs, err = s.checkOutput(ctx, tmp, p, plan)
	if err != nil {
		return nil, err
	}
	// A caller that has gone away gets nothing, as the RPC contract promises.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("chmod output: %w", err)
	}
	if err := s.swapIn(ctx, root, tmp, id); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "transcode.done", "video_id", id, "job_id", jobID,
		"renditions", len(outs), "elapsed", time.Since(start))
	return outs, nil
}

// encode makes every rendition in one ffmpeg run: the source is decoded once and split.
func (s *Service) encode(ctx context.Context, id, jobID, src, dir string, p probeResult, plan []rendition) error {
	onLine, stop := s.reportProgress(ctx, id, jobID, p.Duration)
	defer stop()
	return s.run(ctx, s.cfg.FFmpegPath, encodeArgs(src, dir, p, plan), &lineWriter{fn: onLine}, src)
}

// encodeArgs builds the ffmpeg command line of encode.
func encodeArgs(src, dir string, p probeResult, plan []rendition) []string {
	var graph strings.Builder
	n := len(plan)
	if n == 1 {
		graph.WriteString("[0:v:0]null[s0];")
	} else {
		fmt.Fprintf(&graph, "[0:v:0]split=%d", n)
		for i := range n {
			fmt.Fprintf(&graph, "[s%d]", i)
		}
		graph.WriteString(";")
	}
	for i, r := range plan {
		if i > 0 {
			graph.WriteString(";")
		}
		fmt.Fprintf(&graph, "[s%d]scale=%d:%d,setsar=1[v%d]", i, r.Width, r.Height, i)
	}

	gop := strconv.Itoa(max(1, int(p.FPS*keyframeSeconds+0.5)))
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
		"-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
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
		args = append(args, "-c:a", "aac", "-b:a", strconv.Itoa(audioBitrate), "-ac", "2")
	}
	args = append(args,
		"-f", "hls",
		"-hls_time", strconv.Itoa(segmentSeconds),
		"-hls_playlist_type", "vod",
		"-hls_segment_filename", filepath.Join(dir, "%v", media.SegmentPattern),
		"-master_pl_name", media.MasterPlaylist,
		"-var_stream_map", strings.Join(streamMap, " "),
		"-progress", "pipe:1", "-nostats",
		filepath.Join(dir, "%v", media.VariantPlaylist),
	)
	return args
}

// reportProgress turns ffmpeg's -progress lines into transcode.progress events, at most
// one per ProgressInterval. Publishing is best effort and never slows ffmpeg: lines only
// update the latest value, a separate goroutine publishes it.
func (s *Service) reportProgress(ctx context.Context, id, jobID string, duration float64) (onLine func(string), stop func()) {
	if s.pub == nil || duration <= 0 {
		return func(string) {}, func() {}
	}
	latest := make(chan float64, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(s.cfg.ProgressInterval)
		defer tick.Stop()
		pending, sent := -1.0, -1.0
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case pct := <-latest:
				pending = pct
			case <-tick.C:
				if pending < 0 || pending == sent {
					continue
				}
				sent = pending
				pctx, cancel := context.WithTimeout(ctx, s.cfg.ProgressInterval+time.Second)
				err := s.pub.Publish(pctx, events.TranscodeProgress(eventSource, id, jobID, sent, ""))
				cancel()
				if err != nil {
					s.log.WarnContext(ctx, "progress.publish", "video_id", id, "err", err)
				}
			}
		}
	}()
	onLine = func(line string) {
		v, ok := strings.CutPrefix(line, "out_time_us=")
		if !ok {
			return
		}
		us, err := strconv.ParseInt(v, 10, 64)
		if err != nil || us < 0 {
			return
		}
		pct := min(100, float64(us)/(duration*1e6)*100)
		select { // keep only the newest value
		case <-latest:
		default:
		}
		select {
		case latest <- pct:
		default:
		}
	}
	stop = func() {
		close(quit)
		<-done
	}
	return onLine, stop
}

// thumbnail grabs one frame at a third of the duration (past most intros and fades),
// falling back to the first frame when seeking yields nothing.
func (s *Service) thumbnail(ctx context.Context, src, dir string, p probeResult) error {
	w, h := thumbnailSize(p)
	out := filepath.Join(dir, media.Thumbnail)
	for _, at := range []float64{p.Duration / 3, 0} {
		args := []string{"-nostdin", "-hide_banner", "-v", "error", "-y",
			"-ss", strconv.FormatFloat(at, 'f', 3, 64), "-i", src,
			"-frames:v", "1", "-vf", fmt.Sprintf("scale=%d:%d,setsar=1", w, h), "-q:v", "3",
			"-f", "image2", "-c:v", "mjpeg", out}
		if err := s.run(ctx, s.cfg.FFmpegPath, args, io.Discard, src); err != nil {
			return err
		}
		if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
			return nil
		}
	}
	return fmt.Errorf("%w: no frame for a thumbnail", ErrUndecodable)
}

// checkOutput verifies what ffmpeg wrote: a master playlist listing every planned
// rendition with BANDWIDTH, RESOLUTION and CODECS, and complete VOD variant playlists.
// When ffmpeg left CODECS out, the master playlist is rewritten with codecs read from the
// segments.
func (s *Service) checkOutput(ctx context.Context, dir string, p probeResult, plan []rendition) ([]output, error) {
	variants, err := readMaster(filepath.Join(dir, media.MasterPlaylist))
	if err != nil {
		return nil, err
	}
	if len(variants) != len(plan) {
		return nil, fmt.Errorf("master playlist lists %d variants, want %d", len(variants), len(plan))
	}
	rewrite := false
	outs := make([]output, len(plan))
	for i, r := range plan {
		v := variants[i]
		want := r.Name + "/" + media.VariantPlaylist
		if v.URI != want {
			return nil, fmt.Errorf("master playlist variant %d is %q, want %q", i, v.URI, want)
		}
		if err := checkVariant(filepath.Join(dir, filepath.FromSlash(v.URI))); err != nil {
			return nil, err
		}
		if v.Width == 0 || v.Height == 0 {
			v.Width, v.Height = r.Width, r.Height
			rewrite = true
		}
		if v.Codecs == "" {
			seg := filepath.Join(dir, r.Name, fmt.Sprintf(media.SegmentPattern, 0))
			if v.Codecs, err = s.segmentCodecs(ctx, seg, p.HasAudio); err != nil {
				return nil, err
			}
			rewrite = true
		}
		outs[i] = output{Name: r.Name, Width: v.Width, Height: v.Height, Bandwidth: v.Bandwidth, PlaylistPath: v.URI, Codecs: v.Codecs}
	}
	if rewrite {
		if err := writeMaster(filepath.Join(dir, media.MasterPlaylist), outs); err != nil {
			return nil, err
		}
	}
	return outs, nil
}

func readMaster(path string) ([]media.Variant, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open master playlist: %w", err)
	}
	defer f.Close()
	variants, err := media.ParseMaster(io.LimitReader(f, maxPlaylistBytes))
	if err != nil {
		return nil, fmt.Errorf("read master playlist: %w", err)
	}
	return variants, nil
}

// checkVariant makes sure a variant playlist is a finished VOD playlist with a segment.
func checkVariant(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read variant playlist: %w", err)
	}
	text := string(b)
	if !strings.Contains(text, "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.Contains(text, "#EXT-X-ENDLIST") {
		return fmt.Errorf("variant playlist %s is not a complete VOD playlist", filepath.Base(filepath.Dir(path)))
	}
	if !strings.Contains(text, ".ts") {
		return fmt.Errorf("variant playlist %s has no segments", filepath.Base(filepath.Dir(path)))
	}
	return nil
}

// writeMaster writes a master playlist for outs (only needed when ffmpeg's lacks fields).
func writeMaster(path string, outs []output) error {
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n")
	for _, o := range outs {
		fmt.Fprintf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%d,RESOLUTION=%dx%d,CODECS=\"%s\"\n%s\n\n",
			o.Bandwidth, o.Width, o.Height, o.Codecs, o.PlaylistPath)
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
		return "", fmt.Errorf("probe segment: %w", err)
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
