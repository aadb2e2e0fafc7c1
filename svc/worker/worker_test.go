package worker_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/worker"
	"google.golang.org/protobuf/proto"
)

// job returns the one job of a video.
func (e *env) job(w *runningWorker, videoID string) *workerv1.Job {
	e.t.Helper()
	res, err := w.client.ListJobs(e.t.Context(), &workerv1.ListJobsRequest{VideoId: videoID})
	if err != nil {
		e.t.Fatalf("list jobs: %v", err)
	}
	if len(res.GetJobs()) != 1 {
		e.t.Fatalf("jobs of %s = %v, want one", videoID, res.GetJobs())
	}
	return res.GetJobs()[0]
}

// deadLetters returns the jobs on the transcode dead-letter subject.
func (e *env) deadLetters() []*workerv1.Job {
	e.t.Helper()
	var out []*workerv1.Job
	e.stored(worker.DeadStream, worker.DeadSubject(worker.KindTranscode), func(data []byte) *eventsv1.Event {
		j := &workerv1.Job{}
		if err := proto.Unmarshal(data, j); err != nil {
			e.t.Fatalf("dead letter: %v", err)
		}
		out = append(out, j)
		return nil
	})
	return out
}

func textFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(p, []byte("this is not a video\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTranscodeJob(t *testing.T) {
	cases := []struct {
		name      string
		text      bool // the source is a text file, not video
		transient int  // calls failing with unavailable before the transcoder is reached
		cfg       worker.Config

		wantStatus  metadatav1.VideoStatus
		wantCalls   int
		wantState   workerv1.JobState
		wantReason  string // substring of failure_reason and the job's error
		wantAttempt int32
		wantDead    bool
	}{
		{
			name:        "clip becomes ready",
			wantStatus:  metadatav1.VideoStatus_VIDEO_STATUS_READY,
			wantCalls:   1,
			wantState:   workerv1.JobState_JOB_STATE_SUCCEEDED,
			wantAttempt: 1,
		},
		{
			name:        "undecodable input fails at once after one attempt",
			text:        true,
			wantStatus:  metadatav1.VideoStatus_VIDEO_STATUS_FAILED,
			wantCalls:   1,
			wantState:   workerv1.JobState_JOB_STATE_FAILED,
			wantAttempt: 1,
		},
		{
			name:        "transient failure is retried",
			transient:   1,
			cfg:         worker.Config{RetryBackoff: []time.Duration{50 * time.Millisecond}},
			wantStatus:  metadatav1.VideoStatus_VIDEO_STATUS_READY,
			wantCalls:   2,
			wantState:   workerv1.JobState_JOB_STATE_SUCCEEDED,
			wantAttempt: 2,
		},
		{
			name:        "dead-lettered after max attempts",
			transient:   100,
			cfg:         worker.Config{MaxAttempts: 2, RetryBackoff: []time.Duration{50 * time.Millisecond}},
			wantStatus:  metadatav1.VideoStatus_VIDEO_STATUS_FAILED,
			wantCalls:   2,
			wantState:   workerv1.JobState_JOB_STATE_DEAD,
			wantReason:  "gave up after 2 attempts",
			wantAttempt: 2,
			wantDead:    true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			src := textFile(t)
			if !tc.text {
				src = makeClip(t, 1)
			}
			id := e.addVideo(src)
			e.tc.failTransiently(id, tc.transient)
			w := e.startWorker("w1", tc.cfg)
			start := time.Now()
			e.uploadCompleted(id)

			v := e.waitVideo(id)
			took := time.Since(start)
			e.waitSettled()
			if v.GetStatus() != tc.wantStatus {
				t.Fatalf("status = %v (reason %q), want %v", v.GetStatus(), v.GetFailureReason(), tc.wantStatus)
			}
			if got := e.tc.count(id); got != tc.wantCalls {
				t.Errorf("transcode calls = %d, want %d", got, tc.wantCalls)
			}
			if tc.text && took > 15*time.Second {
				t.Errorf("undecodable input took %v to fail", took)
			}
			if tc.wantStatus == metadatav1.VideoStatus_VIDEO_STATUS_READY {
				checkReady(t, e, v)
				if n := len(e.ffmpeg.encodes(t, id)); n != 1 {
					t.Errorf("ffmpeg encodes = %d, want 1", n)
				}
			} else {
				reason := v.GetFailureReason()
				if reason == "" || reason == connect.CodeFailedPrecondition.String() || !strings.Contains(reason, tc.wantReason) {
					t.Errorf("failure_reason = %q, want a readable reason containing %q", reason, tc.wantReason)
				}
				failed := eventsFor(e.events(eventsv1.EventType_EVENT_TYPE_TRANSCODE_FAILED), id)
				if len(failed) != tc.wantCalls {
					t.Errorf("transcode.failed events = %d, want one per attempt (%d)", len(failed), tc.wantCalls)
				}
				for _, ev := range failed {
					if ev.GetTranscodeFailed().GetPermanent() != tc.text {
						t.Errorf("transcode.failed = %v, want permanent %v", ev.GetTranscodeFailed(), tc.text)
					}
				}
			}
			dead := eventsFor(e.events(eventsv1.EventType_EVENT_TYPE_JOB_DEAD), id)
			letters := e.deadLetters()
			if tc.wantDead {
				if len(dead) != 1 || dead[0].GetJobDead().GetAttempts() != tc.wantAttempt || !strings.Contains(dead[0].GetJobDead().GetReason(), tc.wantReason) {
					t.Errorf("job.dead events = %v, want one after %d attempts", dead, tc.wantAttempt)
				}
				if len(letters) != 1 || letters[0].GetVideoId() != id || letters[0].GetState() != workerv1.JobState_JOB_STATE_DEAD {
					t.Errorf("dead letters = %v, want the job, DEAD", letters)
				}
			} else if len(dead) != 0 || len(letters) != 0 {
				t.Errorf("job.dead events %v, dead letters %v; want none", dead, letters)
			}
			if n := len(eventsFor(e.events(eventsv1.EventType_EVENT_TYPE_TRANSCODE_STARTED), id)); n != tc.wantCalls {
				t.Errorf("transcode.started events = %d, want %d", n, tc.wantCalls)
			}
			if n := len(eventsFor(e.events(eventsv1.EventType_EVENT_TYPE_TRANSCODE_REQUESTED), id)); n != 1 {
				t.Errorf("transcode.requested events = %d, want 1", n)
			}

			j := e.job(w, id)
			if j.GetState() != tc.wantState || j.GetAttempt() != tc.wantAttempt || j.GetKind() != "transcode" || j.GetVideoId() != id {
				t.Errorf("job = %v, want state %v attempt %d kind transcode video %s", j, tc.wantState, tc.wantAttempt, id)
			}
			if tc.wantState != workerv1.JobState_JOB_STATE_SUCCEEDED && !strings.Contains(j.GetError(), tc.wantReason) {
				t.Errorf("job error = %q, want it to contain %q", j.GetError(), tc.wantReason)
			}
		})
	}
}

