package metadata

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// pageToken is the cursor inside a page token. Callers must treat tokens as opaque; the
// encoding may change.
type pageToken struct {
	CreateUS int64  `json:"t"`
	ID       string `json:"i"`
}

func encodePageToken(c Cursor) string {
	b, _ := json.Marshal(pageToken{CreateUS: c.CreateTime.UnixMicro(), ID: c.ID}) // cannot fail
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

func decodePageToken(tok string) (Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: malformed page_token", ErrInvalid)
	}
	var p pageToken
	if err := json.Unmarshal(b, &p); err != nil || p.CreateUS <= 0 || !validVideoID(p.ID) {
		return Cursor{}, fmt.Errorf("%w: malformed page_token", ErrInvalid)
	}
	return Cursor{CreateTime: time.UnixMicro(p.CreateUS), ID: p.ID}, nil
}
