package worker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/svc/events"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

const (
	// finishTimeout bounds the bookkeeping after a job's outcome is known. It runs
	// detached from Start's context so a finished transcode is recorded even while the
	// worker is stopping.
	finishTimeout = 15 * time.Second
	// maxReasonLen is the metadata schema's failure_reason limit.
	maxReasonLen = 2000
	// hlsRoute is where the gateway serves HLS output.
	hlsRoute = "/v1/hls/"
)

// job is one delivery of an upload.completed message being worked on.
type job struct {
	id      string
	videoID string
	attempt int32
	msg     jetstream.Msg
	log     *slog.Logger
}

// handle runs one delivery: transcode, record the outcome, and settle the message so that
// only a job that finished (or can never succeed) is acknowledged.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		s.log.WarnContext(ctx, "job.bad_message", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	ev, err := events.Decode(msg.Data())
	videoID := ev.GetUploadCompleted().GetVideoId()
	if err == nil && !validID(videoID) {
		err = fmt.Errorf("%w: upload.completed without a valid video id %q", events.ErrDecode, videoID)
	}
	if err != nil {
		s.log.WarnContext(ctx, "job.undecodable", "stream_seq", md.Sequence.Stream, "err", err)
		_ = msg.Term()
		return
	}
	attempt := int32(min(md.NumDelivered, math.MaxInt32))
	id, isNew := s.jobs.begin(md.Sequence.Stream, videoID, attempt)
	j := &job{
		id:      id,
		videoID: videoID,
		attempt: attempt,
		msg:     msg,
		log:     s.log.With("job_id", id, "video_id", videoID, "attempt", attempt),
	}
	if isNew {
		s.publish(ctx, j.log, events.TranscodeRequested(Source, videoID, id))
	}
	s.publish(ctx, j.log, events.TranscodeStarted(Source, videoID, id, attempt))
	j.log.InfoContext(ctx, "job.started")

	start := time.Now()
	err = s.run(ctx, j)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	switch {
	case err == nil:
		s.jobs.set(id, workerv1.JobState_JOB_STATE_SUCCEEDED, "")
		if aerr := msg.DoubleAck(fctx); aerr != nil {
			// The outcome is recorded; a redelivery only repeats an idempotent transcode.
			j.log.WarnContext(ctx, "job.ack", "err", aerr)
		}
		j.log.InfoContext(ctx, "job.succeeded", "duration", time.Since(start))
	case ctx.Err() != nil:
		// Stopping: hand the job back unacknowledged for this or another worker.
		s.jobs.set(id, workerv1.JobState_JOB_STATE_QUEUED, "interrupted: worker stopping")
		_ = msg.Nak()
		j.log.InfoContext(ctx, "job.interrupted")
	case permanent(err):
		s.failPermanently(fctx, j, err)
	default:
		s.failTransiently(fctx, j, err)
	}
}

// run does the job: mark the video processing, transcode while telling JetStream the job
// is alive, then record the renditions and announce the video.
func (s *Service) run(ctx context.Context, j *job) error {
	if err := s.update(ctx, &metadatav1.Video{
		Id:     j.videoID,
		Status: metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING,
	}, "status"); err != nil {
		return err
	}
	s.jobs.set(j.id, workerv1.JobState_JOB_STATE_RUNNING, "")

	res, err := s.transcode(ctx, j)
	if err != nil {
		return err
	}

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	playback := hlsPath(j.videoID, res.GetMasterPlaylist(), "master.m3u8")
	err = s.update(fctx, &metadatav1.Video{
		Id:              j.videoID,
		Status:          metadatav1.VideoStatus_VIDEO_STATUS_READY,
		Renditions:      res.GetRenditions(),
		DurationSeconds: res.GetDurationSeconds(),
		Width:           res.GetWidth(),
		Height:          res.GetHeight(),
		PlaybackPath:    playback,
		ThumbnailPath:   hlsPath(j.videoID, res.GetThumbnail(), "thumbnail.jpg"),
	}, "status", "renditions", "duration_seconds", "width", "height", "playback_path", "thumbnail_path", "failure_reason")
	if err != nil {
		return err
	}
	if err := s.pub.Publish(fctx, events.TranscodeCompleted(Source, j.videoID, j.id, int32(len(res.GetRenditions())), res.GetDurationSeconds())); err != nil {
		return fmt.Errorf("%w: transcode.completed: %w", ErrPublish, err)
	}
	if err := s.pub.Publish(fctx, events.VideoReady(Source, j.videoID, playback)); err != nil {
		return fmt.Errorf("%w: video.ready: %w", ErrPublish, err)
	}
	return nil
}

