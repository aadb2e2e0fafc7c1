// Package metadata is the MetadataService: the catalogue of videos, their state, media facts
// and playback paths, kept in a Store (SQLite, or PostgreSQL when configured) and announced
// on the event bus.
package metadata

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/rpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Source is the source name on the events this service publishes.
const Source = "metadata"

const (
	defaultPageSize = 50
	// publishTimeout bounds the wait for JetStream's ack, so a bus outage slows writes by
	// at most this much instead of hanging them.
	publishTimeout = 3 * time.Second
)

// Publisher sends domain events; *events.Bus satisfies it.
type Publisher interface {
	Publish(ctx context.Context, ev *eventsv1.Event) error
}

var _ Publisher = (*events.Bus)(nil)

// Service implements MetadataService over a Store.
type Service struct {
	store Store
	log   *slog.Logger
	pub   Publisher
	now   func() time.Time
}

var _ metadatav1connect.MetadataServiceHandler = (*Service)(nil)

// Open opens the SQLite store in dataDir/metadata.db and returns the service. pub may be nil,
// in which case no events are published. OpenStore selects PostgreSQL instead.
func Open(ctx context.Context, dataDir string, log *slog.Logger, pub Publisher) (*Service, error) {
	store, err := OpenStore(ctx, Config{DataDir: dataDir}, log)
	if err != nil {
		return nil, err
	}
	return New(store, log, pub), nil
}

// New returns the service over any Store; the service closes it on Close.
func New(store Store, log *slog.Logger, pub Publisher) *Service {
	return &Service{store: store, log: log, pub: pub, now: time.Now}
}

// Mount registers the Connect handler.
func (s *Service) Mount(srv *rpc.Server) error {
	path, h := metadatav1connect.NewMetadataServiceHandler(s, srv.HandlerOptions()...)
	srv.Mount(metadatav1connect.MetadataServiceName, path, h)
	return nil
}

// Close closes the store.
func (s *Service) Close() error { return s.store.Close() }

// timestamp is the service clock at the store's precision (microseconds), so a video
// returned by a write is identical to the same video read back later.
func (s *Service) timestamp() time.Time {
	return s.now().Truncate(time.Microsecond)
}

// CreateVideo implements MetadataServiceHandler.
func (s *Service) CreateVideo(ctx context.Context, req *metadatav1.CreateVideoRequest) (*metadatav1.CreateVideoResponse, error) {
	v := proto.CloneOf(req.GetVideo())
	if v.Status == metadatav1.VideoStatus_VIDEO_STATUS_UNSPECIFIED {
		v.Status = metadatav1.VideoStatus_VIDEO_STATUS_UPLOADING
	}
	if v.Visibility == metadatav1.Visibility_VISIBILITY_UNSPECIFIED {
		v.Visibility = metadatav1.Visibility_VISIBILITY_PUBLIC
	}
	now := s.timestamp()
	v.CreateTime, v.UpdateTime = timestamppb.New(now), timestamppb.New(now)

	err := s.store.Create(ctx, v)
	if errors.Is(err, ErrExists) {
		// A retried create (the caller chose the id) gets the stored video back; only a
		// different video under the same id is a conflict. The first attempt published
		// video.created already.
		stored, gerr := s.store.Get(ctx, v.GetId())
		if gerr == nil && sameContent(stored, v) {
			return &metadatav1.CreateVideoResponse{Video: stored}, nil
		}
		if gerr != nil && !errors.Is(gerr, ErrNotFound) {
			return nil, s.toConnect(ctx, gerr)
		}
		return nil, s.toConnect(ctx, fmt.Errorf("%w: %s has different content", ErrExists, v.GetId()))
	}
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	s.log.InfoContext(ctx, "video.created", "video_id", v.GetId())
	s.publish(ctx, events.VideoCreated(Source, v.GetId(), v.GetTitle()))
	return &metadatav1.CreateVideoResponse{Video: v}, nil
}

// sameContent compares two videos ignoring the server-set timestamps.
func sameContent(a, b *metadatav1.Video) bool {
	a, b = proto.CloneOf(a), proto.CloneOf(b)
	a.CreateTime, a.UpdateTime, b.CreateTime, b.UpdateTime = nil, nil, nil, nil
	return proto.Equal(a, b)
}

// GetVideo implements MetadataServiceHandler.
func (s *Service) GetVideo(ctx context.Context, req *metadatav1.GetVideoRequest) (*metadatav1.GetVideoResponse, error) {
	v, err := s.store.Get(ctx, req.GetId())
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return &metadatav1.GetVideoResponse{Video: v}, nil
}

// ListVideos implements MetadataServiceHandler.
func (s *Service) ListVideos(ctx context.Context, req *metadatav1.ListVideosRequest) (*metadatav1.ListVideosResponse, error) {
	size := int(req.GetPageSize())
	if size <= 0 {
		size = defaultPageSize
	}
	q, err := listQuery(req)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	// One row more than the page was asked for: it says whether another page exists
	// without a second query.
	q.Limit = size + 1
	if tok := req.GetPageToken(); tok != "" {
		c, err := decodePageToken(tok, q)
		if err != nil {
			return nil, s.toConnect(ctx, err)
		}
		q.After = &c
	}
	videos, err := s.store.List(ctx, q)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	res := &metadatav1.ListVideosResponse{Videos: videos}
	// The cursor is the last video's (create time, id), which never change: rows inserted
	// while a client pages land before or after it, so no existing video is skipped or
	// repeated.
	if len(videos) > size {
		res.Videos = videos[:size]
		last := res.Videos[size-1]
		res.NextPageToken = encodePageToken(Cursor{CreateTime: last.GetCreateTime().AsTime(), ID: last.GetId()}, q)
	}
	return res, nil
}

