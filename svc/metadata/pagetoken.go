package metadata

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"
)

// pageToken is the cursor inside a page token. Callers must treat tokens as opaque; the
// encoding may change.
type pageToken struct {
	CreateUS int64  `json:"t"`
	ID       string `json:"i"`
	// Filter fingerprints the query the token belongs to, so that a token replayed with
	// other filters or the other order is refused instead of silently skipping videos.
	// It is empty for the unfiltered newest-first list, which keeps tokens issued before
	// filters existed valid.
	Filter string `json:"f,omitempty"`
}

// fingerprint identifies the filters and order of q (not its limit or position).
func fingerprint(q ListQuery) string {
	if q.Status == 0 && q.OwnerID == "" && q.Visibility == 0 && len(q.Words) == 0 && q.Order == NewestFirst {
		return ""
	}
	h := fnv.New64a()
	// Fields are separated by a byte no field can contain (words are letters and digits,
	// owner ids are valid UTF-8 without NUL by proto validation).
	for _, s := range []string{
		strconv.Itoa(int(q.Status)), q.OwnerID, strconv.Itoa(int(q.Visibility)),
		strings.Join(q.Words, " "), strconv.Itoa(int(q.Order)),
	} {
		_, _ = h.Write([]byte(s))
		_, _ = h.Write([]byte{0})
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

func encodePageToken(c Cursor, q ListQuery) string {
	b, _ := json.Marshal(pageToken{CreateUS: c.CreateTime.UnixMicro(), ID: c.ID, Filter: fingerprint(q)}) // cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

// validVideoID mirrors the proto's id pattern ^[A-Za-z0-9_-]{1,64}$.
func validVideoID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// decodePageToken returns the position in tok, which must have been issued for q's
// filters and order.
func decodePageToken(tok string, q ListQuery) (Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: malformed page_token", ErrInvalid)
	}
	var p pageToken
	if err := json.Unmarshal(b, &p); err != nil || p.CreateUS <= 0 || !validVideoID(p.ID) {
		return Cursor{}, fmt.Errorf("%w: malformed page_token", ErrInvalid)
	}
	if p.Filter != fingerprint(q) {
		return Cursor{}, fmt.Errorf("%w: page_token belongs to a request with other filters or order", ErrInvalid)
	}
	return Cursor{CreateTime: time.UnixMicro(p.CreateUS), ID: p.ID}, nil
}
