package worker

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	workerv1 "github.com/reelway/reelway/gen/reelway/worker/v1"
	"github.com/reelway/reelway/svc/sqlitedb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Errors of the job store.
var (
	// ErrJobState means the job is not in a state that allows the operation (retrying a
	// running job, cancelling a finished one).
	ErrJobState = errors.New("worker: job state does not allow this")
	// ErrBadPageToken means a ListJobs page token was not one this service issued.
	ErrBadPageToken = errors.New("worker: bad page_token")
	// errBusy means another worker holds the job, or another job of the same video runs.
	errBusy = errors.New("worker: job or video busy")
	// errLeaseLost means this worker no longer holds the job it was running.
	errLeaseLost = errors.New("worker: lease lost")
)

// storeMigrations is the job store's schema; append, never edit.
var storeMigrations = []string{
	`CREATE TABLE jobs (
		id               TEXT PRIMARY KEY,
		kind             TEXT NOT NULL,
		video_id         TEXT NOT NULL,
		event_id         TEXT NOT NULL DEFAULT '',
		state            INTEGER NOT NULL,
		attempt          INTEGER NOT NULL DEFAULT 0,
		charged          INTEGER NOT NULL DEFAULT 0,
		max_attempts     INTEGER NOT NULL,
		retries          INTEGER NOT NULL DEFAULT 0,
		enqueued         INTEGER NOT NULL DEFAULT 0,
		dead_lettered    INTEGER NOT NULL DEFAULT 0,
		cancel_requested INTEGER NOT NULL DEFAULT 0,
		error            TEXT NOT NULL DEFAULT '',
		owner            TEXT NOT NULL DEFAULT '',
		lease_until_us   INTEGER NOT NULL DEFAULT 0,
		next_attempt_us  INTEGER NOT NULL DEFAULT 0,
		create_us        INTEGER NOT NULL,
		update_us        INTEGER NOT NULL
	);
	CREATE INDEX jobs_created ON jobs (create_us, id);
	CREATE INDEX jobs_video ON jobs (video_id, state);
	CREATE INDEX jobs_state ON jobs (state, create_us);`,
}

// jobRow is a job as stored. attempt counts every start; charged counts the starts that
// count against max_attempts since the job was created or last retried (an attempt
// interrupted by a stopping worker is refunded).
type jobRow struct {
	id, kind, videoID, eventID string
	state                      workerv1.JobState
	attempt, charged, maxAtt   int
	retries                    int
	enqueued, deadLettered     bool
	cancel                     cancelCause
	errText, owner             string
	leaseUntil, nextAttempt    time.Time
	created, updated           time.Time
}

// cancelCause is why a running job was asked to stop, as the store keeps it in
// cancel_requested: the worker running the job, in this process or another, reads it with
// its lease and ends the attempt accordingly.
type cancelCause int

const (
	// cancelNone: nobody asked the job to stop.
	cancelNone cancelCause = 0
	// cancelByCaller: CancelJob. The video is marked FAILED.
	cancelByCaller cancelCause = 1
	// cancelVideoDeleted: the job's video was deleted. Nothing is recorded on the video
	// (it is gone) and its files are removed. It outranks cancelByCaller.
	cancelVideoDeleted cancelCause = 2
)

// err is the cause that ends an attempt stopped for c.
func (c cancelCause) err() error {
	if c == cancelVideoDeleted {
		return errVideoDeleted
	}
	return errCancelled
}

// proto renders the row for the API.
func (r *jobRow) proto(now time.Time) *workerv1.Job {
	j := &workerv1.Job{
		Id:          r.id,
		Kind:        r.kind,
		VideoId:     r.videoID,
		State:       r.state,
		Attempt:     int32(r.attempt),
		Error:       r.errText,
		CreateTime:  timestamppb.New(r.created),
		UpdateTime:  timestamppb.New(r.updated),
		MaxAttempts: int32(r.maxAtt),
	}
	if r.state == workerv1.JobState_JOB_STATE_QUEUED && r.nextAttempt.After(now) {
		j.NextAttemptTime = timestamppb.New(r.nextAttempt)
	}
	if r.state == workerv1.JobState_JOB_STATE_RUNNING {
		j.Worker = r.owner
	}
	return j
}

