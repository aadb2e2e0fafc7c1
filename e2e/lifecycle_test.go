package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/gen/reelway/transcoder/v1/transcoderv1connect"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/gen/reelway/worker/v1/workerv1connect"
)

// longHDClip is 40 s of 1080p test pattern with a tone, at a low bit rate so it fits the
// dev platform's upload limit: its ladder has every rung, so its transcode runs for far
// longer than stopping it may take.
func longHDClip(t testing.TB) string {
	return media.clip(t, "long-hd.mp4",
		"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "40", "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1000k", "-maxrate", "1000k", "-bufsize", "2M",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest")
}

// TestLifecycleDeleteWhileTranscoding deletes a video while ffmpeg encodes it, on the
// whole platform in one process: the transcode stops at once (its ffmpeg gone, its job
// CANCELLED, not failed or dead), nothing of the video stays on disk, the video stays
// deleted, and the worker goes on to transcode the next upload (with a Unicode title).
func TestLifecycleDeleteWhileTranscoding(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg transcodes")
	}
	clip := longHDClip(t)
	if fi, err := os.Stat(clip); err != nil || fi.Size() >= devUploadLimit {
		t.Fatalf("clip does not fit the upload limit: %v", err)
	}
	small := tinyClip(t)
	p := startDev(t)
	ctx := t.Context()
	meta := metadatav1connect.NewMetadataServiceClient(h2cClient(), p.gateway, connect.WithGRPC())
	jobs := workerv1connect.NewWorkerServiceClient(http.DefaultClient, p.gateway)
	watch := transcoderv1connect.NewTranscoderServiceClient(h2cClient(), p.gateway, connect.WithGRPC())

	code, out := p.upload(t, url.QueryEscape("Delete me while encoding"), clip)
	if code != http.StatusCreated {
		t.Fatalf("upload: %d %v", code, out)
	}
	id, _ := out["videoId"].(string)

	// Encoding: ffmpeg has reported progress past the start of the encoding stage.
	waitFor(t, 2*time.Minute, "transcode of "+id+" encoding", func() error {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		stream, err := watch.WatchTranscode(wctx, &transcoderv1.WatchTranscodeRequest{VideoId: id})
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
			m := stream.Msg()
			switch m.GetStage() {
			case transcoderv1.TranscodeStage_TRANSCODE_STAGE_ENCODING:
				if m.GetPercent() > 1 {
					return nil
				}
			case transcoderv1.TranscodeStage_TRANSCODE_STAGE_PACKAGING, transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE,
				transcoderv1.TranscodeStage_TRANSCODE_STAGE_FAILED:
				t.Fatalf("transcode reached %v before the test could delete the video mid-encode", m.GetStage())
			}
		}
		if err := stream.Err(); err != nil {
			return err
		}
		return errors.New("watch ended")
	})
	res, err := jobs.ListJobs(ctx, &workerv1.ListJobsRequest{VideoId: id})
	must(t, err, "list jobs")
	if len(res.GetJobs()) != 1 || res.GetJobs()[0].GetState() != workerv1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("jobs of %s while encoding = %v, want one RUNNING", id, res.GetJobs())
	}
	job := res.GetJobs()[0]
	if pids := videoFFmpegs(t, id); len(pids) == 0 {
		t.Fatalf("no ffmpeg process for %s while it encodes", id)
	}

	if _, err := meta.DeleteVideo(ctx, &metadatav1.DeleteVideoRequest{Id: id}); err != nil {
		t.Fatalf("DeleteVideo: %v", err)
	}
	deleted := time.Now()
	// The encode has tens of seconds to go; stopping it takes well under a second.
	waitFor(t, 15*time.Second, "transcode of the deleted video stopped and its files removed", func() error {
		got, err := jobs.GetJob(ctx, &workerv1.GetJobRequest{Id: job.GetId()})
		if err != nil {
			return err
		}
		if s := got.GetJob().GetState(); s != workerv1.JobState_JOB_STATE_CANCELLED {
			return fmt.Errorf("job is %v", s)
		}
		if pids := videoFFmpegs(t, id); len(pids) > 0 {
			return fmt.Errorf("ffmpeg still running: %v", pids)
		}
		if left := leftFiles(t, p.dataDir, id); len(left) > 0 {
			return fmt.Errorf("files left: %v", left)
		}
		return nil
	})
	t.Logf("transcode stopped and cleaned up %v after the delete", time.Since(deleted))

	// The worker goes on: the next upload is transcoded, and a Unicode title survives the
	// upload path into metadata.
	title := "Ünïcødé 東京 — 🎬 next"
	code, out = p.upload(t, url.QueryEscape(title), small)
	if code != http.StatusCreated {
		t.Fatalf("upload after the delete: %d %v", code, out)
	}
	next, _ := out["videoId"].(string)
	p.waitStatus(t, next, "VIDEO_STATUS_READY")
	got, err := meta.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: next})
	must(t, err, "GetVideo %s", next)
	if got.GetVideo().GetTitle() != title {
		t.Errorf("title = %q, want %q", got.GetVideo().GetTitle(), title)
	}

	// And the deleted video stayed deleted: nothing was written back over it, no retry
	// or dead letter brought its job or its files back.
	_, err = meta.GetVideo(ctx, &metadatav1.GetVideoRequest{Id: id})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("gRPC GetVideo of the deleted video: %v, want not_found", err)
	}
	code, body := connectJSON(t, p.gateway, "/reelway.metadata.v1.MetadataService/GetVideo", map[string]string{"id": id})
	if code != http.StatusNotFound || body["code"] != "not_found" {
		t.Errorf("Connect GetVideo of the deleted video: %d %v, want 404 not_found", code, body)
	}
	final, err := jobs.GetJob(ctx, &workerv1.GetJobRequest{Id: job.GetId()})
	must(t, err, "GetJob")
	if j := final.GetJob(); j.GetState() != workerv1.JobState_JOB_STATE_CANCELLED || j.GetAttempt() != 1 || j.GetError() != "video deleted" {
		t.Errorf("job of the deleted video = %v, want CANCELLED after one attempt, video deleted", j)
	}
	dead, err := jobs.ListJobs(ctx, &workerv1.ListJobsRequest{State: workerv1.JobState_JOB_STATE_DEAD})
	must(t, err, "list dead jobs")
	if len(dead.GetJobs()) != 0 {
		t.Errorf("dead jobs: %v", dead.GetJobs())
	}
	if left := leftFiles(t, p.dataDir, id); len(left) > 0 {
		t.Errorf("files of the deleted video came back: %v", left)
	}
}

// videoFFmpegs returns the pids of the ffmpeg processes working on a video (its source
// or its output folder is in their command line).
func videoFFmpegs(t *testing.T, id string) []string {
	t.Helper()
	paths, err := filepath.Glob("/proc/[0-9]*/cmdline")
	must(t, err, "list processes")
	var pids []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := bytes.Split(b, []byte{0})
		if filepath.Base(string(args[0])) == "ffmpeg" &&
			(bytes.Contains(b, []byte("/uploads/"+id+"/")) || bytes.Contains(b, []byte("-"+id+"-"))) {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	return pids
}

// leftFiles lists what is on disk of a video: its upload folder, its HLS folder, and the
// transcoder's temporary and set-aside folders for it.
func leftFiles(t *testing.T, dataDir, id string) []string {
	t.Helper()
	var left []string
	for _, p := range []string{filepath.Join(dataDir, "uploads", id), filepath.Join(dataDir, "hls", id)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			left = append(left, p)
		}
	}
	tmp, err := filepath.Glob(filepath.Join(dataDir, "hls", ".*-"+id+"-*"))
	must(t, err, "glob")
	return append(left, tmp...)
}
