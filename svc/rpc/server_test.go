package rpc_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	"github.com/reelway/reelway/svc/rpc"
	"golang.org/x/net/http2"
)

// echoCache is a minimal CacheService: "panic" panics, "missing" is not found, and Get
// echoes the request id it saw as the value.
type echoCache struct {
	cachev1connect.UnimplementedCacheServiceHandler
}

func (echoCache) Get(ctx context.Context, req *cachev1.GetRequest) (*cachev1.GetResponse, error) {
	switch req.GetKey() {
	case "panic":
		panic("boom")
	case "missing":
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such key"))
	}
	return &cachev1.GetResponse{Found: true, Value: []byte(rpc.RequestID(ctx))}, nil
}

func h2c() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func serve(t *testing.T) string {
	t.Helper()
	log := slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(io.Discard, nil)})
	srv := rpc.NewServer(log, func() any { return "ok" })
	path, h := cachev1connect.NewCacheServiceHandler(echoCache{}, srv.HandlerOptions()...)
	srv.Mount(cachev1connect.CacheServiceName, path, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

func TestServerAcrossProtocols(t *testing.T) {
	base := serve(t)
	protocols := []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect-json", http.DefaultClient, []connect.ClientOption{connect.WithProtoJSON()}},
		{"connect-proto-h2c", h2c(), nil},
		{"grpc", h2c(), []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", http.DefaultClient, []connect.ClientOption{connect.WithGRPCWeb()}},
	}
	cases := []struct {
		name string
		key  string
		want connect.Code
	}{
		{"ok", "k", 0},
		{"validation", "", connect.CodeInvalidArgument},
		{"domain error", "missing", connect.CodeNotFound},
		{"panic is internal", "panic", connect.CodeInternal},
	}
	for _, p := range protocols {
		client := cachev1connect.NewCacheServiceClient(p.client, base, p.opts...)
		for _, c := range cases {
			t.Run(p.name+"/"+c.name, func(t *testing.T) {
				_, err := client.Get(context.Background(), &cachev1.GetRequest{Key: c.key})
				if c.want == 0 {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				if got := connect.CodeOf(err); got != c.want {
					t.Fatalf("code %v, want %v (%v)", got, c.want, err)
				}
			})
		}
	}
	// The server keeps serving after a panic.
	client := cachev1connect.NewCacheServiceClient(h2c(), base, connect.WithGRPC())
	if _, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "after"}); err != nil {
		t.Fatalf("after panic: %v", err)
	}
}

func TestRequestIDIsEchoedAndInContext(t *testing.T) {
	base := serve(t)
	client := cachev1connect.NewCacheServiceClient(http.DefaultClient, base)
	for _, tt := range []struct {
		sent string
		same bool
	}{
		{"abc-123", true},
		{"bad id with spaces", false},
		{"", false},
	} {
		// Simple-mode clients send headers through a context-scoped call info.
		ctx, info := connect.NewClientContext(context.Background())
		if tt.sent != "" {
			info.RequestHeader().Set(rpc.HeaderRequestID, tt.sent)
		}
		res, err := client.Get(ctx, &cachev1.GetRequest{Key: "k"})
		if err != nil {
			t.Fatal(err)
		}
		got := info.ResponseHeader().Get(rpc.HeaderRequestID)
		if got == "" || string(res.GetValue()) != got {
			t.Fatalf("echoed %q, handler saw %q", got, res.GetValue())
		}
		if (got == tt.sent) != tt.same {
			t.Fatalf("sent %q got %q", tt.sent, got)
		}
	}
}

func TestHealthz(t *testing.T) {
	base := serve(t)
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "{\"detail\":\"ok\",\"status\":\"ok\"}\n" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}
