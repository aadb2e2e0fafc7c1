package streaming

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrSecret reports a playback signing secret that cannot be read or made.
var ErrSecret = errors.New("streaming: playback secret")

// secretLen is the size of a generated signing secret and the least accepted.
const secretLen = 32

// SecretFile is where the generated playback secret is kept in the data directory, so
// every streaming process sharing the directory signs and checks with the same key.
const SecretFile = "playback.secret"

// LoadOrCreateSecret returns the playback secret kept in path, creating it on first use.
// Creation is atomic and never overwrites: the secret is written to a temporary file and
// hard-linked into place, so two processes starting together agree on one secret.
func LoadOrCreateSecret(path string) ([]byte, error) {
	secret, err := readSecret(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return secret, err
	}
	fresh := make([]byte, secretLen)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("%w: generate: %w", ErrSecret, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".playback.secret-*")
	if err != nil {
		return nil, fmt.Errorf("%w: create: %w", ErrSecret, err)
	}
	defer os.Remove(tmp.Name())
	cerr := tmp.Chmod(0o600)
	_, werr := tmp.WriteString(hex.EncodeToString(fresh) + "\n")
	serr := tmp.Sync()
	if err := errors.Join(cerr, werr, serr, tmp.Close()); err != nil {
		return nil, fmt.Errorf("%w: write: %w", ErrSecret, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readSecret(path) // another process won the race
		}
		return nil, fmt.Errorf("%w: install: %w", ErrSecret, err)
	}
	return fresh, nil
}

func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrSecret, err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < secretLen {
		return nil, fmt.Errorf("%w: %s is not %d hex-encoded bytes; remove it to generate a new one (existing playback URLs stop working)",
			ErrSecret, path, secretLen)
	}
	return secret, nil
}
