package worker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/svc/events"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

const (
	// finishTimeout bounds the bookkeeping after an attempt's outcome is known. It runs
	// detached from the attempt's context so a finished transcode is recorded even while
	// the worker is stopping.
	finishTimeout = 15 * time.Second
	// storeRetry is the wait before a job is looked at again after the job store failed.
	storeRetry = 5 * time.Second
	// maxReasonLen is the metadata schema's failure_reason limit.
	maxReasonLen = 2000
	// hlsRoute is where the gateway serves HLS output.
	hlsRoute = "/v1/hls/"
)

// Causes that end an attempt from outside.
var (
	// errStopping ends attempts still running when the worker's grace period is over.
	errStopping = errors.New("worker: stopping")
	// errCancelled ends an attempt stopped by CancelJob.
	errCancelled = errors.New("worker: job cancelled")
	// errVideoDeleted ends an attempt whose video was deleted.
	errVideoDeleted = errors.New("worker: video deleted")
)

// reasonVideoDeleted is the error of a job cancelled because its video was deleted.
const reasonVideoDeleted = "video deleted"

// attempt is one run of a job by this worker.
type attempt struct {
	row *jobRow
	msg jetstream.Msg
	log *slog.Logger
}

// handleJob looks at one delivery of a job message and either runs an attempt or settles
// the message without one: a finished job is acknowledged (a duplicate), a job delivered
// before its backoff passed is put back for the rest of it, a busy job or video waits.
func (s *Service) handleJob(ctx context.Context, msg jetstream.Msg) {
	var p workerv1.Job
	if err := proto.Unmarshal(msg.Data(), &p); err != nil || !validID(p.GetId()) || !validID(p.GetVideoId()) || p.GetKind() != KindTranscode {
		s.log.WarnContext(ctx, "job.undecodable", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	log := s.log.With("job_id", p.GetId(), "video_id", p.GetVideoId())
	r, err := s.store.get(ctx, p.GetId())
	if errors.Is(err, ErrJobNotFound) {
		// The store lost the job (a fresh data directory): the message is the truth.
		r, _, err = s.store.create(ctx, p.GetId(), p.GetKind(), p.GetVideoId(), "", s.cfg.MaxAttempts)
	}
	if err != nil {
		log.WarnContext(ctx, "job.store", "err", err)
		s.nak(ctx, log, msg, storeRetry)
		return
	}
	now := time.Now()
	switch {
	case r.state == workerv1.JobState_JOB_STATE_DEAD && !r.deadLettered:
		s.deadLetter(ctx, log, r, msg)
		return
	case finished(r.state):
		log.DebugContext(ctx, "job.duplicate", "state", r.state)
		s.ack(ctx, log, msg)
		return
	case r.state == workerv1.JobState_JOB_STATE_QUEUED && r.nextAttempt.After(now):
		// Delivered before its backoff passed (a bare nak, an early redelivery).
		s.nak(ctx, log, msg, r.nextAttempt.Sub(now))
		return
	case r.charged >= r.maxAtt && r.state == workerv1.JobState_JOB_STATE_RUNNING && !r.leaseUntil.After(now):
		// The worker running the last attempt died: the budget is spent.
		s.giveUp(ctx, log, r, msg, "the worker running the last attempt stopped responding")
		return
	case r.charged >= r.maxAtt && r.state == workerv1.JobState_JOB_STATE_QUEUED:
		s.giveUp(ctx, log, r, msg, r.errText)
		return
	}
	r, err = s.store.claim(ctx, r.id, s.cfg.Instance, s.cfg.AckWait)
	switch {
	case errors.Is(err, errBusy):
		log.InfoContext(ctx, "job.busy", "reason", err.Error())
		s.nak(ctx, log, msg, min(max(s.cfg.AckWait/2, 500*time.Millisecond), 10*time.Second))
		return
	case errors.Is(err, ErrJobState):
		s.ack(ctx, log, msg)
		return
	case err != nil:
		log.WarnContext(ctx, "job.claim", "err", err)
		s.nak(ctx, log, msg, storeRetry)
		return
	}
	s.runAttempt(ctx, &attempt{row: r, msg: msg, log: log.With("attempt", r.attempt)})
}

// runAttempt runs a claimed attempt while a heartbeat keeps JetStream and the lease
// informed, then records the outcome and settles the message.
func (s *Service) runAttempt(ctx context.Context, a *attempt) {
	jctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	s.track(a.row.id, stop)
	defer s.untrack(a.row.id)
	if a.row.cancel != cancelNone {
		stop(a.row.cancel.err())
	}

	beatDone := make(chan struct{})
	go func() {
		defer close(beatDone)
		s.heartbeat(jctx, stop, a)
	}()
	s.publish(jctx, a.log, events.TranscodeStarted(Source, a.row.videoID, a.row.id, int32(a.row.attempt)))
	a.log.InfoContext(ctx, "job.started")
	start := time.Now()
	var err error
	if jctx.Err() == nil {
		err = s.run(jctx, a)
	} else {
		err = context.Cause(jctx)
	}
	cause := context.Cause(jctx)
	stop(nil)
	<-beatDone

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	switch {
	case err == nil:
		if ferr := s.store.finish(fctx, a.row.id, s.cfg.Instance, outcome{state: workerv1.JobState_JOB_STATE_SUCCEEDED}); ferr != nil {
			a.log.WarnContext(ctx, "job.record", "err", ferr)
			return
		}
		s.ack(fctx, a.log, a.msg)
		a.log.InfoContext(ctx, "job.succeeded", "duration", time.Since(start))
	case errors.Is(cause, errLeaseLost):
		// Another worker owns the job now; its outcome is the one that counts.
		a.log.WarnContext(ctx, "job.lease_lost")
	case errors.Is(cause, errVideoDeleted):
		s.cancelDeleted(fctx, a)
	case errors.Is(cause, errCancelled):
		s.cancelled(fctx, a)
	case errors.Is(cause, errStopping):
		// The worker is stopping: hand the job back at once, for another worker, without
		// counting the attempt.
		if ferr := s.store.finish(fctx, a.row.id, s.cfg.Instance, outcome{
			state: workerv1.JobState_JOB_STATE_QUEUED, errText: "interrupted: worker stopping", refund: true,
		}); ferr != nil {
			a.log.WarnContext(ctx, "job.record", "err", ferr)
			return
		}
		if nerr := a.msg.Nak(); nerr != nil {
			a.log.WarnContext(ctx, "job.nak", "err", nerr)
		}
		a.log.InfoContext(ctx, "job.interrupted")
	case permanent(err):
		s.failPermanently(fctx, a, err)
	default:
		s.failTransiently(fctx, a, err)
	}
}

// heartbeat renews the lease (which also reports a CancelJob or a deletion of the video
// handled anywhere) every
// CancelPoll and tells JetStream the job is alive every AckWait/3, until ctx ends.
func (s *Service) heartbeat(ctx context.Context, stop context.CancelCauseFunc, a *attempt) {
	tick := min(s.cfg.CancelPoll, max(s.cfg.AckWait/3, 10*time.Millisecond))
	t := time.NewTicker(tick)
	defer t.Stop()
	lastProgress := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(lastProgress) >= s.cfg.AckWait/3 {
			if err := a.msg.InProgress(); err != nil {
				// NATS may be away; the lease still keeps other workers off this job.
				a.log.DebugContext(ctx, "job.in_progress", "err", err)
			}
			lastProgress = time.Now()
		}
		cancel, err := s.store.renew(ctx, a.row.id, s.cfg.Instance, s.cfg.AckWait)
		switch {
		case errors.Is(err, errLeaseLost):
			stop(errLeaseLost)
			return
		case err != nil:
			a.log.WarnContext(ctx, "job.renew", "err", err)
		case cancel != cancelNone:
			stop(cancel.err())
			return
		}
	}
}

func (s *Service) track(id string, stop context.CancelCauseFunc) {
	s.mu.Lock()
	s.running[id] = stop
	s.mu.Unlock()
}

func (s *Service) untrack(id string) {
	s.mu.Lock()
	delete(s.running, id)
	s.mu.Unlock()
}

// stopLocal stops the attempt of job id if it runs in this process.
func (s *Service) stopLocal(id string, cause error) bool {
	s.mu.Lock()
	stop, ok := s.running[id]
	s.mu.Unlock()
	if ok {
		stop(cause)
	}
	return ok
}

// run does the attempt: mark the video processing, transcode once, then record the
// renditions and announce the video.
func (s *Service) run(ctx context.Context, a *attempt) error {
	if err := s.update(ctx, &metadatav1.Video{
		Id:     a.row.videoID,
		Status: metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING,
	}, "status", "failure_reason"); err != nil {
		return err
	}
	res, err := s.tc.Transcode(ctx, &transcoderv1.TranscodeRequest{VideoId: a.row.videoID, JobId: a.row.id})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTranscode, err)
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	playback := hlsPath(a.row.videoID, res.GetMasterPlaylist(), "master.m3u8")
	err = s.update(fctx, &metadatav1.Video{
		Id:              a.row.videoID,
		Status:          metadatav1.VideoStatus_VIDEO_STATUS_READY,
		Renditions:      res.GetRenditions(),
		DurationSeconds: res.GetDurationSeconds(),
		Width:           res.GetWidth(),
		Height:          res.GetHeight(),
		PlaybackPath:    playback,
		ThumbnailPath:   hlsPath(a.row.videoID, res.GetThumbnail(), "thumbnail.jpg"),
	}, "status", "renditions", "duration_seconds", "width", "height", "playback_path", "thumbnail_path", "failure_reason")
	if err != nil {
		return err
	}
	if err := s.pub.Publish(fctx, events.TranscodeCompleted(Source, a.row.videoID, a.row.id, int32(len(res.GetRenditions())), res.GetDurationSeconds())); err != nil {
		return fmt.Errorf("%w: transcode.completed: %w", ErrPublish, err)
	}
	if err := s.pub.Publish(fctx, events.VideoReady(Source, a.row.videoID, playback)); err != nil {
		return fmt.Errorf("%w: video.ready: %w", ErrPublish, err)
	}
	return nil
}

