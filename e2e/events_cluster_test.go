package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/gen/reelway/worker/v1/workerv1connect"
)

// jobCluster is the part of the platform a job's life touches, each service its own
// process: NATS (`reelway nats`), metadata, transcoder (its ffmpeg a logging wrapper that
// can run the HLS encode at real-time speed), upload and workers, found through a real
// Consul agent.
type jobCluster struct {
	t        *testing.T
	dir, bin string
	env      []string
	consul   *api.Client
	natsPort int
	nats     *process
	ports    map[string]int
	procs    map[string]*process
	wrapper  string // directory holding the ffmpeg wrapper
	ffLog    string
	slowFlag string
}

func startJobCluster(t *testing.T) *jobCluster {
	t.Helper()
	dir := t.TempDir()
	consul, consulAddr := startConsul(t, dir)
	c := &jobCluster{
		t: t, dir: dir, bin: reelwayBinary(t), consul: consul, natsPort: freePort(t),
		ports: map[string]int{}, procs: map[string]*process{},
	}
	c.wrapper = filepath.Join(dir, "bin")
	c.ffLog = filepath.Join(dir, "ffmpeg.log")
	c.slowFlag = filepath.Join(dir, "slow")
	real, err := exec.LookPath("ffmpeg")
	must(t, err, "ffmpeg")
	must(t, os.MkdirAll(c.wrapper, 0o755), "wrapper dir")
	script := "#!/bin/sh\n" +
		"echo \"$$ $*\" >> '" + c.ffLog + "'\n" +
		"case \"$*\" in *'-f hls'*) if [ -e '" + c.slowFlag + "' ]; then exec '" + real + "' -re \"$@\"; fi;; esac\n" +
		"exec '" + real + "' \"$@\"\n"
	must(t, os.WriteFile(filepath.Join(c.wrapper, "ffmpeg"), []byte(script), 0o755), "write wrapper")
	c.env = []string{
		"REELWAY_CONSUL_ADDR=" + consulAddr,
		fmt.Sprintf("REELWAY_NATS_URL=nats://127.0.0.1:%d", c.natsPort),
		"REELWAY_DATA_DIR=" + filepath.Join(dir, "data"),
		"REELWAY_VERSION=e2e",
		"REELWAY_SHUTDOWN_TIMEOUT=5s",
		"REELWAY_WORKER_ACK_WAIT=1s",
	}
	c.startNATS()
	for _, s := range []string{"metadata", "transcoder", "upload"} {
		c.ports[s] = freePort(t)
		c.start(s, s)
	}
	c.waitPassing("metadata", "transcoder", "upload")
	return c
}