func checkReady(t *testing.T, e *env, v *metadatav1.Video) {
	t.Helper()
	id := v.GetId()
	if len(v.GetRenditions()) == 0 || v.GetDurationSeconds() < 0.5 || v.GetWidth() != 160 || v.GetHeight() != 120 {
		t.Errorf("media facts = %d renditions, %.2fs, %dx%d; want ≥1 rendition, ~1s, 160x120",
			len(v.GetRenditions()), v.GetDurationSeconds(), v.GetWidth(), v.GetHeight())
	}
	if want := "/v1/hls/" + id + "/master.m3u8"; v.GetPlaybackPath() != want {
		t.Errorf("playback_path = %q, want %q", v.GetPlaybackPath(), want)
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "hls", id, "master.m3u8")); err != nil {
		t.Errorf("master playlist not written: %v", err)
	}
	ready := eventsFor(e.events(eventsv1.EventType_EVENT_TYPE_VIDEO_READY), id)
	if len(ready) != 1 || ready[0].GetVideoReady().GetPlaybackPath() != v.GetPlaybackPath() {
		t.Errorf("video.ready events = %v, want one at %s", ready, v.GetPlaybackPath())
	}
	done := eventsFor(e.events(eventsv1.EventType_EVENT_TYPE_TRANSCODE_COMPLETED), id)
	if len(done) != 1 || int(done[0].GetTranscodeCompleted().GetRenditions()) != len(v.GetRenditions()) {
		t.Errorf("transcode.completed events = %v, want one with %d renditions", done, len(v.GetRenditions()))
	}
}

