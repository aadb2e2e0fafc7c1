// Package media holds the facts about stored video files that the upload, transcoder and
// streaming services share: where a video's source and HLS output live in the data
// directory, what a valid video id is, and how an HLS master playlist reads.
package media

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
)

// ErrInvalidID reports a video id that is not safe to use as a path segment.
var ErrInvalidID = errors.New("media: invalid video id")

// File names inside a video's HLS folder. Renditions live in sub-folders named after the
// rung ("720p/index.m3u8").
const (
	MasterPlaylist   = "master.m3u8"
	Thumbnail        = "thumbnail.jpg"
	Poster           = "poster.jpg"
	Download         = "download.mp4"
	VariantPlaylist  = "index.m3u8"
	SegmentPattern   = "seg_%05d.ts"
	sourceFileName   = "source"
	uploadsDirName   = "uploads"
	hlsDirName       = "hls"
	maxVideoIDLength = 64
)

// idPattern is the same rule as the video_id fields of the protos; it is checked again
// here because these functions build file paths and must not rely on callers.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID reports whether id can name a video folder.
func ValidID(id string) bool {
	return len(id) <= maxVideoIDLength && idPattern.MatchString(id)
}

// CheckID returns ErrInvalidID (wrapped with the id) when id is not valid.
func CheckID(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("%w: %q", ErrInvalidID, truncate(id, 80))
	}
	return nil
}

// SourcePath is where the upload service stores a video's original file.
func SourcePath(dataDir, id string) (string, error) {
	if err := CheckID(id); err != nil {
		return "", err
	}
	return filepath.Join(dataDir, uploadsDirName, id, sourceFileName), nil
}

// HLSRoot is the folder holding every video's HLS output, and the transcoder's temporary
// folders (their names start with a dot so they are never served).
func HLSRoot(dataDir string) string {
	return filepath.Join(dataDir, hlsDirName)
}

// HLSDir is the folder of one video's HLS output: master playlist, thumbnail and one
// sub-folder per rendition.
func HLSDir(dataDir, id string) (string, error) {
	if err := CheckID(id); err != nil {
		return "", err
	}
	return filepath.Join(HLSRoot(dataDir), id), nil
}

// URLPrefix starts the HTTP path of every file of a video's HLS folder:
// URLPrefix + "<id>/<file>".
const URLPrefix = "/v1/hls/"

// FileURL is the gateway path of a file inside a video's HLS folder.
func FileURL(id, rel string) string {
	return URLPrefix + id + "/" + rel
}

// PlaybackPath is the master playlist's URL path on the gateway.
func PlaybackPath(id string) string {
	return FileURL(id, MasterPlaylist)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
