package upload

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// checksumAlgorithms is the Tus-Checksum-Algorithm list: what Upload-Checksum may name.
const checksumAlgorithms = "sha1,sha256,md5"

// newChecksumHash returns a hash for a checksum algorithm name, or nil when the algorithm
// is not supported. MD5 and SHA-1 only guard against transmission errors here, which is
// all the tus checksum extension asks of them.
func newChecksumHash(algo string) hash.Hash {
	switch algo {
	case "sha1":
		return sha1.New()
	case "sha256":
		return sha256.New()
	case "md5":
		return md5.New()
	}
	return nil
}

// parseUploadChecksum reads an Upload-Checksum header, "<algorithm> <base64 digest>", as the
// tus checksum extension defines it. The algorithm is one of checksumAlgorithms (any
// case); the digest must decode (standard base64, padded) to that algorithm's size.
func parseUploadChecksum(v string) (algo string, digest []byte, err error) {
	name, enc, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return "", nil, fmt.Errorf("%w: Upload-Checksum must be \"<algorithm> <base64 digest>\"", ErrInvalid)
	}
	algo = strings.ToLower(name)
	h := newChecksumHash(algo)
	if h == nil {
		return "", nil, fmt.Errorf("%w %q: use one of %s", ErrChecksumAlgorithm, truncate(name, 32), checksumAlgorithms)
	}
	digest, err = base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil || len(digest) != h.Size() {
		return "", nil, fmt.Errorf("%w: Upload-Checksum is not a base64 %s digest", ErrInvalid, algo)
	}
	return algo, digest, nil
}

// wantsChecksum reports whether a request carries a body with an Upload-Checksum that the
// service must verify before tusd stores it: a PATCH to an upload, or a creation with
// bytes (creation-with-upload). Requests that tusd refuses anyway (wrong version or
// content type) go to tusd unread.
func wantsChecksum(r *http.Request, id string) bool {
	return r.Header.Get("Upload-Checksum") != "" && carriesBytes(r, id)
}

// verifyChecksum reads the request body into a spool file (at most the upload limit),
// checks it against Upload-Checksum, and on a match puts the spooled bytes back as the
// body for tusd. On a mismatch nothing reaches the upload. cleanup removes the spool
// file once tusd is done.
func (t *tusServer) verifyChecksum(w http.ResponseWriter, r *http.Request) (cleanup func(), err error) {
	algo, want, err := parseUploadChecksum(r.Header.Get("Upload-Checksum"))
	if err != nil {
		return nil, err
	}
	limit := t.s.cfg.MaxBytes
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes announced, at most %d allowed", ErrTooLarge, r.ContentLength, limit)
	}
	f, err := os.CreateTemp(t.spool, "body-*")
	if err != nil {
		return nil, fmt.Errorf("%w: spool: %w", ErrStorage, err)
	}
	cleanup = func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	h := newChecksumHash(algo)
	body := t.s.idleBody(w, r)
	// Reading one byte past the limit tells an oversize body from one of exactly the limit.
	buf := t.s.buffer()
	defer t.s.release(buf)
	n, err := io.CopyBuffer(io.MultiWriter(fileWriter{f: f}, h), io.LimitReader(body, limit+1), *buf)
	switch {
	case n > limit:
		err = fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	case err != nil:
		var werr *writeError
		switch {
		case errors.As(err, &werr):
			err = fmt.Errorf("%w: spool: %w", ErrStorage, err)
		case !errors.Is(err, ErrIdle):
			err = fmt.Errorf("%w: %w", ErrRead, err)
		}
	case subtle.ConstantTimeCompare(h.Sum(nil), want) != 1:
		err = fmt.Errorf("%w: the %d bytes received do not match their %s Upload-Checksum", ErrChecksumMismatch, n, algo)
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
		if err != nil {
			err = fmt.Errorf("%w: spool: %w", ErrStorage, err)
		}
	}
	if err != nil {
		cleanup()
		return nil, err
	}
	_ = r.Body.Close()
	r.Body = f
	r.ContentLength = n
	r.TransferEncoding = nil
	r.Header.Set("Content-Length", strconv.FormatInt(n, 10))
	return cleanup, nil
}
