package worker

import (
	"context"

	"github.com/reelway/reelway/svc/events"
)

// HandleVideoDeleted handles a video.deleted event for videoID as the events consumer
// would, so a test can hand it to a worker that is not the one running the video's job.
func (s *Service) HandleVideoDeleted(ctx context.Context, videoID string) error {
	ev := events.VideoDeleted("metadata", videoID)
	return s.onVideoDeleted(ctx, ev, ev.GetVideoDeleted())
}
