// Package upload is Reelway's UploadService: it takes a video file in (the plain HTTP route
// POST /v1/uploads for browsers and curl, the client-streaming Upload RPC for gRPC clients),
// stores it under <dataDir>/uploads/<id>/source, records the video in the metadata service
// and announces it with an upload.completed event that starts the transcode.
package upload

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/gen/reelway/upload/v1/uploadv1connect"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/rpc"
)

// Source is the events source name of this service.
const Source = "upload"

// DefaultMaxBytes caps one upload when Config.MaxBytes is zero.
const DefaultMaxBytes int64 = 2 << 30

// DefaultIdleTimeout is how long a request body may stall when Config.IdleTimeout is zero.
// The server has no whole-request timeout (large files take as long as they take), so a
// client that stops sending must not hold a connection and a partial file forever.
const DefaultIdleTimeout = time.Minute

// Errors of the upload service. Each maps to one Connect code in connectCode.
var (
	// ErrInvalid means the caller's request is malformed (missing title, bad stream order).
	ErrInvalid = errors.New("upload: invalid argument")
	// ErrEmpty means the file had no bytes.
	ErrEmpty = errors.New("upload: empty file")
	// ErrTooLarge means the file is bigger than the configured maximum.
	ErrTooLarge = errors.New("upload: file too large")
	// ErrRead means the caller's bytes stopped arriving (disconnect, broken stream).
	ErrRead = errors.New("upload: read body")
	// ErrIdle means no byte of the body arrived for the idle timeout: the caller stalled
	// and the upload was abandoned (HTTP 408, deadline_exceeded).
	ErrIdle = errors.New("upload: no bytes received")
	// ErrUnavailable means a dependency (metadata service or event bus) could not take the
	// upload; the caller may retry.
	ErrUnavailable = errors.New("upload: dependency unavailable")
	// ErrUnsupportedMedia means the body is a form rather than the raw file (HTTP 415).
	ErrUnsupportedMedia = errors.New("upload: unsupported content type")
	// ErrStorage means the file could not be written to local storage.
	ErrStorage = errors.New("upload: storage")
	// ErrUnauthenticated means the caller sent an Authorization header whose bearer token
	// does not verify (malformed, forged, expired). Such an upload is refused rather than
	// taken as anonymous, which would lose the owner the caller meant to set.
	ErrUnauthenticated = errors.New("upload: invalid auth token")
)

// Publisher stores domain events. The platform gives the service an events.Outbox: nil
// means the event is durable (acknowledged by JetStream or kept in the outbox file, which
// delivers it later), so an upload is answered 201 only once its upload.completed cannot
// be lost, even if the process stops right after answering.
type Publisher interface {
	Publish(ctx context.Context, ev *eventsv1.Event) error
}

var (
	_ Publisher = (*events.Bus)(nil)
	_ Publisher = (*events.Outbox)(nil)
)

// Videos is the part of the metadata service an upload needs.
type Videos interface {
	CreateVideo(ctx context.Context, req *metadatav1.CreateVideoRequest) (*metadatav1.CreateVideoResponse, error)
	UpdateVideo(ctx context.Context, req *metadatav1.UpdateVideoRequest) (*metadatav1.UpdateVideoResponse, error)
	// DeleteVideo removes the video of a tus creation refused after the video was made.
	DeleteVideo(ctx context.Context, req *metadatav1.DeleteVideoRequest) (*metadatav1.DeleteVideoResponse, error)
}

var _ Videos = metadatav1connect.MetadataServiceClient(nil)

// Config tunes the service.
type Config struct {
	// DataDir is the shared data directory; files land in <DataDir>/uploads/<id>/source.
	DataDir string
	// MaxBytes caps one upload; zero means DefaultMaxBytes.
	MaxBytes int64
	// Expiry is how long a resumable (tus) upload may go without new bytes before it is
	// deleted and its video failed; zero means DefaultExpiry.
	Expiry time.Duration
	// IdleTimeout is how long a request body may go without a byte arriving before the
	// request is given up: POST /v1/uploads and the Upload RPC then fail (408,
	// deadline_exceeded) and keep nothing, a tus request keeps what it stored. Zero means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// Service implements UploadService and the POST /v1/uploads route.
type Service struct {
	log    *slog.Logger
	cfg    Config
	pub    Publisher
	videos Videos
	users  Users
	// tus is the resumable upload endpoint, set up by Mount.
	tus *tusServer
	// buffers holds copy buffers of copyBufferSize bytes (*[]byte), reused across uploads.
	buffers sync.Pool
}

var _ uploadv1connect.UploadServiceHandler = (*Service)(nil)

// New returns the upload service. users verifies the bearer tokens that make the caller a
// video's owner; nil refuses every upload that carries one (unavailable).
func New(log *slog.Logger, cfg Config, pub Publisher, videos Videos, users Users) *Service {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = DefaultExpiry
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	return &Service{log: log, cfg: cfg, pub: pub, videos: videos, users: users}
}

// buffer takes a copy buffer from the pool; release gives it back.
func (s *Service) buffer() *[]byte {
	if b, ok := s.buffers.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, copyBufferSize)
	return &b
}

func (s *Service) release(b *[]byte) { s.buffers.Put(b) }

// Mount registers the RPC service, the plain HTTP upload route and the tus endpoint.
func (s *Service) Mount(srv *rpc.Server) error {
	t, err := s.newTus()
	if err != nil {
		return err
	}
	s.tus = t
	t.mount(srv)
	path, h := uploadv1connect.NewUploadServiceHandler(s, srv.HandlerOptions()...)
	srv.Mount(uploadv1connect.UploadServiceName, path, s.idleBodies(h))
	srv.Handle("POST /v1/uploads", s.httpHandler())
	return nil
}

// connectCode is the one place where domain errors become Connect codes; the HTTP route
// turns the same codes into HTTP statuses.
func connectCode(err error) connect.Code {
	var ce *connect.Error
	switch {
	case errors.Is(err, ErrIdle):
		// Before the connect.Error case: the Upload RPC's stream wraps the stall.
		return connect.CodeDeadlineExceeded
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrEmpty), errors.Is(err, ErrUnsupportedMedia):
		return connect.CodeInvalidArgument
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrSizeExceeded):
		return connect.CodeResourceExhausted
	case errors.Is(err, ErrUnauthenticated):
		return connect.CodeUnauthenticated
	case errors.Is(err, ErrUnavailable):
		return connect.CodeUnavailable
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.As(err, &ce):
		// A stream error from the caller's side (a chunk failing validation, say) keeps
		// the code connect gave it.
		return ce.Code()
	case errors.Is(err, ErrRead):
		return connect.CodeInvalidArgument
	default:
		return connect.CodeInternal
	}
}

// toConnect wraps err for an RPC answer. Internal faults are logged here and not described
// to callers.
func (s *Service) toConnect(ctx context.Context, err error) error {
	code := connectCode(err)
	if code == connect.CodeInternal {
		s.log.ErrorContext(ctx, "upload.internal", "err", err)
		return connect.NewError(code, errors.New("upload: internal error"))
	}
	return connect.NewError(code, err)
}