// TestTranscoderDown: while the transcoder is stopped, attempts are spaced by the backoff,
// then the job is dead-lettered and its video FAILED with the reason; once the transcoder
// is back, RetryJob (seconds after the last attempt) makes the video ready.
func TestTranscoderDown(t *testing.T) {
	e := newEnv(t)
	id := e.addVideo(makeClip(t, 1))
	backoff := []time.Duration{400 * time.Millisecond, 1200 * time.Millisecond}
	w := e.startWorker("w1", worker.Config{MaxAttempts: 3, RetryBackoff: backoff})
	e.tcSrv.stop()
	e.uploadCompleted(id)

	v := e.waitStatus(id, 60*time.Second, metadatav1.VideoStatus_VIDEO_STATUS_FAILED)
	if r := v.GetFailureReason(); !strings.Contains(r, "gave up after 3 attempts") || !strings.Contains(r, "unavailable") && !strings.Contains(r, "refused") {
		t.Errorf("failure_reason = %q, want the attempts and the cause", r)
	}
	calls := e.tc.times(id)
	if len(calls) != 3 {
		t.Fatalf("transcode calls = %d, want 3", len(calls))
	}
	for i, want := range []time.Duration{backoff[0], backoff[1]} {
		if gap := calls[i+1].Sub(calls[i]); gap < want {
			t.Errorf("attempt %d came %v after attempt %d, want ≥ %v", i+2, gap, i+1, want)
		}
	}
	e.waitSettled()
	j := e.job(w, id)
	if j.GetState() != workerv1.JobState_JOB_STATE_DEAD || j.GetAttempt() != 3 || j.GetMaxAttempts() != 3 {
		t.Errorf("job = %v, want DEAD after 3 of 3 attempts", j)
	}
	if letters := e.deadLetters(); len(letters) != 1 || letters[0].GetId() != j.GetId() {
		t.Errorf("dead letters = %v, want the job", letters)
	}
	if dead := eventsFor(e.events(eventsv1.EventType_EVENT_TYPE_JOB_DEAD), id); len(dead) != 1 {
		t.Errorf("job.dead events = %v, want one", dead)
	}

	e.tcSrv.start()
	grpc := e.workerClient(w.url, connect.WithGRPC())
	res, err := grpc.RetryJob(t.Context(), &workerv1.RetryJobRequest{Id: j.GetId()})
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if st := res.GetJob().GetState(); st == workerv1.JobState_JOB_STATE_DEAD || st == workerv1.JobState_JOB_STATE_FAILED || res.GetJob().GetError() != "" {
		t.Errorf("retried job = %v, want it queued again (or already running)", res.GetJob())
	}
	v = e.waitVideo(id)
	if v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY || v.GetFailureReason() != "" {
		t.Fatalf("after retry: %v %q, want READY without a failure reason", v.GetStatus(), v.GetFailureReason())
	}
	e.waitSettled()
	j = e.job(w, id)
	if j.GetState() != workerv1.JobState_JOB_STATE_SUCCEEDED || j.GetAttempt() != 4 {
		t.Errorf("job after retry = %v, want SUCCEEDED at attempt 4", j)
	}
	if _, err := grpc.RetryJob(t.Context(), &workerv1.RetryJobRequest{Id: j.GetId()}); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("retry of a succeeded job: %v, want failed_precondition", err)
	}
}

// TestLongTranscodeRunsOnce: a transcode lasting over three AckWaits, with two workers
// with free slots, is run once: ffmpeg started once.
func TestLongTranscodeRunsOnce(t *testing.T) {
	e := newEnv(t)
	id := e.addVideo(makeClip(t, 4))
	e.ffmpeg.slow(t, true)
	ackWait := time.Second
	w1 := e.startWorker("w1", worker.Config{AckWait: ackWait, MaxConcurrent: 2})
	e.startWorker("w2", worker.Config{AckWait: ackWait, MaxConcurrent: 2})
	start := time.Now()
	e.uploadCompleted(id)
	v := e.waitVideo(id)
	took := time.Since(start)
	if v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
		t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
	}
	if took < 3*ackWait {
		t.Fatalf("the transcode took %v, not longer than 3 × AckWait (%v): the test proves nothing", took, 3*ackWait)
	}
	e.waitSettled()
	if n := len(e.ffmpeg.encodes(t, id)); n != 1 {
		t.Errorf("ffmpeg encodes = %d, want 1", n)
	}
	if n := e.tc.count(id); n != 1 {
		t.Errorf("transcode calls = %d, want 1", n)
	}
	if j := e.job(w1, id); j.GetAttempt() != 1 || j.GetState() != workerv1.JobState_JOB_STATE_SUCCEEDED {
		t.Errorf("job = %v, want SUCCEEDED at attempt 1", j)
	}
}

