// Package streaming is the StreamingService: it serves the files the transcoder wrote
// (GET/HEAD /v1/hls/<video_id>/<file>, with ranges and conditional requests), guards
// private videos with signed playback tokens, and tells players where a video's stream
// is.
package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/reelway/reelway/gen/reelway/auth/v1"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	streamingv1 "github.com/reelway/reelway/gen/reelway/streaming/v1"
	"github.com/reelway/reelway/gen/reelway/streaming/v1/streamingv1connect"
	"github.com/reelway/reelway/svc/kernel"
	"github.com/reelway/reelway/svc/media"
	"github.com/reelway/reelway/svc/rpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Sentinel errors of the streaming service; toConnect maps them to codes, the file routes
// to HTTP statuses.
var (
	// ErrNotFound reports a video without HLS output, or a file a URL cannot name.
	ErrNotFound = errors.New("streaming: not found")
	// ErrNotReady reports a video that has no playback yet (still uploading or processing)
	// or never will (failed).
	ErrNotReady = errors.New("streaming: not playable")
	// ErrUnavailable reports that metadata could not say whether a video may be served.
	ErrUnavailable = errors.New("streaming: video metadata unavailable")
	// ErrUnauthenticated reports a private video's playback asked for without a valid
	// auth token.
	ErrUnauthenticated = errors.New("streaming: private video: sign in as its owner")
	// ErrForbidden reports a private video's playback asked for by someone else than its
	// owner.
	ErrForbidden = errors.New("streaming: private video of another user")
)

// maxPlaylistBytes bounds how much of a playlist is read to parse or rewrite it.
const maxPlaylistBytes = 1 << 20

// Videos is the part of the metadata service streaming needs: a video's visibility,
// owner and title.
type Videos interface {
	GetVideo(ctx context.Context, req *metadatav1.GetVideoRequest) (*metadatav1.GetVideoResponse, error)
}

var _ Videos = metadatav1connect.MetadataServiceClient(nil)

// Users checks the auth tokens of callers asking to play a private video.
type Users interface {
	VerifyToken(ctx context.Context, req *authv1.VerifyTokenRequest) (*authv1.VerifyTokenResponse, error)
}

var _ Users = authv1connect.AuthServiceClient(nil)

// Config tunes the streaming service. The zero value of each field gets a default in New.
type Config struct {
	// DataDir holds hls/<id>/ and, unless Secret is set, the generated playback secret.
	DataDir string
	// Secret signs playback tokens (at least 32 bytes). Every streaming process serving
	// one platform needs the same one; empty loads or creates <DataDir>/playback.secret.
	Secret []byte
	// TokenTTL is the least lifetime of a playback token (default 1h); a token lives at
	// least twice the video's duration, so a viewer who pauses can still finish.
	TokenTTL time.Duration
	// CacheTTL is how long a video's visibility is cached (default 2s).
	CacheTTL time.Duration
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// Service implements StreamingService and the HLS file routes.
type Service struct {
	log     *slog.Logger
	dataDir string
	cfg     Config
	tokens  Tokens
	videos  *lookups
	users   Users
}

var _ streamingv1connect.StreamingServiceHandler = (*Service)(nil)
var _ kernel.Plugin = (*Service)(nil)

// New returns a streaming service reading <DataDir>/hls. videos says which videos exist
// and who may watch them; users checks the auth tokens of owners of private videos (nil:
// nobody can play private videos).
func New(log *slog.Logger, cfg Config, videos Videos, users Users) (*Service, error) {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = time.Hour
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Secret) == 0 {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSecret, err)
		}
		secret, err := LoadOrCreateSecret(filepath.Join(cfg.DataDir, SecretFile))
		if err != nil {
			return nil, err
		}
		cfg.Secret = secret
	}
	if len(cfg.Secret) < secretLen {
		return nil, fmt.Errorf("%w: must be at least %d bytes", ErrSecret, secretLen)
	}
	return &Service{
		log:     log,
		dataDir: cfg.DataDir,
		cfg:     cfg,
		tokens:  NewTokens(cfg.Secret),
		videos:  newLookups(videos, cfg.CacheTTL, cfg.Now),
		users:   users,
	}, nil
}

// Mount registers the StreamingService handler and the HLS file routes. The GET pattern
// also serves HEAD; OPTIONS answers CORS preflights of players on other origins.
func (s *Service) Mount(srv *rpc.Server) error {
	path, h := streamingv1connect.NewStreamingServiceHandler(s, srv.HandlerOptions()...)
	srv.Mount(streamingv1connect.StreamingServiceName, path, h)
	srv.Handle("GET "+media.URLPrefix, s.FileHandler())
	srv.Handle("OPTIONS "+media.URLPrefix, preflight())
	return nil
}

