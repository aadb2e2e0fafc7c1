// Package transcoder is the TranscoderService: it probes uploaded sources with ffprobe and
// turns them into an HLS ladder (renditions and master playlist, with one ffmpeg run that
// decodes the source once), a poster, a thumbnail and a progressive MP4 download, and
// reports the progress of the transcodes it runs.
package transcoder

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/gen/reelway/transcoder/v1/transcoderv1connect"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/kernel"
	"github.com/reelway/reelway/svc/media"
	"github.com/reelway/reelway/svc/rpc"
)

// Sentinel errors of the transcoder; toConnect maps them to codes.
var (
	// ErrNotFound reports a video without an uploaded source.
	ErrNotFound = errors.New("transcoder: source not found")
	// ErrUndecodable reports a source that ffprobe or ffmpeg cannot read as video. It is
	// permanent: retrying the same bytes cannot succeed.
	ErrUndecodable = errors.New("transcoder: source is not a decodable video")
	// ErrKilled reports an ffmpeg that a signal ended while its caller still wanted the
	// result: a transient failure worth another attempt.
	ErrKilled = errors.New("transcoder: ffmpeg was killed")
	// ErrBusy reports a second transcode of a video whose transcode is still running.
	ErrBusy = errors.New("transcoder: transcode already running")
	// ErrTimeout reports a transcode killed for running longer than Config.JobTimeout.
	ErrTimeout = errors.New("transcoder: job timeout")
)

// eventSource names this service in the events it publishes.
const eventSource = "transcoder"

// Publisher is the part of the event bus the transcoder needs: progress events.
type Publisher interface {
	Publish(ctx context.Context, ev *eventsv1.Event) error
}

var _ Publisher = (*events.Bus)(nil)

// Config tunes the transcoder. The zero value of each field gets a default in New.
type Config struct {
	// DataDir holds uploads/<id>/source and receives hls/<id>/.
	DataDir string
	// FFmpegPath and FFprobePath are the binaries, looked up in PATH when bare names
	// (default "ffmpeg" and "ffprobe").
	FFmpegPath  string
	FFprobePath string
	// MaxConcurrent bounds the ffmpeg runs of this process (default 1): an encode already
	// uses every core, so more parallel runs only add memory and latency.
	MaxConcurrent int
	// ProgressInterval is the least time between two transcode.progress events of one
	// transcode (default 1s).
	ProgressInterval time.Duration
	// Ladder is the set of rungs renditions are chosen from (default StandardLadder).
	Ladder []Rung
	// JobTimeout bounds one transcode from the moment it gets an ffmpeg slot (default
	// 2h); when it passes, ffmpeg is killed and the partial output removed.
	JobTimeout time.Duration
}

// Service implements TranscoderService.
type Service struct {
	log *slog.Logger
	cfg Config
	pub Publisher
	sem chan struct{}
	// jobs tracks the transcodes running in this process and recent final states.
	jobs *tracker
}

var _ transcoderv1connect.TranscoderServiceHandler = (*Service)(nil)
var _ kernel.Plugin = (*Service)(nil)
var _ kernel.Starter = (*Service)(nil)

// New returns a transcoder. pub receives transcode.progress events; it may be nil.
func New(log *slog.Logger, cfg Config, pub Publisher) *Service {
	if cfg.FFmpegPath == "" {
		cfg.FFmpegPath = "ffmpeg"
	}
	if cfg.FFprobePath == "" {
		cfg.FFprobePath = "ffprobe"
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 1
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = time.Second
	}
	if len(cfg.Ladder) == 0 {
		cfg.Ladder = StandardLadder()
	}
	cfg.Ladder = slices.Clone(cfg.Ladder)
	slices.SortFunc(cfg.Ladder, func(a, b Rung) int { return a.Short - b.Short })
	if cfg.JobTimeout <= 0 {
		cfg.JobTimeout = 2 * time.Hour
	}
	return &Service{
		log:  log,
		cfg:  cfg,
		pub:  pub,
		sem:  make(chan struct{}, cfg.MaxConcurrent),
		jobs: newTracker(),
	}
}

// Mount registers the TranscoderService handler.
func (s *Service) Mount(srv *rpc.Server) error {
	path, h := transcoderv1connect.NewTranscoderServiceHandler(s, srv.HandlerOptions()...)
	srv.Mount(transcoderv1connect.TranscoderServiceName, path, h)
	return nil
}