// TestOneRunPerVideo: two jobs of one video (two uploads of it announced) on two workers
// never transcode at the same time, and neither fails for it.
func TestOneRunPerVideo(t *testing.T) {
	e := newEnv(t)
	id := e.addVideo(makeClip(t, 2))
	e.ffmpeg.slow(t, true)
	w1 := e.startWorker("w1", worker.Config{AckWait: 2 * time.Second})
	e.startWorker("w2", worker.Config{AckWait: 2 * time.Second})
	e.uploadCompleted(id)
	e.uploadCompleted(id)
	waitFor(t, 60*time.Second, "both jobs succeeded", func() bool {
		res, err := w1.client.ListJobs(t.Context(), &workerv1.ListJobsRequest{VideoId: id, State: workerv1.JobState_JOB_STATE_SUCCEEDED})
		return err == nil && len(res.GetJobs()) == 2
	})
	e.waitSettled()
	calls := e.tc.times(id)
	if len(calls) != 2 {
		t.Fatalf("transcode calls = %d, want 2", len(calls))
	}
	if gap := calls[1].Sub(calls[0]); gap < 2*time.Second {
		t.Errorf("second transcode of the video started %v after the first, while the 2 s real-time encode ran", gap)
	}
	res, err := w1.client.ListJobs(t.Context(), &workerv1.ListJobsRequest{VideoId: id})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range res.GetJobs() {
		if j.GetAttempt() != 1 {
			t.Errorf("job %v: want one attempt each", j)
		}
	}
}

// TestStopMidJob: a worker stopped during a job either finishes it within its grace
// period or hands it back, and another worker completes it; one set of renditions results.
func TestStopMidJob(t *testing.T) {
	cases := []struct {
		name        string
		grace       time.Duration
		wantEncodes int
		wantAttempt int32
	}{
		{name: "grace too short: handed over", grace: 200 * time.Millisecond, wantEncodes: 2, wantAttempt: 2},
		{name: "grace long enough: finished", grace: 45 * time.Second, wantEncodes: 1, wantAttempt: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			id := e.addVideo(makeClip(t, 3))
			e.ffmpeg.slow(t, true)
			w1 := e.startWorker("w1", worker.Config{Grace: tc.grace})
			e.uploadCompleted(id)
			waitFor(t, 20*time.Second, "encode started", func() bool { return len(e.ffmpeg.encodes(t, id)) == 1 })

			start := time.Now()
			w1.stop()
			if d := time.Since(start); d > tc.grace+10*time.Second {
				t.Errorf("stopping took %v with grace %v", d, tc.grace)
			}
			res, err := e.meta.GetVideo(t.Context(), &metadatav1.GetVideoRequest{Id: id})
			if err != nil {
				t.Fatal(err)
			}
			status := res.GetVideo().GetStatus()
			if tc.wantEncodes == 1 && status != metadatav1.VideoStatus_VIDEO_STATUS_READY {
				t.Fatalf("after a stop with a long grace the video is %v, want READY", status)
			}
			if tc.wantEncodes == 2 && status != metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING {
				t.Fatalf("after a stop with a short grace the video is %v, want PROCESSING", status)
			}

			e.ffmpeg.slow(t, false)
			w2 := e.startWorker("w2", worker.Config{})
			if v := e.waitVideo(id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
				t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
			}
			e.waitSettled()
			if n := len(e.ffmpeg.encodes(t, id)); n != tc.wantEncodes {
				t.Errorf("ffmpeg encodes = %d, want %d", n, tc.wantEncodes)
			}
			if j := e.job(w2, id); j.GetState() != workerv1.JobState_JOB_STATE_SUCCEEDED || j.GetAttempt() != tc.wantAttempt {
				t.Errorf("job = %v, want SUCCEEDED at attempt %d", j, tc.wantAttempt)
			}
			// One set of renditions: the video's folder and nothing half-written beside it.
			entries, err := os.ReadDir(filepath.Join(e.dataDir, "hls"))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, de := range entries {
				names = append(names, de.Name())
			}
			if len(names) != 1 || names[0] != id {
				t.Errorf("hls folder holds %v, want only %s", names, id)
			}
			if n := len(eventsFor(e.events(eventsv1.EventType_EVENT_TYPE_VIDEO_READY), id)); n != 1 {
				t.Errorf("video.ready events = %d, want 1", n)
			}
		})
	}
}

