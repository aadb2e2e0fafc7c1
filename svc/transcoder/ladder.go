package transcoder

import (
	"fmt"
	"math"
)

// rung is one step of the HLS ladder. The number in the name is the short side of the
// picture: the height of landscape video, the width of portrait video, so a phone's
// 1080x1920 clip gets a "1080p" rendition like a 1920x1080 one.
type rung struct {
	name  string
	short int
	// videoBitrate is the libx264 target in bits per second; maxrate and bufsize derive
	// from it and the audio adds audioBitrate.
	videoBitrate int64
}

// Bitrates (H.264 High, veryfast, ~30 fps) follow Apple's HLS authoring guidance, trimmed
// to three rungs because the machine encodes every rung in one pass on two cores:
//
//	240p   400 kbps  only for sources shorter than 360 lines
//	360p   800 kbps
//	720p  2800 kbps
//	1080p 5000 kbps
//
// Audio is AAC-LC stereo at 128 kbps in every rendition.
func standardRungs() []rung {
	return []rung{
		{name: "360p", short: 360, videoBitrate: 800_000},
		{name: "720p", short: 720, videoBitrate: 2_800_000},
		{name: "1080p", short: 1080, videoBitrate: 5_000_000},
	}
}

// lowRung serves sources too small for any standard rung.
func lowRung() rung { return rung{name: "240p", short: 240, videoBitrate: 400_000} }

// audioBitrate is the AAC bitrate of every rendition that has sound.
const audioBitrate = 128_000

// rendition is one planned output of a transcode.
type rendition struct {
	Name          string
	Width, Height int
	VideoBitrate  int64
}

// planLadder picks the renditions of a source: every standard rung not larger than the
// source (no upscaling); 240p when the source is under 360 lines; and, for sources under
// 240 lines, one rendition at the source's own size.
func planLadder(p probeResult) []rendition {
	landscape := p.Aspect >= 1
	short := p.Height
	if !landscape {
		short = p.Width
	}
	var rungs []rung
	for _, r := range standardRungs() {
		if r.short <= short {
			rungs = append(rungs, r)
		}
	}
	if low := lowRung(); len(rungs) == 0 && low.short <= short {
		rungs = append(rungs, low)
	}
	if len(rungs) == 0 {
		// Round down: even the last pixel row must not be invented.
		s := max(short&^1, 2)
		rungs = append(rungs, rung{name: fmt.Sprintf("%dp", s), short: s, videoBitrate: lowRung().videoBitrate})
	}
	out := make([]rendition, 0, len(rungs))
	for _, r := range rungs {
		w, h := sizeFor(r.short, p.Aspect)
		out = append(out, rendition{Name: r.name, Width: w, Height: h, VideoBitrate: r.videoBitrate})
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

// thumbnailSize fits the display picture into thumbnailWidth columns without upscaling.
func thumbnailSize(p probeResult) (w, h int) {
	displayWidth := float64(p.Height) * p.Aspect
	w = max(even(min(displayWidth, thumbnailWidth)), 2)
	return w, max(even(float64(w)/p.Aspect), 2)
}

// even rounds to the nearest even integer, as H.264 4:2:0 needs even dimensions.
func even(x float64) int {
	return int(math.Round(x/2)) * 2
}
