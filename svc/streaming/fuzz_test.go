package streaming_test

import (
	"bytes"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/reelway/reelway/svc/streaming"
)

// FuzzRange sends any Range header through NormalizeRange and http.ServeContent, as the
// file routes do, and checks the answer is one RFC 9110 allows: the whole file (200), a
// 206 whose single part or parts are exactly the bytes Content-Range names, or a 416
// carrying Content-Range: bytes */<size>.
func FuzzRange(f *testing.F) {
	for _, seed := range []string{"bytes=0-0", "bytes=-500", "bytes=10-", "bytes=5-2", "bytes=-0", "Bytes=1-2", "items=1-2",
		"bytes=1-2,4-5", "bytes=99999999999999999999-", "bytes= 1 - 2", "bytes=,", "bytes=-", "bytes=0-,-1", "bytes=0"} {
		f.Add(seed, uint16(100))
	}
	f.Fuzz(func(t *testing.T, header string, size uint16) {
		content := make([]byte, size)
		for i := range content {
			content[i] = byte(i * 7)
		}
		req := httptest.NewRequest("GET", "/x.ts", nil)
		req.Header.Set("Range", header)
		streaming.NormalizeRange(req.Header, int64(size))
		rec := httptest.NewRecorder()
		rec.Header().Set("Content-Type", "video/mp2t")
		http.ServeContent(rec, req, "", time.Unix(0, 0), bytes.NewReader(content))
		body := rec.Body.Bytes()
		switch rec.Code {
		case 200:
			if !bytes.Equal(body, content) {
				t.Fatalf("Range %q: 200 with %d bytes of %d", header, len(body), size)
			}
		case 416:
			if got := rec.Header().Get("Content-Range"); got != fmt.Sprintf("bytes */%d", size) {
				t.Fatalf("Range %q: 416 with Content-Range %q", header, got)
			}
		case 206:
			if strings.HasPrefix(rec.Header().Get("Content-Type"), "multipart/") {
				return // parts are checked by TestRangesByteForByte; ServeContent builds them
			}
			var first, last, total int
			if _, err := fmt.Sscanf(rec.Header().Get("Content-Range"), "bytes %d-%d/%d", &first, &last, &total); err != nil {
				t.Fatalf("Range %q: Content-Range %q", header, rec.Header().Get("Content-Range"))
			}
			if total != int(size) || first > last || last >= total || !bytes.Equal(body, content[first:last+1]) {
				t.Fatalf("Range %q: Content-Range %q with %d bytes", header, rec.Header().Get("Content-Range"), len(body))
			}
		default:
			t.Fatalf("Range %q: status %d", header, rec.Code)
		}
	})
}

// FuzzVerifyToken checks the token parser never accepts anything but the exact token
// Sign makes for the video, and never panics.
func FuzzVerifyToken(f *testing.F) {
	k := streaming.NewTokens(testSecret)
	now := time.Unix(1_800_000_000, 0)
	good := k.Sign("vid", now.Add(time.Hour))
	for _, seed := range []string{good, "", ".", "1.", ".abc", good + "=", "0" + good, strings.ToUpper(good), "99999999999999." + good[11:],
		"-1." + good[11:], good[:len(good)-1] + "A"} {
		f.Add("vid", seed)
	}
	f.Fuzz(func(t *testing.T, id, token string) {
		err := k.Verify(id, token, now)
		if err == nil {
			exp, _, _ := strings.Cut(token, ".")
			unix, perr := strconv.ParseInt(exp, 10, 64)
			if perr != nil || k.Sign(id, time.Unix(unix, 0)) != token || !now.Before(time.Unix(unix, 0)) {
				t.Fatalf("Verify(%q, %q) accepted a token Sign would not make", id, token)
			}
		}
	})
}

// FuzzContentDisposition checks any title gives a header that is one line of printable
// ASCII, parses as an attachment, and names an .mp4 without path separators.
func FuzzContentDisposition(f *testing.F) {
	for _, seed := range []string{"Holiday", "Café ☕", `a"b\c`, "../../x", "\r\n", "", "%41", "x;y=z", "\xff\xfe", "名前"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, title string) {
		cd := streaming.ContentDisposition(title, "vid")
		for i := 0; i < len(cd); i++ {
			if cd[i] < 0x20 || cd[i] >= 0x7f {
				t.Fatalf("ContentDisposition(%q) = %q has byte %#x", title, cd, cd[i])
			}
		}
		disp, params, err := mime.ParseMediaType(cd)
		if err != nil || disp != "attachment" {
			t.Fatalf("ContentDisposition(%q) = %q does not parse: %v", title, cd, err)
		}
		name := params["filename"]
		if !strings.HasSuffix(name, ".mp4") || strings.ContainsAny(name, "/\\\x00") || strings.HasPrefix(name, ".") || !utf8.ValidString(name) {
			t.Fatalf("ContentDisposition(%q) names %q", title, name)
		}
	})
}
