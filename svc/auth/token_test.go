package auth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reelway/reelway/svc/auth"
)

func mustSign(t testing.TB, secret []byte, c auth.Claims) string {
	t.Helper()
	tok, err := auth.SignToken(secret, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestParseToken(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	valid := auth.Claims{Subject: "usr_1", Email: "a@example.com", IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}
	good := mustSign(t, secret, valid)
	payload, sig, _ := strings.Cut(good, ".")
	forgedPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"usr_admin","email":"a@example.com","iat":1,"exp":9999999999}`))

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"valid", good, nil},
		{"expired", mustSign(t, secret, auth.Claims{Subject: "usr_1", ExpiresAt: now.Unix()}), auth.ErrTokenExpired},
		{"other secret", mustSign(t, []byte("another secret, equally long...."), valid), auth.ErrTokenInvalid},
		{"payload swapped", forgedPayload + "." + sig, auth.ErrTokenInvalid},
		{"signature dropped", payload, auth.ErrTokenInvalid},
		{"empty signature", payload + ".", auth.ErrTokenInvalid},
		{"three parts", good + ".x", auth.ErrTokenInvalid},
		{"signature not base64", payload + ".!!!", auth.ErrTokenInvalid},
		{"signature padded", payload + "." + sig + "=", auth.ErrTokenInvalid},
		{"empty", "", auth.ErrTokenInvalid},
		{"too long", strings.Repeat("a", auth.MaxTokenLen+1), auth.ErrTokenInvalid},
		{"signed garbage", signRaw(secret, base64.RawURLEncoding.EncodeToString([]byte("not json"))), auth.ErrTokenInvalid},
		{"signed no subject", signRaw(secret, base64.RawURLEncoding.EncodeToString([]byte(`{"exp":9999999999}`))), auth.ErrTokenInvalid},
		{"signed no expiry", signRaw(secret, base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"usr_1"}`))), auth.ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := auth.ParseToken(secret, tt.token, now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err == nil && got != valid {
				t.Fatalf("claims = %+v, want %+v", got, valid)
			}
		})
	}
}

func TestSignTokenRefusesEmptySecret(t *testing.T) {
	if _, err := auth.SignToken(nil, auth.Claims{Subject: "u", ExpiresAt: 1}); err == nil {
		t.Fatal("signed with an empty secret")
	}
	if _, err := auth.ParseToken(nil, "a.b", time.Now()); err == nil {
		t.Fatal("verified with an empty secret")
	}
}

// signRaw signs an arbitrary payload part the way the token format does, computed here
// independently of the package.
func signRaw(secret []byte, payload string) string {
	return payload + "." + base64.RawURLEncoding.EncodeToString(mac(secret, payload))
}

func mac(secret []byte, payload string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// FuzzParseToken checks that parsing never panics and that only tokens whose second part
// is the canonical HMAC of their first part under the secret ever verify.
func FuzzParseToken(f *testing.F) {
	secret := []byte("fuzz-secret-fuzz-secret-fuzz-sec")
	now := time.Unix(1_800_000_000, 0)
	f.Add(mustSign(f, secret, auth.Claims{Subject: "usr_1", Email: "a@b.c", IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 60}))
	f.Add(mustSign(f, []byte("other"), auth.Claims{Subject: "usr_1", ExpiresAt: now.Unix() + 60}))
	f.Add(signRaw(secret, base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x","exp":1e20}`))))
	f.Add("")
	f.Add(".")
	f.Add("a.b.c")
	f.Add("eyJzdWIiOiJ4In0.AAAA")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := auth.ParseToken(secret, token, now)
		if err != nil {
			if !errors.Is(err, auth.ErrTokenInvalid) && !errors.Is(err, auth.ErrTokenExpired) {
				t.Fatalf("unexpected error type: %v", err)
			}
			if len(token) >= 16 && strings.Contains(err.Error(), token) {
				t.Fatalf("error leaks the token: %v", err)
			}
			return
		}
		payload, sig, ok := strings.Cut(token, ".")
		if !ok || sig != base64.RawURLEncoding.EncodeToString(mac(secret, payload)) {
			t.Fatalf("verified a token that is not well signed: %q", token)
		}
		if c.Subject == "" || c.ExpiresAt <= now.Unix() {
			t.Fatalf("verified bad claims %+v", c)
		}
		if _, err := auth.ParseToken([]byte("a different secret"), token, now); err == nil {
			t.Fatalf("token verified under a different secret: %q", token)
		}
	})
}
