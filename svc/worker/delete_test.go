package worker_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/svc/worker"
	"google.golang.org/protobuf/proto"
)

// TestDeleteVideoMidJob: deleting a video stops its running job at once: ffmpeg is killed
// long before the encode would end, the job is CANCELLED (not failed, retried or
// dead-lettered), nothing of the video is left on disk and nothing is written over the
// video. That holds whether video.deleted reaches the worker running the job or another
// worker process sharing the job store. A queued job of a deleted video never runs, and
// the worker goes on with other videos.
func TestDeleteVideoMidJob(t *testing.T) {
	cases := []struct {
		name string
		// viaMetadata deletes through MetadataService, whose video.deleted the running
		// worker consumes; otherwise a second worker that does not run the job handles
		// the event, and the video stays in metadata (so any status written shows).
		viaMetadata bool
	}{
		{name: "event to the worker running the job", viaMetadata: true},
		{name: "event to another worker process", viaMetadata: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			cfg := worker.Config{DataDir: e.dataDir, MaxConcurrent: 1}
			// 20 s read at real time: an encode that runs to its end takes 20 s.
			running := e.addVideo(makeClip(t, 20))
			queued := e.addVideo(makeClip(t, 1))
			e.ffmpeg.slow(t, true)
			w := e.startWorker("w1", cfg)
			e.uploadCompleted(running)
			// Encoding once ffmpeg has made a rendition folder in the transcoder's temporary
			// folder: it has opened the source and is writing.
			waitFor(t, 20*time.Second, "encode started", func() bool {
				dirs, _ := filepath.Glob(filepath.Join(e.dataDir, "hls", ".tmp-"+running+"-*", "*"))
				return len(e.ffmpeg.encodes(t, running)) == 1 && len(dirs) > 0
			})
			e.uploadCompleted(queued)
			waitFor(t, 10*time.Second, "second job queued", func() bool {
				res, err := w.client.ListJobs(t.Context(), &workerv1.ListJobsRequest{VideoId: queued})
				return err == nil && len(res.GetJobs()) == 1
			})
			pid, err := strconv.Atoi(strings.Fields(e.ffmpeg.encodes(t, running)[0])[0])
			if err != nil {
				t.Fatal(err)
			}
			runJob, qJob := e.job(w, running), e.job(w, queued)

			var other *worker.Service
			if !tc.viaMetadata {
				other = e.openWorker("w2", cfg)
			}
			// The queued video first: stopping the running job frees the slot it waits for.
			start := time.Now()
			for _, id := range []string{queued, running} {
				if tc.viaMetadata {
					if _, err := e.meta.DeleteVideo(t.Context(), &metadatav1.DeleteVideoRequest{Id: id}); err != nil {
						t.Fatalf("delete %s: %v", id, err)
					}
					continue
				}
				if err := other.HandleVideoDeleted(t.Context(), id); err != nil {
					t.Fatalf("video.deleted of %s on another worker: %v", id, err)
				}
			}

			waitFor(t, 10*time.Second, "ffmpeg killed", func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) })
			waitFor(t, 10*time.Second, "job cancelled", func() bool {
				return e.job(w, running).GetState() == workerv1.JobState_JOB_STATE_CANCELLED
			})
			t.Logf("job stopped %v after the delete", time.Since(start))
			waitFor(t, 10*time.Second, "files removed", func() bool { return e.videoFiles(running) == nil && e.videoFiles(queued) == nil })

			e.ffmpeg.slow(t, false)
			next := e.addVideo(makeClip(t, 1))
			e.uploadCompleted(next)
			if v := e.waitVideo(next); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
				t.Fatalf("video after the delete = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
			}
			e.waitSettled()

			for _, want := range []struct {
				job     *workerv1.Job
				attempt int32
			}{{runJob, 1}, {qJob, 0}} {
				j := e.job(w, want.job.GetVideoId())
				if j.GetState() != workerv1.JobState_JOB_STATE_CANCELLED || j.GetError() != "video deleted" || j.GetAttempt() != want.attempt {
					t.Errorf("job of the deleted video %s = %v, want CANCELLED, video deleted, attempt %d", j.GetVideoId(), j, want.attempt)
				}
			}
			if n := len(e.ffmpeg.encodes(t, running)); n != 1 {
				t.Errorf("the deleted video was encoded %d times, want once (no retry)", n)
			}
			if n := e.tc.count(queued); n != 0 {
				t.Errorf("the queued job of a deleted video was transcoded %d times", n)
			}
			for _, id := range []string{running, queued} {
				if left := e.videoFiles(id); left != nil {
					t.Errorf("files of deleted video %s came back: %v", id, left)
				}
				for _, typ := range []eventsv1.EventType{
					eventsv1.EventType_EVENT_TYPE_JOB_DEAD, eventsv1.EventType_EVENT_TYPE_TRANSCODE_FAILED,
					eventsv1.EventType_EVENT_TYPE_TRANSCODE_COMPLETED, eventsv1.EventType_EVENT_TYPE_VIDEO_READY,
				} {
					if evs := eventsFor(e.events(typ), id); len(evs) != 0 {
						t.Errorf("deleted video %s: %d %v events", id, len(evs), typ)
					}
				}
				res, err := e.meta.GetVideo(t.Context(), &metadatav1.GetVideoRequest{Id: id})
				switch {
				case tc.viaMetadata && connect.CodeOf(err) != connect.CodeNotFound:
					t.Errorf("GetVideo of deleted %s = %v, %v; want not_found", id, res.GetVideo().GetStatus(), err)
				case !tc.viaMetadata && (err != nil || res.GetVideo().GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING):
					t.Errorf("video %s = %v, %v; want untouched (PROCESSING)", id, res.GetVideo().GetStatus(), err)
				}
			}
			if dead := e.deadLetters(); len(dead) != 0 {
				t.Errorf("dead letters: %v", dead)
			}
		})
	}
}

