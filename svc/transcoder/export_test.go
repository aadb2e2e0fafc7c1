package transcoder

import "fmt"

// PlanLadder exposes the ladder choice to table tests as "name:WxH" strings.
func PlanLadder(ladder []Rung, width, height int, aspect float64) []string {
	var out []string
	for _, r := range planLadder(probeResult{Width: width, Height: height, Aspect: aspect}, ladder) {
		out = append(out, fmt.Sprintf("%s:%dx%d", r.Name, r.Width, r.Height))
	}
	return out
}

// AVCCodecs exposes the fallback codecs string used when ffmpeg leaves CODECS out.
func AVCCodecs(profile string, level int, hasAudio bool) string {
	return avcCodecs(profile, level, hasAudio)
}

// ThumbnailSize exposes the thumbnail's size for a source: the top rendition of the
// ladder fitted into its box.
func ThumbnailSize(ladder []Rung, width, height int, aspect float64) (int, int) {
	plan := planLadder(probeResult{Width: width, Height: height, Aspect: aspect}, ladder)
	return thumbnailSize(plan[len(plan)-1])
}

// OutputFPS exposes the renditions' frame rate for a source's average rate.
func OutputFPS(fps float64) float64 { return outputFPS(probeResult{FPS: fps}) }
