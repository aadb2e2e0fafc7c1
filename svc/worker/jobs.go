package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/svc/events"
)

const (
	// defaultPageSize is ListJobs' page size when the request leaves it zero.
	defaultPageSize = 50
	// cancelWait bounds how long CancelJob waits for a running attempt to stop.
	cancelWait = 10 * time.Second
)

// ListJobs implements WorkerService.ListJobs from the job store, newest first.
func (s *Service) ListJobs(ctx context.Context, req *workerv1.ListJobsRequest) (*workerv1.ListJobsResponse, error) {
	size := int(req.GetPageSize())
	if size == 0 {
		size = defaultPageSize
	}
	rows, next, err := s.store.list(ctx, jobFilter{state: req.GetState(), kind: req.GetKind(), videoID: req.GetVideoId()}, size, req.GetPageToken())
	if err != nil {
		return nil, connectError(err)
	}
	now := time.Now()
	res := &workerv1.ListJobsResponse{NextPageToken: next}
	for _, r := range rows {
		res.Jobs = append(res.Jobs, r.proto(now))
	}
	return res, nil
}

// GetJob implements WorkerService.GetJob.
func (s *Service) GetJob(ctx context.Context, req *workerv1.GetJobRequest) (*workerv1.GetJobResponse, error) {
	r, err := s.store.get(ctx, req.GetId())
	if err != nil {
		return nil, connectError(err)
	}
	return &workerv1.GetJobResponse{Job: r.proto(time.Now())}, nil
}

// RetryJob implements WorkerService.RetryJob: a failed, dead or cancelled job gets a fresh
// attempt budget and a new message on its work queue (a new message id, so JetStream's
// duplicate window cannot swallow a retry made seconds after the last attempt). A job
// whose video was deleted is not retried (failed_precondition) and stays as it was.
func (s *Service) RetryJob(ctx context.Context, req *workerv1.RetryJobRequest) (*workerv1.RetryJobResponse, error) {
	old, err := s.store.get(ctx, req.GetId())
	if err != nil {
		return nil, connectError(err)
	}
	if err := retryable(old); err != nil {
		return nil, connectError(err)
	}
	// The video is processing again from now on. It is marked before the job changes, so
	// a deleted video or a metadata outage leaves the job untouched, and before the job
	// is queued, so this cannot overwrite what a fast attempt records.
	processing := &metadatav1.Video{Id: old.videoID, Status: metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING}
	if err := s.update(ctx, processing, "status", "failure_reason"); err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound {
			err = fmt.Errorf("%w: video %s was deleted, so job %s cannot run again", ErrVideoGone, old.videoID, old.id)
		}
		return nil, connectError(err)
	}
	r, undo, err := s.store.requeue(ctx, old)
	if err != nil {
		if !errors.Is(err, ErrJobState) {
			// The job stays as it was: so does its video. (ErrJobState means another
			// RetryJob got there first, for which the video is rightly processing.)
			s.restoreFailed(ctx, old)
		}
		return nil, connectError(err)
	}
	if err := s.enqueue(ctx, r); err != nil {
		undo(context.WithoutCancel(ctx))
		s.restoreFailed(ctx, old)
		return nil, connectError(err)
	}
	s.log.InfoContext(ctx, "job.retried", "job_id", r.id, "video_id", r.videoID, "generation", r.retries)
	s.publish(ctx, s.log, events.TranscodeRequested(Source, r.videoID, r.id))
	if r, err = s.store.get(ctx, r.id); err != nil {
		return nil, connectError(err)
	}
	return &workerv1.RetryJobResponse{Job: r.proto(time.Now())}, nil
}

// restoreFailed puts the video of a job whose retry did not happen back to FAILED with
// the job's error.
func (s *Service) restoreFailed(ctx context.Context, old *jobRow) {
	if err := s.markFailed(context.WithoutCancel(ctx), old.videoID, old.errText); err != nil {
		s.log.WarnContext(ctx, "job.mark_failed", "job_id", old.id, "err", err)
	}
}

// CancelJob implements WorkerService.CancelJob. A queued job is cancelled at once; a
// running one is stopped by the worker running it (this process directly, another one
// through the store within CancelPoll), which kills ffmpeg by ending the Transcode call.
// The answer waits (up to cancelWait) for the running attempt to stop. A finished job
// (already cancelled, or ended otherwise) is failed_precondition.
func (s *Service) CancelJob(ctx context.Context, req *workerv1.CancelJobRequest) (*workerv1.CancelJobResponse, error) {
	id := req.GetId()
	// A job between two attempts moves from running to queued and back: each round
	// catches it in one of them, unless it keeps moving.
	for round := 0; ; round++ {
		r, err := s.store.settle(ctx, id, workerv1.JobState_JOB_STATE_CANCELLED, "cancelled", workerv1.JobState_JOB_STATE_QUEUED)
		if err == nil {
			if merr := s.markFailed(ctx, r.videoID, "transcode cancelled"); merr != nil {
				s.log.WarnContext(ctx, "job.mark_failed", "job_id", id, "err", merr)
			}
			s.publish(ctx, s.log, events.TranscodeFailed(Source, r.videoID, id, "cancelled", true))
			s.log.InfoContext(ctx, "job.cancelled", "job_id", id, "while", "queued")
			return &workerv1.CancelJobResponse{Job: r.proto(time.Now())}, nil
		}
		if !errors.Is(err, ErrJobState) {
			return nil, connectError(err)
		}
		err = s.store.requestCancel(ctx, id, cancelByCaller)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrJobState) {
			return nil, connectError(err)
		}
		r, gerr := s.store.get(ctx, id)
		switch {
		case gerr != nil:
			return nil, connectError(gerr)
		case r.state == workerv1.JobState_JOB_STATE_CANCELLED:
			return nil, connectError(fmt.Errorf("%w: job %s is already cancelled", ErrJobState, id))
		case finished(r.state):
			return nil, connectError(fmt.Errorf("%w: job %s has already ended (%v); only queued or running jobs are cancelled", ErrJobState, id, r.state))
		case round >= 2:
			return nil, connectError(err)
		}
	}
	s.stopLocal(id, errCancelled)
	wctx, cancel := context.WithTimeout(ctx, cancelWait)
	defer cancel()
	for {
		r, err := s.store.get(ctx, id)
		if err != nil {
			return nil, connectError(err)
		}
		if r.state != workerv1.JobState_JOB_STATE_RUNNING || wctx.Err() != nil {
			return &workerv1.CancelJobResponse{Job: r.proto(time.Now())}, nil
		}
		sleep(wctx, 50*time.Millisecond)
	}
}
