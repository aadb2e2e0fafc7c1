package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// defaultPageSize is ListJobs' page size when the request leaves it zero.
const defaultPageSize = 50

// jobTable is the worker's memory of its jobs. It lives only as long as the process: a
// durable job store comes in a later issue, until then a restarted worker starts with an
// empty list (JetStream, not this table, is what guarantees each upload is transcoded).
type jobTable struct {
	mu    sync.Mutex
	limit int
	byID  map[string]*workerv1.Job
	// bySeq maps an upload.completed message's stream sequence to its job, so a
	// redelivery continues the same job with the next attempt number.
	bySeq map[uint64]string
	seqOf map[string]uint64
	order []string // creation order, oldest first
}

func newJobTable(limit int) *jobTable {
	return &jobTable{
		limit: limit,
		byID:  make(map[string]*workerv1.Job),
		bySeq: make(map[uint64]string),
		seqOf: make(map[string]uint64),
	}
}

func newJobID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// begin records a delivery of the message with stream sequence seq and returns its job id
// and whether the job is new.
func (t *jobTable) begin(seq uint64, videoID string, attempt int32) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := timestamppb.Now()
	if id, ok := t.bySeq[seq]; ok {
		j := t.byID[id]
		j.State = workerv1.JobState_JOB_STATE_QUEUED
		j.Attempt = attempt
		j.UpdateTime = now
		return id, false
	}
	id := newJobID()
	t.byID[id] = &workerv1.Job{
		Id:         id,
		Kind:       "transcode",
		VideoId:    videoID,
		State:      workerv1.JobState_JOB_STATE_QUEUED,
		Attempt:    attempt,
		CreateTime: now,
		UpdateTime: now,
	}
	t.bySeq[seq] = id
	t.seqOf[id] = seq
	t.order = append(t.order, id)
	for len(t.order) > t.limit {
		old := t.order[0]
		t.order = t.order[1:]
		delete(t.byID, old)
		delete(t.bySeq, t.seqOf[old])
		delete(t.seqOf, old)
	}
	return id, true
}

// set moves a job to state with the given error text ("" clears it).
func (t *jobTable) set(id string, state workerv1.JobState, errText string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j, ok := t.byID[id]
	if !ok {
		return
	}
	j.State = state
	j.Error = errText
	j.UpdateTime = timestamppb.New(time.Now())
}

func (t *jobTable) get(id string) (*workerv1.Job, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j, ok := t.byID[id]
	if !ok {
		return nil, false
	}
	return proto.CloneOf(j), true
}

// list returns copies of the matching jobs, newest first.
func (t *jobTable) list(state workerv1.JobState, videoID string, limit int) []*workerv1.Job {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*workerv1.Job
	for _, id := range slices.Backward(t.order) {
		if len(out) >= limit {
			break
		}
		j := t.byID[id]
		if state != workerv1.JobState_JOB_STATE_UNSPECIFIED && j.GetState() != state {
			continue
		}
		if videoID != "" && j.GetVideoId() != videoID {
			continue
		}
		out = append(out, proto.CloneOf(j))
	}
	return out
}

// ListJobs implements WorkerService.ListJobs from the in-memory job table.
func (s *Service) ListJobs(_ context.Context, req *workerv1.ListJobsRequest) (*workerv1.ListJobsResponse, error) {
	size := int(req.GetPageSize())
	if size == 0 {
		size = defaultPageSize
	}
	return &workerv1.ListJobsResponse{Jobs: s.jobs.list(req.GetState(), req.GetVideoId(), size)}, nil
}

// GetJob implements WorkerService.GetJob from the in-memory job table.
func (s *Service) GetJob(_ context.Context, req *workerv1.GetJobRequest) (*workerv1.GetJobResponse, error) {
	j, ok := s.jobs.get(req.GetId())
	if !ok {
		return nil, connectError(fmt.Errorf("%w: %s", ErrJobNotFound, req.GetId()))
	}
	return &workerv1.GetJobResponse{Job: j}, nil
}
