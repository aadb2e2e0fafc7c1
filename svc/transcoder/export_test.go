package transcoder

import "fmt"

// PlanLadder exposes the ladder choice to table tests as "name:WxH" strings.
func PlanLadder(width, height int, aspect float64) []string {
	var out []string
	for _, r := range planLadder(probeResult{Width: width, Height: height, Aspect: aspect}) {
		out = append(out, fmt.Sprintf("%s:%dx%d", r.Name, r.Width, r.Height))
	}
	return out
}

// AVCCodecs exposes the fallback codecs string used when ffmpeg leaves CODECS out.
func AVCCodecs(profile string, level int, hasAudio bool) string {
	return avcCodecs(profile, level, hasAudio)
}
