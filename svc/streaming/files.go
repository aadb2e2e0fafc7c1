package streaming

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/reelway/reelway/svc/media"
)

// maxRelPath bounds the file part of an HLS URL; real ones are like "1080p/seg_00042.ts".
const maxRelPath = 256

// Cache policies: playlists of a video can be replaced by a new transcode, segments and
// images are never rewritten under the same URL while players hold the old playlist, and
// the download is replaced by a new transcode but is large, so clients revalidate it
// hourly. Private videos' files are for the viewer's browser only, never shared caches,
// and their playlists, which carry the viewer's token, are not stored at all.
const (
	cachePlaylist        = "public, max-age=5"
	cacheImmutable       = "public, max-age=31536000, immutable"
	cacheDownload        = "public, max-age=3600"
	cachePrivatePlaylist = "private, no-store"
	cachePrivateFile     = "private, max-age=31536000, immutable"
	cachePrivateDownload = "private, max-age=3600"
)

// tokenParam is the query parameter carrying a private video's playback token.
const tokenParam = "token"

// kind is what a servable file is.
type kind int

const (
	kindPlaylist kind = iota + 1
	kindMedia
	kindDownload
)

// fileKind gives the content type and kind of a servable file; ok is false for any other
// file, which is then not served at all.
func fileKind(rel string) (contentType string, k kind, ok bool) {
	if rel == media.Download {
		return "video/mp4", kindDownload, true
	}
	switch path.Ext(rel) {
	case ".m3u8":
		return "application/vnd.apple.mpegurl", kindPlaylist, true
	case ".ts":
		return "video/mp2t", kindMedia, true
	case ".m4s", ".mp4":
		return "video/mp4", kindMedia, true
	case ".jpg":
		return "image/jpeg", kindMedia, true
	}
	return "", 0, false
}

func cacheControl(k kind, private bool) string {
	switch {
	case k == kindPlaylist && private:
		return cachePrivatePlaylist
	case k == kindPlaylist:
		return cachePlaylist
	case k == kindDownload && private:
		return cachePrivateDownload
	case k == kindDownload:
		return cacheDownload
	case private:
		return cachePrivateFile
	}
	return cacheImmutable
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
// answers Range (206/416), If-None-Match / If-Modified-Since / If-Range (304/412) and
// HEAD exactly per RFC 9110. A video metadata does not know is a 404 like a missing file;
// a private video's files need a valid playback token (?token=...), else 403, and its
// playlists are rewritten so every URI in them carries the token too. The token is never
// logged: request logs record the path, and the token is in the query.
func (s *Service) FileHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		setCORS(h)
		rest, ok := strings.CutPrefix(r.URL.Path, media.URLPrefix)
		if !ok {
			writeStatus(w, http.StatusNotFound)
			return
		}
		id, rel, err := splitURLPath(rest)
		if err != nil {
			writeStatus(w, http.StatusNotFound)
			return
		}
		contentType, k, ok := fileKind(rel)
		if !ok {
			writeStatus(w, http.StatusNotFound)
			return
		}
		v, err := s.videos.get(r.Context(), id)
		switch {
		case errors.Is(err, ErrNotFound):
			writeStatus(w, http.StatusNotFound)
			return
		case err != nil:
			s.log.WarnContext(r.Context(), "hls.unavailable", "path", r.URL.Path, "err", err)
			h.Set("Retry-After", "1")
			writeStatus(w, http.StatusServiceUnavailable)
			return
		}
		token := ""
		if v.private() {
			token = r.URL.Query().Get(tokenParam)
			if err := s.tokens.Verify(id, token, s.cfg.Now()); err != nil {
				writeStatus(w, http.StatusForbidden)
				return
			}
		}
		f, err := s.open(id, rel)
		if err != nil {
			// Missing files are normal; anything else (a symlink out, permissions) is
			// worth a look.
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.WarnContext(r.Context(), "hls.refused", "path", r.URL.Path, "err", err)
			}
			writeStatus(w, http.StatusNotFound)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			writeStatus(w, http.StatusNotFound)
			return
		}
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", cacheControl(k, v.private()))
		h.Set("X-Content-Type-Options", "nosniff")
		if k == kindDownload {
			h.Set("Content-Disposition", ContentDisposition(v.title, id))
		}
		if k == kindPlaylist && token != "" {
			s.serveTokenized(w, r, f, fi, token)
			return
		}
		h.Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
		serveContent(w, r, fi.ModTime(), f, fi.Size())
	})
}

