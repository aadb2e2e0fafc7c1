package media

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrBadPlaylist reports a master playlist that cannot be read.
var ErrBadPlaylist = errors.New("media: malformed master playlist")

// Variant is one #EXT-X-STREAM-INF entry of a master playlist.
type Variant struct {
	// URI is the variant playlist as written, usually relative to the master playlist.
	URI string
	// Bandwidth is the peak bits per second (BANDWIDTH).
	Bandwidth int64
	// Width and Height come from RESOLUTION; zero when it is absent.
	Width, Height int
	// Codecs is the RFC 6381 list (CODECS), "" when absent.
	Codecs string
}

// ParseMaster reads the variants of an HLS master playlist (RFC 8216 §4.3.4.2), in order.
// Callers bound r: a line longer than 64 KiB is an error.
func ParseMaster(r io.Reader) ([]Variant, error) {
	sc := bufio.NewScanner(r)
	first := true
	var (
		out     []Variant
		pending *Variant
	)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if first {
			first = false
			if line != "#EXTM3U" {
				return nil, fmt.Errorf("%w: missing #EXTM3U header", ErrBadPlaylist)
			}
			continue
		}
		switch {
		case line == "":
		case strings.HasPrefix(line, "#EXT-X-STREAM-INF:"):
			if pending != nil {
				return nil, fmt.Errorf("%w: #EXT-X-STREAM-INF without a URI", ErrBadPlaylist)
			}
			v, err := parseStreamInf(strings.TrimPrefix(line, "#EXT-X-STREAM-INF:"))
			if err != nil {
				return nil, err
			}
			pending = &v
		case strings.HasPrefix(line, "#"):
			// Other tags and comments do not describe variants.
		default:
			if pending != nil {
				pending.URI = line
				out = append(out, *pending)
				pending = nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPlaylist, err)
	}
	if first {
		return nil, fmt.Errorf("%w: empty", ErrBadPlaylist)
	}
	if pending != nil {
		return nil, fmt.Errorf("%w: #EXT-X-STREAM-INF without a URI", ErrBadPlaylist)
	}
	return out, nil
}

func parseStreamInf(list string) (Variant, error) {
	attrs, err := parseAttributes(list)
	if err != nil {
		return Variant{}, err
	}
	var v Variant
	bw, ok := attrs["BANDWIDTH"]
	if !ok {
		return Variant{}, fmt.Errorf("%w: #EXT-X-STREAM-INF without BANDWIDTH", ErrBadPlaylist)
	}
	if v.Bandwidth, err = strconv.ParseInt(bw, 10, 64); err != nil || v.Bandwidth < 0 {
		return Variant{}, fmt.Errorf("%w: BANDWIDTH %q", ErrBadPlaylist, bw)
	}
	if res, ok := attrs["RESOLUTION"]; ok {
		w, h, found := strings.Cut(res, "x")
		wi, werr := strconv.Atoi(w)
		hi, herr := strconv.Atoi(h)
		if !found || werr != nil || herr != nil || wi < 0 || hi < 0 {
			return Variant{}, fmt.Errorf("%w: RESOLUTION %q", ErrBadPlaylist, res)
		}
		v.Width, v.Height = wi, hi
	}
	v.Codecs = attrs["CODECS"]
	return v, nil
}

// parseAttributes splits an attribute list: NAME=value pairs separated by commas, where a
// quoted-string value may itself contain commas. Quotes are removed.
func parseAttributes(list string) (map[string]string, error) {
	attrs := make(map[string]string)
	for rest := list; rest != ""; {
		name, after, ok := strings.Cut(rest, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%w: attribute list %q", ErrBadPlaylist, list)
		}
		var value string
		if quoted, ok := strings.CutPrefix(after, `"`); ok {
			end := strings.IndexByte(quoted, '"')
			if end < 0 {
				return nil, fmt.Errorf("%w: unterminated quoted string in %q", ErrBadPlaylist, list)
			}
			value, after = quoted[:end], quoted[end+1:]
			if after != "" && after[0] != ',' {
				return nil, fmt.Errorf("%w: attribute list %q", ErrBadPlaylist, list)
			}
			rest = strings.TrimPrefix(after, ",")
		} else {
			value, rest, _ = strings.Cut(after, ",")
		}
		attrs[strings.TrimSpace(name)] = value
	}
	return attrs, nil
}

// AppendQuery returns playlist (master or media) with query ("name=value", URL-safe)
// added to every URI in it: the URI lines and the URI="..." attributes of tags such as
// #EXT-X-MAP, #EXT-X-MEDIA and #EXT-X-KEY. Relative URIs resolve against the playlist's
// own URL without its query, so this is how a query reaches the files a player fetches
// next. Line endings are kept.
func AppendQuery(playlist []byte, query string) []byte {
	var b strings.Builder
	b.Grow(len(playlist) + 64*len(query))
	for line := range strings.Lines(string(playlist)) {
		body := strings.TrimRight(line, "\r\n")
		eol := line[len(body):]
		trimmed := strings.TrimSpace(body)
		switch {
		case trimmed == "":
			b.WriteString(body)
		case strings.HasPrefix(trimmed, "#"):
			writeTagWithQuery(&b, body, query)
		default:
			b.WriteString(withQuery(body, query))
		}
		b.WriteString(eol)
	}
	return []byte(b.String())
}

// writeTagWithQuery adds query to each URI="..." attribute of a tag line.
func writeTagWithQuery(b *strings.Builder, line, query string) {
	const attr = `URI="`
	for {
		i := strings.Index(line, attr)
		if i < 0 {
			break
		}
		// Only a whole attribute name: at the start of the list or after a comma.
		start := i + len(attr)
		end := strings.IndexByte(line[start:], '"')
		if end < 0 || (i > 0 && line[i-1] != ':' && line[i-1] != ',') {
			b.WriteString(line[:start])
			line = line[start:]
			continue
		}
		b.WriteString(line[:start])
		b.WriteString(withQuery(line[start:start+end], query))
		line = line[start+end:]
	}
	b.WriteString(line)
}

func withQuery(uri, query string) string {
	if uri == "" {
		return uri
	}
	if strings.Contains(uri, "?") {
		return uri + "&" + query
	}
	return uri + "?" + query
}
