// Package streaming is the StreamingService: it serves the HLS files the transcoder wrote
// (GET/HEAD /v1/hls/<video_id>/<file>, with ranges and conditional requests) and tells
// players where a video's stream is.
package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"connectrpc.com/connect"
	streamingv1 "github.com/reelway/reelway/gen/reelway/streaming/v1"
	"github.com/reelway/reelway/gen/reelway/streaming/v1/streamingv1connect"
	"github.com/reelway/reelway/svc/kernel"
	"github.com/reelway/reelway/svc/media"
	"github.com/reelway/reelway/svc/rpc"
)

// Sentinel errors of the streaming service; toConnect maps them to codes.
var (
	// ErrNotFound reports a video without HLS output, or a file a URL cannot name.
	ErrNotFound = errors.New("streaming: not found")
)

// maxPlaylistBytes bounds how much of a master playlist GetPlayback reads.
const maxPlaylistBytes = 1 << 20

// Service implements StreamingService and the HLS file routes.
type Service struct {
	log     *slog.Logger
	dataDir string
}

var _ streamingv1connect.StreamingServiceHandler = (*Service)(nil)
var _ kernel.Plugin = (*Service)(nil)

// New returns a streaming service reading <dataDir>/hls.
func New(log *slog.Logger, dataDir string) *Service {
	return &Service{log: log, dataDir: dataDir}
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
	f, err := s.open(id, media.MasterPlaylist)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	defer f.Close()
	variants, err := media.ParseMaster(io.LimitReader(f, maxPlaylistBytes))
	if err != nil {
		return nil, s.toConnect(ctx, fmt.Errorf("video %s: %w", id, err))
	}
	res := &streamingv1.GetPlaybackResponse{MasterUrl: media.PlaybackPath(id)}
	for _, v := range variants {
		switch {
		case strings.HasPrefix(v.URI, "https://") || strings.HasPrefix(v.URI, "http://"):
			res.VariantUrls = append(res.VariantUrls, v.URI)
		case cleanRel(v.URI) == nil:
			res.VariantUrls = append(res.VariantUrls, media.FileURL(id, v.URI))
		default:
			// The transcoder never writes such a URI; a player could not fetch it here.
			s.log.WarnContext(ctx, "playback.variant_skipped", "video_id", id, "uri", v.URI)
		}
	}
	if t, err := s.open(id, media.Thumbnail); err == nil {
		_ = t.Close()
		res.ThumbnailUrl = media.FileURL(id, media.Thumbnail)
	}
	return res, nil
}

// toConnect is the one place streaming errors become Connect codes: invalid ids are
// invalid_argument, missing output is not_found, context errors keep their meaning, and
// anything else (an unreadable or malformed playlist) is internal and logged.
func (s *Service) toConnect(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, media.ErrInvalidID):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
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
