package worker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/worker"
	"google.golang.org/protobuf/proto"
)

// lastEvent returns the newest stored event of a type.
func (e *env) lastEvent(typ eventsv1.EventType) *eventsv1.Event {
	e.t.Helper()
	stream, err := e.bus.JetStream().Stream(e.t.Context(), events.StreamName)
	if err != nil {
		e.t.Fatalf("stream: %v", err)
	}
	msg, err := stream.GetLastMsgForSubject(e.t.Context(), events.Subject(typ))
	if err != nil {
		e.t.Fatalf("no %s event: %v", events.Name(typ), err)
	}
	ev, err := events.Decode(msg.Data)
	if err != nil {
		e.t.Fatalf("decode %s: %v", events.Name(typ), err)
	}
	return ev
}

func TestTranscodeJob(t *testing.T) {
	cases := []struct {
		name      string
		text      bool // the source is a text file, not video
		transient int  // calls failing with unavailable before the transcoder is reached
		delay     time.Duration
		cfg       worker.Config

		wantStatus  metadatav1.VideoStatus
		wantCalls   int
		wantState   workerv1.JobState
		wantReason  string // substring of failure_reason and the job's error
		wantAttempt int32
	}{
		{
			name:        "clip becomes ready",
			wantStatus:  metadatav1.VideoStatus_VIDEO_STATUS_READY,
			wantCalls:   1,
			wantState:   workerv1.JobState_JOB_STATE_SUCCEEDED,
			wantAttempt: 1,
		},
		{
			name:        "text file fails after one attempt",
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
			name:        "gives up after max deliver",
			transient:   100,
			cfg:         worker.Config{MaxDeliver: 2, RetryBackoff: []time.Duration{50 * time.Millisecond}},
			wantStatus:  metadatav1.VideoStatus_VIDEO_STATUS_FAILED,
			wantCalls:   2,
			wantState:   workerv1.JobState_JOB_STATE_FAILED,
			wantReason:  "gave up after 2 attempts",
			wantAttempt: 2,
		},
		{
			name:        "long transcode outlives ack wait",
			delay:       2500 * time.Millisecond,
			cfg:         worker.Config{AckWait: time.Second, MaxConcurrent: 2}, // a free slot would take a redelivery
			wantStatus:  metadatav1.VideoStatus_VIDEO_STATUS_READY,
			wantCalls:   1,
			wantState:   workerv1.JobState_JOB_STATE_SUCCEEDED,
			wantAttempt: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			src := filepath.Join(t.TempDir(), "notes.txt")
			if err := os.WriteFile(src, []byte("this is not a video\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if !tc.text {
				src = makeClip(t)
			}
			id := e.addVideo(src)
			e.tc.failTransiently(id, tc.transient)
			e.tc.slowDown(tc.delay)
			_, url, _ := e.startWorker(tc.cfg)
			e.uploadCompleted(id)

			v := e.waitVideo(id)
			e.waitSettled()
			if v.GetStatus() != tc.wantStatus {
				t.Fatalf("status = %v (reason %q), want %v", v.GetStatus(), v.GetFailureReason(), tc.wantStatus)
			}
			if got := e.tc.count(id); got != tc.wantCalls {
				t.Errorf("transcode calls = %d, want %d", got, tc.wantCalls)
			}

			if tc.wantStatus == metadatav1.VideoStatus_VIDEO_STATUS_READY {
				checkReady(t, e, v)
			} else {
				reason := v.GetFailureReason()
				if reason == "" || reason == connect.CodeFailedPrecondition.String() || !strings.Contains(reason, tc.wantReason) {
					t.Errorf("failure_reason = %q, want a readable reason containing %q", reason, tc.wantReason)
				}
				ev := e.lastEvent(eventsv1.EventType_EVENT_TYPE_TRANSCODE_FAILED)
				if f := ev.GetTranscodeFailed(); f.GetVideoId() != id || f.GetPermanent() != tc.text {
					t.Errorf("transcode.failed = %v, want video %s permanent %v", f, id, tc.text)
				}
			}

			res, err := e.workerClient(url).ListJobs(t.Context(), &workerv1.ListJobsRequest{VideoId: id})
			if err != nil {
				t.Fatalf("list jobs: %v", err)
			}
			if len(res.GetJobs()) != 1 {
				t.Fatalf("jobs = %v, want one", res.GetJobs())
			}
			j := res.GetJobs()[0]
			if j.GetState() != tc.wantState || j.GetAttempt() != tc.wantAttempt || j.GetKind() != "transcode" || j.GetVideoId() != id {
				t.Errorf("job = %v, want state %v attempt %d kind transcode video %s", j, tc.wantState, tc.wantAttempt, id)
			}
			if tc.wantState == workerv1.JobState_JOB_STATE_FAILED && !strings.Contains(j.GetError(), tc.wantReason) {
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
	if want := "/v1/hls/" + id + "/thumbnail.jpg"; v.GetThumbnailPath() != want {
		t.Errorf("thumbnail_path = %q, want %q", v.GetThumbnailPath(), want)
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "hls", id, "master.m3u8")); err != nil {
		t.Errorf("master playlist not written: %v", err)
	}
	if ev := e.lastEvent(eventsv1.EventType_EVENT_TYPE_VIDEO_READY); ev.GetVideoReady().GetVideoId() != id || ev.GetVideoReady().GetPlaybackPath() != v.GetPlaybackPath() {
		t.Errorf("video.ready = %v, want video %s at %s", ev.GetVideoReady(), id, v.GetPlaybackPath())
	}
	if ev := e.lastEvent(eventsv1.EventType_EVENT_TYPE_TRANSCODE_COMPLETED); ev.GetTranscodeCompleted().GetVideoId() != id ||
		int(ev.GetTranscodeCompleted().GetRenditions()) != len(v.GetRenditions()) {
		t.Errorf("transcode.completed = %v, want video %s with %d renditions", ev.GetTranscodeCompleted(), id, len(v.GetRenditions()))
	}
}

func TestRestartDoesNotReprocessAckedJob(t *testing.T) {
	e := newEnv(t)
	clip := makeClip(t)

	first := e.addVideo(clip)
	_, _, stop := e.startWorker(worker.Config{})
	e.uploadCompleted(first)
	if v := e.waitVideo(first); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
		t.Fatalf("first video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
	}
	e.waitSettled()
	stop()

	// A second upload after the restart proves the new worker consumes; the stream is
	// ordered, so by the time it is done the first message would have been redelivered.
	second := e.addVideo(clip)
	_, url, _ := e.startWorker(worker.Config{})
	e.uploadCompleted(second)
	if v := e.waitVideo(second); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
		t.Fatalf("second video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
	}
	e.waitSettled()
	if a, b := e.tc.count(first), e.tc.count(second); a != 1 || b != 1 {
		t.Errorf("transcode calls = first %d, second %d; want 1 each", a, b)
	}
	res, err := e.workerClient(url).ListJobs(t.Context(), &workerv1.ListJobsRequest{})
	if err != nil {
		t.Fatalf("list jobs: %v", err)
	}
	if len(res.GetJobs()) != 1 || res.GetJobs()[0].GetVideoId() != second {
		t.Errorf("restarted worker's jobs = %v, want only the second video's", res.GetJobs())
	}
}

func TestStopLeavesUnfinishedJobUnacked(t *testing.T) {
	e := newEnv(t)
	id := e.addVideo(makeClip(t))
	e.tc.slowDown(time.Minute)
	_, _, stop := e.startWorker(worker.Config{})
	e.uploadCompleted(id)
	waitFor(t, 10*time.Second, "transcode running", func() bool { return e.tc.count(id) == 1 })

	start := time.Now()
	stop()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stopping took %v with a job in flight", d)
	}
	res, err := e.meta.GetVideo(t.Context(), &metadatav1.GetVideoRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if s := res.GetVideo().GetStatus(); s != metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING {
		t.Errorf("interrupted video status = %v, want PROCESSING", s)
	}

	// The job was handed back, so the next worker does it.
	e.tc.slowDown(0)
	e.startWorker(worker.Config{})
	if v := e.waitVideo(id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
		t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
	}
	e.waitSettled()
	if got := e.tc.count(id); got != 2 {
		t.Errorf("transcode calls = %d, want 2 (interrupted, then done)", got)
	}
}

func TestUndecodableEventsAreDropped(t *testing.T) {
	e := newEnv(t)
	subject := events.Subject(eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED)
	noID, err := proto.Marshal(events.UploadCompleted("upload", "", 1, ""))
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{{0x0a, 0xff}, noID, []byte("not protobuf at all")} {
		if _, err := e.bus.JetStream().Publish(t.Context(), subject, data); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	id := e.addVideo(makeClip(t))
	_, url, _ := e.startWorker(worker.Config{})
	e.uploadCompleted(id)
	if v := e.waitVideo(id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
		t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
	}
	info := e.waitSettled()
	if info.AckFloor.Stream < 4 {
		t.Errorf("ack floor = %d, want every message (4) settled", info.AckFloor.Stream)
	}
	res, err := e.workerClient(url).ListJobs(t.Context(), &workerv1.ListJobsRequest{})
	if err != nil {
		t.Fatalf("list jobs: %v", err)
	}
	if len(res.GetJobs()) != 1 {
		t.Errorf("jobs = %v, want only the valid upload's", res.GetJobs())
	}
}

func TestJobsAPI(t *testing.T) {
	e := newEnv(t)
	clip := makeClip(t)
	text := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(text, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok, bad := e.addVideo(clip), e.addVideo(text)
	_, url, _ := e.startWorker(worker.Config{})
	e.uploadCompleted(ok)
	e.waitVideo(ok)
	e.uploadCompleted(bad)
	e.waitVideo(bad)
	e.waitSettled()

	protocols := []struct {
		name string
		opts []connect.ClientOption
	}{
		{name: "connect"},
		{name: "grpc", opts: []connect.ClientOption{connect.WithGRPC()}},
	}
	for _, p := range protocols {
		client := e.workerClient(url, p.opts...)
		t.Run(p.name+"/list", func(t *testing.T) {
			cases := []struct {
				name   string
				req    *workerv1.ListJobsRequest
				videos []string // newest first
				code   connect.Code
			}{
				{name: "all newest first", req: &workerv1.ListJobsRequest{}, videos: []string{bad, ok}},
				{name: "page size", req: &workerv1.ListJobsRequest{PageSize: 1}, videos: []string{bad}},
				{name: "by state", req: &workerv1.ListJobsRequest{State: workerv1.JobState_JOB_STATE_SUCCEEDED}, videos: []string{ok}},
				{name: "by video", req: &workerv1.ListJobsRequest{VideoId: bad}, videos: []string{bad}},
				{name: "unknown video", req: &workerv1.ListJobsRequest{VideoId: "nope"}},
				{name: "page size too big", req: &workerv1.ListJobsRequest{PageSize: 501}, code: connect.CodeInvalidArgument},
				{name: "bad video id", req: &workerv1.ListJobsRequest{VideoId: "../etc"}, code: connect.CodeInvalidArgument},
				{name: "undefined state", req: &workerv1.ListJobsRequest{State: 99}, code: connect.CodeInvalidArgument},
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
		t.Run(p.name+"/get", func(t *testing.T) {
			list, err := client.ListJobs(t.Context(), &workerv1.ListJobsRequest{VideoId: ok})
			if err != nil || len(list.GetJobs()) != 1 {
				t.Fatalf("list: %v %v", list, err)
			}
			want := list.GetJobs()[0]
			got, err := client.GetJob(t.Context(), &workerv1.GetJobRequest{Id: want.GetId()})
			if err != nil {
				t.Fatalf("get job: %v", err)
			}
			if !proto.Equal(got.GetJob(), want) {
				t.Errorf("GetJob = %v, want %v", got.GetJob(), want)
			}
			if _, err := client.GetJob(t.Context(), &workerv1.GetJobRequest{Id: "unknown"}); connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("unknown job: err = %v, want not_found", err)
			}
			if _, err := client.GetJob(t.Context(), &workerv1.GetJobRequest{Id: "a/b"}); connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("bad job id: err = %v, want invalid_argument", err)
			}
		})
	}
}
