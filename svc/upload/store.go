package upload

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
	"github.com/reelway/reelway/svc/events"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

const (
	// copyBufferSize is the piece of a file held in memory at a time by one upload: large,
	// so that moving a big file takes few system calls, and pooled (Service.buffer).
	copyBufferSize = 1 << 20
	// finishTimeout bounds the steps after the bytes are stored. They run detached from
	// the caller's context so a client hanging up at the last moment cannot leave a
	// stored file without its record and event.
	finishTimeout = 15 * time.Second
	// maxReasonLen is the metadata schema's failure_reason limit.
	maxReasonLen = 2000
)

// lowerBase32 spells ids in lower case without padding, so they fit ^[A-Za-z0-9_-]{1,64}$.
var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newVideoID returns 20 random base32 characters (100 bits).
func newVideoID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return lowerBase32.EncodeToString(b[:])[:20]
}

// validateMetadata applies the schema's rules, so the HTTP route accepts exactly what the
// RPC accepts.
func validateMetadata(meta *uploadv1.UploadMetadata) error {
	if meta == nil {
		return fmt.Errorf("%w: metadata is required", ErrInvalid)
	}
	if err := protovalidate.Validate(meta); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	// Query strings can carry bytes protobuf strings cannot: check before any body is read,
	// or the metadata call fails late with an internal marshal error.
	for name, v := range map[string]string{"title": meta.GetTitle(), "filename": meta.GetFilename(), "description": meta.GetDescription()} {
		if !utf8.ValidString(v) {
			return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, name)
		}
		// Line breaks and tabs belong in a description, never in a one-line title or a
		// filename (metadata refuses them in titles too).
		multiline := name == "description"
		if strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t')) }) {
			return fmt.Errorf("%w: %s contains control characters", ErrInvalid, name)
		}
	}
	return nil
}

// store is the one upload path both entry points share: it settles who owns the video
// from the bearer token in h (before reading any of r), streams r to
// <dataDir>/uploads/<id>/source through a sha256 hasher, creates the video record and
// publishes upload.completed. On failure nothing is left on disk, and a record whose event
// could not be published is marked failed.
func (s *Service) store(ctx context.Context, meta *uploadv1.UploadMetadata, h http.Header, r io.Reader) (_ *uploadv1.UploadResponse, err error) {
	if err := validateMetadata(meta); err != nil {
		return nil, err
	}
	owner, err := s.owner(ctx, h, meta.GetVisibility())
	if err != nil {
		return nil, err
	}
	id := newVideoID()
	log := s.log.With("video_id", id)

	if err := s.pub.Publish(ctx, events.UploadStarted(Source, id, meta.GetFilename())); err != nil {
		// An event that cannot be kept means the completed one could not be either;
		// refuse before the caller sends the whole file.
		return nil, fmt.Errorf("%w: publish upload.started: %w", ErrUnavailable, err)
	}
	log.InfoContext(ctx, "upload.started", "filename", meta.GetFilename(), "title", meta.GetTitle(),
		"owner_id", owner, "visibility", visibilityName(recordedVisibility(meta.GetVisibility())))
	defer func() {
		if err == nil {
			return
		}
		// Whoever saw upload.started learns how it ended.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
		defer cancel()
		if perr := s.pub.Publish(pctx, events.UploadFailed(Source, id, truncate(err.Error(), maxReasonLen))); perr != nil {
			log.WarnContext(ctx, "upload.publish_failed", "err", perr)
		}
	}()

	dir := filepath.Join(s.cfg.DataDir, "uploads", id)
	size, sum, err := s.write(dir, r)
	if err != nil {
		_ = os.RemoveAll(dir)
		log.WarnContext(ctx, "upload.aborted", "err", err)
		return nil, err
	}

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	video := &metadatav1.Video{
		Id:          id,
		Title:       meta.GetTitle(),
		Description: meta.GetDescription(),
		OwnerId:     owner,
		Visibility:  recordedVisibility(meta.GetVisibility()),
		Status:      metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING,
		SizeBytes:   size,
		Sha256:      sum,
	}
	if _, err := s.videos.CreateVideo(fctx, &metadatav1.CreateVideoRequest{Video: video}); err != nil {
		_ = os.RemoveAll(dir)
		if c := connect.CodeOf(err); c == connect.CodeDeadlineExceeded || c == connect.CodeUnknown {
			// The record may exist even though the answer was lost.
			s.markFailed(fctx, id, "upload aborted: "+err.Error())
		}
		log.WarnContext(ctx, "upload.create_video", "err", err)
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			return nil, fmt.Errorf("%w: create video: %w", ErrInvalid, err)
		}
		return nil, fmt.Errorf("%w: create video: %w", ErrUnavailable, err)
	}
	if err := s.pub.Publish(fctx, events.UploadCompleted(Source, id, size, sum)); err != nil {
		// Nobody will transcode a video whose event is lost: record why and drop the file.
		s.markFailed(fctx, id, "upload.completed event not published: "+err.Error())
		_ = os.RemoveAll(dir)
		log.WarnContext(ctx, "upload.publish_completed", "err", err)
		return nil, fmt.Errorf("%w: publish upload.completed: %w", ErrUnavailable, err)
	}
	log.InfoContext(ctx, "upload.completed", "size", size, "sha256", sum)
	return &uploadv1.UploadResponse{VideoId: id, SizeBytes: size, Sha256: sum}, nil
}