// listQuery turns the request's filters, search query and order into a ListQuery.
func listQuery(req *metadatav1.ListVideosRequest) (ListQuery, error) {
	q := ListQuery{
		Status:     req.GetStatus(),
		OwnerID:    req.GetOwnerId(),
		Visibility: req.GetVisibility(),
	}
	if req.GetOrder() == metadatav1.VideoOrder_VIDEO_ORDER_OLDEST_FIRST {
		q.Order = OldestFirst
	}
	if text := req.GetQuery(); text != "" {
		q.Words = SearchWords(text)
		switch {
		case len(q.Words) == 0:
			return q, fmt.Errorf("%w: query has no words (letters or digits)", ErrInvalid)
		case len(q.Words) > maxQueryWords:
			return q, fmt.Errorf("%w: query has %d words, at most %d are allowed", ErrInvalid, len(q.Words), maxQueryWords)
		}
	}
	return q, nil
}

// updatable are the update_mask paths a caller may set; id, owner and times are not.
func updatable(path string) bool {
	switch path {
	case "title", "description", "owner_id", "status", "visibility", "duration_seconds", "width", "height",
		"renditions", "playback_path", "thumbnail_path", "size_bytes", "sha256", "failure_reason", "tags":
		return true
	}
	return false
}

// UpdateVideo implements MetadataServiceHandler.
func (s *Service) UpdateVideo(ctx context.Context, req *metadatav1.UpdateVideoRequest) (*metadatav1.UpdateVideoResponse, error) {
	in := req.GetVideo()
	paths, err := checkMask(in, req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	var changed []string
	v, err := s.store.Update(ctx, in.GetId(), func(v *metadatav1.Video) (bool, error) {
		changed = changed[:0] // the store may retry apply
		dst, src := v.ProtoReflect(), in.ProtoReflect()
		fields := dst.Descriptor().Fields()
		for _, p := range paths {
			fd := fields.ByName(protoreflect.Name(p))
			if dst.Get(fd).Equal(src.Get(fd)) {
				continue
			}
			if src.Has(fd) {
				dst.Set(fd, src.Get(fd))
			} else {
				dst.Clear(fd)
			}
			changed = append(changed, p)
		}
		if len(changed) == 0 {
			return false, nil
		}
		v.UpdateTime = timestamppb.New(s.timestamp())
		return true, nil
	})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	// Setting fields to the values they already hold writes nothing and announces nothing,
	// so a retried update does not produce a second event.
	if len(changed) > 0 {
		s.log.InfoContext(ctx, "video.updated", "video_id", v.GetId(), "fields", changed, "status", v.GetStatus().String())
		s.publish(ctx, events.VideoUpdated(Source, v.GetId(), v.GetStatus().String(), changed))
	}
	return &metadatav1.UpdateVideoResponse{Video: v}, nil
}

// checkMask validates the mask against the request video and returns its paths without
// duplicates.
func checkMask(in *metadatav1.Video, paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: update_mask names no field", ErrInvalid)
	}
	seen := make(map[string]bool, len(paths))
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if !updatable(p) {
			return nil, fmt.Errorf("%w: update_mask path %q is not updatable", ErrInvalid, p)
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		switch {
		case p == "title" && in.GetTitle() == "":
			return nil, fmt.Errorf("%w: video.title must not be empty", ErrInvalid)
		case p == "status" && in.GetStatus() == metadatav1.VideoStatus_VIDEO_STATUS_UNSPECIFIED:
			return nil, fmt.Errorf("%w: video.status must be set when named in update_mask", ErrInvalid)
		case p == "visibility" && in.GetVisibility() == metadatav1.Visibility_VISIBILITY_UNSPECIFIED:
			return nil, fmt.Errorf("%w: video.visibility must be set when named in update_mask", ErrInvalid)
		}
	}
	return out, nil
}

// DeleteVideo implements MetadataServiceHandler. It is a soft delete: the record is marked
// deleted, so from now on GetVideo answers not_found and ListVideos and search skip it, and
// playback that checks metadata stops at once. Removing the video's files (source, HLS
// ladder, thumbnail) is the job of the file cleanup the worker runs on video.deleted,
// whose subject id and payload carry the video id; the marked record stays for it.
func (s *Service) DeleteVideo(ctx context.Context, req *metadatav1.DeleteVideoRequest) (*metadatav1.DeleteVideoResponse, error) {
	if err := s.store.Delete(ctx, req.GetId(), s.timestamp()); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	s.log.InfoContext(ctx, "video.deleted", "video_id", req.GetId())
	s.publish(ctx, events.VideoDeleted(Source, req.GetId()))
	return &metadatav1.DeleteVideoResponse{}, nil
}

// publish announces a change that is already committed. A failure is logged, not returned:
// failing the RPC would make the caller retry a write that succeeded. The platform gives
// the service an events.Outbox, so a failure means the local outbox file refused the event;
// a bus outage only delays it.
func (s *Service) publish(ctx context.Context, ev *eventsv1.Event) {
	if s.pub == nil {
		return
	}
	// The write happened, so the event goes out even if the caller has gone away.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := s.pub.Publish(pctx, ev); err != nil {
		s.log.WarnContext(ctx, "event.publish", "type", events.Name(ev.GetType()), "subject_id", ev.GetSubjectId(), "err", err)
	}
}

// toConnect maps domain errors to Connect codes. Store failures are logged here and reach
// the caller as a bare internal error, without database detail.
func (s *Service) toConnect(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, ErrExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	s.log.ErrorContext(ctx, "metadata.store", "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("metadata: internal error"))
}
