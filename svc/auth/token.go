package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token errors. Neither carries any part of the token, so they are safe to log and return.
var (
	// ErrTokenInvalid means a token is malformed or its signature does not match.
	ErrTokenInvalid = errors.New("auth: invalid token")
	// ErrTokenExpired means a token was well signed but its lifetime is over.
	ErrTokenExpired = errors.New("auth: token expired")
)

// MaxTokenLen bounds the tokens ParseToken will look at, as the API does.
const MaxTokenLen = 4096

// Claims are what a token asserts about its bearer. Times are Unix seconds.
type Claims struct {
	Subject   string `json:"sub"`
	Email     string `json:"email"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
}

// tokenEncoding is strict so that one signature has exactly one spelling: a lenient decoder
// accepts non-zero padding bits, which would let anyone mint variants of a valid token.
func tokenEncoding() *base64.Encoding { return base64.RawURLEncoding.Strict() }

func sign(secret []byte, payload string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// SignToken returns base64url(JSON claims) "." base64url(HMAC-SHA256(secret, first part)).
// The MAC covers the encoded payload, so verification never depends on how JSON is spelled.
func SignToken(secret []byte, c Claims) (string, error) {
	if len(secret) == 0 {
		return "", fmt.Errorf("%w: empty signing secret", ErrTokenInvalid)
	}
	if c.Subject == "" {
		return "", fmt.Errorf("%w: empty subject", ErrTokenInvalid)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("%w: encode claims: %w", ErrTokenInvalid, err)
	}
	enc := tokenEncoding()
	payload := enc.EncodeToString(b)
	return payload + "." + enc.EncodeToString(sign(secret, payload)), nil
}

// ParseToken verifies a token's signature, then its expiry against now, and returns its
// claims. The signature is checked before the payload is decoded, so nothing an attacker
// writes is parsed unless it was signed with secret.
func ParseToken(secret []byte, token string, now time.Time) (Claims, error) {
	if len(secret) == 0 || token == "" || len(token) > MaxTokenLen {
		return Claims{}, ErrTokenInvalid
	}
	payload, sig, ok := strings.Cut(token, ".")
	if !ok || strings.Contains(sig, ".") {
		return Claims{}, ErrTokenInvalid
	}
	enc := tokenEncoding()
	got, err := enc.DecodeString(sig)
	if err != nil {
		return Claims{}, ErrTokenInvalid
	}
	if !hmac.Equal(got, sign(secret, payload)) {
		return Claims{}, ErrTokenInvalid
	}
	b, err := enc.DecodeString(payload)
	if err != nil {
		return Claims{}, ErrTokenInvalid
	}
	var c Claims
	if err := json.Unmarshal(b, &c); err != nil || c.Subject == "" || c.ExpiresAt <= 0 {
		return Claims{}, ErrTokenInvalid
	}
	if now.Unix() >= c.ExpiresAt {
		return Claims{}, ErrTokenExpired
	}
	return c, nil
}
