package transcoder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/reelway/reelway/svc/media"
)

// Leftovers of crashed runs (a killed process cannot remove its temporary folder) are
// removed once they are older than staleAfter, checked every sweepEvery. A day is far
// longer than any transcode this machine finishes, so a folder still being written by
// another transcoder process on the same data directory is not touched.
const (
	staleAfter = 24 * time.Hour
	sweepEvery = time.Hour
)

// Start removes stale temporary folders from the HLS root, now and then every hour,
// until ctx ends.
func (s *Service) Start(ctx context.Context) error {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		s.sweep(ctx, time.Now().Add(-staleAfter))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// sweep removes the temporary (".tmp-<id>-…") and set-aside (".old-<id>-…") folders last
// modified before cutoff, except those of transcodes running in this process.
func (s *Service) sweep(ctx context.Context, cutoff time.Time) {
	root := media.HLSRoot(s.cfg.DataDir)
	entries, err := os.ReadDir(root)
	if err != nil {
		if !os.IsNotExist(err) {
			s.log.WarnContext(ctx, "sweep.read", "err", err)
		}
		return
	}
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, ".tmp-")
		if !ok {
			if rest, ok = strings.CutPrefix(name, ".old-"); !ok {
				continue
			}
		}
		if i := strings.LastIndexByte(rest, '-'); i > 0 && s.jobs.isRunning(rest[:i]) {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, name)); err != nil {
			s.log.WarnContext(ctx, "sweep.remove", "dir", name, "err", err)
			continue
		}
		s.log.InfoContext(ctx, "sweep.removed", "dir", name, "modified", info.ModTime())
	}
}