// write copies r into dir/source.part with a bounded buffer, enforcing the size limit,
// then makes it durable and renames it to dir/source.
func (s *Service) write(dir string, r io.Reader) (int64, string, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o750); err != nil {
		return 0, "", fmt.Errorf("%w: %w", ErrStorage, err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		return 0, "", fmt.Errorf("%w: %w", ErrStorage, err)
	}
	part := filepath.Join(dir, "source.part")
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return 0, "", fmt.Errorf("%w: %w", ErrStorage, err)
	}
	defer f.Close()

	h := sha256.New()
	// Reading one byte past the limit tells an oversize body from one of exactly MaxBytes.
	lr := io.LimitReader(r, s.cfg.MaxBytes+1)
	buf := s.buffer()
	defer s.release(buf)
	n, err := io.CopyBuffer(io.MultiWriter(fileWriter{f: f, wb: newWriteBehind(f, 0)}, h), lr, *buf)
	switch {
	case n > s.cfg.MaxBytes:
		return 0, "", fmt.Errorf("%w: more than %d bytes", ErrTooLarge, s.cfg.MaxBytes)
	case err != nil:
		var werr *writeError
		switch {
		case errors.As(err, &werr):
			return 0, "", fmt.Errorf("%w: %w", ErrStorage, err)
		case errors.Is(err, ErrIdle):
			return 0, "", err
		}
		return 0, "", fmt.Errorf("%w: %w", ErrRead, err)
	case n == 0:
		return 0, "", fmt.Errorf("%w: no bytes received", ErrEmpty)
	}
	if err := f.Sync(); err != nil {
		return 0, "", fmt.Errorf("%w: sync: %w", ErrStorage, err)
	}
	if err := f.Close(); err != nil {
		return 0, "", fmt.Errorf("%w: close: %w", ErrStorage, err)
	}
	if err := os.Rename(part, filepath.Join(dir, "source")); err != nil {
		return 0, "", fmt.Errorf("%w: rename: %w", ErrStorage, err)
	}
	syncDir(dir)
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// fileWriter tags the local file's write errors so they are told apart from the caller's
// read errors after io.CopyBuffer.
type fileWriter struct {
	f *os.File
	// wb, if not nil, sends the bytes on to the disk as they come.
	wb *writeBehind
}

func (w fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if w.wb != nil {
		w.wb.wrote(n)
	}
	if err != nil {
		return n, &writeError{err: err}
	}
	return n, nil
}

// writeError marks a failure of the local file, as opposed to the caller's stream.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// syncDir makes the rename durable; a failure only weakens crash safety, so it is ignored.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}

// markFailed records why a created video will never be processed. It is best effort: the
// caller is already answering with an error.
func (s *Service) markFailed(ctx context.Context, id, reason string) {
	_, err := s.videos.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
		Video: &metadatav1.Video{
			Id:            id,
			Status:        metadatav1.VideoStatus_VIDEO_STATUS_FAILED,
			FailureReason: truncate(reason, maxReasonLen),
		},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status", "failure_reason"}},
	})
	if err != nil {
		s.log.WarnContext(ctx, "upload.mark_failed", "video_id", id, "err", err)
	}
}

// truncate cuts s to at most n characters without splitting one.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if n == 0 {
			break
		}
		b.WriteRune(r)
		n--
	}
	return b.String()
}
