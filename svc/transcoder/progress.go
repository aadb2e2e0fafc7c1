package transcoder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	transcoderv1 "github.com/reelway/reelway/gen/reelway/transcoder/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/media"
)

// maxFinished bounds how many final states WatchTranscode remembers after their
// transcode ended; the oldest are forgotten first.
const maxFinished = 1000

// Percent bounds of the stages: encoding is nearly all of the work.
const (
	encodeStart  = 1.0
	packageStart = 95.0
)

// progress is one transcode's latest state as WatchTranscode reports it.
type progress struct {
	VideoID    string
	JobID      string
	Stage      transcoderv1.TranscodeStage
	Percent    float64
	Renditions []string
	Err        string
}

func (p progress) final() bool {
	return p.Stage == transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE ||
		p.Stage == transcoderv1.TranscodeStage_TRANSCODE_STAGE_FAILED
}

func (p progress) proto() *transcoderv1.WatchTranscodeResponse {
	return &transcoderv1.WatchTranscodeResponse{
		VideoId:    p.VideoID,
		JobId:      p.JobID,
		Stage:      p.Stage,
		Percent:    p.Percent,
		Renditions: slices.Clone(p.Renditions),
		Error:      p.Err,
	}
}

// job is a transcode running in this process. Watchers wait on changed, which is closed
// and replaced on every update, so a slow watcher skips states instead of queueing them.
type job struct {
	state   progress
	changed chan struct{}
}

// tracker holds the running transcodes (one per video: a second is refused) and the
// final states of recent ones.
type tracker struct {
	mu       sync.Mutex
	running  map[string]*job
	finished map[string]progress
	order    []string // finished ids, oldest first
}

func newTracker() *tracker {
	return &tracker{running: make(map[string]*job), finished: make(map[string]progress)}
}

// start registers a transcode of id, or fails with ErrBusy when one is running.
func (t *tracker) start(id, jobID string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.running[id]; ok {
		return ErrBusy
	}
	t.running[id] = &job{
		state:   progress{VideoID: id, JobID: jobID, Stage: transcoderv1.TranscodeStage_TRANSCODE_STAGE_PROBING},
		changed: make(chan struct{}),
	}
	return nil
}

// update changes the state of id's running transcode and wakes its watchers.
func (t *tracker) update(id string, fn func(*progress)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j, ok := t.running[id]
	if !ok {
		return
	}
	before := j.state
	fn(&j.state)
	if j.state.Stage == before.Stage && j.state.Percent == before.Percent &&
		slices.Equal(j.state.Renditions, before.Renditions) && j.state.Err == before.Err {
		return
	}
	close(j.changed)
	j.changed = make(chan struct{})
}

// finish records the final state of id's transcode and removes it from the running ones:
// DONE with every rendition made, or FAILED with err.
func (t *tracker) finish(id string, renditions []string, err error) {
	t.update(id, func(p *progress) {
		if err != nil {
			p.Stage = transcoderv1.TranscodeStage_TRANSCODE_STAGE_FAILED
			p.Err = err.Error()
			return
		}
		p.Stage, p.Percent, p.Renditions = transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE, 100, renditions
	})
	t.mu.Lock()
	defer t.mu.Unlock()
	j, ok := t.running[id]
	if !ok {
		return
	}
	delete(t.running, id)
	if _, seen := t.finished[id]; seen {
		t.order = slices.DeleteFunc(t.order, func(s string) bool { return s == id })
	}
	t.finished[id] = j.state
	t.order = append(t.order, id)
	for len(t.order) > maxFinished {
		delete(t.finished, t.order[0])
		t.order = t.order[1:]
	}
}

// isRunning reports whether a transcode of id runs in this process.
func (t *tracker) isRunning(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.running[id]
	return ok
}

// snapshot returns id's current state and a channel closed on its next change; changed
// is nil when no transcode of id is running.
func (t *tracker) snapshot(id string) (state progress, changed <-chan struct{}, found bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if j, ok := t.running[id]; ok {
		return j.state, j.changed, true
	}
	p, ok := t.finished[id]
	return p, nil, ok
}

