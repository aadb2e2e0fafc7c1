package upload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
)

// created is the answer to a successful POST /v1/uploads.
type created struct {
	VideoID   string `json:"videoId"`
	SizeBytes int64  `json:"sizeBytes"`
	SHA256    string `json:"sha256"`
}

// httpError is the body of every failed POST /v1/uploads.
type httpError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// httpHandler serves POST /v1/uploads?title=…[&filename=…][&description=…][&visibility=…]
// with the raw file as the body and, optionally, Authorization: Bearer <auth token>.
func (s *Service) httpHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A malformed query (title=%zz) is refused rather than read without the field it
		// garbles, which would store the video under a title the caller did not send.
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			s.writeError(w, r, fmt.Errorf("%w: query string: %w", ErrInvalid, err))
			return
		}
		for k, vs := range q {
			if err := checkFieldName(k); err != nil {
				s.writeError(w, r, err)
				return
			}
			if len(vs) > 1 {
				// Which one was meant is a guess; the caller's script likely has a bug.
				s.writeError(w, r, fmt.Errorf("%w: %s given %d times", ErrInvalid, k, len(vs)))
				return
			}
		}
		if vs, ok := q["visibility"]; ok && vs[0] == "" {
			s.writeError(w, r, fmt.Errorf("%w: visibility needs a value (public, unlisted or private)", ErrInvalid))
			return
		}
		vis, err := parseVisibility(q.Get("visibility"))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		meta := &uploadv1.UploadMetadata{
			Title:       q.Get("title"),
			Filename:    q.Get("filename"),
			Description: q.Get("description"),
			Visibility:  vis,
		}
		if err := validateMetadata(meta); err != nil {
			s.writeError(w, r, err)
			return
		}
		// Only multipart is refused: `curl --data-binary` labels a raw file
		// application/x-www-form-urlencoded, and a multipart body is never a video file.
		if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "multipart/") {
			s.writeError(w, r, fmt.Errorf("%w: send the raw file as the body (curl --data-binary @file), not a form", ErrUnsupportedMedia))
			return
		}
		switch {
		case r.ContentLength > s.cfg.MaxBytes:
			s.writeError(w, r, fmt.Errorf("%w: %d bytes announced, at most %d allowed", ErrTooLarge, r.ContentLength, s.cfg.MaxBytes))
			return
		case r.ContentLength == 0:
			s.writeError(w, r, fmt.Errorf("%w: no bytes received", ErrEmpty))
			return
		}
		res, err := s.store(r.Context(), meta, r.Header, s.idleBody(w, r))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(created{VideoID: res.GetVideoId(), SizeBytes: res.GetSizeBytes(), SHA256: res.GetSha256()})
	})
}

// writeError answers with the Connect code of err as JSON and the matching HTTP status.
func (s *Service) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := connectCode(err)
	msg := err.Error()
	if code == connect.CodeInternal {
		s.log.ErrorContext(r.Context(), "upload.internal", "err", err)
		msg = "upload: internal error"
	}
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrIdle) {
		// The rest of the body is not wanted (or not coming); closing spares reading it to
		// keep the connection.
		w.Header().Set("Connection", "close")
	}
	status := httpStatus(code)
	switch {
	case errors.Is(err, ErrUnsupportedMedia):
		status = http.StatusUnsupportedMediaType
	case errors.Is(err, ErrIdle):
		// The client, not a backend, ran out of time: 408 rather than 504.
		status = http.StatusRequestTimeout
	}
	if code == connect.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", wwwAuthenticate)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(httpError{Code: code.String(), Message: msg})
}

// httpStatus maps a Connect code to an HTTP status as the Connect protocol does, except
// that resource_exhausted is the upload limit here, so 413 rather than 429.
func httpStatus(code connect.Code) int {
	switch code {
	case connect.CodeCanceled:
		return 499
	case connect.CodeInvalidArgument, connect.CodeOutOfRange, connect.CodeFailedPrecondition:
		return http.StatusBadRequest
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusRequestEntityTooLarge
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	default:
		return http.StatusInternalServerError
	}
}

// wwwAuthenticate is the challenge of a 401 (RFC 6750): the bearer token did not verify.
const wwwAuthenticate = `Bearer error="invalid_token"`

// idleBody returns r's body with a read deadline renewed before every read: a body that
// stalls for the idle timeout fails with ErrIdle.
func (s *Service) idleBody(w http.ResponseWriter, r *http.Request) io.ReadCloser {
	return &idleReader{body: r.Body, rc: http.NewResponseController(w), idle: s.cfg.IdleTimeout}
}

// idleBodies gives the RPC handler h's request bodies the idle timeout, so a stalled
// Upload stream is dropped like a stalled POST /v1/uploads.
func (s *Service) idleBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = s.idleBody(w, r)
		}
		h.ServeHTTP(w, r)
	})
}

// idleReader is a request body whose connection read deadline is pushed back before every
// read, so a stalled client is dropped after idle while a slow but steady one is not. A
// read that times out fails with ErrIdle, which names the timeout and not the
// connection's addresses.
type idleReader struct {
	body io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	// Not every writer supports deadlines (tests, some wrappers); then reads just block.
	_ = r.rc.SetReadDeadline(time.Now().Add(r.idle))
	n, err := r.body.Read(p)
	if err != nil && timedOut(err) {
		return n, idleError(r.idle)
	}
	return n, err
}

func (r *idleReader) Close() error { return r.body.Close() }

// timedOut reports a read that ended at its deadline: os.ErrDeadlineExceeded over
// HTTP/2, a timeout net.Error over HTTP/1.1.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// idleError is the error of a body that stalled for idle.
func idleError(idle time.Duration) error {
	return fmt.Errorf("%w for %ss", ErrIdle, strconv.FormatFloat(idle.Seconds(), 'f', -1, 64))
}
