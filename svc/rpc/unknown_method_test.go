package rpc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	"github.com/reelway/reelway/svc/rpc"
)

const noSuchMethod = "/" + cachev1connect.CacheServiceName + "/NoSuchMethod"

// TestUnknownMethodIsUnimplemented checks that a method the mounted service does not declare
// gets unimplemented in the caller's protocol, on the wire and through clients, just like
// an unknown service.
func TestUnknownMethodIsUnimplemented(t *testing.T) {
	base := serve(t)
	grpcFrame := []byte{0, 0, 0, 0, 0} // an uncompressed, empty message
	cases := []struct {
		name        string
		client      *http.Client
		contentType string
		body        []byte
		wantStatus  int
		// grpc reads the code from grpc-status (header or trailer); otherwise it is the
		// Connect JSON error body's code.
		grpc bool
	}{
		{"connect-json", http.DefaultClient, "application/json", []byte("{}"), http.StatusNotImplemented, false},
		{"connect-json-charset", http.DefaultClient, "application/json; charset=utf-8", []byte("{}"), http.StatusNotImplemented, false},
		{"connect-proto", http.DefaultClient, "application/proto", nil, http.StatusNotImplemented, false},
		{"grpc", h2c(), "application/grpc", grpcFrame, http.StatusOK, true},
		{"grpc-proto", h2c(), "application/grpc+proto", grpcFrame, http.StatusOK, true},
		{"grpc-web", http.DefaultClient, "application/grpc-web+proto", grpcFrame, http.StatusOK, true},
	}
	for _, path := range []string{noSuchMethod, "/reelway.nosuch.v1.NoService/Get"} {
		for _, c := range cases {
			t.Run(c.name+path, func(t *testing.T) {
				req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(c.body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", c.contentType)
				resp, err := c.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != c.wantStatus {
					t.Fatalf("status %d, want %d: %q", resp.StatusCode, c.wantStatus, body)
				}
				if c.grpc {
					got := resp.Header.Get("Grpc-Status")
					if got == "" {
						got = resp.Trailer.Get("Grpc-Status")
					}
					if got != "12" {
						t.Fatalf("grpc-status %q, want 12 (unimplemented); header %v trailer %v body %q", got, resp.Header, resp.Trailer, body)
					}
					return
				}
				var e struct{ Code, Message string }
				if err := json.Unmarshal(body, &e); err != nil || e.Code != "unimplemented" || !strings.Contains(e.Message, path) {
					t.Fatalf("body %q (%v), want code unimplemented naming %s", body, err, path)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("content type %q", ct)
				}
			})
		}
	}
	protocols := []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"client/connect-json", http.DefaultClient, []connect.ClientOption{connect.WithProtoJSON()}},
		{"client/connect-proto-h2c", h2c(), nil},
		{"client/grpc", h2c(), []connect.ClientOption{connect.WithGRPC()}},
		{"client/grpc-web", http.DefaultClient, []connect.ClientOption{connect.WithGRPCWeb()}},
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			client := connect.NewClient[cachev1.GetRequest, cachev1.GetResponse](p.client, base+noSuchMethod, p.opts...)
			_, err := client.CallUnary(context.Background(), connect.NewRequest(&cachev1.GetRequest{Key: "k"}))
			if got := connect.CodeOf(err); got != connect.CodeUnimplemented {
				t.Fatalf("code %v, want unimplemented (%v)", got, err)
			}
			// The declared methods are untouched.
			get := cachev1connect.NewCacheServiceClient(p.client, base, p.opts...)
			if _, err := get.Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUnknownMethodThroughWrapper mounts the generated handler behind a wrapper that sets a
// header (as a CORS policy does) and serves one extra procedure under the service's prefix:
// the extra procedure keeps working and an unknown method's answer keeps the header.
func TestUnknownMethodThroughWrapper(t *testing.T) {
	log := slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(io.Discard, nil)})
	srv := rpc.NewServer(log, nil)
	path, h := cachev1connect.NewCacheServiceHandler(echoCache{}, srv.HandlerOptions()...)
	inner := http.NewServeMux()
	inner.Handle(path, h)
	const extra = "/" + cachev1connect.CacheServiceName + "/Extra"
	inner.HandleFunc(extra, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "extra")
	})
	srv.Mount(cachev1connect.CacheServiceName, path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		inner.ServeHTTP(w, r)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	base := "http://" + ln.Addr().String()

	cases := []struct {
		name       string
		path       string
		wantStatus int
		wantBody   string
	}{
		{"extra procedure", extra, http.StatusOK, "extra"},
		{"unknown method", noSuchMethod, http.StatusNotImplemented, `"code":"unimplemented"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.Post(base+c.path, "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.wantStatus || !strings.Contains(string(body), c.wantBody) {
				t.Fatalf("%d %q, want %d with %q", resp.StatusCode, body, c.wantStatus, c.wantBody)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Fatalf("wrapper header lost: %v", resp.Header)
			}
		})
	}
	for _, p := range []struct {
		name string
		opts []connect.ClientOption
	}{{"connect", nil}, {"grpc", []connect.ClientOption{connect.WithGRPC()}}} {
		t.Run("client/"+p.name, func(t *testing.T) {
			client := connect.NewClient[cachev1.GetRequest, cachev1.GetResponse](h2c(), base+noSuchMethod, p.opts...)
			_, err := client.CallUnary(context.Background(), connect.NewRequest(&cachev1.GetRequest{Key: "k"}))
			if got := connect.CodeOf(err); got != connect.CodeUnimplemented {
				t.Fatalf("code %v, want unimplemented (%v)", got, err)
			}
		})
	}
}

// TestUnknownPathIsNotFound posts to paths that are not RPC procedures: they get 404
// not_found in JSON, whatever the content type, not unimplemented (which would say that a
// method exists in the schema but is not served).
func TestUnknownPathIsNotFound(t *testing.T) {
	base := serve(t)
	for _, path := range []string{"/v1/uploads/", "/nope", "/a/b/c", "/reelway.cache.v1.CacheService/Get/extra"} {
		for _, ct := range []string{"application/json", "application/x-www-form-urlencoded", "application/grpc-web+proto"} {
			t.Run(path+" "+ct, func(t *testing.T) {
				resp, err := http.Post(base+path, ct, strings.NewReader("{}"))
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var e struct{ Code string }
				if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != http.StatusNotFound || e.Code != "not_found" {
					t.Fatalf("%d %q, want 404 not_found", resp.StatusCode, body)
				}
			})
		}
	}
}