// failPermanently records a job that cannot succeed: the video is FAILED, the job too,
// and the message is terminated so nothing retries it.
func (s *Service) failPermanently(ctx context.Context, a *attempt, err error) {
	why := reason(err)
	rerr := s.markFailed(ctx, a.row.videoID, why)
	if connect.CodeOf(rerr) == connect.CodeNotFound {
		// The video was deleted while its job ran: nothing is left to fail or retry.
		s.cancelDeleted(ctx, a)
		return
	}
	if rerr != nil && a.row.charged < a.row.maxAtt {
		// The outcome is known but not recorded; try the job again later rather than
		// leave the video PROCESSING forever.
		s.retry(ctx, a, fmt.Sprintf("%s (not recorded: %v)", why, rerr))
		return
	}
	if ferr := s.store.finish(ctx, a.row.id, s.cfg.Instance, outcome{state: workerv1.JobState_JOB_STATE_FAILED, errText: why}); ferr != nil {
		a.log.WarnContext(ctx, "job.record", "err", ferr)
		return
	}
	s.publish(ctx, a.log, events.TranscodeFailed(Source, a.row.videoID, a.row.id, why, true))
	if terr := a.msg.Term(); terr != nil {
		a.log.WarnContext(ctx, "job.term", "err", terr)
	}
	a.log.WarnContext(ctx, "job.failed", "permanent", true, "reason", why)
}

