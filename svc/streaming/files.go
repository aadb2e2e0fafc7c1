package streaming

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"path/filepath"
	"strings"

	"github.com/reelway/reelway/svc/media"
)

// maxRelPath bounds the file part of an HLS URL; real ones are like "1080p/seg_00042.ts".
const maxRelPath = 256

// Cache policies: playlists of a video can be replaced by a new transcode, segments and
// thumbnails are never rewritten under the same URL while players hold the old playlist.
const (
	cachePlaylist  = "public, max-age=5"
	cacheImmutable = "public, max-age=31536000, immutable"
)

// fileKind gives the content type and cache policy of a servable file; ok is false for
// any other file, which is then not served at all.
func fileKind(rel string) (contentType, cacheControl string, ok bool) {
	switch path.Ext(rel) {
	case ".m3u8":
		return "application/vnd.apple.mpegurl", cachePlaylist, true
	case ".ts":
		return "video/mp2t", cacheImmutable, true
	case ".m4s", ".mp4":
		return "video/mp4", cacheImmutable, true
	case ".jpg":
		return "image/jpeg", cacheImmutable, true
	}
	return "", "", false
}

// Resolve maps the part of a request path after /v1/hls/ ("<video_id>/<file>") to the
// video's HLS folder and the file's slash-separated path inside it. It refuses (with
// ErrNotFound or media.ErrInvalidID) anything that could name a file elsewhere or a hidden
// one: an invalid id, empty segments, ".", "..", names starting with a dot (the
// transcoder's temporary folders), backslashes, control characters and overlong paths.
// Symlinks are checked when the file is opened.
func Resolve(dataDir, rest string) (dir, rel string, err error) {
	id, rel, err := splitURLPath(rest)
	if err != nil {
		return "", "", err
	}
	dir, err = media.HLSDir(dataDir, id)
	if err != nil {
		return "", "", err
	}
	return dir, rel, nil
}

// splitURLPath splits "<video_id>/<file>" and checks both parts.
func splitURLPath(rest string) (id, rel string, err error) {
	id, rel, _ = strings.Cut(rest, "/")
	if err := media.CheckID(id); err != nil {
		return "", "", err
	}
	if err := cleanRel(rel); err != nil {
		return "", "", err
	}
	return id, rel, nil
}

// cleanRel accepts only plain relative paths: non-empty segments of printable characters
// that do not start with a dot, with no backslash.
func cleanRel(rel string) error {
	if rel == "" || len(rel) > maxRelPath {
		return fmt.Errorf("%w: bad file path", ErrNotFound)
	}
	for i := 0; i < len(rel); i++ {
		if c := rel[i]; c < 0x20 || c == 0x7f || c == '\\' || c == ':' {
			return fmt.Errorf("%w: bad file path", ErrNotFound)
		}
	}
	for seg := range strings.SplitSeq(rel, "/") {
		if seg == "" || strings.HasPrefix(seg, ".") {
			return fmt.Errorf("%w: bad file path", ErrNotFound)
		}
	}
	if !filepath.IsLocal(filepath.FromSlash(rel)) {
		return fmt.Errorf("%w: bad file path", ErrNotFound)
	}
	return nil
}

// FileHandler serves GET and HEAD /v1/hls/<video_id>/<file> with http.ServeContent, which
// answers Range (206/416), If-None-Match / If-Modified-Since (304) and HEAD. Anything
// that cannot be served is a 404 with a short plain-text body.
func (s *Service) FileHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		setCORS(h)
		rest, ok := strings.CutPrefix(r.URL.Path, media.URLPrefix)
		if !ok {
			writeNotFound(w)
			return
		}
		id, rel, err := splitURLPath(rest)
		if err != nil {
			writeNotFound(w)
			return
		}
		contentType, cacheControl, ok := fileKind(rel)
		if !ok {
			writeNotFound(w)
			return
		}
		f, err := s.open(id, rel)
		if err != nil {
			// Missing files are normal; anything else (a symlink out, permissions) is
			// worth a look.
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.WarnContext(r.Context(), "hls.refused", "path", r.URL.Path, "err", err)
			}
			writeNotFound(w)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			writeNotFound(w)
			return
		}
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", cacheControl)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
		http.ServeContent(w, r, "", fi.ModTime(), f)
	})
}

// setCORS lets players on any origin read the files and the headers they need for
// ranged segment requests.
func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Range, Accept-Ranges, ETag")
}

// preflight answers CORS preflight requests (a Range header on a cross-origin request).
func preflight() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		setCORS(h)
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Range, If-None-Match, If-Modified-Since")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
	})
}

func writeNotFound(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte("not found\n"))
}
