// Package worker is Reelway's WorkerService. It turns domain events into jobs and runs
// them: every upload.completed event becomes a transcode job on the JetStream work queue
// reelway.jobs.transcode, which the workers of all processes share through one durable
// pull consumer. Jobs live in a SQLite store in the data directory (states, attempts,
// leases), so ListJobs, GetJob, RetryJob and CancelJob see them across restarts.
//
// The guarantees: an event makes one job (the job id derives from the event id); a job
// runs at most once at a time per video (a lease in the store, renewed with JetStream
// in-progress acknowledgements, so AckWait never hands a long transcode to a second
// worker); each attempt calls the transcoder once; a permanent failure fails the job at
// once; transient failures are retried after the configured backoff, enforced by the store
// whatever JetStream redelivers, and after MaxAttempts the job goes to the dead-letter
// subject reelway.jobs.dead.<kind>, its video is marked FAILED and job.dead is published.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
	"golang.org/x/sync/errgroup"
)

// Source is the events source name of this service.
const Source = "worker"

// KindTranscode is the kind of the transcode job.
const KindTranscode = "transcode"

// Names of the JetStream objects the worker owns.
const (
	// ConsumerName is the durable consumer of upload.completed on the events stream that
	// turns uploads into jobs; every worker process shares it.
	ConsumerName = "worker-transcode"
	// JobsStream is the work-queue stream of jobs, on reelway.jobs.<kind>: a message
	// leaves it once a worker acknowledges it.
	JobsStream = "REELWAY_JOBS"
	// JobsConsumer is the durable pull consumer every worker shares on JobsStream.
	JobsConsumer = "worker-jobs"
	// DeadStream keeps the dead letters, on reelway.jobs.dead.<kind>.
	DeadStream = "REELWAY_JOBS_DEAD"
	// jobsPrefix starts every job subject.
	jobsPrefix = "reelway.jobs."
)

// JobSubject is the work-queue subject of a job kind.
func JobSubject(kind string) string { return jobsPrefix + kind }

// DeadSubject is the dead-letter subject of a job kind.
func DeadSubject(kind string) string { return jobsPrefix + "dead." + kind }

// JobID is the id of the job an event asks for: derived from the event id, so a
// redelivered event finds its job, while a user's new upload (a new event) is a new job.
func JobID(kind, eventID string) string { return kind + "-" + eventID }

// Errors of the worker.
var (
	// ErrJobNotFound means no job with that id is stored.
	ErrJobNotFound = errors.New("worker: job not found")
	// ErrTranscode means the transcoder did not produce the renditions.
	ErrTranscode = errors.New("worker: transcode")
	// ErrMetadata means the metadata service did not take an update.
	ErrMetadata = errors.New("worker: metadata")
	// ErrPublish means an event or job message was not stored by NATS.
	ErrPublish = errors.New("worker: publish")
	// ErrCleanup means a deleted video's files could not be removed; the event is retried.
	ErrCleanup = errors.New("worker: cleanup")
	// ErrVideoGone means the job's video was deleted, so the job cannot run again.
	ErrVideoGone = errors.New("worker: video gone")
)

// Publisher stores domain events; the platform gives the worker an outbox, so events are
// never lost while NATS is down.
type Publisher interface {
	Publish(ctx context.Context, ev *eventsv1.Event) error
}

var (
	_ Publisher = (*events.Bus)(nil)
	_ Publisher = (*events.Outbox)(nil)
)

// Bus is the part of the event bus the worker consumes from.
type Bus interface {
	JetStream() jetstream.JetStream
	Consume(ctx context.Context, cfg events.ConsumeConfig, r *events.Router) error
}

var _ Bus = (*events.Bus)(nil)

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

// Config tunes the worker. Zero values take the defaults.
type Config struct {
	// DataDir holds the job store, <DataDir>/worker.db.
	DataDir string
	// Instance names this worker in leases and in Job.worker (default: host, pid and a
	// random suffix).
	Instance string
	// MaxConcurrent is how many jobs run at once in this process (default 1): transcodes
	// are CPU bound.
	MaxConcurrent int
	// AckWait is how long a job may go without a sign of life before JetStream hands it
	// out again and its lease lapses (default 30s). A running job reports every AckWait/3.
	AckWait time.Duration
	// MaxAttempts is how many attempts a job gets before it is dead-lettered (default 5).
	MaxAttempts int
	// RetryBackoff is the wait before attempt n+1 after a transient failure of attempt n;
	// the last entry repeats (default 1s, 10s, 60s).
	RetryBackoff []time.Duration
	// Grace is how long running jobs may go on finishing once Start's context ends
	// (default 10s); then they are stopped and handed back unacknowledged.
	Grace time.Duration
	// CancelPoll is how often a running job looks for a CancelJob, or a deletion of its
	// video, handled by another process (default 1s).
	CancelPoll time.Duration
}

func (c Config) withDefaults() Config {
	if c.Instance == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.Instance = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 1
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if len(c.RetryBackoff) == 0 {
		c.RetryBackoff = []time.Duration{time.Second, 10 * time.Second, time.Minute}
	}
	if c.Grace <= 0 {
		c.Grace = 10 * time.Second
	}
	if c.CancelPoll <= 0 {
		c.CancelPoll = time.Second
	}
	return c
}

// Service implements WorkerService and runs the jobs.
type Service struct {
	log    *slog.Logger
	cfg    Config
	bus    Bus
	js     jetstream.JetStream
	pub    Publisher
	videos Videos
	tc     Transcoder
	store  *store

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc // job id → stop its attempt
}

