package worker

import (
	"context"
	"errors"
	"time"

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
// duplicate window cannot swallow a retry made seconds after the last attempt).
func (s *Service) RetryJob(ctx context.Context, req *workerv1.RetryJobRequest) (*workerv1.RetryJobResponse, error) {
	old, err := s.store.get(ctx, req.GetId())
	if err != nil {
		return nil, connectError(err)
	}
	r, undo, err := s.store.requeue(ctx, req.GetId())
	if err != nil {
		return nil, connectError(err)
	}
	// The video is processing again from now on; it is marked before the job is queued
	// so this cannot overwrite what a fast attempt records.
	processing := &metadatav1.Video{Id: r.videoID, Status: metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING}
	if err := s.update(ctx, processing, "status", "failure_reason"); err != nil {
		undo(context.WithoutCancel(ctx))
		return nil, connectError(err)
	}
	if err := s.enqueue(ctx, r); err != nil {
		uctx := context.WithoutCancel(ctx)
		undo(uctx)
		if merr := s.markFailed(uctx, r.videoID, old.errText); merr != nil {
			s.log.WarnContext(ctx, "job.mark_failed", "job_id", r.id, "err", merr)
		}
		return nil, connectError(err)
	}
	s.log.InfoContext(ctx, "job.retried", "job_id", r.id, "video_id", r.videoID, "generation", r.retries)
	s.publish(ctx, s.log, events.TranscodeRequested(Source, r.videoID, r.id))
	if r, err = s.store.get(ctx, r.id); err != nil {
		return nil, connectError(err)
	}
	return &workerv1.RetryJobResponse{Job: r.proto(time.Now())}, nil
}

// CancelJob implements WorkerService.CancelJob. A queued job is cancelled at once; a
// running one is stopped by the worker running it (this process directly, another one
// through the store within CancelPoll), which kills ffmpeg by ending the Transcode call.
// The answer waits (up to cancelWait) for the running attempt to stop.
func (s *Service) CancelJob(ctx context.Context, req *workerv1.CancelJobRequest) (*workerv1.CancelJobResponse, error) {
	id := req.GetId()
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
	if err := s.store.requestCancel(ctx, id, cancelByCaller); err != nil {
		if _, gerr := s.store.get(ctx, id); gerr != nil {
			return nil, connectError(gerr)
		}
		return nil, connectError(err)
	}
	s.stopLocal(id, errCancelled)
	wctx, cancel := context.WithTimeout(ctx, cancelWait)
	defer cancel()
	for {
		r, err = s.store.get(ctx, id)
		if err != nil {
			return nil, connectError(err)
		}
		if r.state != workerv1.JobState_JOB_STATE_RUNNING {
			break
		}
		sleep(wctx, 50*time.Millisecond)
		if wctx.Err() != nil {
			break
		}
	}
	return &workerv1.CancelJobResponse{Job: r.proto(time.Now())}, nil
}