// GetPlayback implements StreamingService.
func (s *Service) GetPlayback(ctx context.Context, req *streamingv1.GetPlaybackRequest) (*streamingv1.GetPlaybackResponse, error) {
	id := req.GetVideoId()
	if err := media.CheckID(id); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	v, err := s.videos.get(ctx, id)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	// Only the owner of a private video learns its state (and failure reason).
	if v.private() {
		if err := s.authorize(ctx, v); err != nil {
			return nil, s.toConnect(ctx, err)
		}
	}
	if err := v.playable(id); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	f, err := s.open(id, media.MasterPlaylist)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	defer f.Close()
	variants, err := media.ParseMaster(io.LimitReader(f, maxPlaylistBytes))
	if err != nil {
		return nil, s.toConnect(ctx, fmt.Errorf("video %s: %w", id, err))
	}
	query := ""
	res := &streamingv1.GetPlaybackResponse{}
	if v.private() {
		exp := s.cfg.Now().Add(max(s.cfg.TokenTTL, time.Duration(2*v.duration*float64(time.Second)))).Truncate(time.Second)
		query = "?" + tokenParam + "=" + s.tokens.Sign(id, exp)
		res.ExpireTime = timestamppb.New(exp)
	}
	res.MasterUrl = media.PlaybackPath(id) + query
	for _, v := range variants {
		switch {
		case strings.HasPrefix(v.URI, "https://") || strings.HasPrefix(v.URI, "http://"):
			res.VariantUrls = append(res.VariantUrls, v.URI)
		case cleanRel(v.URI) == nil:
			res.VariantUrls = append(res.VariantUrls, media.FileURL(id, v.URI)+query)
		default:
			// The transcoder never writes such a URI; a player could not fetch it here.
			s.log.WarnContext(ctx, "playback.variant_skipped", "video_id", id, "uri", v.URI)
		}
	}
	for name, dst := range map[string]*string{media.Thumbnail: &res.ThumbnailUrl, media.Poster: &res.PosterUrl, media.Download: &res.DownloadUrl} {
		if f, err := s.open(id, name); err == nil {
			_ = f.Close()
			*dst = media.FileURL(id, name) + query
		}
	}
	return res, nil
}

// authorize lets the owner of a private video, and nobody else, have its playback URLs.
// The caller proves who they are with an auth token (Authorization: Bearer ...).
func (s *Service) authorize(ctx context.Context, v video) error {
	info, ok := connect.CallInfoForHandlerContext(ctx)
	if !ok || s.users == nil {
		return ErrUnauthenticated
	}
	bearer, found := strings.CutPrefix(info.RequestHeader().Get("Authorization"), "Bearer ")
	bearer = strings.TrimSpace(bearer)
	if !found || bearer == "" || len(bearer) > 4096 {
		return ErrUnauthenticated
	}
	who, err := s.users.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: bearer})
	switch code := connect.CodeOf(err); {
	case err == nil:
	case code == connect.CodeUnauthenticated || code == connect.CodeInvalidArgument || code == connect.CodePermissionDenied:
		return ErrUnauthenticated
	default:
		return fmt.Errorf("%w: auth: %w", ErrUnavailable, err)
	}
	if v.ownerID == "" || who.GetUserId() != v.ownerID {
		return ErrForbidden
	}
	return nil
}

// toConnect is the one place streaming errors become Connect codes: invalid ids are
// invalid_argument, missing videos and output not_found, videos still uploading or
// processing, or failed, failed_precondition, a private video's playback asked
// for without a valid auth token unauthenticated and by someone else than its owner
// permission_denied, metadata or auth out of reach unavailable, context errors keep their
// meaning, and anything else (an unreadable or malformed playlist) is internal and logged.
func (s *Service) toConnect(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, media.ErrInvalidID):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, ErrNotReady):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, ErrUnauthenticated):
		return connect.NewError(connect.CodeUnauthenticated, err)
	case errors.Is(err, ErrForbidden):
		return connect.NewError(connect.CodePermissionDenied, err)
	case errors.Is(err, ErrUnavailable):
		s.log.WarnContext(ctx, "streaming.unavailable", "err", err)
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		s.log.ErrorContext(ctx, "streaming.error", "err", err)
		return connect.NewError(connect.CodeInternal, err)
	}
}

// open opens a regular file of a video's HLS folder. The folder is reached through
// os.Root handles on the HLS root and then on the video's folder, so neither "..", nor a
// symlink pointing elsewhere, nor a video folder that is itself a symlink out of the HLS
// root can lead outside. Every failure is ErrNotFound: a caller learns nothing about what
// exists outside.
func (s *Service) open(id, rel string) (*os.File, error) {
	if err := media.CheckID(id); err != nil {
		return nil, err
	}
	if err := cleanRel(rel); err != nil {
		return nil, err
	}
	hls, err := os.OpenRoot(media.HLSRoot(s.dataDir))
	if err != nil {
		return nil, notFound(id, rel, err)
	}
	defer hls.Close()
	video, err := hls.OpenRoot(id)
	if err != nil {
		return nil, notFound(id, rel, err)
	}
	defer video.Close()
	f, err := video.Open(rel)
	if err != nil {
		return nil, notFound(id, rel, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, notFound(id, rel, err)
	}
	return f, nil
}

func notFound(id, rel string, cause error) error {
	if cause == nil || errors.Is(cause, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s/%s", ErrNotFound, id, rel)
	}
	return fmt.Errorf("%w: %s/%s: %w", ErrNotFound, id, rel, cause)
}
