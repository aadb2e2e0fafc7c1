package transcoder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/reelway/reelway/svc/media"
)

// probeTimeout bounds one ffprobe run: it reads headers only, so a longer run means a
// pathological input rather than a big one.
const probeTimeout = time.Minute

// probeResult is what the transcoder knows about a source.
type probeResult struct {
	Duration float64
	// Width and Height are as displayed: swapped when the stream is rotated by 90°.
	Width, Height int
	// Aspect is the display aspect ratio (width over height), including the sample
	// aspect ratio of anamorphic sources.
	Aspect     float64
	FPS        float64
	VideoCodec string
	AudioCodec string
	HasAudio   bool
	// Size is the source file's size in bytes and BitRate its overall bits per second
	// (0 when ffprobe cannot tell).
	Size    int64
	BitRate int64
}

// ffprobeOutput is the subset of `ffprobe -print_format json -show_format -show_streams`
// the transcoder reads.
type ffprobeOutput struct {
	Streams []struct {
		CodecType         string            `json:"codec_type"`
		CodecName         string            `json:"codec_name"`
		Width             int               `json:"width"`
		Height            int               `json:"height"`
		SampleAspectRatio string            `json:"sample_aspect_ratio"`
		AvgFrameRate      string            `json:"avg_frame_rate"`
		RFrameRate        string            `json:"r_frame_rate"`
		Duration          string            `json:"duration"`
		Tags              map[string]string `json:"tags"`
		SideDataList      []sideData        `json:"side_data_list"`
		Disposition       struct {
			AttachedPic int `json:"attached_pic"`
		} `json:"disposition"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
		Size     string `json:"size"`
		BitRate  string `json:"bit_rate"`
	} `json:"format"`
}

// sideData is one entry of a stream's side data; only the display matrix has a rotation.
type sideData struct {
	Rotation float64 `json:"rotation"`
}

// source returns the path of a video's uploaded source, checking that it exists.
func (s *Service) source(id string) (string, error) {
	src, err := media.SourcePath(s.cfg.DataDir, id)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(src)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%w: video %s", ErrNotFound, id)
	case err != nil:
		return "", fmt.Errorf("stat source: %w", err)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("%w: video %s", ErrNotFound, id)
	}
	return src, nil
}

// probe runs ffprobe on src. Anything ffprobe cannot read, and anything without a video
// stream of known size and duration, is ErrUndecodable.
func (s *Service) probe(ctx context.Context, src string) (probeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var stdout bytes.Buffer
	args := []string{"-v", "error", "-print_format", "json", "-show_format", "-show_streams", src}
	if err := s.run(ctx, s.cfg.FFprobePath, args, &stdout, src); err != nil {
		return probeResult{}, err
	}
	var out ffprobeOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return probeResult{}, fmt.Errorf("decode ffprobe output: %w", err)
	}
	return parseProbe(out)
}

func parseProbe(out ffprobeOutput) (probeResult, error) {
	var p probeResult
	video := -1
	for i, st := range out.Streams {
		switch st.CodecType {
		case "video":
			// Cover art in audio files is a one-picture "video" stream.
			if video < 0 && st.Disposition.AttachedPic == 0 {
				video = i
			}
		case "audio":
			if !p.HasAudio {
				p.HasAudio = true
				p.AudioCodec = st.CodecName
			}
		}
	}
	if video < 0 {
		return probeResult{}, fmt.Errorf("%w: no video stream", ErrUndecodable)
	}
	v := out.Streams[video]
	if v.Width <= 0 || v.Height <= 0 {
		return probeResult{}, fmt.Errorf("%w: video stream has no dimensions", ErrUndecodable)
	}
	p.VideoCodec = v.CodecName
	p.Width, p.Height = v.Width, v.Height
	sar := ratio(v.SampleAspectRatio, ":")
	if sar <= 0 || math.IsInf(sar, 0) {
		sar = 1
	}
	p.Aspect = float64(v.Width) * sar / float64(v.Height)
	if rotated(v.SideDataList, v.Tags) {
		p.Width, p.Height = p.Height, p.Width
		p.Aspect = 1 / p.Aspect
	}
	p.FPS = ratio(v.AvgFrameRate, "/")
	if p.FPS <= 0 || p.FPS > 1000 {
		p.FPS = ratio(v.RFrameRate, "/")
	}
	if p.FPS <= 0 || p.FPS > 1000 {
		p.FPS = 30
	}
	p.Duration = seconds(out.Format.Duration)
	if p.Duration <= 0 {
		p.Duration = seconds(v.Duration)
	}
	if p.Duration <= 0 {
		return probeResult{}, fmt.Errorf("%w: unknown duration", ErrUndecodable)
	}
	p.Size, _ = strconv.ParseInt(out.Format.Size, 10, 64)
	p.BitRate, _ = strconv.ParseInt(out.Format.BitRate, 10, 64)
	p.Size, p.BitRate = max(p.Size, 0), max(p.BitRate, 0)
	return p, nil
}

// rotated reports a quarter turn, from the display matrix side data (ffmpeg ≥ 5) or the
// older "rotate" tag. Decoding auto-rotates, so such a stream is displayed with its width
// and height swapped.
func rotated(side []sideData, tags map[string]string) bool {
	deg := 0.0
	for _, sd := range side {
		if sd.Rotation != 0 {
			deg = sd.Rotation
			break
		}
	}
	if deg == 0 {
		if t, err := strconv.ParseFloat(tags["rotate"], 64); err == nil {
			deg = t
		}
	}
	quarter := int(math.Round(deg / 90))
	return quarter%2 != 0
}

// ratio parses "a/b" (or "a:b"); 0 when malformed.
func ratio(s, sep string) float64 {
	a, b, ok := strings.Cut(s, sep)
	if !ok {
		return 0
	}
	n, err1 := strconv.ParseFloat(a, 64)
	d, err2 := strconv.ParseFloat(b, 64)
	if err1 != nil || err2 != nil || d == 0 {
		return 0
	}
	return n / d
}

func seconds(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0
	}
	return f
}