var _ workerv1connect.WorkerServiceHandler = (*Service)(nil)

// Open opens the job store and returns the worker. Jobs run only while Start runs.
func Open(ctx context.Context, log *slog.Logger, cfg Config, bus Bus, pub Publisher, videos Videos, tc Transcoder) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("worker: data dir: %w", err)
	}
	st, err := openStore(ctx, filepath.Join(cfg.DataDir, "worker.db"))
	if err != nil {
		return nil, err
	}
	return &Service{
		log:     log.With("worker", cfg.Instance),
		cfg:     cfg,
		bus:     bus,
		js:      bus.JetStream(),
		pub:     pub,
		videos:  videos,
		tc:      tc,
		store:   st,
		running: make(map[string]context.CancelCauseFunc),
	}, nil
}

// Mount registers WorkerService.
func (s *Service) Mount(srv *rpc.Server) error {
	path, h := workerv1connect.NewWorkerServiceHandler(s, srv.HandlerOptions()...)
	srv.Mount(workerv1connect.WorkerServiceName, path, h)
	return nil
}

// Close closes the job store.
func (s *Service) Close() error { return s.store.close() }

// Start turns upload.completed events into jobs and runs jobs, with at most MaxConcurrent
// in flight, until ctx ends. Then it takes no new job, gives the running ones Grace to
// finish, and hands the rest back unacknowledged for another worker.
func (s *Service) Start(ctx context.Context) error {
	if err := s.ensureStreams(ctx); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "worker.started", "max_concurrent", s.cfg.MaxConcurrent, "max_attempts", s.cfg.MaxAttempts,
		"backoff", s.cfg.RetryBackoff, "ack_wait", s.cfg.AckWait)
	router := events.NewRouter(s.log)
	if err := events.On(router, s.onUploadCompleted); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if err := events.On(router, s.onVideoDeleted); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return s.bus.Consume(gctx, events.ConsumeConfig{Durable: ConsumerName, AckWait: 30 * time.Second}, router)
	})
	g.Go(func() error { return s.runJobs(gctx) })
	err := g.Wait()
	s.log.InfoContext(ctx, "worker.stopped")
	return err
}

// ensureStreams creates or updates the jobs and dead-letter streams and the jobs
// consumer, retrying while NATS is not there yet so a worker can start before it.
func (s *Service) ensureStreams(ctx context.Context) error {
	delay := 500 * time.Millisecond
	for {
		err := s.createStreams(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.WarnContext(ctx, "worker.streams", "err", err, "retry_in", delay)
		sleep(ctx, delay)
		delay = min(2*delay, 30*time.Second)
	}
}

func (s *Service) createStreams(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
		Name:        JobsStream,
		Description: "jobs waiting for a worker; a message leaves once acknowledged",
		// One token after the prefix: reelway.jobs.dead.<kind> belongs to DeadStream.
		Subjects:   []string{jobsPrefix + "*"},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: events.DuplicateWindow,
	}); err != nil {
		return fmt.Errorf("worker: jobs stream: %w", err)
	}
	if _, err := s.js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
		Name:        DeadStream,
		Description: "jobs that used up their attempts",
		Subjects:    []string{jobsPrefix + "dead.>"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Duplicates:  events.DuplicateWindow,
	}); err != nil {
		return fmt.Errorf("worker: dead-letter stream: %w", err)
	}
	if _, err := s.js.CreateOrUpdateConsumer(cctx, JobsStream, s.jobsConsumerConfig()); err != nil {
		return fmt.Errorf("worker: jobs consumer: %w", err)
	}
	return nil
}

// jobsConsumerConfig is the shared pull consumer of transcode jobs. Redeliveries are
// unlimited at the JetStream level: the attempt budget and the spacing between attempts
// are enforced by the job store, so neither a bare negative acknowledgement nor an
// early redelivery can burn attempts.
func (s *Service) jobsConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       JobsConsumer,
		Description:   "run jobs",
		FilterSubject: JobSubject(KindTranscode),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    -1,
		// Jobs waiting out a retry backoff are pending too; they must not stall new ones.
		MaxAckPending: 20_000,
	}
}

// runJobs pulls jobs while ctx lives and runs each in its own goroutine, holding one of
// MaxConcurrent slots. Attempts run under their own context, which ends Grace after ctx.
func (s *Service) runJobs(ctx context.Context) error {
	runCtx, stopRuns := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopRuns(nil)
	slots := make(chan struct{}, s.cfg.MaxConcurrent)
	var wg sync.WaitGroup
	defer func() {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		t := time.NewTimer(s.cfg.Grace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			s.log.InfoContext(ctx, "worker.grace_over")
			stopRuns(errStopping)
			<-done
		}
	}()
	var cons jetstream.Consumer
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		var msg jetstream.Msg
		var err error
		if cons == nil {
			cons, err = s.js.Consumer(ctx, JobsStream, JobsConsumer)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				// The server lost it (storage wiped): make it again.
				cons, err = s.js.CreateOrUpdateConsumer(ctx, JobsStream, s.jobsConsumerConfig())
			}
		}
		if err == nil {
			msg, err = next(ctx, cons)
		}
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			cons = nil
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
			s.handleJob(runCtx, msg)
		})
	}
}

// next pulls one job, or returns nil when none arrived within the poll window.
func next(ctx context.Context, cons jetstream.Consumer) (jetstream.Msg, error) {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
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
	case errors.Is(err, ErrJobState), errors.Is(err, ErrVideoGone):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, ErrBadPageToken):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, ErrPublish), errors.Is(err, ErrMetadata):
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		return connect.NewError(connect.CodeInternal, err)
	}
}
