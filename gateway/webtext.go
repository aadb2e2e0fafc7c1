package gateway

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// ErrBadTextBody means a gRPC-Web text request body is not base64.
var ErrBadTextBody = errors.New("gateway: gRPC-Web text request body is not valid base64")

// maxTextRequestBytes bounds a gRPC-Web text request body (base64). gRPC-Web has no client
// streaming, so the body is one request message, and the gateway decodes it whole before
// it picks a backend: a malformed body is the caller's error, never a backend failure.
const maxTextRequestBytes = 8 << 20

const (
	grpcWebType     = "application/grpc-web"
	grpcWebTextType = "application/grpc-web-text"
)

// The platform's handlers (connect-go) speak binary gRPC-Web only. Browsers' gRPC-Web
// clients often use the text variant (grpc-web's default "grpcwebtext" mode, which works
// where binary response streaming does not), so the gateway translates: the request body
// is decoded and sent as application/grpc-web, and the response body is base64-encoded
// chunk by chunk, each chunk padded and flushed as it comes, so server streams stay
// incremental (the gRPC-Web spec lets a text body be a run of padded chunks).

// binaryWebType turns a gRPC-Web text content type into its binary twin, keeping the codec
// suffix and parameters.
func binaryWebType(ct string) string {
	if len(ct) >= len(grpcWebTextType) && strings.EqualFold(ct[:len(grpcWebTextType)], grpcWebTextType) {
		return grpcWebType + ct[len(grpcWebTextType):]
	}
	return ct
}

// textWebType turns a binary gRPC-Web content type into its text twin; ok is false for
// anything else (a backend's JSON or plain-text refusal passes through as it is).
func textWebType(ct string) (string, bool) {
	n := len(grpcWebType)
	if len(ct) < n || !strings.EqualFold(ct[:n], grpcWebType) || strings.HasPrefix(strings.ToLower(ct[n:]), "-") {
		return "", false
	}
	if rest := ct[n:]; rest != "" && rest[0] != '+' && rest[0] != ';' {
		return "", false
	}
	return grpcWebTextType + ct[n:], true
}

// decodeText decodes base64 made of padded chunks one after another ("AA==AAA="), which a
// single standard decoder refuses, ignoring line breaks and spaces between characters.
func decodeText(src []byte) ([]byte, error) {
	out := make([]byte, 0, len(src)/4*3)
	var q [4]byte
	n := 0
	for i, c := range src {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		q[n] = c
		if n++; n < 4 {
			continue
		}
		n = 0
		var dec [3]byte
		m, err := base64.StdEncoding.Decode(dec[:], q[:])
		if err != nil {
			return nil, fmt.Errorf("%w: bad quantum ending at byte %d", ErrBadTextBody, i)
		}
		out = append(out, dec[:m]...)
	}
	if n != 0 {
		return nil, fmt.Errorf("%w: %d characters left over at the end", ErrBadTextBody, n)
	}
	return out, nil
}

// readTextRequest replaces a gRPC-Web text call's body by its decoded bytes and its
// content type by the binary one, so the rest of the gateway handles a binary gRPC-Web
// call. Its error is for the caller, in the caller's protocol.
func readTextRequest(r *http.Request, c *call) error {
	r.Header.Set("Content-Type", binaryWebType(r.Header.Get("Content-Type")))
	c.text = true
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxTextRequestBytes+1))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errLateBody
	case err != nil:
		return fmt.Errorf("%w: read: %w", ErrBadTextBody, err)
	case len(raw) > maxTextRequestBytes:
		return fmt.Errorf("%w: longer than %d bytes", ErrBadTextBody, maxTextRequestBytes)
	}
	c.bodyIn()
	body, err := decodeText(raw)
	if err != nil {
		return err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return nil
}

// textWriter gives a gRPC-Web text caller the text content type on answers the gateway
// writes itself (trailers-only errors), which the error writer labels binary.
type textWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *textWriter) WriteHeader(status int) {
	if !w.wrote {
		w.wrote = true
		if ct, ok := textWebType(w.Header().Get("Content-Type")); ok {
			w.Header().Set("Content-Type", ct)
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *textWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *textWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