// TestCancelJob: cancelling a running job kills its ffmpeg and fails the video; a queued
// job is cancelled without running; both can be retried.
func TestCancelJob(t *testing.T) {
	e := newEnv(t)
	running := e.addVideo(makeClip(t, 6))
	queued := e.addVideo(makeClip(t, 1))
	e.ffmpeg.slow(t, true)
	w := e.startWorker("w1", worker.Config{MaxConcurrent: 1})
	e.uploadCompleted(running)
	waitFor(t, 20*time.Second, "encode started", func() bool { return len(e.ffmpeg.encodes(t, running)) == 1 })
	e.uploadCompleted(queued)
	waitFor(t, 10*time.Second, "second job queued", func() bool {
		res, err := w.client.ListJobs(t.Context(), &workerv1.ListJobsRequest{VideoId: queued})
		return err == nil && len(res.GetJobs()) == 1
	})
	pid, err := strconv.Atoi(strings.Fields(e.ffmpeg.encodes(t, running)[0])[0])
	if err != nil {
		t.Fatal(err)
	}

	// The queued job first: cancelling the running one frees the slot it waits for.
	qJob := e.job(w, queued)
	grpc := e.workerClient(w.url, connect.WithGRPC())
	res, err := grpc.CancelJob(t.Context(), &workerv1.CancelJobRequest{Id: qJob.GetId()})
	if err != nil {
		t.Fatalf("cancel queued: %v", err)
	}
	if res.GetJob().GetState() != workerv1.JobState_JOB_STATE_CANCELLED || res.GetJob().GetAttempt() != 0 {
		t.Errorf("cancelled queued job = %v, want CANCELLED without an attempt", res.GetJob())
	}
	if v := e.waitVideo(queued); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_FAILED || !strings.Contains(v.GetFailureReason(), "cancelled") {
		t.Errorf("video of the cancelled queued job = %v %q, want FAILED, cancelled", v.GetStatus(), v.GetFailureReason())
	}

	runJob := e.job(w, running)
	res, err = w.client.CancelJob(t.Context(), &workerv1.CancelJobRequest{Id: runJob.GetId()})
	if err != nil {
		t.Fatalf("cancel running: %v", err)
	}
	if res.GetJob().GetState() != workerv1.JobState_JOB_STATE_CANCELLED {
		t.Errorf("cancelled running job = %v, want CANCELLED", res.GetJob())
	}
	waitFor(t, 10*time.Second, "ffmpeg killed", func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) })
	if v := e.waitVideo(running); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_FAILED || !strings.Contains(v.GetFailureReason(), "cancelled") {
		t.Errorf("cancelled video = %v %q, want FAILED, cancelled", v.GetStatus(), v.GetFailureReason())
	}
	e.waitSettled()
	if n := e.tc.count(queued); n != 0 {
		t.Errorf("a job cancelled while queued was transcoded %d times", n)
	}
	for _, id := range []string{qJob.GetId(), runJob.GetId()} {
		_, err := grpc.CancelJob(t.Context(), &workerv1.CancelJobRequest{Id: id})
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "already cancelled") {
			t.Errorf("cancel of a cancelled job: %v, want failed_precondition saying it is already cancelled", err)
		}
	}

	e.ffmpeg.slow(t, false)
	for _, id := range []string{runJob.GetId(), qJob.GetId()} {
		if _, err := w.client.RetryJob(t.Context(), &workerv1.RetryJobRequest{Id: id}); err != nil {
			t.Fatalf("retry %s: %v", id, err)
		}
	}
	for _, id := range []string{running, queued} {
		if v := e.waitStatus(id, 60*time.Second, metadatav1.VideoStatus_VIDEO_STATUS_READY); v.GetFailureReason() != "" {
			t.Errorf("retried video %s keeps failure reason %q", id, v.GetFailureReason())
		}
	}
}