// failTransiently retries the job after its backoff, or dead-letters it once its
// attempts are used up.
func (s *Service) failTransiently(ctx context.Context, a *attempt, err error) {
	why := reason(err)
	s.publish(ctx, a.log, events.TranscodeFailed(Source, a.row.videoID, a.row.id, why, false))
	if a.row.charged < a.row.maxAtt {
		s.retry(ctx, a, why)
		return
	}
	s.giveUp(ctx, a.log, a.row, a.msg, why)
}

// retry puts the job back to wait out the backoff of its attempt. The store holds the
// time of the next attempt, so an early redelivery waits too.
func (s *Service) retry(ctx context.Context, a *attempt, why string) {
	delay := s.cfg.RetryBackoff[min(max(a.row.charged, 1)-1, len(s.cfg.RetryBackoff)-1)]
	if ferr := s.store.finish(ctx, a.row.id, s.cfg.Instance, outcome{
		state: workerv1.JobState_JOB_STATE_QUEUED, errText: why, next: time.Now().Add(delay),
	}); ferr != nil {
		a.log.WarnContext(ctx, "job.record", "err", ferr)
		return
	}
	s.nak(ctx, a.log, a.msg, delay)
	a.log.WarnContext(ctx, "job.retry", "reason", why, "retry_in", delay)
}

