package rpc_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/svc/rpc"
)

// filterEcho answers ListVideos with one video whose status is the requested filter, so
// a test can see what the handler decoded.
type filterEcho struct {
	metadatav1connect.UnimplementedMetadataServiceHandler
}

func (filterEcho) ListVideos(_ context.Context, req *metadatav1.ListVideosRequest) (*metadatav1.ListVideosResponse, error) {
	return &metadatav1.ListVideosResponse{Videos: []*metadatav1.Video{{Id: "echo", Status: req.GetStatus()}}}, nil
}

func TestConnectJSONRefusesUnknownEnumNames(t *testing.T) {
	log := slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(io.Discard, nil)})
	srv := rpc.NewServer(log, nil)
	path, h := metadatav1connect.NewMetadataServiceHandler(filterEcho{}, srv.HandlerOptions()...)
	srv.Mount(metadatav1connect.MetadataServiceName, path, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	url := "http://" + ln.Addr().String() + "/reelway.metadata.v1.MetadataService/ListVideos"

	cases := []struct {
		name, contentType, body string
		wantStatus              int
		wantBody                string
	}{
		{"known name", "application/json", `{"status":"VIDEO_STATUS_READY"}`, 200, `"status":"VIDEO_STATUS_READY"`},
		{"known name, charset", "application/json; charset=utf-8", `{"status":"VIDEO_STATUS_READY"}`, 200, `"status":"VIDEO_STATUS_READY"`},
		{"number", "application/json", `{"status":3}`, 200, `"status":`},
		{"unknown name", "application/json", `{"status":"VIDEO_STATUS_REDY"}`, 400, `"code":"invalid_argument"`},
		{"unknown name, charset", "application/json; charset=utf-8", `{"visibility":"PUBLIK"}`, 400, `"code":"invalid_argument"`},
		{"unknown field still forgiven", "application/json", `{"status":"VIDEO_STATUS_READY","addedLater":1}`, 200, `"status":"VIDEO_STATUS_READY"`},
		{"unknown field and unknown name", "application/json", `{"addedLater":1,"status":"NOPE"}`, 400, `"code":"invalid_argument"`},
		{"not json", "application/json", `{"status":`, 400, `"code":"invalid_argument"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := http.Post(url, tc.contentType, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.wantStatus || !strings.Contains(string(b), tc.wantBody) {
				t.Fatalf("got %d %s, want %d with %s", res.StatusCode, b, tc.wantStatus, tc.wantBody)
			}
		})
	}
}
