package upload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// sweepLockTimeout bounds how long the cleanup loop waits for an upload's lock; a busy
	// upload is left for the next round.
	sweepLockTimeout = 5 * time.Second
	// maxFinishGrace is the longest a complete upload whose hand-off failed waits before
	// the cleanup loop retries it (shorter when the expiry is).
	maxFinishGrace = 30 * time.Second
	// minSpoolAge is the least age of a checksum spool file the cleanup loop removes; a
	// live one belongs to a request still running.
	minSpoolAge = time.Hour
)

// Start runs the tus cleanup loop until ctx ends (the kernel starts it after Mount): tusd
// never removes anything itself. Every round it
//   - expires uploads without new bytes for Config.Expiry: their bytes are removed and
//     their videos marked FAILED ("upload expired");
//   - retries the hand-off of complete uploads whose final request could not reach the
//     metadata service or the event bus;
//   - forgets finished uploads Config.Expiry after they finished (HEAD then answers 404);
//   - removes checksum spool files left by a crash.
//
// Several upload processes sharing the data directory may all run it: every change to an
// upload happens under its lock.
func (s *Service) Start(ctx context.Context) error {
	t := s.tus
	if t == nil {
		return nil // not mounted: nothing to clean
	}
	every := min(max(s.cfg.Expiry/4, 10*time.Millisecond), time.Minute)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			t.sweep(ctx)
			timer.Reset(every)
		}
	}
}

// sweep is one round of the cleanup loop.
func (t *tusServer) sweep(ctx context.Context) {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		t.s.log.WarnContext(ctx, "upload.sweep", "err", err)
		return
	}
	for _, e := range entries {
		if ctx.Err() != nil {
			return
		}
		id, ok := strings.CutSuffix(e.Name(), ".info")
		if !ok || !validID(id) {
			continue
		}
		if err := t.sweepUpload(ctx, id); err != nil && !errors.Is(err, ErrNoUpload) {
			t.s.log.WarnContext(ctx, "upload.sweep", "video_id", id, "err", err)
		}
	}
	t.sweepSpool(ctx)
}

// sweepUpload decides, without the lock, whether an upload needs anything, and if so does
// it under the lock after checking again.
func (t *tusServer) sweepUpload(ctx context.Context, id string) error {
	info, err := t.readInfo(id)
	if err != nil {
		return err
	}
	expiry := t.s.cfg.Expiry
	idle := time.Since(t.lastActivity(id))
	switch {
	case info.Storage[storageState] == stateDone:
		if idle < expiry {
			return nil
		}
		return t.withLock(ctx, id, func() error {
			if info, err := t.readInfo(id); err != nil || info.Storage[storageState] != stateDone {
				return err
			}
			t.s.log.DebugContext(ctx, "upload.tus_forgotten", "video_id", id)
			t.removeHash(id)
			return os.Remove(t.infoPath(id))
		})
	case info.Storage[storageState] == stateStored || t.bytesComplete(id, info.Size):
		if idle < min(expiry, maxFinishGrace) {
			return nil // the request that completed it may still be handing it off
		}
		return t.withLock(ctx, id, func() error { return t.finish(ctx, id) })
	case idle >= expiry:
		return t.withLock(ctx, id, func() error { return t.expire(ctx, id) })
	}
	return nil
}

// expire removes an abandoned upload and fails its video. The caller holds the lock.
func (t *tusServer) expire(ctx context.Context, id string) error {
	info, err := t.readInfo(id)
	if err != nil {
		return err
	}
	if info.Storage[storageState] != "" || time.Since(t.lastActivity(id)) < t.s.cfg.Expiry {
		return nil // bytes arrived meanwhile, or another process handled it
	}
	if t.bytesComplete(id, info.Size) {
		return t.finish(ctx, id)
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tusStepTimeout)
	defer cancel()
	// Record first: with the metadata service down the bytes stay until a later round
	// can say why they went.
	if err := t.failVideo(fctx, id, reasonExpired); err != nil {
		return err
	}
	t.remove(id)
	t.publishFailed(fctx, id, reasonExpired)
	t.s.log.InfoContext(ctx, "upload.tus_expired", "video_id", id, "offset", fileSize(filepath.Join(t.dir, id)), "size", info.Size)
	return nil
}

// withLock runs fn holding the upload's tusd lock.
func (t *tusServer) withLock(ctx context.Context, id string, fn func() error) error {
	lock, err := t.locker.NewLock(id)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, sweepLockTimeout)
	defer cancel()
	// Nobody else's request is interrupted for long: fn is short, so a request wanting
	// the lock meanwhile simply waits for it.
	if err := lock.Lock(lctx, func() {}); err != nil {
		return err
	}
	defer func() { _ = lock.Unlock() }()
	return fn()
}

// lastActivity is when an upload last changed: its last byte, or its .info file (created,
// finished).
func (t *tusServer) lastActivity(id string) time.Time {
	var last time.Time
	for _, p := range []string{filepath.Join(t.dir, id), t.infoPath(id)} {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().After(last) {
			last = fi.ModTime()
		}
	}
	return last
}

// bytesComplete reports whether every byte of an upload still in the tus folder is in:
// then it only waits for its hand-off. Bytes already moved to the source path count too.
func (t *tusServer) bytesComplete(id string, size int64) bool {
	fi, err := os.Stat(filepath.Join(t.dir, id))
	if errors.Is(err, os.ErrNotExist) {
		fi, err = os.Stat(t.sourcePath(id))
	}
	return err == nil && size > 0 && fi.Size() == size
}

// sweepSpool removes checksum spool files older than any request could be.
func (t *tusServer) sweepSpool(ctx context.Context) {
	entries, err := os.ReadDir(t.spool)
	if err != nil {
		return
	}
	age := max(t.s.cfg.Expiry, minSpoolAge)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > age {
			if err := os.Remove(filepath.Join(t.spool, e.Name())); err == nil {
				t.s.log.InfoContext(ctx, "upload.spool_removed", "name", e.Name())
			}
		}
	}
}

// fileSize is a file's size, or -1 when it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}