// giveUp dead-letters a job whose attempts are used up: it becomes DEAD (if it is not
// yet), its video FAILED with the reason, job.dead is published, and the job goes to the
// dead-letter subject.
func (s *Service) giveUp(ctx context.Context, log *slog.Logger, r *jobRow, msg jetstream.Msg, why string) {
	why = fmt.Sprintf("gave up after %d attempts: %s", r.charged, why)
	r, err := s.store.settleDead(ctx, r.id, s.cfg.Instance, why)
	switch {
	case errors.Is(err, ErrJobState):
		// Another worker settled the job meanwhile; its redelivery sorts out the rest.
		log.InfoContext(ctx, "job.settled_elsewhere", "err", err)
		s.nak(ctx, log, msg, storeRetry)
		return
	case err != nil:
		log.WarnContext(ctx, "job.record", "err", err)
		s.nak(ctx, log, msg, storeRetry)
		return
	}
	if err := s.markFailed(ctx, r.videoID, why); err != nil {
		log.ErrorContext(ctx, "job.mark_failed", "err", err)
	}
	s.publish(ctx, log, events.JobDead(Source, r.id, r.kind, r.videoID, int32(r.charged), why))
	log.WarnContext(ctx, "job.dead", "reason", why)
	s.deadLetter(ctx, log, r, msg)
}

// deadLetter stores the job on its dead-letter subject, then acknowledges the job message.
// Until the dead letter is stored the message comes back, and this is tried again.
func (s *Service) deadLetter(ctx context.Context, log *slog.Logger, r *jobRow, msg jetstream.Msg) {
	data, err := proto.Marshal(r.proto(time.Now()))
	if err == nil {
		m := nats.NewMsg(DeadSubject(r.kind))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.dead.%d", r.id, r.retries))
		_, err = s.js.PublishMsg(ctx, m)
	}
	if err == nil {
		err = s.store.markDeadLettered(ctx, r.id)
	}
	if err != nil {
		log.WarnContext(ctx, "job.dead_letter", "err", err)
		s.nak(ctx, log, msg, storeRetry)
		return
	}
	s.ack(ctx, log, msg)
}

// cancelled records an attempt stopped by CancelJob: the job is CANCELLED and its video
// FAILED, since nothing will make it playable without a retry.
func (s *Service) cancelled(ctx context.Context, a *attempt) {
	const why = "cancelled"
	if ferr := s.store.finish(ctx, a.row.id, s.cfg.Instance, outcome{state: workerv1.JobState_JOB_STATE_CANCELLED, errText: why}); ferr != nil {
		a.log.WarnContext(ctx, "job.record", "err", ferr)
		return
	}
	if err := s.markFailed(ctx, a.row.videoID, "transcode "+why); err != nil {
		a.log.WarnContext(ctx, "job.mark_failed", "err", err)
	}
	s.publish(ctx, a.log, events.TranscodeFailed(Source, a.row.videoID, a.row.id, why, true))
	s.ack(ctx, a.log, a.msg)
	a.log.InfoContext(ctx, "job.cancelled")
}

