// Package worker is Reelway's WorkerService: it runs the transcode job of every uploaded
// video from a durable JetStream consumer on upload.completed, records the result in the
// metadata service, and shows the jobs it has seen through ListJobs and GetJob.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/gen/reelway/transcoder/v1/transcoderv1connect"
	"github.com/reelway/reelway/gen/reelway/worker/v1/workerv1connect"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/rpc"
)

// Source is the events source name of this service.
const Source = "worker"

// ConsumerName is the durable JetStream consumer every worker instance shares, so each
// upload is transcoded by one of them.
const ConsumerName = "worker-transcode"

// Errors of the worker.
var (
	// ErrJobNotFound means no job with that id is known to this worker.
	ErrJobNotFound = errors.New("worker: job not found")
	// ErrTranscode means the transcoder did not produce the renditions.
	ErrTranscode = errors.New("worker: transcode")
	// ErrMetadata means the metadata service did not take an update.
	ErrMetadata = errors.New("worker: metadata")
	// ErrPublish means an event was not stored by the bus.
	ErrPublish = errors.New("worker: publish")
)

// Publisher stores domain events.
type Publisher interface {
	Publish(ctx context.Context, ev *eventsv1.Event) error
}

var _ Publisher = (*events.Bus)(nil)

// Videos is the part of the metadata service the worker needs.
type Videos interface {
	UpdateVideo(ctx context.Context, req *metadatav1.UpdateVideoRequest) (*metadatav1.UpdateVideoResponse, error)
}

var _ Videos = metadatav1connect.MetadataServiceClient(nil)

// Transcoder makes the HLS ladder of an uploaded video.
type Transcoder interface {
	Transcode(ctx context.Context, req *transcoderv1.TranscodeRequest) (*transcoderv1.TranscodeResponse, error)
}

var _ Transcoder = transcoderv1connect.TranscoderServiceClient(nil)

// Config tunes the job loop. Zero values take the defaults.
type Config struct {
	// MaxConcurrent is how many jobs run at once (default 1): transcodes are CPU bound.
	MaxConcurrent int
	// AckWait is how long JetStream waits for a sign of life before redelivering a job
	// (default 30s). A running job reports progress every AckWait/3.
	AckWait time.Duration
	// MaxDeliver is how many times one upload is attempted (default 5).
	MaxDeliver int
	// RetryBackoff is the delay before attempt n+1 after a transient failure of attempt n;
	// the last entry repeats (default 1s, 10s, 60s).
	RetryBackoff []time.Duration
	// JobHistory is how many jobs the in-memory table keeps (default 1000).
	JobHistory int
}

func (c Config) withDefaults() Config {
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 1
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if len(c.RetryBackoff) == 0 {
		c.RetryBackoff = []time.Duration{time.Second, 10 * time.Second, time.Minute}
	}
	if c.JobHistory <= 0 {
		c.JobHistory = 1000
	}
	return c
}

// Service implements WorkerService and runs the transcode jobs.
type Service struct {
	log    *slog.Logger
	cfg    Config
	js     jetstream.JetStream
	pub    Publisher
	videos Videos
	tc     Transcoder
	jobs   *jobTable
}

var _ workerv1connect.WorkerServiceHandler = (*Service)(nil)

// New returns the worker. Jobs run only while Start runs.
func New(log *slog.Logger, cfg Config, js jetstream.JetStream, pub Publisher, videos Videos, tc Transcoder) *Service {
	cfg = cfg.withDefaults()
	return &Service{
		log:    log,
		cfg:    cfg,
		js:     js,
		pub:    pub,
		videos: videos,
		tc:     tc,
		jobs:   newJobTable(cfg.JobHistory),
	}
}

// Mount registers WorkerService.
func (s *Service) Mount(srv *rpc.Server) error {
	path, h := workerv1connect.NewWorkerServiceHandler(s, srv.HandlerOptions()...)
	srv.Mount(workerv1connect.WorkerServiceName, path, h)
	return nil
}

// consumerConfig is the durable pull consumer of upload.completed. Its BackOff starts at
// AckWait because JetStream uses BackOff[0] as the ack wait; later entries give a worker
// that died mid-job longer before the job is handed out again.
func (s *Service) consumerConfig() jetstream.ConsumerConfig {
	var backoff []time.Duration
	for d := s.cfg.AckWait; len(backoff) < min(3, s.cfg.MaxDeliver); d *= 2 {
		backoff = append(backoff, d)
	}
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "transcode every uploaded video",
		FilterSubject: events.Subject(eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    s.cfg.MaxDeliver,
		BackOff:       backoff,
	}
}

// Start consumes upload.completed until ctx ends, with at most MaxConcurrent jobs in
// flight. On return every job it started has finished or been handed back unacknowledged.
func (s *Service) Start(ctx context.Context) error {
	cons, err := s.consumer(ctx)
	if err != nil {
		return err
	}
	s.log.InfoContext(ctx, "worker.started", "consumer", ConsumerName, "max_concurrent", s.cfg.MaxConcurrent)
	slots := make(chan struct{}, s.cfg.MaxConcurrent)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			s.log.InfoContext(ctx, "worker.stopping")
			return nil
		}
		msg, err := s.next(ctx, cons)
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				s.log.InfoContext(ctx, "worker.stopping")
				return nil
			}
			s.log.WarnContext(ctx, "worker.fetch", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if msg == nil {
			<-slots
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			s.handle(ctx, msg)
		})
	}
}

// consumer creates or updates the durable consumer, retrying while the stream or NATS is
// not there yet so a worker can start before them.
func (s *Service) consumer(ctx context.Context) (jetstream.Consumer, error) {
	delay := 500 * time.Millisecond
	for {
		cons, err := s.js.CreateOrUpdateConsumer(ctx, events.StreamName, s.consumerConfig())
		if err == nil {
			return cons, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("worker: create consumer: %w", ctx.Err())
		}
		s.log.WarnContext(ctx, "worker.consumer", "err", err, "retry_in", delay)
		sleep(ctx, delay)
		delay = min(2*delay, 30*time.Second)
	}
}

// next pulls one job, or returns nil when none arrived within the poll window.
func (s *Service) next(ctx context.Context, cons jetstream.Consumer) (jetstream.Msg, error) {
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msg, err := cons.Next(jetstream.FetchContext(pctx))
	switch {
	case err == nil:
		return msg, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, jetstream.ErrNoMessages):
		return nil, nil
	default:
		return nil, err
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// connectError is the one place where the worker's errors become Connect codes.
func connectError(err error) error {
	switch {
	case errors.Is(err, ErrJobNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	default:
		return connect.NewError(connect.CodeInternal, err)
	}
}
