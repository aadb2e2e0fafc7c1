package streaming_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/reelway/reelway/gen/reelway/auth/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/svc/streaming"
)

// testSecret signs the playback tokens of the tests.
var testSecret = bytes.Repeat([]byte("k"), 32)

// fakeVideos is a metadata service holding a few videos. With public set, ids it does
// not hold are public videos (the file tree tests); otherwise they are not found.
type fakeVideos struct {
	public bool
	calls  atomic.Int64

	mu     sync.Mutex
	videos map[string]*metadatav1.Video
	err    error
}

var _ streaming.Videos = (*fakeVideos)(nil)

func (f *fakeVideos) GetVideo(_ context.Context, req *metadatav1.GetVideoRequest) (*metadatav1.GetVideoResponse, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if v, ok := f.videos[req.GetId()]; ok {
		return &metadatav1.GetVideoResponse{Video: v}, nil
	}
	if f.public {
		return &metadatav1.GetVideoResponse{Video: &metadatav1.Video{Id: req.GetId(), Title: req.GetId(), Visibility: metadatav1.Visibility_VISIBILITY_PUBLIC}}, nil
	}
	return nil, connect.NewError(connect.CodeNotFound, errors.New("metadata: video not found"))
}

func (f *fakeVideos) set(v *metadatav1.Video) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.videos == nil {
		f.videos = map[string]*metadatav1.Video{}
	}
	f.videos[v.GetId()] = v
}

func (f *fakeVideos) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.videos, id)
}

func (f *fakeVideos) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// fakeUsers is an auth service knowing auth tokens by heart: token → user id.
type fakeUsers map[string]string

var _ streaming.Users = fakeUsers(nil)

func (u fakeUsers) VerifyToken(_ context.Context, req *authv1.VerifyTokenRequest) (*authv1.VerifyTokenResponse, error) {
	if id, ok := u[req.GetToken()]; ok {
		return &authv1.VerifyTokenResponse{UserId: id}, nil
	}
	return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("auth: invalid token"))
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
