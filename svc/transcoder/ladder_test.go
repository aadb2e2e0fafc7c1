package transcoder_test

import (
	"slices"
	"testing"

	"github.com/reelway/reelway/svc/transcoder"
)

func TestPlanLadder(t *testing.T) {
	tests := []struct {
		name          string
		width, height int
		aspect        float64
		want          []string
	}{
		{"720p source", 1280, 720, 16.0 / 9, []string{"360p:640x360", "720p:1280x720"}},
		{"1080p source", 1920, 1080, 16.0 / 9, []string{"360p:640x360", "720p:1280x720", "1080p:1920x1080"}},
		{"4k source is not upscaled past 1080p", 3840, 2160, 16.0 / 9, []string{"360p:640x360", "720p:1280x720", "1080p:1920x1080"}},
		{"between rungs", 854, 480, 854.0 / 480, []string{"360p:640x360"}},
		{"4:3 source", 640, 480, 4.0 / 3, []string{"360p:480x360"}},
		{"under 360 lines gets 240p", 426, 240, 426.0 / 240, []string{"240p:426x240"}},
		{"tiny source keeps its size", 160, 121, 160.0 / 121, []string{"120p:158x120"}},
		{"portrait short side", 1080, 1920, 1080.0 / 1920, []string{"360p:360x640", "720p:720x1280", "1080p:1080x1920"}},
		{"anamorphic uses display aspect", 720, 576, 16.0 / 9, []string{"360p:640x360"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := transcoder.PlanLadder(tt.width, tt.height, tt.aspect)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("PlanLadder(%d, %d) = %v, want %v", tt.width, tt.height, got, tt.want)
			}
		})
	}
}

func TestAVCCodecs(t *testing.T) {
	tests := []struct {
		profile string
		level   int
		audio   bool
		want    string
	}{
		{"High", 31, true, "avc1.64001f,mp4a.40.2"},
		{"High", 30, false, "avc1.64001e"},
		{"Main", 40, false, "avc1.4d0028"},
		{"Constrained Baseline", 30, true, "avc1.42e01e,mp4a.40.2"},
	}
	for _, tt := range tests {
		if got := transcoder.AVCCodecs(tt.profile, tt.level, tt.audio); got != tt.want {
			t.Errorf("AVCCodecs(%q, %d, %v) = %q, want %q", tt.profile, tt.level, tt.audio, got, tt.want)
		}
	}
}