// transcode calls the transcoder and, while it runs, resets JetStream's ack timer every
// AckWait/3 so a long transcode is never handed to a second worker.
func (s *Service) transcode(ctx context.Context, j *job) (*transcoderv1.TranscodeResponse, error) {
	done := make(chan struct{})
	beat := make(chan struct{})
	go func() {
		defer close(beat)
		t := time.NewTicker(max(s.cfg.AckWait/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if err := j.msg.InProgress(); err != nil {
					j.log.WarnContext(ctx, "job.in_progress", "err", err)
				}
			case <-done:
				return
			}
		}
	}()
	res, err := s.tc.Transcode(ctx, &transcoderv1.TranscodeRequest{VideoId: j.videoID, JobId: j.id})
	close(done)
	<-beat
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTranscode, err)
	}
	return res, nil
}

// failPermanently records a job that cannot succeed: the video is FAILED and the message
// terminated, so JetStream does not retry it.
func (s *Service) failPermanently(ctx context.Context, j *job, err error) {
	why := reason(err)
	rerr := s.markFailed(ctx, j.videoID, why)
	s.publish(ctx, j.log, events.TranscodeFailed(Source, j.videoID, j.id, why, true))
	if rerr != nil && int(j.attempt) < s.cfg.MaxDeliver {
		// The outcome is known but not recorded; try the job again later rather than
		// leave the video PROCESSING forever.
		s.retry(ctx, j, fmt.Sprintf("%s (not recorded: %v)", why, rerr))
		return
	}
	s.jobs.set(j.id, workerv1.JobState_JOB_STATE_FAILED, why)
	if terr := j.msg.Term(); terr != nil {
		j.log.WarnContext(ctx, "job.term", "err", terr)
	}
	j.log.WarnContext(ctx, "job.failed", "permanent", true, "reason", why)
}

// failTransiently retries the job after a backoff, or gives up after MaxDeliver attempts.
func (s *Service) failTransiently(ctx context.Context, j *job, err error) {
	why := reason(err)
	s.publish(ctx, j.log, events.TranscodeFailed(Source, j.videoID, j.id, why, false))
	if int(j.attempt) < s.cfg.MaxDeliver {
		s.retry(ctx, j, why)
		return
	}
	why = fmt.Sprintf("gave up after %d attempts: %s", j.attempt, why)
	if rerr := s.markFailed(ctx, j.videoID, why); rerr != nil {
		j.log.ErrorContext(ctx, "job.mark_failed", "err", rerr)
	}
	s.jobs.set(j.id, workerv1.JobState_JOB_STATE_FAILED, why)
	if terr := j.msg.Term(); terr != nil {
		j.log.WarnContext(ctx, "job.term", "err", terr)
	}
	j.log.WarnContext(ctx, "job.failed", "permanent", false, "reason", why)
}

func (s *Service) retry(ctx context.Context, j *job, why string) {
	delay := s.cfg.RetryBackoff[min(int(j.attempt)-1, len(s.cfg.RetryBackoff)-1)]
	s.jobs.set(j.id, workerv1.JobState_JOB_STATE_QUEUED, why)
	if err := j.msg.NakWithDelay(delay); err != nil {
		j.log.WarnContext(ctx, "job.nak", "err", err)
	}
	j.log.WarnContext(ctx, "job.retry", "reason", why, "retry_in", delay)
}

// permanent tells failures that no retry can fix (the input is not decodable video, the
// video is gone) from ones that may pass (a service down, a timeout).
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

// publish sends an informational event; the job does not depend on it, so a failure is
// logged only.
func (s *Service) publish(ctx context.Context, log *slog.Logger, ev *eventsv1.Event) {
	if err := s.pub.Publish(ctx, ev); err != nil {
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