// serveContent is http.ServeContent after NormalizeRange.
func serveContent(w http.ResponseWriter, r *http.Request, modtime time.Time, content io.ReadSeeker, size int64) {
	NormalizeRange(r.Header, size)
	http.ServeContent(w, r, "", modtime, content)
}

// serveTokenized serves a private video's playlist with the token appended to every URI
// in it, so the player carries it to the variants and segments.
func (s *Service) serveTokenized(w http.ResponseWriter, r *http.Request, f *os.File, fi fs.FileInfo, token string) {
	b, err := io.ReadAll(io.LimitReader(f, maxPlaylistBytes+1))
	if err != nil || len(b) > maxPlaylistBytes {
		s.log.WarnContext(r.Context(), "hls.playlist_unreadable", "path", r.URL.Path, "size", fi.Size(), "err", err)
		writeStatus(w, http.StatusInternalServerError)
		return
	}
	out := media.AppendQuery(b, tokenParam+"="+token)
	sum := sha256.Sum256(out)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:12])+`"`)
	serveContent(w, r, fi.ModTime(), bytes.NewReader(out), int64(len(out)))
}

// NormalizeRange prepares a request's Range header for http.ServeContent, given the size
// of the selected representation, where ServeContent departs from RFC 9110:
//   - a unit other than bytes is ignored (§14.2: MUST ignore), and the unit is compared
//     case-insensitively (§14.1);
//   - an invalid ranges-specifier (not digits, last-pos before first-pos, §14.1.1) is
//     ignored, serving the whole file, rather than answered 416;
//   - a suffix range of length zero is unsatisfiable (§14.1.1), where ServeContent
//     would answer an empty 206;
//   - positions too large for an int64 mean "past the end", where ServeContent would
//     answer 416 without Content-Range.
//
// Each range-spec is rewritten in canonical form; a set left with no satisfiable range
// becomes "bytes=<size>-", which ServeContent answers 416 with Content-Range: bytes
// */<size> after evaluating the preconditions first, as §13.2.2 orders.
func NormalizeRange(h http.Header, size int64) {
	rg := h.Get("Range")
	if rg == "" {
		return
	}
	unit, set, ok := strings.Cut(rg, "=")
	if !ok || !strings.EqualFold(unit, "bytes") {
		h.Del("Range")
		return
	}
	sz := strings.TrimLeft(strconv.FormatInt(size, 10), "0")
	var kept []string
	specs := 0
	for spec := range strings.SplitSeq(set, ",") {
		spec = strings.Trim(spec, " \t")
		if spec == "" {
			continue // empty list elements are allowed (RFC 9110 §5.6.1)
		}
		specs++
		first, last, ok := strings.Cut(spec, "-")
		if !ok || (first != "" && !digits(first)) || (last != "" && !digits(last)) || (first == "" && last == "") {
			h.Del("Range")
			return
		}
		hasFirst, hasLast := first != "", last != ""
		first, last = strings.TrimLeft(first, "0"), strings.TrimLeft(last, "0")
		switch {
		case !hasFirst: // suffix-range: the last <last> bytes
			switch {
			case last == "":
				continue // "-0": satisfiable by nothing
			case cmpDigits(last, sz) >= 0:
				kept = append(kept, "0-") // the whole representation
			default:
				kept = append(kept, "-"+last)
			}
		case hasLast && cmpDigits(last, first) < 0:
			h.Del("Range") // last-pos before first-pos: invalid
			return
		case cmpDigits(first, sz) >= 0:
			continue // starts at or past the end
		case !hasLast || cmpDigits(last, sz) >= 0:
			kept = append(kept, orZero(first)+"-")
		default:
			kept = append(kept, orZero(first)+"-"+orZero(last))
		}
	}
	if specs == 0 {
		h.Del("Range") // "bytes=": no range-spec at all is invalid
		return
	}
	if len(kept) == 0 {
		kept = []string{strconv.FormatInt(size, 10) + "-"}
	}
	h.Set("Range", "bytes="+strings.Join(kept, ","))
}

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

// digits reports whether s is one or more ASCII digits.
func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// cmpDigits compares two decimal numbers of any length without leading zeros ("" is 0).
func cmpDigits(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
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
		// Every request header the file routes act on: ranges and all four conditionals.
		h.Set("Access-Control-Allow-Headers", "Range, If-Range, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
	})
}

// writeStatus answers with a status and its text as a short plain body.
func writeStatus(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, strings.ToLower(http.StatusText(status))+"\n")
}