// Probe implements TranscoderService.
func (s *Service) Probe(ctx context.Context, req *transcoderv1.ProbeRequest) (*transcoderv1.ProbeResponse, error) {
	src, err := s.source(req.GetVideoId())
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	p, err := s.probe(ctx, src)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return &transcoderv1.ProbeResponse{
		DurationSeconds: p.Duration,
		Width:           int32(p.Width),
		Height:          int32(p.Height),
		VideoCodec:      p.VideoCodec,
		AudioCodec:      p.AudioCodec,
		HasAudio:        p.HasAudio,
		SizeBytes:       p.Size,
		FrameRate:       p.FPS,
		BitRate:         p.BitRate,
	}, nil
}

// Transcode implements TranscoderService.
func (s *Service) Transcode(ctx context.Context, req *transcoderv1.TranscodeRequest) (*transcoderv1.TranscodeResponse, error) {
	id := req.GetVideoId()
	src, err := s.source(id)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	// A second transcode of the same video fails fast instead of queueing behind the
	// semaphore: two runs would race on the same output.
	if err := s.jobs.start(id, req.GetJobId()); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	res, err := s.transcodeSource(ctx, id, req.GetJobId(), src)
	if err != nil && ctx.Err() == nil {
		// Whatever ffmpeg made of it, a source removed mid-run means the video was
		// deleted: not_found, which no retry can change, rather than an undecodable input.
		if gone := s.sourceKept(id); errors.Is(gone, ErrNotFound) {
			err = gone
		}
	}
	var names []string
	for _, r := range res.GetRenditions() {
		names = append(names, r.GetName())
	}
	s.jobs.finish(id, names, err)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return res, nil
}

func (s *Service) transcodeSource(ctx context.Context, id, jobID, src string) (*transcoderv1.TranscodeResponse, error) {
	p, err := s.probe(ctx, src)
	if err != nil {
		return nil, err
	}
	out, err := s.transcode(ctx, id, jobID, src, p)
	if err != nil {
		return nil, err
	}
	res := &transcoderv1.TranscodeResponse{
		MasterPlaylist:  media.MasterPlaylist,
		Thumbnail:       media.Thumbnail,
		Poster:          media.Poster,
		Download:        media.Download,
		DurationSeconds: p.Duration,
		Width:           int32(p.Width),
		Height:          int32(p.Height),
		VideoCodec:      p.VideoCodec,
		AudioCodec:      p.AudioCodec,
		HasAudio:        p.HasAudio,
		SizeBytes:       p.Size,
		FrameRate:       p.FPS,
		BitRate:         p.BitRate,
	}
	for _, r := range out {
		res.Renditions = append(res.Renditions, &metadatav1.Rendition{
			Name:         r.Name,
			Width:        int32(r.Width),
			Height:       int32(r.Height),
			Bandwidth:    r.Bandwidth,
			PlaylistPath: r.PlaylistPath,
			Codecs:       r.Codecs,
		})
	}
	return res, nil
}

// acquire takes an ffmpeg slot, or gives up when ctx ends.
func (s *Service) acquire(ctx context.Context) (func(), error) {
	select {
	case s.sem <- struct{}{}:
		return func() { <-s.sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// toConnect is the one place transcoder errors become Connect codes:
//   - media.ErrInvalidID → invalid_argument (the request names no possible video);
//   - ErrNotFound → not_found;
//   - ErrUndecodable → failed_precondition, not invalid_argument: the request itself is
//     well-formed, it is the stored source that is not in a state the operation needs, and
//     only a new upload (not a corrected request or a retry) can change that. Callers treat
//     it as permanent;
//   - ErrBusy → aborted (a concurrency conflict; retry once the running transcode ends);
//   - ErrTimeout → deadline_exceeded, like a caller's own deadline: ffmpeg was killed
//     and nothing was kept; a retry on a less loaded machine may pass;
//   - context errors → canceled / deadline_exceeded;
//   - anything else → internal, logged here.
func (s *Service) toConnect(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, media.ErrInvalidID):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, ErrUndecodable):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, ErrBusy):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, ErrTimeout):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, ErrKilled):
		// unavailable, not internal: the caller's retry policy treats it as transient.
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		s.log.ErrorContext(ctx, "transcoder.error", "err", err)
		return connect.NewError(connect.CodeInternal, err)
	}
}
