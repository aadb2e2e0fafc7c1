package worker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/svc/events"
	"google.golang.org/protobuf/proto"
)

// onUploadCompleted turns an upload into its transcode job. It is idempotent: the job id
// derives from the event id, so a redelivered event finds the job it made and does
// nothing more, while the job message's Nats-Msg-Id keeps a republish from queueing the
// job twice.
func (s *Service) onUploadCompleted(ctx context.Context, ev *eventsv1.Event, p *eventsv1.UploadCompleted) error {
	videoID := p.GetVideoId()
	id := JobID(KindTranscode, ev.GetId())
	if !validID(videoID) || ev.GetId() == "" || !validID(id) {
		return fmt.Errorf("%w: upload.completed %q without a valid video id %q", events.ErrDecode, ev.GetId(), videoID)
	}
	r, created, err := s.store.create(ctx, id, KindTranscode, videoID, ev.GetId(), s.cfg.MaxAttempts)
	if err != nil {
		return err
	}
	if r.enqueued || finished(r.state) {
		s.log.DebugContext(ctx, "job.exists", "job_id", id, "state", r.state)
		return nil
	}
	if err := s.enqueue(ctx, r); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "job.queued", "job_id", id, "video_id", videoID, "new", created)
	s.publish(ctx, s.log, events.TranscodeRequested(Source, videoID, id))
	return nil
}

// enqueue puts the job's message on its work-queue subject. The message id is the job id
// and its retry generation: a repeat within the duplicate window is stored once, while
// RetryJob (a new generation) always queues a new message.
func (s *Service) enqueue(ctx context.Context, r *jobRow) error {
	data, err := proto.Marshal(&workerv1.Job{Id: r.id, Kind: r.kind, VideoId: r.videoID})
	if err != nil {
		return fmt.Errorf("%w: marshal job: %w", ErrPublish, err)
	}
	msg := nats.NewMsg(JobSubject(r.kind))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.%d", r.id, r.retries))
	if _, err := s.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("%w: queue job %s: %w", ErrPublish, r.id, err)
	}
	return s.store.markEnqueued(ctx, r.id)
}