// TestEarlyRedeliveriesDoNotBurnAttempts: copies of a job message delivered while the job
// waits out its backoff (as a bare nak or a republish would) neither run it early nor
// count as attempts.
func TestEarlyRedeliveriesDoNotBurnAttempts(t *testing.T) {
	e := newEnv(t)
	id := e.addVideo(makeClip(t, 1))
	e.tc.failTransiently(id, 1)
	backoff := 1500 * time.Millisecond
	w := e.startWorker("w1", worker.Config{MaxAttempts: 2, RetryBackoff: []time.Duration{backoff}, MaxConcurrent: 4, AckWait: 2 * time.Second})
	e.uploadCompleted(id)
	var j *workerv1.Job
	waitFor(t, 10*time.Second, "first attempt failed", func() bool {
		res, err := w.client.ListJobs(t.Context(), &workerv1.ListJobsRequest{VideoId: id})
		if err != nil || len(res.GetJobs()) != 1 {
			return false
		}
		j = res.GetJobs()[0]
		return j.GetState() == workerv1.JobState_JOB_STATE_QUEUED && j.GetNextAttemptTime() != nil
	})
	data, err := proto.Marshal(&workerv1.Job{Id: j.GetId(), Kind: worker.KindTranscode, VideoId: id})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		msg := nats.NewMsg(worker.JobSubject(worker.KindTranscode))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, "copy-"+strconv.Itoa(i))
		if _, err := e.bus.JetStream().PublishMsg(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
	}
	if v := e.waitVideo(id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
		t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
	}
	e.waitSettled()
	calls := e.tc.times(id)
	if len(calls) != 2 {
		t.Fatalf("transcode calls = %d, want 2", len(calls))
	}
	if gap := calls[1].Sub(calls[0]); gap < backoff {
		t.Errorf("second attempt came %v after the first, want ≥ %v", gap, backoff)
	}
	if j := e.job(w, id); j.GetAttempt() != 2 || j.GetState() != workerv1.JobState_JOB_STATE_SUCCEEDED {
		t.Errorf("job = %v, want SUCCEEDED at attempt 2", j)
	}
}

