package transcoder_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/reelway/reelway/svc/transcoder"
)

func TestPlanLadder(t *testing.T) {
	std := transcoder.StandardLadder()
	three, err := transcoder.ParseLadder("1080p,360p,720p")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		ladder        []transcoder.Rung
		width, height int
		aspect        float64
		want          []string
	}{
		{"720p source", std, 1280, 720, 16.0 / 9, []string{"240p:426x240", "360p:640x360", "480p:854x480", "720p:1280x720"}},
		{"1080p source", std, 1920, 1080, 16.0 / 9, []string{"240p:426x240", "360p:640x360", "480p:854x480", "720p:1280x720", "1080p:1920x1080"}},
		{"4k source is not upscaled past the top rung", three, 3840, 2160, 16.0 / 9, []string{"360p:640x360", "720p:1280x720", "1080p:1920x1080"}},
		{"between rungs", three, 854, 480, 854.0 / 480, []string{"360p:640x360"}},
		{"4:3 source", std, 640, 480, 4.0 / 3, []string{"240p:320x240", "360p:480x360", "480p:640x480"}},
		{"odd size", std, 641, 361, 641.0 / 361, []string{"240p:426x240", "360p:640x360"}},
		{"under the lowest rung keeps its size", std, 160, 121, 160.0 / 121, []string{"120p:158x120"}},
		{"under the lowest configured rung", three, 426, 240, 426.0 / 240, []string{"240p:426x240"}},
		{"portrait phone video uses the short side", std, 720, 1280, 720.0 / 1280, []string{"240p:240x426", "360p:360x640", "480p:480x854", "720p:720x1280"}},
		{"portrait 1080p", three, 1080, 1920, 1080.0 / 1920, []string{"360p:360x640", "720p:720x1280", "1080p:1080x1920"}},
		{"anamorphic uses display aspect", three, 720, 576, 16.0 / 9, []string{"360p:640x360"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := transcoder.PlanLadder(tt.ladder, tt.width, tt.height, tt.aspect)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("PlanLadder(%d, %d) = %v, want %v", tt.width, tt.height, got, tt.want)
			}
		})
	}
}

func TestParseLadder(t *testing.T) {
	tests := []struct {
		spec    string
		want    []transcoder.Rung
		wantErr bool
	}{
		{spec: "", want: transcoder.StandardLadder()},
		{spec: "720p, 360p", want: []transcoder.Rung{{Name: "360p", Short: 360, VideoBitrate: 800_000}, {Name: "720p", Short: 720, VideoBitrate: 2_800_000}}},
		{spec: "720p=3000k,2160p=16M,144p=200000", want: []transcoder.Rung{
			{Name: "144p", Short: 144, VideoBitrate: 200_000}, {Name: "720p", Short: 720, VideoBitrate: 3_000_000}, {Name: "2160p", Short: 2160, VideoBitrate: 16_000_000}}},
		{spec: "1440p", wantErr: true}, // not standard: needs a bitrate
		{spec: "720", wantErr: true},
		{spec: "hd", wantErr: true},
		{spec: "720p,720p", wantErr: true},
		{spec: "720p=", wantErr: true},
		{spec: "720p=-5k", wantErr: true},
		{spec: "720p=99999999M", wantErr: true},
		{spec: "0p=100k", wantErr: true},
		{spec: "360p,,720p", wantErr: true},
	}
	for _, tt := range tests {
		got, err := transcoder.ParseLadder(tt.spec)
		if tt.wantErr {
			if !errors.Is(err, transcoder.ErrLadder) {
				t.Errorf("ParseLadder(%q) = %v, %v; want ErrLadder", tt.spec, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseLadder(%q) = %v, %v; want %v", tt.spec, got, err, tt.want)
		}
	}
}

func TestThumbnailSize(t *testing.T) {
	std := transcoder.StandardLadder()
	tests := []struct {
		name          string
		width, height int
		aspect        float64
		w, h          int
	}{
		{"1080p fits the box", 1920, 1080, 16.0 / 9, 640, 360},
		{"portrait fits the box", 720, 1280, 720.0 / 1280, 360, 640},
		{"small source keeps the rendition's size", 320, 240, 4.0 / 3, 320, 240},
		{"odd source is not larger than its rendition", 641, 361, 641.0 / 361, 640, 360},
		{"odd small source is not larger than its rendition", 321, 241, 321.0 / 241, 320, 240},
		{"odd source under every rung", 161, 121, 161.0 / 121, 160, 120},
		{"tall odd source", 241, 433, 241.0 / 433, 240, 432},
		{"square", 1080, 1080, 1, 640, 640},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, h := transcoder.ThumbnailSize(std, tt.width, tt.height, tt.aspect)
			if w != tt.w || h != tt.h {
				t.Errorf("ThumbnailSize(%dx%d) = %dx%d, want %dx%d", tt.width, tt.height, w, h, tt.w, tt.h)
			}
			if w%2 != 0 || h%2 != 0 {
				t.Errorf("ThumbnailSize(%dx%d) = %dx%d, want even sides", tt.width, tt.height, w, h)
			}
		})
	}
}

func TestOutputFPS(t *testing.T) {
	for in, want := range map[float64]float64{0: 30, 29.97: 29.97, 60: 60, 120: 60, 240: 60, 100: 50, 12: 12} {
		if got := transcoder.OutputFPS(in); got != want {
			t.Errorf("OutputFPS(%v) = %v, want %v", in, got, want)
		}
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
