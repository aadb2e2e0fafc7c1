package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// secretLen is the size of a generated signing secret: the HMAC-SHA256 block's worth of
// key strength.
const secretLen = 32

// loadOrCreateSecret returns the signing secret kept in path, creating it on first use so
// tokens survive restarts. Creation is atomic and never overwrites: the secret is written
// to a temporary file and hard-linked into place, so two processes starting together agree
// on one secret and a crash never leaves a half-written file behind.
func loadOrCreateSecret(path string, log *slog.Logger) ([]byte, error) {
	secret, err := readSecret(path, log)
	if !errors.Is(err, fs.ErrNotExist) {
		return secret, err
	}
	fresh := make([]byte, secretLen)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("%w: generate secret: %w", ErrSecret, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".auth.secret-*")
	if err != nil {
		return nil, fmt.Errorf("%w: create secret: %w", ErrSecret, err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp already uses 0600; the secret must never be readable by others, so the
	// mode is not left to an implementation detail.
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return nil, fmt.Errorf("%w: create secret: %w", ErrSecret, err)
	}
	_, werr := tmp.WriteString(hex.EncodeToString(fresh) + "\n")
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return nil, fmt.Errorf("%w: write secret: %w", ErrSecret, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readSecret(path, log) // another process won the race
		}
		return nil, fmt.Errorf("%w: install secret: %w", ErrSecret, err)
	}
	log.Info("auth.secret.created", "path", path)
	return fresh, nil
}

func readSecret(path string, log *slog.Logger) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: read secret: %w", ErrSecret, err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < secretLen {
		return nil, fmt.Errorf("%w: %s is not %d hex-encoded bytes; remove it to generate a new one (existing tokens stop working)",
			ErrSecret, path, secretLen)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("auth.secret.permissions", "path", path, "mode", fi.Mode().Perm().String())
	}
	return secret, nil
}
