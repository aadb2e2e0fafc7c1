package streaming

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxFilenameRunes bounds the file name offered for a download.
const maxFilenameRunes = 100

// ContentDisposition returns the Content-Disposition of a video's MP4 download, named
// after its title (the video id when the title has nothing usable): an ASCII filename for
// old clients, with quotes, backslashes, path separators and controls replaced, plus the
// full UTF-8 name as an RFC 5987 filename* that current browsers prefer (RFC 6266).
func ContentDisposition(title, id string) string {
	name := cleanFilename(title)
	if strings.Trim(name, "_. ") == "" {
		name = id
	}
	name += ".mp4"
	ascii := make([]byte, 0, len(name))
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		i += size
		if r < 0x20 || r >= 0x7f || r == '"' || r == '\\' || r == '%' || r == ';' {
			ascii = append(ascii, '_')
			continue
		}
		ascii = append(ascii, byte(r))
	}
	return fmt.Sprintf(`attachment; filename="%s"; filename*=UTF-8''%s`, ascii, encodeRFC5987(name))
}

// cleanFilename keeps the printable characters of a title, replacing path separators and
// characters file systems refuse, collapsing whitespace and bounding the length.
func cleanFilename(title string) string {
	var b strings.Builder
	n := 0
	space := false
	for _, r := range strings.ToValidUTF8(title, "_") {
		if n >= maxFilenameRunes {
			break
		}
		switch {
		case unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		case !unicode.IsPrint(r) || strings.ContainsRune(`/\:*?"<>|`, r):
			r = '_'
		}
		if space {
			b.WriteByte(' ')
			space = false
			n++
		}
		b.WriteRune(r)
		n++
	}
	// A leading dot would hide the file on Unix.
	return strings.TrimLeft(b.String(), ".")
}

// encodeRFC5987 percent-encodes s as an RFC 5987 value: attr-char stays, every other byte
// of its UTF-8 becomes %XX.
func encodeRFC5987(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
