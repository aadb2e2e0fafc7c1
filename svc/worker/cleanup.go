package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/media"
)

// onVideoDeleted removes a deleted video's files: its HLS output (playlists, segments,
// poster, download) and its uploaded source. Streaming already refuses the video once
// metadata has it deleted, so playback stops at once; this frees the disk afterwards. It
// is idempotent, so a redelivered event is harmless.
func (s *Service) onVideoDeleted(ctx context.Context, ev *eventsv1.Event, p *eventsv1.VideoDeleted) error {
	id := p.GetVideoId()
	hls, err := media.HLSDir(s.cfg.DataDir, id)
	if err != nil {
		return fmt.Errorf("%w: video.deleted %q: %w", events.ErrDecode, ev.GetId(), err)
	}
	src, err := media.SourcePath(s.cfg.DataDir, id)
	if err != nil {
		return fmt.Errorf("%w: video.deleted %q: %w", events.ErrDecode, ev.GetId(), err)
	}
	for _, dir := range []string{hls, filepath.Dir(src)} {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("%w: remove files of %s: %w", ErrCleanup, id, err)
		}
	}
	s.log.InfoContext(ctx, "video.files_removed", "video_id", id)
	return nil
}