// WatchTranscode implements TranscoderService: it sends the state of the video's running
// transcode, then every change, and ends after the final state. Without a running
// transcode it sends the remembered final state, or DONE with the renditions of the
// master playlist when the video's output is on disk (a transcode finished before this
// process started), or fails with not_found.
func (s *Service) WatchTranscode(ctx context.Context, req *transcoderv1.WatchTranscodeRequest, stream *connect.ServerStream[transcoderv1.WatchTranscodeResponse]) error {
	id := req.GetVideoId()
	if err := media.CheckID(id); err != nil {
		return s.toConnect(ctx, err)
	}
	state, changed, found := s.jobs.snapshot(id)
	if !found {
		renditions, ok := s.finishedOutput(id)
		if !ok {
			return s.toConnect(ctx, fmt.Errorf("%w: no transcode of video %s", ErrNotFound, id))
		}
		state = progress{VideoID: id, Stage: transcoderv1.TranscodeStage_TRANSCODE_STAGE_DONE, Percent: 100, Renditions: renditions}
	}
	for {
		if err := stream.Send(state.proto()); err != nil {
			return err
		}
		if changed == nil || state.final() {
			return nil
		}
		select {
		case <-ctx.Done():
			return s.toConnect(ctx, ctx.Err())
		case <-changed:
		}
		state, changed, _ = s.jobs.snapshot(id)
	}
}

// finishedOutput reports whether a finished HLS output of id is in place, and the
// renditions its master playlist lists (by folder name, as the transcoder writes them).
func (s *Service) finishedOutput(id string) (renditions []string, ok bool) {
	dir, err := media.HLSDir(s.cfg.DataDir, id)
	if err != nil {
		return nil, false
	}
	f, err := os.Open(filepath.Join(dir, media.MasterPlaylist))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, false
	}
	variants, err := media.ParseMaster(io.LimitReader(f, maxPlaylistBytes))
	if err != nil {
		// Still done: the renditions are just not known.
		return nil, true
	}
	for _, v := range variants {
		if name, _, ok := strings.Cut(v.URI, "/"); ok && name != "" {
			renditions = append(renditions, name)
		}
	}
	return renditions, true
}

// setStage moves id's transcode to a stage making renditions, at percent.
func (s *Service) setStage(id string, stage transcoderv1.TranscodeStage, percent float64, renditions []string) {
	s.jobs.update(id, func(p *progress) {
		p.Stage, p.Percent, p.Renditions = stage, percent, renditions
	})
}

// reportProgress turns ffmpeg's -progress lines into the encoding stage's percent and
// transcode.progress events, at most one per ProgressInterval. Publishing is best effort
// and never slows ffmpeg: lines only update the latest value, a separate goroutine
// publishes it.
func (s *Service) reportProgress(ctx context.Context, id, jobID string, duration float64, renditions []string) (onLine func(string), stop func()) {
	latest := make(chan float64, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	label := strings.Join(renditions, ",")
	go func() {
		defer close(done)
		if s.pub == nil {
			<-quit
			return
		}
		tick := time.NewTicker(s.cfg.ProgressInterval)
		defer tick.Stop()
		pending, sent := -1.0, -1.0
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case pct := <-latest:
				pending = pct
			case <-tick.C:
				if pending < 0 || pending == sent {
					continue
				}
				sent = pending
				pctx, cancel := context.WithTimeout(ctx, s.cfg.ProgressInterval+time.Second)
				err := s.pub.Publish(pctx, events.TranscodeProgress(eventSource, id, jobID, sent, label))
				cancel()
				if err != nil && !errors.Is(err, context.Canceled) {
					s.log.WarnContext(ctx, "progress.publish", "video_id", id, "err", err)
				}
			}
		}
	}()
	onLine = func(line string) {
		v, ok := strings.CutPrefix(line, "out_time_us=")
		if !ok || duration <= 0 {
			return
		}
		var us int64
		if _, err := fmt.Sscan(v, &us); err != nil || us < 0 {
			return
		}
		pct := encodeStart + min(1, float64(us)/(duration*1e6))*(packageStart-encodeStart)
		s.jobs.update(id, func(p *progress) { p.Percent = pct })
		select { // keep only the newest value
		case <-latest:
		default:
		}
		select {
		case latest <- pct:
		default:
		}
	}
	stop = func() {
		close(quit)
		<-done
	}
	return onLine, stop
}
