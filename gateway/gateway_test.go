package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/reelway/reelway/gateway"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
	"golang.org/x/net/http2"
)

// testCache answers Get with found=true, and not_found with an error detail for "missing".
type testCache struct {
	cachev1connect.UnimplementedCacheServiceHandler
}

func (testCache) Get(_ context.Context, req *cachev1.GetRequest) (*cachev1.GetResponse, error) {
	if req.GetKey() == "missing" {
		err := connect.NewError(connect.CodeNotFound, errors.New("no such key"))
		if d, derr := connect.NewErrorDetail(&cachev1.GetRequest{Key: "missing"}); derr == nil {
			err.AddDetail(d)
		}
		return nil, err
	}
	return &cachev1.GetResponse{Found: true, Value: []byte(req.GetKey())}, nil
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

func listen(t *testing.T, srv *rpc.Server, log *slog.Logger) (string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String(), ln.Addr().(*net.TCPAddr).Port
}

type fixture struct {
	gateway string
	reg     *registry.Memory
	cat     *registry.Catalog
	cacheID string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	backend := rpc.NewServer(log, nil)
	path, h := cachev1connect.NewCacheServiceHandler(testCache{}, backend.HandlerOptions()...)
	backend.Mount(cachev1connect.CacheServiceName, path, h)
	backendURL, port := listen(t, backend, log)

	reg := registry.NewMemory(log)
	t.Cleanup(reg.Close)
	cat := registry.NewCatalog(reg, log)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go cat.Run(ctx)
	id := registry.InstanceID("cache", port)
	err := reg.Register(ctx, registry.Registration{
		Instance: registry.Instance{ID: id, Name: "cache", Address: "127.0.0.1", Port: port,
			Meta: map[string]string{registry.MetaProtoServices: cachev1connect.CacheServiceName}},
		HealthURL: backendURL + "/healthz", CheckInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}

	gw := gateway.New(log, cat, []string{cachev1connect.CacheServiceName, metadatav1connect.MetadataServiceName})
	front := rpc.NewServer(log, nil)
	if err := gw.Mount(front); err != nil {
		t.Fatal(err)
	}
	gwURL, _ := listen(t, front, log)
	f := &fixture{gateway: gwURL, reg: reg, cat: cat, cacheID: id}
	waitFor(t, "cache routed", func() error {
		if len(cat.ResolveProto(cachev1connect.CacheServiceName)) != 1 {
			return errors.New("not yet")
		}
		return nil
	})
	return f
}

func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %v", what, err)
}

type protocol struct {
	name   string
	client *http.Client
	opts   []connect.ClientOption
}

func protocols() []protocol {
	return []protocol{
		{"connect-json", http.DefaultClient, []connect.ClientOption{connect.WithProtoJSON()}},
		{"connect-proto", h2c(), nil},
		{"grpc", h2c(), []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", http.DefaultClient, []connect.ClientOption{connect.WithGRPCWeb()}},
	}
}

func TestGatewayProxiesEveryProtocol(t *testing.T) {
	f := setup(t)
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			client := cachev1connect.NewCacheServiceClient(p.client, f.gateway, p.opts...)
			res, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "hello"})
			if err != nil {
				t.Fatal(err)
			}
			if !res.GetFound() || string(res.GetValue()) != "hello" {
				t.Fatalf("got %v", res)
			}
			// Errors and their details survive the proxy (gRPC: trailers).
			_, err = client.Get(context.Background(), &cachev1.GetRequest{Key: "missing"})
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound || len(ce.Details()) != 1 {
				t.Fatalf("error through gateway: %v", err)
			}
			// Validation happens at the backend and comes back as invalid_argument.
			_, err = client.Get(context.Background(), &cachev1.GetRequest{Key: ""})
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("invalid request: %v", err)
			}
		})
	}
}

func TestGatewayUnavailableInCallersProtocol(t *testing.T) {
	f := setup(t)
	if err := f.reg.Deregister(context.Background(), f.cacheID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cache unrouted", func() error {
		if len(f.cat.ResolveProto(cachev1connect.CacheServiceName)) != 0 {
			return errors.New("still routed")
		}
		return nil
	})
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			client := cachev1connect.NewCacheServiceClient(p.client, f.gateway, p.opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := client.Get(ctx, &cachev1.GetRequest{Key: "hello"})
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("want unavailable, got %v", err)
			}
		})
	}
	// Raw Connect JSON, as curl sees it.
	resp, err := http.Post(f.gateway+"/reelway.cache.v1.CacheService/Get", "application/json", strings.NewReader(`{"key":"k"}`))
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || body["code"] != "unavailable" {
		t.Fatalf("curl view: %d %v", resp.StatusCode, body)
	}
}

func TestGatewayRoutingErrors(t *testing.T) {
	f := setup(t)
	tests := []struct {
		name     string
		method   string
		path     string
		ctype    string
		wantCode int
		wantBody string
	}{
		{"unknown proto service", http.MethodPost, "/foo.v1.Nope/Call", "application/json", http.StatusNotImplemented, `"unimplemented"`},
		{"known service without backend", http.MethodPost, "/reelway.metadata.v1.MetadataService/GetVideo", "application/json", http.StatusServiceUnavailable, `"unavailable"`},
		{"plain route without backend", http.MethodGet, "/v1/hls/abc/master.m3u8", "", http.StatusServiceUnavailable, `"unavailable"`},
		{"no route", http.MethodGet, "/nothing-here", "", http.StatusNotFound, `"not_found"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, f.gateway+tt.path, strings.NewReader("{}"))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || !strings.Contains(string(b), tt.wantBody) {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
		})
	}
}

func TestGatewayReflection(t *testing.T) {
	f := setup(t)
	client := grpcreflect.NewClient(h2c(), f.gateway)
	stream := client.NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range names {
		got = append(got, string(n))
	}
	for _, want := range []string{cachev1connect.CacheServiceName, metadatav1connect.MetadataServiceName, "reelway.gateway.v1.GatewayService"} {
		if !slices.Contains(got, want) {
			t.Errorf("reflection lists %v, missing %s", got, want)
		}
	}
}
