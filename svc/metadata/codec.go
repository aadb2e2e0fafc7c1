package metadata

import (
	"encoding/json"
	"fmt"

	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
)

// rendition is the JSON shape of a rendition in the renditions column of both backends.
// It is spelled out rather than left to protojson so the stored form stays stable across
// library versions.
type rendition struct {
	Name         string `json:"name"`
	Width        int32  `json:"width"`
	Height       int32  `json:"height"`
	Bandwidth    int64  `json:"bandwidth"`
	PlaylistPath string `json:"playlist_path,omitempty"`
	Codecs       string `json:"codecs,omitempty"`
}

func encodeRenditions(v *metadatav1.Video) (string, error) {
	rs := make([]rendition, 0, len(v.GetRenditions()))
	for _, r := range v.GetRenditions() {
		rs = append(rs, rendition{
			Name: r.GetName(), Width: r.GetWidth(), Height: r.GetHeight(), Bandwidth: r.GetBandwidth(),
			PlaylistPath: r.GetPlaylistPath(), Codecs: r.GetCodecs(),
		})
	}
	b, err := json.Marshal(rs)
	if err != nil {
		return "", fmt.Errorf("%w: encode renditions of %s: %w", ErrStore, v.GetId(), err)
	}
	return string(b), nil
}

func decodeRenditions(v *metadatav1.Video, s string) error {
	var rs []rendition
	if err := json.Unmarshal([]byte(s), &rs); err != nil {
		return fmt.Errorf("%w: decode renditions of %s: %w", ErrStore, v.GetId(), err)
	}
	v.Renditions = nil
	for _, r := range rs {
		v.Renditions = append(v.Renditions, &metadatav1.Rendition{
			Name: r.Name, Width: r.Width, Height: r.Height, Bandwidth: r.Bandwidth,
			PlaylistPath: r.PlaylistPath, Codecs: r.Codecs,
		})
	}
	return nil
}

// tagsOrEmpty never returns nil, because both backends store an empty list rather than
// NULL (pgx would send a nil slice as NULL).
func tagsOrEmpty(v *metadatav1.Video) []string {
	if t := v.GetTags(); t != nil {
		return t
	}
	return []string{}
}
