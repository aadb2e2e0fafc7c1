package upload

import (
	"context"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"
	uploadv1 "github.com/reelway/reelway/gen/reelway/upload/v1"
)

// Upload implements UploadService.Upload: the first message is the metadata, the rest are
// chunks, streamed to storage as they arrive. The caller's bearer token, if any, is checked
// before the first chunk is read.
func (s *Service) Upload(ctx context.Context, stream *connect.ClientStream[uploadv1.UploadRequest]) (*uploadv1.UploadResponse, error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, s.toConnect(ctx, s.streamError(err))
		}
		return nil, s.toConnect(ctx, fmt.Errorf("%w: empty stream: the first message must be metadata", ErrInvalid))
	}
	meta := stream.Msg().GetMetadata()
	if meta == nil {
		return nil, s.toConnect(ctx, fmt.Errorf("%w: the first message must be metadata", ErrInvalid))
	}
	res, err := s.store(ctx, meta, stream.RequestHeader(), &chunkReader{stream: stream, s: s})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return res, nil
}

// streamError is the error of an Upload stream that broke: ErrIdle alone when the caller
// stalled (connect wraps the body's error in a protocol error), else ErrRead.
func (s *Service) streamError(err error) error {
	if errors.Is(err, ErrIdle) {
		return idleError(s.cfg.IdleTimeout)
	}
	return fmt.Errorf("%w: %w", ErrRead, err)
}

// chunkReader turns the chunk messages of an Upload stream into an io.Reader.
type chunkReader struct {
	stream *connect.ClientStream[uploadv1.UploadRequest]
	s      *Service
	buf    []byte
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if !c.stream.Receive() {
			if err := c.stream.Err(); err != nil {
				if errors.Is(err, ErrIdle) {
					return 0, c.s.streamError(err)
				}
				return 0, err
			}
			return 0, io.EOF
		}
		msg := c.stream.Msg()
		if msg.GetMetadata() != nil {
			return 0, fmt.Errorf("%w: metadata sent twice", ErrInvalid)
		}
		c.buf = msg.GetChunk()
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}