// TestJobsSurviveRestartAndEventsAreIdempotent: the job store outlives the worker; an
// event delivered again makes no second job, while a new event about the same video does.
func TestJobsSurviveRestartAndEventsAreIdempotent(t *testing.T) {
	e := newEnv(t)
	id := e.addVideo(makeClip(t, 1))
	w1 := e.startWorker("w1", worker.Config{})
	ev := e.uploadCompleted(id)
	e.waitVideo(id)
	e.waitSettled()
	first := e.job(w1, id)
	w1.stop()

	w2 := e.startWorker("w2", worker.Config{})
	if got := e.job(w2, id); !proto.Equal(got, first) {
		t.Errorf("after a restart the job is %v, want %v", got, first)
	}
	// The same event again, stored as a new message (no Nats-Msg-Id): handled, no new job.
	data, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.bus.JetStream().Publish(t.Context(), events.Subject(ev.GetType()), data); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "intake consumer settled", func() bool {
		cons, err := e.bus.JetStream().Consumer(t.Context(), events.StreamName, worker.ConsumerName)
		if err != nil {
			return false
		}
		info, err := cons.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	e.waitSettled()
	if n := e.tc.count(id); n != 1 {
		t.Errorf("transcode calls after a repeated event = %d, want 1", n)
	}
	// A new upload.completed (the user's retry) is a new job.
	e.uploadCompleted(id)
	waitFor(t, 60*time.Second, "second job succeeded", func() bool {
		res, err := w2.client.ListJobs(t.Context(), &workerv1.ListJobsRequest{VideoId: id, State: workerv1.JobState_JOB_STATE_SUCCEEDED})
		return err == nil && len(res.GetJobs()) == 2
	})
	if n := e.tc.count(id); n != 2 {
		t.Errorf("transcode calls = %d, want 2", n)
	}
}

func TestUndecodableMessagesAreDropped(t *testing.T) {
	e := newEnv(t)
	subject := events.Subject(eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED)
	noID, err := proto.Marshal(events.UploadCompleted("upload", "", 1, ""))
	if err != nil {
		t.Fatal(err)
	}
	badJob, err := proto.Marshal(&workerv1.Job{Id: "x", Kind: "transcode", VideoId: "../etc"})
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{{0x0a, 0xff}, noID, []byte("not protobuf at all")} {
		if _, err := e.bus.JetStream().Publish(t.Context(), subject, data); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	id := e.addVideo(makeClip(t, 1))
	w := e.startWorker("w1", worker.Config{})
	for _, data := range [][]byte{{0x0a, 0xff}, badJob} {
		if _, err := e.bus.JetStream().Publish(t.Context(), worker.JobSubject(worker.KindTranscode), data); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	e.uploadCompleted(id)
	if v := e.waitVideo(id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
		t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
	}
	e.waitSettled()
	res, err := w.client.ListJobs(t.Context(), &workerv1.ListJobsRequest{})
	if err != nil {
		t.Fatalf("list jobs: %v", err)
	}
	if len(res.GetJobs()) != 1 {
		t.Errorf("jobs = %v, want only the valid upload's", res.GetJobs())
	}
}

func TestJobsAPI(t *testing.T) {
	e := newEnv(t)
	clip := makeClip(t, 1)
	ok, bad, other := e.addVideo(clip), e.addVideo(textFile(t)), e.addVideo(clip)
	w := e.startWorker("w1", worker.Config{})
	for _, id := range []string{ok, bad, other} {
		e.uploadCompleted(id)
		e.waitVideo(id)
	}
	e.waitSettled()

	protocols := []struct {
		name string
		opts []connect.ClientOption
	}{
		{name: "connect"},
		{name: "grpc", opts: []connect.ClientOption{connect.WithGRPC()}},
	}
	for _, p := range protocols {
		client := e.workerClient(w.url, p.opts...)
		page1, err := client.ListJobs(t.Context(), &workerv1.ListJobsRequest{PageSize: 1})
		if err != nil || page1.GetNextPageToken() == "" {
			t.Fatalf("first page: %v, %v; want a next page token", page1, err)
		}
		t.Run(p.name+"/list", func(t *testing.T) {
			cases := []struct {
				name   string
				req    *workerv1.ListJobsRequest
				videos []string // newest first
				code   connect.Code
			}{
				{name: "all newest first", req: &workerv1.ListJobsRequest{}, videos: []string{other, bad, ok}},
				{name: "page size", req: &workerv1.ListJobsRequest{PageSize: 1}, videos: []string{other}},
				{name: "by state", req: &workerv1.ListJobsRequest{State: workerv1.JobState_JOB_STATE_FAILED}, videos: []string{bad}},
				{name: "by video", req: &workerv1.ListJobsRequest{VideoId: ok}, videos: []string{ok}},
				{name: "by kind", req: &workerv1.ListJobsRequest{Kind: "transcode", State: workerv1.JobState_JOB_STATE_SUCCEEDED}, videos: []string{other, ok}},
				{name: "other kind", req: &workerv1.ListJobsRequest{Kind: "thumbnail"}},
				{name: "unknown video", req: &workerv1.ListJobsRequest{VideoId: "nope"}},
				{name: "page size too big", req: &workerv1.ListJobsRequest{PageSize: 501}, code: connect.CodeInvalidArgument},
				{name: "bad video id", req: &workerv1.ListJobsRequest{VideoId: "../etc"}, code: connect.CodeInvalidArgument},
				{name: "bad kind", req: &workerv1.ListJobsRequest{Kind: "Trans code"}, code: connect.CodeInvalidArgument},
				{name: "undefined state", req: &workerv1.ListJobsRequest{State: 99}, code: connect.CodeInvalidArgument},
				{name: "forged page token", req: &workerv1.ListJobsRequest{PageToken: "bm9wZQ"}, code: connect.CodeInvalidArgument},
				{name: "page token not base64", req: &workerv1.ListJobsRequest{PageToken: "%%%"}, code: connect.CodeInvalidArgument},
				{name: "made-up position", req: &workerv1.ListJobsRequest{PageToken: b64(strconv.FormatInt(time.Now().UnixMicro(), 10) + ":zzzz")}, code: connect.CodeInvalidArgument},
				{name: "made-up job in a real token", req: &workerv1.ListJobsRequest{PageToken: reissue(t, page1.GetNextPageToken(), "zzzz")}, code: connect.CodeInvalidArgument},
				{name: "junk appended to a real token", req: &workerv1.ListJobsRequest{PageToken: page1.GetNextPageToken() + "QUFB"}, code: connect.CodeInvalidArgument},
				{name: "one junk character appended", req: &workerv1.ListJobsRequest{PageToken: page1.GetNextPageToken() + "A"}, code: connect.CodeInvalidArgument},
				{name: "line break appended", req: &workerv1.ListJobsRequest{PageToken: page1.GetNextPageToken() + "\n"}, code: connect.CodeInvalidArgument},
				{name: "token of other filters", req: &workerv1.ListJobsRequest{PageToken: page1.GetNextPageToken(), State: workerv1.JobState_JOB_STATE_SUCCEEDED}, code: connect.CodeInvalidArgument},
				{name: "real token", req: &workerv1.ListJobsRequest{PageToken: page1.GetNextPageToken()}, videos: []string{bad, ok}},
			}
			for _, tc := range cases {
				res, err := client.ListJobs(t.Context(), tc.req)
				if tc.code != 0 {
					if connect.CodeOf(err) != tc.code {
						t.Errorf("%s: err = %v, want %v", tc.name, err, tc.code)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", tc.name, err)
					continue
				}
				var got []string
				for _, j := range res.GetJobs() {
					got = append(got, j.GetVideoId())
				}
				if strings.Join(got, ",") != strings.Join(tc.videos, ",") {
					t.Errorf("%s: videos = %v, want %v", tc.name, got, tc.videos)
				}
			}
		})
		t.Run(p.name+"/pages", func(t *testing.T) {
			var got []string
			token := ""
			for range 5 {
				res, err := client.ListJobs(t.Context(), &workerv1.ListJobsRequest{PageSize: 2, PageToken: token})
				if err != nil {
					t.Fatal(err)
				}
				for _, j := range res.GetJobs() {
					got = append(got, j.GetVideoId())
				}
				if token = res.GetNextPageToken(); token == "" {
					break
				}
			}
			if strings.Join(got, ",") != strings.Join([]string{other, bad, ok}, ",") {
				t.Errorf("paged videos = %v", got)
			}
		})
		t.Run(p.name+"/get retry cancel", func(t *testing.T) {
			want := e.job(w, ok)
			got, err := client.GetJob(t.Context(), &workerv1.GetJobRequest{Id: want.GetId()})
			if err != nil {
				t.Fatalf("get job: %v", err)
			}
			if !proto.Equal(got.GetJob(), want) {
				t.Errorf("GetJob = %v, want %v", got.GetJob(), want)
			}
			if !strings.HasPrefix(want.GetId(), "transcode-") || want.GetMaxAttempts() != 5 || want.GetCreateTime() == nil {
				t.Errorf("job = %v", want)
			}
			cases := []struct {
				name string
				call func() error
				code connect.Code
			}{
				{"get unknown", func() error { _, err := client.GetJob(t.Context(), &workerv1.GetJobRequest{Id: "unknown"}); return err }, connect.CodeNotFound},
				{"get bad id", func() error { _, err := client.GetJob(t.Context(), &workerv1.GetJobRequest{Id: "a/b"}); return err }, connect.CodeInvalidArgument},
				{"retry unknown", func() error {
					_, err := client.RetryJob(t.Context(), &workerv1.RetryJobRequest{Id: "unknown"})
					return err
				}, connect.CodeNotFound},
				{"retry bad id", func() error { _, err := client.RetryJob(t.Context(), &workerv1.RetryJobRequest{}); return err }, connect.CodeInvalidArgument},
				{"retry succeeded", func() error {
					_, err := client.RetryJob(t.Context(), &workerv1.RetryJobRequest{Id: want.GetId()})
					return err
				}, connect.CodeFailedPrecondition},
				{"cancel unknown", func() error {
					_, err := client.CancelJob(t.Context(), &workerv1.CancelJobRequest{Id: "unknown"})
					return err
				}, connect.CodeNotFound},
				{"cancel bad id", func() error {
					_, err := client.CancelJob(t.Context(), &workerv1.CancelJobRequest{Id: "a b"})
					return err
				}, connect.CodeInvalidArgument},
				{"cancel succeeded", func() error {
					_, err := client.CancelJob(t.Context(), &workerv1.CancelJobRequest{Id: want.GetId()})
					return err
				}, connect.CodeFailedPrecondition},
			}
			for _, tc := range cases {
				if err := tc.call(); connect.CodeOf(err) != tc.code {
					t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
				}
			}
		})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// reissue returns token with the job id inside replaced, encoded as ListJobs encodes it: a
// well-formed token of a position ListJobs never issued.
func reissue(t *testing.T, token, id string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		t.Fatalf("decode page token: %v", err)
	}
	var p struct {
		T int64  `json:"t"`
		I string `json:"i"`
		F string `json:"f"`
	}
	if err := json.Unmarshal(raw, &p); err != nil || p.I == "" {
		t.Fatalf("page token %q is not a position: %v", raw, err)
	}
	p.I = id
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