// openWorker opens a worker on the job store of cfg without starting it: another process
// that shares the store but runs none of the jobs.
func (e *env) openWorker(name string, cfg worker.Config) *worker.Service {
	e.t.Helper()
	cfg.Instance = name
	w, err := worker.Open(e.t.Context(), e.log, cfg, e.bus, e.bus, e.meta, e.tc)
	if err != nil {
		e.t.Fatalf("open worker: %v", err)
	}
	e.t.Cleanup(func() { _ = w.Close() })
	return w
}

// videoFiles lists what is left on disk of a video: its upload folder, its HLS folder and
// the transcoder's temporary folders for it. It is nil when nothing is.
func (e *env) videoFiles(id string) []string {
	e.t.Helper()
	var left []string
	for _, p := range []string{filepath.Join(e.dataDir, "uploads", id), filepath.Join(e.dataDir, "hls", id)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			left = append(left, fmt.Sprintf("%s (%v)", p, err))
		}
	}
	tmp, err := filepath.Glob(filepath.Join(e.dataDir, "hls", ".*-"+id+"-*"))
	if err != nil {
		e.t.Fatal(err)
	}
	return append(left, tmp...)
}

// TestRetryJobOfDeletedVideo: a failed job whose video was deleted is not retried. RetryJob
// answers failed_precondition naming the deleted video, over Connect and gRPC, and leaves
// the job exactly as it was (no new attempt budget, no update time) with no message
// queued and no transcode.requested published.
func TestRetryJobOfDeletedVideo(t *testing.T) {
	e := newEnv(t)
	id := e.addVideo(textFile(t))
	w := e.startWorker("w1", worker.Config{})
	e.uploadCompleted(id)
	if v := e.waitVideo(id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_FAILED {
		t.Fatalf("video of a text file = %v, want FAILED", v.GetStatus())
	}
	e.waitSettled()
	before := e.job(w, id)
	if before.GetState() != workerv1.JobState_JOB_STATE_FAILED {
		t.Fatalf("job = %v, want FAILED", before)
	}
	if _, err := e.meta.DeleteVideo(t.Context(), &metadatav1.DeleteVideoRequest{Id: id}); err != nil {
		t.Fatalf("delete video: %v", err)
	}
	stream, err := e.bus.JetStream().Stream(t.Context(), worker.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := info.State.LastSeq

	for _, opts := range [][]connect.ClientOption{nil, {connect.WithGRPC()}} {
		_, err := e.workerClient(w.url, opts...).RetryJob(t.Context(), &workerv1.RetryJobRequest{Id: before.GetId()})
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "video "+id+" was deleted") {
			t.Errorf("RetryJob of a deleted video's job = %v, want failed_precondition saying video %s was deleted", err, id)
		}
	}
	if after := e.job(w, id); !proto.Equal(after, before) {
		t.Errorf("job after the refused retries = %v, want untouched %v", after, before)
	}
	info, err = stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != lastSeq {
		t.Errorf("jobs stream went from sequence %d to %d: a job message was queued", lastSeq, info.State.LastSeq)
	}
	if n := len(eventsFor(e.events(eventsv1.EventType_EVENT_TYPE_TRANSCODE_REQUESTED), id)); n != 1 {
		t.Errorf("transcode.requested events = %d, want only the first", n)
	}
	if n := e.tc.count(id); n != 1 {
		t.Errorf("transcode calls = %d, want the first only", n)
	}
}