// finished reports a state no attempt follows without RetryJob.
func finished(s workerv1.JobState) bool {
	switch s {
	case workerv1.JobState_JOB_STATE_SUCCEEDED, workerv1.JobState_JOB_STATE_FAILED,
		workerv1.JobState_JOB_STATE_DEAD, workerv1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// store keeps jobs in SQLite in the data directory, so the job list, attempt counts and
// leases survive restarts and are shared by the worker processes of one host.
type store struct {
	db *sql.DB
}

func openStore(ctx context.Context, path string) (*store, error) {
	db, err := sqlitedb.Open(ctx, path, storeMigrations)
	if err != nil {
		return nil, fmt.Errorf("worker: open job store: %w", err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

const jobColumns = `id, kind, video_id, event_id, state, attempt, charged, max_attempts, retries, enqueued,
	dead_lettered, cancel_requested, error, owner, lease_until_us, next_attempt_us, create_us, update_us`

type scanner interface{ Scan(dest ...any) error }

func scanJob(sc scanner) (*jobRow, error) {
	var r jobRow
	var state, cancel int32
	var lease, next, created, updated int64
	err := sc.Scan(&r.id, &r.kind, &r.videoID, &r.eventID, &state, &r.attempt, &r.charged, &r.maxAtt, &r.retries,
		&r.enqueued, &r.deadLettered, &cancel, &r.errText, &r.owner, &lease, &next, &created, &updated)
	if err != nil {
		return nil, err
	}
	r.state, r.cancel = workerv1.JobState(state), cancelCause(cancel)
	r.leaseUntil, r.nextAttempt = time.UnixMicro(lease), time.UnixMicro(next)
	r.created, r.updated = time.UnixMicro(created), time.UnixMicro(updated)
	return &r, nil
}

// get returns a job or ErrJobNotFound.
func (s *store) get(ctx context.Context, id string) (*jobRow, error) {
	r, err := scanJob(s.db.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("worker: read job %s: %w", id, err)
	}
	return r, nil
}

// create stores a new QUEUED job unless one with its id exists; either way it returns the
// stored job and whether this call created it.
func (s *store) create(ctx context.Context, id, kind, videoID, eventID string, maxAttempts int) (*jobRow, bool, error) {
	now := time.Now().UnixMicro()
	res, err := s.db.ExecContext(ctx, `INSERT INTO jobs (id, kind, video_id, event_id, state, max_attempts, create_us, update_us)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		id, kind, videoID, eventID, int32(workerv1.JobState_JOB_STATE_QUEUED), maxAttempts, now, now)
	if err != nil {
		return nil, false, fmt.Errorf("worker: create job %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	r, err := s.get(ctx, id)
	return r, n == 1, err
}

// markEnqueued records that the job's message is in the jobs stream.
func (s *store) markEnqueued(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE jobs SET enqueued = 1 WHERE id = ?`, id); err != nil {
		return fmt.Errorf("worker: mark job %s enqueued: %w", id, err)
	}
	return nil
}

// claim starts an attempt of job id for owner, holding it until lease passes: it fails with
// errBusy while another worker's lease on the job is live or another job of the same
// video runs, and with ErrJobState when the job is finished.
func (s *store) claim(ctx context.Context, id, owner string, lease time.Duration) (*jobRow, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("worker: claim job %s: %w", id, err)
	}
	defer func() { _ = tx.Rollback() }()
	r, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("worker: claim job %s: %w", id, err)
	}
	now := time.Now()
	switch {
	case finished(r.state):
		return r, fmt.Errorf("%w: job %s is %v", ErrJobState, id, r.state)
	case r.state == workerv1.JobState_JOB_STATE_RUNNING && r.leaseUntil.After(now):
		// Even for owner: two deliveries of one job can reach the same worker at once.
		return r, fmt.Errorf("%w: job %s runs on %s", errBusy, id, r.owner)
	}
	var other string
	err = tx.QueryRowContext(ctx, `SELECT id FROM jobs WHERE video_id = ? AND id <> ? AND state = ? AND lease_until_us > ? LIMIT 1`,
		r.videoID, id, int32(workerv1.JobState_JOB_STATE_RUNNING), now.UnixMicro()).Scan(&other)
	switch {
	case err == nil:
		return r, fmt.Errorf("%w: video %s has job %s running", errBusy, r.videoID, other)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("worker: claim job %s: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, attempt = attempt + 1, charged = charged + 1, owner = ?,
		lease_until_us = ?, next_attempt_us = 0, update_us = ? WHERE id = ?`,
		int32(workerv1.JobState_JOB_STATE_RUNNING), owner, now.Add(lease).UnixMicro(), now.UnixMicro(), id); err != nil {
		return nil, fmt.Errorf("worker: claim job %s: %w", id, err)
	}
	r, err = scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
	if err != nil {
		return nil, fmt.Errorf("worker: claim job %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("worker: claim job %s: %w", id, err)
	}
	return r, nil
}

// renew extends owner's lease on a running job and reports whether, and why, it was asked
// to stop. errLeaseLost means another worker took the job over.
func (s *store) renew(ctx context.Context, id, owner string, lease time.Duration) (cancel cancelCause, err error) {
	err = s.db.QueryRowContext(ctx, `UPDATE jobs SET lease_until_us = ? WHERE id = ? AND owner = ? AND state = ?
		RETURNING cancel_requested`, time.Now().Add(lease).UnixMicro(), id, owner, int32(workerv1.JobState_JOB_STATE_RUNNING)).Scan(&cancel)
	if errors.Is(err, sql.ErrNoRows) {
		return cancelNone, fmt.Errorf("%w: job %s", errLeaseLost, id)
	}
	if err != nil {
		return cancelNone, fmt.Errorf("worker: renew job %s: %w", id, err)
	}
	return cancel, nil
}

// outcome is how an attempt ended, as recorded by finish.
type outcome struct {
	state   workerv1.JobState
	errText string
	// next is when a QUEUED job may be attempted again.
	next time.Time
	// refund takes the attempt back from the budget (the worker stopped, not the job).
	refund bool
}

// finish ends owner's attempt of job id. errLeaseLost means another worker owns it now,
// so this attempt's outcome must not be recorded.
func (s *store) finish(ctx context.Context, id, owner string, o outcome) error {
	refund := 0
	if o.refund {
		refund = 1
	}
	var next int64
	if !o.next.IsZero() {
		next = o.next.UnixMicro()
	}
	res, err := s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, error = ?, next_attempt_us = ?, charged = MAX(charged - ?, 0),
		owner = '', lease_until_us = 0, cancel_requested = 0, update_us = ? WHERE id = ? AND owner = ? AND state = ?`,
		int32(o.state), o.errText, next, refund, time.Now().UnixMicro(), id, owner, int32(workerv1.JobState_JOB_STATE_RUNNING))
	if err != nil {
		return fmt.Errorf("worker: finish job %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%w: job %s", errLeaseLost, id)
	}
	return nil
}

// settle moves a job that is not running (queued, or finished) to a final state: a job
// dead-lettered before an attempt, or cancelled while queued. It fails with ErrJobState
// when the job is not in one of from.
func (s *store) settle(ctx context.Context, id string, to workerv1.JobState, errText string, from ...workerv1.JobState) (*jobRow, error) {
	args := []any{int32(to), errText, time.Now().UnixMicro(), id}
	marks := make([]string, len(from))
	for i, f := range from {
		marks[i] = "?"
		args = append(args, int32(f))
	}
	res, err := s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, error = ?, owner = '', lease_until_us = 0, next_attempt_us = 0,
		update_us = ? WHERE id = ? AND state IN (`+strings.Join(marks, ",")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("worker: settle job %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, fmt.Errorf("%w: job %s is not %v", ErrJobState, id, from)
	}
	return s.get(ctx, id)
}

// settleDead makes a job DEAD with the reason: a queued job, or a running one whose
// attempt is owner's or whose lease lapsed. ErrJobState means another worker has it.
func (s *store) settleDead(ctx context.Context, id, owner, why string) (*jobRow, error) {
	now := time.Now().UnixMicro()
	res, err := s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, error = ?, owner = '', lease_until_us = 0, next_attempt_us = 0,
		cancel_requested = 0, update_us = ? WHERE id = ? AND (state = ? OR (state = ? AND (owner = ? OR lease_until_us <= ?)))`,
		int32(workerv1.JobState_JOB_STATE_DEAD), why, now, id,
		int32(workerv1.JobState_JOB_STATE_QUEUED), int32(workerv1.JobState_JOB_STATE_RUNNING), owner, now)
	if err != nil {
		return nil, fmt.Errorf("worker: dead-letter job %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, fmt.Errorf("%w: job %s is held by another worker or finished", ErrJobState, id)
	}
	return s.get(ctx, id)
}

// markDeadLettered records that the job's dead letter is stored.
func (s *store) markDeadLettered(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE jobs SET dead_lettered = 1 WHERE id = ?`, id); err != nil {
		return fmt.Errorf("worker: mark job %s dead-lettered: %w", id, err)
	}
	return nil
}

// retryable fails with ErrJobState unless old may be retried: it failed, died or was
// cancelled.
func retryable(old *jobRow) error {
	switch old.state {
	case workerv1.JobState_JOB_STATE_FAILED, workerv1.JobState_JOB_STATE_DEAD, workerv1.JobState_JOB_STATE_CANCELLED:
		return nil
	}
	return fmt.Errorf("%w: job %s is %v; only failed, dead or cancelled jobs are retried", ErrJobState, old.id, old.state)
}

// requeue gives old, a failed, dead or cancelled job as read before, a fresh attempt budget
// and returns it with its retry generation bumped. It fails with ErrJobState when the job
// changed since old was read (another RetryJob got there first). undo puts the job back
// as old was, if its message cannot be queued.
func (s *store) requeue(ctx context.Context, old *jobRow) (r *jobRow, undo func(context.Context), err error) {
	if err := retryable(old); err != nil {
		return nil, nil, err
	}
	id := old.id
	res, err := s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, charged = 0, retries = retries + 1, enqueued = 0,
		dead_lettered = 0, cancel_requested = 0, error = '', next_attempt_us = 0, update_us = ? WHERE id = ? AND state = ? AND retries = ?`,
		int32(workerv1.JobState_JOB_STATE_QUEUED), time.Now().UnixMicro(), id, int32(old.state), old.retries)
	if err != nil {
		return nil, nil, fmt.Errorf("worker: requeue job %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, nil, fmt.Errorf("%w: job %s changed meanwhile", ErrJobState, id)
	}
	undo = func(ctx context.Context) {
		_, _ = s.db.ExecContext(ctx, `UPDATE jobs SET state = ?, charged = ?, retries = ?, enqueued = ?, dead_lettered = ?,
			cancel_requested = ?, error = ?, next_attempt_us = ?, update_us = ? WHERE id = ? AND state = ? AND enqueued = 0 AND retries = ?`,
			int32(old.state), old.charged, old.retries, old.enqueued, old.deadLettered, int32(old.cancel), old.errText,
			old.nextAttempt.UnixMicro(), old.updated.UnixMicro(), id, int32(workerv1.JobState_JOB_STATE_QUEUED), old.retries+1)
	}
	r, err = s.get(ctx, id)
	return r, undo, err
}

// requestCancel asks the worker running job id to stop it for why. A stronger cause
// already asked for is kept.
func (s *store) requestCancel(ctx context.Context, id string, why cancelCause) error {
	res, err := s.db.ExecContext(ctx, `UPDATE jobs SET cancel_requested = MAX(cancel_requested, ?), update_us = ? WHERE id = ? AND state = ?`,
		int32(why), time.Now().UnixMicro(), id, int32(workerv1.JobState_JOB_STATE_RUNNING))
	if err != nil {
		return fmt.Errorf("worker: cancel job %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%w: job %s is not running", ErrJobState, id)
	}
	return nil
}

// cancelVideo stops every unfinished job of a deleted video. Jobs no worker runs (queued,
// or running under a lapsed lease: their worker died) become CANCELLED at once; it returns
// the ids of the jobs a live worker runs, which are asked to stop with cancelVideoDeleted.
func (s *store) cancelVideo(ctx context.Context, videoID string) (running []string, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("worker: cancel jobs of video %s: %w", videoID, err)
	}
	defer func() { _ = tx.Rollback() }()
	now := time.Now().UnixMicro()
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, error = ?, owner = '', lease_until_us = 0, next_attempt_us = 0,
		cancel_requested = 0, update_us = ? WHERE video_id = ? AND (state = ? OR (state = ? AND lease_until_us <= ?))`,
		int32(workerv1.JobState_JOB_STATE_CANCELLED), reasonVideoDeleted, now, videoID,
		int32(workerv1.JobState_JOB_STATE_QUEUED), int32(workerv1.JobState_JOB_STATE_RUNNING), now); err != nil {
		return nil, fmt.Errorf("worker: cancel jobs of video %s: %w", videoID, err)
	}
	rows, err := tx.QueryContext(ctx, `UPDATE jobs SET cancel_requested = MAX(cancel_requested, ?), update_us = ?
		WHERE video_id = ? AND state = ? RETURNING id`,
		int32(cancelVideoDeleted), now, videoID, int32(workerv1.JobState_JOB_STATE_RUNNING))
	if err != nil {
		return nil, fmt.Errorf("worker: cancel jobs of video %s: %w", videoID, err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("worker: cancel jobs of video %s: %w", videoID, err)
		}
		running = append(running, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("worker: cancel jobs of video %s: %w", videoID, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("worker: cancel jobs of video %s: %w", videoID, err)
	}
	return running, nil
}

// videoBusy reports whether a worker still runs a job of the video under a live lease.
func (s *store) videoBusy(ctx context.Context, videoID string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE video_id = ? AND state = ? AND lease_until_us > ?`,
		videoID, int32(workerv1.JobState_JOB_STATE_RUNNING), time.Now().UnixMicro()).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("worker: jobs of video %s: %w", videoID, err)
	}
	return n > 0, nil
}

// jobFilter selects jobs for list.
type jobFilter struct {
	state   workerv1.JobState
	kind    string
	videoID string
}

// list returns up to limit jobs matching f, newest first, after the position in token,
// and the token of the next page ("" when this is the last).
func (s *store) list(ctx context.Context, f jobFilter, limit int, token string) ([]*jobRow, string, error) {
	where := []string{"1 = 1"}
	var args []any
	if f.state != workerv1.JobState_JOB_STATE_UNSPECIFIED {
		where = append(where, "state = ?")
		args = append(args, int32(f.state))
	}
	if f.kind != "" {
		where = append(where, "kind = ?")
		args = append(args, f.kind)
	}
	if f.videoID != "" {
		where = append(where, "video_id = ?")
		args = append(args, f.videoID)
	}
	if token != "" {
		p, err := s.checkToken(ctx, token, f)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(create_us < ? OR (create_us = ? AND id < ?))")
		args = append(args, p.CreateUS, p.CreateUS, p.ID)
	}
	args = append(args, limit+1)
	rows, err := s.db.QueryContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE `+strings.Join(where, " AND ")+
		` ORDER BY create_us DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, "", fmt.Errorf("worker: list jobs: %w", err)
	}
	defer rows.Close()
	var out []*jobRow
	for rows.Next() {
		r, err := scanJob(rows)
		if err != nil {
			return nil, "", fmt.Errorf("worker: list jobs: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("worker: list jobs: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeToken(pageToken{CreateUS: last.created.UnixMicro(), ID: last.id, Filter: f.fingerprint()})
	}
	return out, next, nil
}

// pageToken is the position inside a ListJobs page token: the last job of the page before
// (its creation time and id, which never change) and the filters it was listed with.
// Callers treat tokens as opaque.
type pageToken struct {
	CreateUS int64  `json:"t"`
	ID       string `json:"i"`
	// Filter fingerprints the filters, so a token replayed with other filters is refused
	// instead of silently skipping jobs.
	Filter string `json:"f"`
}

// fingerprint identifies the filters of f.
func (f jobFilter) fingerprint() string {
	h := fnv.New64a()
	// Fields are separated by a byte none can contain (kind and video id are checked
	// against their patterns).
	for _, v := range []string{strconv.Itoa(int(f.state)), f.kind, f.videoID} {
		_, _ = h.Write([]byte(v))
		_, _ = h.Write([]byte{0})
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

func encodeToken(p pageToken) string {
	b, _ := json.Marshal(p) // cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

// checkToken returns the position in token, refusing with ErrBadPageToken anything
// ListJobs did not issue for the filters f: text that is not exactly the encoding of a
// position (junk appended, a line break, which the base64 and JSON decoders would
// skip), a malformed or made-up position (the job it names must exist with that
// creation time), or a token of a listing with other filters.
func (s *store) checkToken(ctx context.Context, token string, f jobFilter) (pageToken, error) {
	var p pageToken
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || json.Unmarshal(raw, &p) != nil || p.CreateUS <= 0 || !validID(p.ID) || encodeToken(p) != token {
		return p, fmt.Errorf("%w: malformed", ErrBadPageToken)
	}
	if p.Filter != f.fingerprint() {
		return p, fmt.Errorf("%w: it belongs to a listing with other filters", ErrBadPageToken)
	}
	var created int64
	err = s.db.QueryRowContext(ctx, `SELECT create_us FROM jobs WHERE id = ?`, p.ID).Scan(&created)
	switch {
	case errors.Is(err, sql.ErrNoRows) || (err == nil && created != p.CreateUS):
		return p, fmt.Errorf("%w: ListJobs never issued it", ErrBadPageToken)
	case err != nil:
		return p, fmt.Errorf("worker: list jobs: %w", err)
	}
	return p, nil
}
