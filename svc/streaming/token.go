package streaming

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Token errors; both are a 403 on the file routes and never say more.
var (
	// ErrTokenInvalid reports a playback token that is malformed, forged, or made for
	// another video.
	ErrTokenInvalid = errors.New("streaming: invalid playback token")
	// ErrTokenExpired reports a genuine playback token past its expiry.
	ErrTokenExpired = errors.New("streaming: playback token expired")
)

// Token format: "<expiry, unix seconds>.<base64url HMAC-SHA256>", for example
// "1767225600.q83v...". The MAC covers a version label, the video id and the expiry, so a
// token opens one video until one instant and cannot be stretched or moved. Every
// character is URL-safe, so a token goes into a query string unescaped.
const (
	tokenLabel  = "reelway.playback.v1"
	macLen      = sha256.Size
	macChars    = 43 // base64url without padding of 32 bytes
	maxExpChars = 12
	// MaxTokenLen bounds what the parser reads.
	MaxTokenLen = maxExpChars + 1 + macChars
)

// Tokens signs and checks playback tokens with one secret. The zero value is unusable.
type Tokens struct {
	secret []byte
}

// NewTokens returns a signer for secret (at least 32 bytes; see LoadOrCreateSecret).
func NewTokens(secret []byte) Tokens {
	return Tokens{secret: append([]byte(nil), secret...)}
}

// Sign returns the token that opens videoID until exp (whole seconds).
func (k Tokens) Sign(videoID string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return e + "." + base64.RawURLEncoding.EncodeToString(k.mac(videoID, e))
}

func (k Tokens) mac(videoID, exp string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte(tokenLabel + "\n" + videoID + "\n" + exp))
	return m.Sum(nil)
}

// Verify checks that token opens videoID at now. The signature is checked before the
// expiry, so an error other than ErrTokenInvalid means the token is genuine.
func (k Tokens) Verify(videoID, token string, now time.Time) error {
	if len(k.secret) == 0 || len(token) > MaxTokenLen {
		return ErrTokenInvalid
	}
	exp, sig, ok := strings.Cut(token, ".")
	if !ok || exp == "" || len(exp) > maxExpChars || len(sig) != macChars || (len(exp) > 1 && exp[0] == '0') {
		return ErrTokenInvalid
	}
	for i := 0; i < len(exp); i++ {
		if exp[i] < '0' || exp[i] > '9' {
			return ErrTokenInvalid
		}
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || len(got) != macLen || !hmac.Equal(got, k.mac(videoID, exp)) {
		return ErrTokenInvalid
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return ErrTokenInvalid
	}
	if !now.Before(time.Unix(unix, 0)) {
		return fmt.Errorf("%w at %s", ErrTokenExpired, time.Unix(unix, 0).UTC().Format(time.RFC3339))
	}
	return nil
}