// ack acknowledges a settled job and waits for JetStream to confirm. A lost ack only
// means a redelivery, which finds the job finished and acknowledges it then.
func (s *Service) ack(ctx context.Context, log *slog.Logger, msg jetstream.Msg) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		log.WarnContext(ctx, "job.ack", "err", err)
	}
}

// nak hands a job back to be delivered again after delay.
func (s *Service) nak(ctx context.Context, log *slog.Logger, msg jetstream.Msg, delay time.Duration) {
	if err := msg.NakWithDelay(max(delay, time.Millisecond)); err != nil {
		log.WarnContext(ctx, "job.nak", "err", err)
	}
}

// permanent tells failures that no retry can fix (the input is not decodable video, the
// video is gone) from ones that may pass (a service down, a timeout, ffmpeg killed).
func permanent(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeFailedPrecondition, connect.CodeInvalidArgument, connect.CodeNotFound:
		return true
	default:
		return false
	}
}

func (s *Service) markFailed(ctx context.Context, videoID, why string) error {
	return s.update(ctx, &metadatav1.Video{
		Id:            videoID,
		Status:        metadatav1.VideoStatus_VIDEO_STATUS_FAILED,
		FailureReason: truncate(why, maxReasonLen),
	}, "status", "failure_reason")
}

func (s *Service) update(ctx context.Context, v *metadatav1.Video, paths ...string) error {
	_, err := s.videos.UpdateVideo(ctx, &metadatav1.UpdateVideoRequest{
		Video:      v,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: paths},
	})
	if err != nil {
		return fmt.Errorf("%w: update video %s: %w", ErrMetadata, v.GetId(), err)
	}
	return nil
}

// publish sends an informational event. The worker publishes through an outbox, so an
// error here means the local outbox could not store it; the job does not depend on it.
func (s *Service) publish(ctx context.Context, log *slog.Logger, ev *eventsv1.Event) {
	if err := s.pub.Publish(context.WithoutCancel(ctx), ev); err != nil {
		log.WarnContext(ctx, "event.publish", "type", events.Name(ev.GetType()), "err", err)
	}
}

// reason is the readable cause of a failure: the message of the innermost Connect error
// (what the transcoder or metadata service said), else the whole chain.
func reason(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		if m := ce.Message(); m != "" {
			return m
		}
		return ce.Code().String()
	}
	return err.Error()
}

// hlsPath is the gateway path of a file in the video's HLS folder; a name the transcoder
// returns that is not a plain relative path falls back to the conventional one.
func hlsPath(videoID, name, fallback string) string {
	if name == "" || !fs.ValidPath(name) {
		name = fallback
	}
	return hlsRoute + videoID + "/" + name
}

// validID reports whether id matches ^[A-Za-z0-9_-]{1,64}$, the schema's id pattern.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
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

// cancelDeleted settles the job of a video deleted under it: CANCELLED, no retry, no
// dead letter, nothing recorded on the (gone) video, and any file of the video written
// after the delete's cleanup ran is removed.
func (s *Service) cancelDeleted(ctx context.Context, a *attempt) {
	if err := s.store.finish(ctx, a.row.id, s.cfg.Instance, outcome{state: workerv1.JobState_JOB_STATE_CANCELLED, errText: reasonVideoDeleted}); err != nil {
		a.log.WarnContext(ctx, "job.record", "err", err)
		return
	}
	if err := s.removeFiles(a.row.videoID); err != nil {
		a.log.WarnContext(ctx, "job.remove_files", "err", err)
	}
	if err := a.msg.Term(); err != nil {
		a.log.WarnContext(ctx, "job.term", "err", err)
	}
	a.log.InfoContext(ctx, "job.cancelled", "reason", "video deleted")
}
