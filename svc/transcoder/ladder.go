package transcoder

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// ErrLadder reports a ladder specification that cannot be used.
var ErrLadder = errors.New("transcoder: invalid ladder")

// Rung is one step of the HLS ladder. The number in the name is the short side of the
// picture: the height of landscape video, the width of portrait video, so a phone's
// 1080x1920 clip gets a "1080p" rendition like a 1920x1080 one.
type Rung struct {
	Name  string
	Short int
	// VideoBitrate is the libx264 target in bits per second; maxrate and bufsize derive
	// from it, and renditions with sound add audioBitrate.
	VideoBitrate int64
}

// StandardLadder is the default set of rungs. Bitrates (H.264 High, veryfast, up to
// 30 fps) follow Apple's HLS authoring guidance for 16:9 video:
//
//	rung    landscape    video kbps
//	240p    426x240        400
//	360p    640x360        800
//	480p    854x480       1400
//	720p   1280x720       2800
//	1080p  1920x1080      5000
//
// Audio is AAC-LC stereo, 48 kHz, 128 kbps in every rendition with sound.
func StandardLadder() []Rung {
	return []Rung{
		{Name: "240p", Short: 240, VideoBitrate: 400_000},
		{Name: "360p", Short: 360, VideoBitrate: 800_000},
		{Name: "480p", Short: 480, VideoBitrate: 1_400_000},
		{Name: "720p", Short: 720, VideoBitrate: 2_800_000},
		{Name: "1080p", Short: 1080, VideoBitrate: 5_000_000},
	}
}

// ParseLadder reads a ladder specification: comma-separated rungs, each a name of the
// standard ladder ("720p") or a name with a video bitrate ("720p=3000k", "2160p=16M").
// An empty spec is the standard ladder. Rungs come back ordered by size, lowest first.
func ParseLadder(spec string) ([]Rung, error) {
	if strings.TrimSpace(spec) == "" {
		return StandardLadder(), nil
	}
	std := StandardLadder()
	var out []Rung
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		name, rate, hasRate := strings.Cut(item, "=")
		short, err := strconv.Atoi(strings.TrimSuffix(name, "p"))
		if err != nil || !strings.HasSuffix(name, "p") || short < 16 || short > 4320 {
			return nil, fmt.Errorf("%w: rung %q is not like 720p", ErrLadder, item)
		}
		r := Rung{Name: name, Short: short &^ 1}
		if i := slices.IndexFunc(std, func(s Rung) bool { return s.Name == name }); i >= 0 {
			r.VideoBitrate = std[i].VideoBitrate
		}
		if hasRate {
			if r.VideoBitrate, err = parseBitrate(rate); err != nil {
				return nil, fmt.Errorf("%w: rung %q: %w", ErrLadder, item, err)
			}
		}
		if r.VideoBitrate == 0 {
			return nil, fmt.Errorf("%w: rung %q needs a bitrate (%s=1500k)", ErrLadder, item, name)
		}
		if slices.ContainsFunc(out, func(o Rung) bool { return o.Short == r.Short }) {
			return nil, fmt.Errorf("%w: rung %q listed twice", ErrLadder, item)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Rung) int { return a.Short - b.Short })
	return out, nil
}

// parseBitrate reads "800000", "800k" or "5M" as bits per second.
func parseBitrate(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1_000, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "M"):
		mult, s = 1_000_000, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > 1_000_000_000/mult {
		return 0, fmt.Errorf("bitrate %q is not a positive number like 800k", s)
	}
	return n * mult, nil
}

// audioBitrate is the AAC bitrate of every rendition that has sound.
const audioBitrate = 128_000

// rendition is one planned output of a transcode.
type rendition struct {
	Name          string
	Width, Height int
	VideoBitrate  int64
}

// planLadder picks the renditions of a source: every rung of ladder not larger than the
// source (no upscaling); when the source is smaller than every rung, one rendition at the
// source's own size with the lowest rung's bitrate.
func planLadder(p probeResult, ladder []Rung) []rendition {
	short := p.Height
	if p.Aspect < 1 {
		short = p.Width
	}
	var rungs []Rung
	for _, r := range ladder {
		if r.Short <= short {
			rungs = append(rungs, r)
		}
	}
	if len(rungs) == 0 {
		// Round down: even the last pixel row must not be invented.
		s := max(short&^1, 2)
		rungs = append(rungs, Rung{Name: fmt.Sprintf("%dp", s), Short: s, VideoBitrate: ladder[0].VideoBitrate})
	}
	out := make([]rendition, 0, len(rungs))
	for _, r := range rungs {
		w, h := sizeFor(r.Short, p.Aspect)
		out = append(out, rendition{Name: r.Name, Width: w, Height: h, VideoBitrate: r.VideoBitrate})
	}
	return out
}

// sizeFor returns the even-sized picture whose short side is short, at aspect (w/h).
func sizeFor(short int, aspect float64) (w, h int) {
	if aspect >= 1 {
		return max(even(float64(short)*aspect), 2), short
	}
	return short, max(even(float64(short)/aspect), 2)
}

// thumbnailSize fits the top rendition's picture (the poster's size) into a thumbnailBox
// square without upscaling, keeping its aspect and even sides. Fitting the rendition
// rather than the source keeps the thumbnail from being larger than the video: an odd
// 321x241 source has a 320x240 top rendition, whose thumbnail is 320x240 too.
func thumbnailSize(top rendition) (w, h int) {
	fw, fh := float64(top.Width), float64(top.Height)
	scale := min(1, thumbnailBox/fw, thumbnailBox/fh)
	return min(max(even(fw*scale), 2), top.Width), min(max(even(fh*scale), 2), top.Height)
}

// even rounds to the nearest even integer, as H.264 4:2:0 needs even dimensions.
func even(x float64) int {
	return int(math.Round(x/2)) * 2
}