func (c *jobCluster) startNATS() {
	c.nats = startProcess(c.t, c.dir, "nats", []string{"REELWAY_DATA_DIR=" + filepath.Join(c.dir, "nats")}, c.bin, "nats", "-nats-port", itoa(c.natsPort))
	waitFor(c.t, 20*time.Second, "nats up", func() error {
		nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", c.natsPort), nats.MaxReconnects(0))
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
}

func (c *jobCluster) stopNATS() {
	c.nats.signal(syscall.SIGTERM)
	if err := c.nats.wait(c.t, 20*time.Second); err != nil {
		c.t.Fatalf("nats exited with %v", err)
	}
}

// start runs a service as process name (a second worker is "worker2"), with extra env.
func (c *jobCluster) start(name, service string, extra ...string) {
	c.t.Helper()
	if c.ports[name] == 0 {
		c.ports[name] = freePort(c.t)
	}
	env := append(append([]string{}, c.env...), "REELWAY_PORT="+itoa(c.ports[name]))
	if service == "transcoder" {
		env = append(env, "PATH="+c.wrapper+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	c.procs[name] = startProcess(c.t, c.dir, name, append(env, extra...), c.bin, "serve", service)
}

// stop sends SIGTERM and wants a clean exit within timeout.
func (c *jobCluster) stop(name string, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	c.procs[name].signal(syscall.SIGTERM)
	if err := c.procs[name].wait(c.t, timeout); err != nil {
		c.t.Fatalf("%s exited with %v after SIGTERM, want 0", name, err)
	}
	return time.Since(start)
}

func (c *jobCluster) waitPassing(services ...string) {
	c.t.Helper()
	waitFor(c.t, 60*time.Second, "passing "+strings.Join(services, ", "), func() error {
		for _, s := range services {
			entries, _, err := c.consul.Health().Service(s, "", true, nil)
			if err != nil {
				return err
			}
			if len(entries) == 0 {
				return fmt.Errorf("%s not passing", s)
			}
		}
		return nil
	})
}

func (c *jobCluster) url(name string) string {
	return fmt.Sprintf("http://127.0.0.1:%d", c.ports[name])
}

func (c *jobCluster) slow(on bool) {
	if on {
		must(c.t, os.WriteFile(c.slowFlag, nil, 0o644), "slow flag")
		return
	}
	_ = os.Remove(c.slowFlag)
}

// encodes counts the HLS encodes of a video the transcoder started.
func (c *jobCluster) encodes(id string) int {
	b, err := os.ReadFile(c.ffLog)
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "/uploads/"+id+"/") && strings.Contains(line, "-f hls") {
			n++
		}
	}
	return n
}

func (c *jobCluster) upload(clip string) string {
	c.t.Helper()
	body, err := os.ReadFile(clip)
	must(c.t, err, "read clip")
	code, id, err := postUpload(http.DefaultClient, c.url("upload"), "cluster", body)
	if err != nil || code != http.StatusCreated {
		c.t.Fatalf("upload: %d %v", code, err)
	}
	return id
}

func (c *jobCluster) video(id string) *metadatav1.Video {
	c.t.Helper()
	meta := metadatav1connect.NewMetadataServiceClient(http.DefaultClient, c.url("metadata"))
	res, err := meta.GetVideo(context.Background(), &metadatav1.GetVideoRequest{Id: id})
	must(c.t, err, "get video %s", id)
	return res.GetVideo()
}

func (c *jobCluster) waitVideo(id string, timeout time.Duration) *metadatav1.Video {
	c.t.Helper()
	var v *metadatav1.Video
	waitFor(c.t, timeout, "video "+id+" READY or FAILED", func() error {
		v = c.video(id)
		if s := v.GetStatus(); s != metadatav1.VideoStatus_VIDEO_STATUS_READY && s != metadatav1.VideoStatus_VIDEO_STATUS_FAILED {
			return fmt.Errorf("status %v", s)
		}
		return nil
	})
	return v
}

func (c *jobCluster) jobs(worker, id string) []*workerv1.Job {
	c.t.Helper()
	w := workerv1connect.NewWorkerServiceClient(http.DefaultClient, c.url(worker))
	res, err := w.ListJobs(context.Background(), &workerv1.ListJobsRequest{VideoId: id})
	must(c.t, err, "list jobs")
	return res.GetJobs()
}

// events counts the stored events of a type about a subject.
func (c *jobCluster) events(typ eventsv1.EventType, subject string) int {
	c.t.Helper()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", c.natsPort))
	must(c.t, err, "connect nats")
	defer nc.Close()
	js, err := jetstream.New(nc)
	must(c.t, err, "jetstream")
	n := 0
	for _, ev := range storedEvents(c.t, js, typ) {
		if ev.GetSubjectId() == subject {
			n++
		}
	}
	return n
}

func slowClip(t *testing.T) string {
	return media.clip(t, "slow.mp4",
		"-f", "lavfi", "-i", "testsrc=size=160x120:rate=15",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "5", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-shortest")
}

// TestJobsAcrossProcessRestarts covers the job guarantees with each service its own
// process, stopped with real signals: SIGTERM to upload right after it answered (with
// NATS up, and with NATS down until after upload restarted), a transcode outlasting
// AckWait three times with two workers, and SIGTERM to a worker mid-job (handed over, or
// finished within its grace period).
func TestJobsAcrossProcessRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul, NATS and service processes")
	}
	c := startJobCluster(t)
	clip, slow := tinyClip(t), slowClip(t)
	c.start("worker", "worker")
	c.waitPassing("worker")

	t.Run("SIGTERM to upload right after it answered", func(t *testing.T) {
		id := c.upload(clip)
		c.stop("upload", 20*time.Second)
		if v := c.waitVideo(id, 60*time.Second); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
			t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
		}
		if n := c.events(eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED, id); n != 1 {
			t.Errorf("upload.completed events = %d, want 1", n)
		}
		c.start("upload", "upload")
		c.waitPassing("upload")
	})

	t.Run("SIGTERM to upload with NATS down", func(t *testing.T) {
		c.stopNATS()
		id := c.upload(clip) // accepted: the event waits in upload's outbox
		c.stop("upload", 20*time.Second)
		c.startNATS()
		c.start("upload", "upload")
		if v := c.waitVideo(id, 90*time.Second); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
			t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
		}
		if n := c.events(eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED, id); n != 1 {
			t.Errorf("upload.completed events = %d, want 1", n)
		}
		if jobs := c.jobs("worker", id); len(jobs) != 1 || jobs[0].GetAttempt() != 1 {
			t.Errorf("jobs = %v, want one after one attempt", jobs)
		}
	})

	t.Run("transcode outlasting AckWait 3x with two workers", func(t *testing.T) {
		c.start("worker2", "worker")
		c.waitPassing("worker")
		c.slow(true)
		defer c.slow(false)
		start := time.Now()
		id := c.upload(slow)
		if v := c.waitVideo(id, 90*time.Second); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
			t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
		}
		if took := time.Since(start); took < 3*time.Second {
			t.Fatalf("transcode took %v, not 3 × the 1 s AckWait", took)
		}
		if n := c.encodes(id); n != 1 {
			t.Errorf("ffmpeg encodes = %d, want 1", n)
		}
		if jobs := c.jobs("worker2", id); len(jobs) != 1 || jobs[0].GetAttempt() != 1 {
			t.Errorf("jobs = %v, want one after one attempt", jobs)
		}
		c.stop("worker2", 30*time.Second)
	})

	t.Run("SIGTERM to a worker mid-job hands the job over", func(t *testing.T) {
		// worker runs with a 5 s shutdown timeout: 2.5 s of grace, less than the encode.
		c.slow(true)
		id := c.upload(slow)
		waitFor(t, 30*time.Second, "encode started", func() error {
			if c.encodes(id) == 0 {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		if d := c.stop("worker", 30*time.Second); d > 15*time.Second {
			t.Errorf("worker took %v to stop", d)
		}
		if v := c.video(id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_PROCESSING {
			t.Fatalf("after the stop the video is %v, want PROCESSING", v.GetStatus())
		}
		c.slow(false)
		c.start("worker", "worker")
		if v := c.waitVideo(id, 90*time.Second); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
			t.Fatalf("video = %v %q, want READY", v.GetStatus(), v.GetFailureReason())
		}
		if n := c.encodes(id); n != 2 {
			t.Errorf("ffmpeg encodes = %d, want 2 (interrupted, then complete)", n)
		}
		if jobs := c.jobs("worker", id); len(jobs) != 1 || jobs[0].GetAttempt() != 2 || jobs[0].GetState() != workerv1.JobState_JOB_STATE_SUCCEEDED {
			t.Errorf("jobs = %v, want one SUCCEEDED at attempt 2", jobs)
		}
		checkOneRenditionSet(t, filepath.Join(c.dir, "data", "hls"), id)
		if n := c.events(eventsv1.EventType_EVENT_TYPE_VIDEO_READY, id); n != 1 {
			t.Errorf("video.ready events = %d, want 1", n)
		}
	})

	t.Run("SIGTERM to a worker mid-job finishes within grace", func(t *testing.T) {
		c.stop("worker", 30*time.Second)
		c.start("worker", "worker", "REELWAY_SHUTDOWN_TIMEOUT=40s")
		c.waitPassing("worker")
		c.slow(true)
		defer c.slow(false)
		id := c.upload(slow)
		waitFor(t, 30*time.Second, "encode started", func() error {
			if c.encodes(id) == 0 {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		c.stop("worker", 40*time.Second)
		if v := c.video(id); v.GetStatus() != metadatav1.VideoStatus_VIDEO_STATUS_READY {
			t.Fatalf("after a stop with grace the video is %v %q, want READY", v.GetStatus(), v.GetFailureReason())
		}
		if n := c.encodes(id); n != 1 {
			t.Errorf("ffmpeg encodes = %d, want 1", n)
		}
		checkOneRenditionSet(t, filepath.Join(c.dir, "data", "hls"), id)
	})
}

// checkOneRenditionSet wants the video's HLS folder complete, with nothing half-written
// beside it.
func checkOneRenditionSet(t *testing.T, hls, id string) {
	t.Helper()
	entries, err := os.ReadDir(hls)
	must(t, err, "read hls")
	for _, e := range entries {
		if e.Name() != id && strings.Contains(e.Name(), id) {
			t.Errorf("leftover %s beside the video's renditions", e.Name())
		}
	}
	master, err := os.ReadFile(filepath.Join(hls, id, "master.m3u8"))
	must(t, err, "read master")
	if !strings.Contains(string(master), "#EXT-X-STREAM-INF") {
		t.Errorf("master playlist without variants:\n%s", master)
	}
}
