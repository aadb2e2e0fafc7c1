package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/media"
)

// deleteWait bounds how long the handling of video.deleted waits for the running jobs of
// the video to stop before it removes the files anyway and asks for the event again.
const deleteWait = 10 * time.Second

// errJobsRunning means a deleted video's job had not stopped when its files were removed;
// the event is handled again, so the files are removed once more after the job stopped.
var errJobsRunning = errors.New("worker: jobs of the deleted video still running")

// onVideoDeleted stops the deleted video's jobs, then removes its files: its uploaded
// source and its HLS output (playlists, segments, poster, download). Streaming already
// refuses the video once metadata has it deleted, so playback stops at once; this stops
// the transcoding and frees the disk.
//
// Queued jobs are cancelled without running; a running job is stopped at once the way
// CancelJob stops it (its Transcode call ends, which kills ffmpeg) and ends CANCELLED,
// with no retry, no dead letter and no FAILED status written over the deleted video. The
// files go after the job stopped, so a transcode cannot write them again behind the
// cleanup; the transcoder removes its own temporary folder once its ffmpeg has exited
// and drops output it finishes for a source that is gone. Handling the event is
// idempotent, so a redelivered event is harmless.
func (s *Service) onVideoDeleted(ctx context.Context, ev *eventsv1.Event, p *eventsv1.VideoDeleted) error {
	id := p.GetVideoId()
	if !media.ValidID(id) {
		return fmt.Errorf("%w: video.deleted %q: %w", events.ErrDecode, ev.GetId(), media.CheckID(id))
	}
	stopped, err := s.stopVideoJobs(ctx, id)
	if err != nil {
		return err
	}
	if err := s.removeFiles(id); err != nil {
		return err
	}
	if !stopped {
		return fmt.Errorf("%w: video %s", errJobsRunning, id)
	}
	s.log.InfoContext(ctx, "video.files_removed", "video_id", id)
	return nil
}

// stopVideoJobs cancels the jobs of a deleted video and waits, up to deleteWait, until
// none runs any more. A job running in this process is stopped directly; one running in
// another worker process stops when that worker next renews its lease (CancelPoll).
func (s *Service) stopVideoJobs(ctx context.Context, videoID string) (stopped bool, err error) {
	running, err := s.store.cancelVideo(ctx, videoID)
	if err != nil {
		return false, err
	}
	for _, id := range running {
		local := s.stopLocal(id, errVideoDeleted)
		s.log.InfoContext(ctx, "job.stopping", "job_id", id, "video_id", videoID, "reason", reasonVideoDeleted, "local", local)
	}
	wctx, cancel := context.WithTimeout(ctx, deleteWait)
	defer cancel()
	for {
		busy, err := s.store.videoBusy(ctx, videoID)
		if err != nil {
			return false, err
		}
		if !busy {
			return true, nil
		}
		sleep(wctx, 50*time.Millisecond)
		if wctx.Err() != nil {
			s.log.WarnContext(ctx, "job.still_running", "video_id", videoID, "waited", deleteWait)
			return false, nil
		}
	}
}

// removeFiles removes a deleted video's source folder, then its HLS folder. The source
// goes first: the transcoder checks it is still there after putting finished output in
// place, so output that lands after this removal is dropped by the transcoder, and output
// that landed before is removed here.
func (s *Service) removeFiles(videoID string) error {
	hls, err := media.HLSDir(s.cfg.DataDir, videoID)
	if err != nil {
		return err
	}
	src, err := media.SourcePath(s.cfg.DataDir, videoID)
	if err != nil {
		return err
	}
	for _, dir := range []string{filepath.Dir(src), hls} {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("%w: remove files of %s: %w", ErrCleanup, videoID, err)
		}
	}
	return nil
}
