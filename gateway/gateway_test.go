package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/reelway/reelway/gateway"
	"github.com/reelway/reelway/gateway/internal/testbackend"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
	"golang.org/x/net/http2"
)

func h2c() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// instance is one in-process test backend behind the gateway.
type instance struct {
	id      string
	backend *testbackend.Backend
	server  *http.Server
	url     string
}

type fixture struct {
	gateway   string
	reg       *registry.Memory
	cat       *registry.Catalog
	instances []*instance
}

// setup starts n test backends registered in an in-process registry and a gateway in
// front of them.
func setup(t testing.TB, n int, opts gateway.Options) *fixture {
	t.Helper()
	return setupKnowing(t, n, opts)
}

// setupKnowing is setup with more proto services known to the gateway than the backends'.
func setupKnowing(t testing.TB, n int, opts gateway.Options, known ...string) *fixture {
	t.Helper()
	log := quiet()
	reg := registry.NewMemory(log)
	t.Cleanup(reg.Close)
	cat := registry.NewCatalog(reg, log)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go cat.Run(ctx)
	f := &fixture{reg: reg, cat: cat}
	for range n {
		f.instances = append(f.instances, f.addBackend(t))
	}
	gw := gateway.New(log, cat, append([]string{cachev1connect.CacheServiceName, metadatav1connect.MetadataServiceName}, known...), opts)
	front := rpc.NewServer(log, nil)
	if err := gw.Mount(front); err != nil {
		t.Fatal(err)
	}
	f.gateway, _ = listen(t, front.Handler())
	waitFor(t, "backends routed", func() error {
		if got := len(cat.ResolveProto(cachev1connect.CacheServiceName)); got != n {
			return fmt.Errorf("%d routed", got)
		}
		return nil
	})
	return f
}

func listen(t testing.TB, h http.Handler) (string, *http.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := rpc.NewHTTPServer(h, quiet())
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String(), hs
}

func (f *fixture) addBackend(t testing.TB) *instance {
	t.Helper()
	b := testbackend.New()
	srv := rpc.NewServer(quiet(), nil)
	b.Mount(srv)
	url, hs := listen(t, srv.Handler())
	_, portS, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
	port, _ := net.LookupPort("tcp", portS)
	id := registry.InstanceID("cache", port)
	err := f.reg.Register(context.Background(), registry.Registration{
		Instance: registry.Instance{ID: id, Name: "cache", Address: "127.0.0.1", Port: port,
			Meta: map[string]string{registry.MetaProtoServices: strings.Join(srv.ProtoServices(), ",")}},
		HealthURL: url + "/healthz", CheckInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &instance{id: id, backend: b, server: hs, url: url}
}

func (f *fixture) calls() int64 {
	var n int64
	for _, in := range f.instances {
		n += in.backend.Stats().Calls
	}
	return n
}

func waitFor(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
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
		{"grpc-web-text", &http.Client{Transport: webText{http.DefaultTransport}}, []connect.ClientOption{connect.WithGRPCWeb()}},
	}
}

func (p protocol) cache(base string) cachev1connect.CacheServiceClient {
	return cachev1connect.NewCacheServiceClient(p.client, base, p.opts...)
}

func (p protocol) watch(base string) *connect.Client[cachev1.GetRequest, cachev1.GetResponse] {
	return connect.NewClient[cachev1.GetRequest, cachev1.GetResponse](p.client, base+testbackend.WatchProcedure, p.opts...)
}

func TestGatewayProxiesEveryProtocol(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			client := p.cache(f.gateway)
			res, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "hello"})
			if err != nil {
				t.Fatal(err)
			}
			if !res.GetFound() || string(res.GetValue()) != "hello" {
				t.Fatalf("got %v", res)
			}
			// Errors and their details survive the proxy (gRPC: trailers, with
			// grpc-status-details-bin).
			_, err = client.Get(context.Background(), &cachev1.GetRequest{Key: "missing"})
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound || len(ce.Details()) != 1 {
				t.Fatalf("error through gateway: %v", err)
			}
			detail, derr := ce.Details()[0].Value()
			if derr != nil || detail.(*cachev1.GetRequest).GetKey() != "missing" {
				t.Fatalf("detail: %v %v", detail, derr)
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
	f := setup(t, 1, gateway.Options{})
	if err := f.reg.Deregister(context.Background(), f.instances[0].id); err != nil {
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
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := p.cache(f.gateway).Get(ctx, &cachev1.GetRequest{Key: "hello"})
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("unary: want unavailable, got %v", err)
			}
			// A streaming call gets the error as its protocol's end of stream.
			stream, err := p.watch(f.gateway).CallServerStream(ctx, connect.NewRequest(&cachev1.GetRequest{Key: "1:0"}))
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
			}
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("stream: want unavailable, got %v", err)
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
	f := setup(t, 1, gateway.Options{})
	tests := []struct {
		name     string
		method   string
		path     string
		ctype    string
		wantCode int
		wantBody string
	}{
		{"unknown proto service", http.MethodPost, "/foo.v1.Nope/Call", "application/json", http.StatusNotImplemented, `"unimplemented"`},
		{"known service without backend", http.MethodPost, "/reelway.auth.v1.AuthService/LogIn", "application/json", http.StatusNotImplemented, `"unimplemented"`},
		{"plain route without backend", http.MethodGet, "/v1/hls/abc/master.m3u8", "", http.StatusServiceUnavailable, `"unavailable"`},
		{"no route", http.MethodGet, "/nothing-here", "", http.StatusNotFound, `"not_found"`},
		{"unsupported content type", http.MethodPost, "/reelway.cache.v1.CacheService/Get", "text/plain", http.StatusUnsupportedMediaType, `unsupported content type`},
		{"unknown codec", http.MethodPost, "/reelway.cache.v1.CacheService/Get", "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType, `unsupported content type`},
		{"xml", http.MethodPost, "/reelway.cache.v1.CacheService/Get", "application/xml", http.StatusUnsupportedMediaType, `unsupported content type`},
		{"xml with charset", http.MethodPost, "/reelway.cache.v1.CacheService/Get", "Application/XML; charset=utf-8", http.StatusUnsupportedMediaType, `unsupported content type`},
		{"grpc with an unknown codec", http.MethodPost, "/reelway.cache.v1.CacheService/Get", "application/grpc+xml", http.StatusUnsupportedMediaType, `unsupported content type`},
		{"connect stream with an unknown codec", http.MethodPost, "/reelway.cache.v1.CacheService/Get", "application/connect+xml", http.StatusUnsupportedMediaType, `unsupported content type`},
		{"a longer type", http.MethodPost, "/reelway.cache.v1.CacheService/Get", "application/jsonx", http.StatusUnsupportedMediaType, `unsupported content type`},
		{"connect get with an unknown encoding", http.MethodGet, "/reelway.cache.v1.CacheService/Get?encoding=xml&message=%3Ckey%3Ek%3C%2Fkey%3E", "", http.StatusUnsupportedMediaType, `unsupported encoding \"xml\"`},
		{"unknown procedure with an unknown codec", http.MethodPost, "/reelway.cache.v1.CacheService/Nope", "application/xml", http.StatusUnsupportedMediaType, `unsupported content type`},
		{"bad connect timeout", http.MethodPost, "/reelway.cache.v1.CacheService/Get", "application/json", http.StatusBadRequest, `"invalid_argument"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, f.gateway+tt.path, strings.NewReader(`{"key":"k"}`))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			if tt.name == "bad connect timeout" {
				req.Header.Set("Connect-Timeout-Ms", "soon")
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
			if ct := resp.Header.Get("Content-Type"); strings.Contains(ct, "html") {
				t.Fatalf("HTML error: %s", ct)
			}
			// The gateway's own 415 names what to send instead.
			if tt.wantCode == http.StatusUnsupportedMediaType {
				want := []string{"application/grpc", "application/grpc-web+proto", "application/json", "application/proto", "application/connect+json"}
				if tt.method == http.MethodGet {
					want = []string{"json or proto"}
				} else if accept := resp.Header.Get("Accept-Post"); !strings.Contains(accept, "application/grpc, ") {
					t.Errorf("Accept-Post %q", accept)
				}
				for _, w := range want {
					if !strings.Contains(string(b), w) || resp.Header.Get("Content-Type") != "application/json" {
						t.Errorf("415 without %q: %s %q", w, resp.Header.Get("Content-Type"), b)
					}
				}
			}
		})
	}
	// Every content type of the three protocols, in any case and with parameters, and
	// Connect GETs in either encoding, still reach the backend.
	accepted := []struct {
		method, query, ctype, body string
	}{
		{http.MethodPost, "", "application/json", `{"key":"k"}`},
		{http.MethodPost, "", "application/json; charset=utf-8", `{"key":"k"}`},
		{http.MethodPost, "", "Application/JSON", `{"key":"k"}`},
		{http.MethodPost, "", "application/proto", "\x0a\x01k"},
		{http.MethodGet, "?encoding=json&message=%7B%22key%22%3A%22k%22%7D", "", ""},
		{http.MethodGet, "?message=CgFr&encoding=proto&base64=1", "", ""},
	}
	for _, a := range accepted {
		calls := f.calls()
		req, _ := http.NewRequest(a.method, f.gateway+"/reelway.cache.v1.CacheService/Get"+a.query, strings.NewReader(a.body))
		if a.ctype != "" {
			req.Header.Set("Content-Type", a.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || f.calls() != calls+1 {
			t.Errorf("%s %q %q: %d %q (backend calls %d → %d)", a.method, a.query, a.ctype, resp.StatusCode, b, calls, f.calls())
		}
	}
	// A gRPC caller with a bad grpc-timeout gets a gRPC status, not an HTTP error.
	req, _ := http.NewRequest(http.MethodPost, f.gateway+"/reelway.cache.v1.CacheService/Get", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Grpc-Timeout", "12x")
	resp, err := h2c().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Trailer.Get("Grpc-Status")+resp.Header.Get("Grpc-Status") != "3" {
		t.Fatalf("gRPC bad timeout: %d %v %v", resp.StatusCode, resp.Header, resp.Trailer)
	}
}

func TestGatewayReflection(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
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

func metrics(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	return string(b)
}

// metric returns the value of one exposition line that starts with prefix, or "".
func metric(text, prefix string) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, prefix+" ") {
			return strings.TrimPrefix(line, prefix+" ")
		}
	}
	return ""
}

func TestGatewayCallerErrorsNeverOpenTheBreaker(t *testing.T) {
	f := setup(t, 1, gateway.Options{Breaker: rpc.BreakerConfig{FailureThreshold: 2, Window: 4, Delay: time.Minute}})
	for _, p := range protocols() {
		client := p.cache(f.gateway)
		for i := range 25 {
			_, err := client.Get(context.Background(), &cachev1.GetRequest{Key: ""})
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("%s call %d: want invalid_argument, got %v", p.name, i, err)
			}
			_, err = client.Get(context.Background(), &cachev1.GetRequest{Key: "missing"})
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("%s call %d: want not_found, got %v", p.name, i, err)
			}
		}
	}
	if _, err := protocols()[0].cache(f.gateway).Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
		t.Fatalf("valid call after the caller errors: %v", err)
	}
	m := metrics(t, f.gateway)
	if v := metric(m, `reelway_gateway_breaker_state{instance="`+f.instances[0].id+`"}`); v != "0" {
		t.Fatalf("breaker state %q, want 0 (closed)\n%s", v, m)
	}
	if strings.Contains(m, "reelway_gateway_breaker_transitions_total{") {
		t.Fatalf("breaker changed state on caller errors:\n%s", m)
	}
	if v, want := metric(m, `reelway_gateway_requests_total{code="invalid_argument",route="/reelway.cache.v1.CacheService/Get"}`), strconv.Itoa(25*len(protocols())); v != want {
		t.Fatalf("invalid_argument count %q, want %s", v, want)
	}
}

func TestGatewayEjectsFailingInstanceAndLetsItBack(t *testing.T) {
	f := setup(t, 3, gateway.Options{Breaker: rpc.BreakerConfig{FailureThreshold: 3, Window: 6, Delay: 300 * time.Millisecond, Probes: 1}})
	bad := f.instances[0]
	bad.backend.SetFault(testbackend.ModeInternal, 0)
	client := protocols()[2].cache(f.gateway) // gRPC: the status comes back in trailers
	// Get is NO_SIDE_EFFECTS: a failure on the bad instance is retried on a good one, so
	// callers see no error while it is being ejected.
	for i := range 60 {
		if _, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	before := bad.backend.Stats().Calls
	for range 60 {
		if _, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	// Ejected: at most the occasional probe reaches it.
	if n := bad.backend.Stats().Calls - before; n > 3 {
		t.Fatalf("ejected instance got %d of 60 calls", n)
	}
	m := metrics(t, f.gateway)
	if !strings.Contains(m, `reelway_gateway_breaker_transitions_total{instance="`+bad.id+`",to="open"}`) {
		t.Fatalf("no open transition for %s:\n%s", bad.id, m)
	}
	// It recovers: after the open delay a probe succeeds and it takes traffic again.
	bad.backend.SetFault(testbackend.ModeOK, 0)
	waitFor(t, "recovered instance back in rotation", func() error {
		before := bad.backend.Stats().Calls
		for range 30 {
			if _, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
				return err
			}
		}
		if n := bad.backend.Stats().Calls - before; n < 5 {
			return fmt.Errorf("only %d of 30 calls", n)
		}
		return nil
	})
}

func TestGatewayHalfOpenAdmitsBoundedProbes(t *testing.T) {
	f := setup(t, 1, gateway.Options{Breaker: rpc.BreakerConfig{FailureThreshold: 2, Window: 2, Delay: 200 * time.Millisecond, Probes: 2}})
	in := f.instances[0]
	in.backend.SetFault(testbackend.ModeInternal, 0)
	client := protocols()[1].cache(f.gateway)
	waitFor(t, "breaker open", func() error {
		_, err := client.Get(context.Background(), &cachev1.GetRequest{Key: "k"})
		if connect.CodeOf(err) == connect.CodeUnavailable {
			return nil
		}
		return fmt.Errorf("got %v", err)
	})
	// The backend comes back, slowly: probes take 1 s.
	in.backend.SetFault(testbackend.ModeOK, time.Second)
	time.Sleep(300 * time.Millisecond) // past the open delay
	before := in.backend.Stats().Calls
	var wg sync.WaitGroup
	codes := make([]connect.Code, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := client.Get(ctx, &cachev1.GetRequest{Key: "k"})
			if err != nil {
				codes[i] = connect.CodeOf(err)
			}
		}()
	}
	wg.Wait()
	probes := in.backend.Stats().Calls - before
	ok, unavailable := 0, 0
	for _, c := range codes {
		switch c {
		case 0:
			ok++
		case connect.CodeUnavailable:
			unavailable++
		}
	}
	if probes > 2 || ok != int(probes) || ok+unavailable != 200 {
		t.Fatalf("backend saw %d probes (max 2); callers: %d ok, %d unavailable, of 200", probes, ok, unavailable)
	}
}

func TestGatewayRetriesOnlyWhenSafe(t *testing.T) {
	// The bad instance fails about 10 calls per protocol; its breaker must stay closed
	// through all of them, or the last protocols would never reach it.
	f := setup(t, 2, gateway.Options{Breaker: rpc.BreakerConfig{FailureThreshold: 500, Window: 1000, Delay: time.Minute}})
	f.instances[0].backend.SetFault(testbackend.ModeInternal, 0)
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			// Idempotent: always answered by the healthy instance.
			for i := range 10 {
				if _, err := p.cache(f.gateway).Set(context.Background(), &cachev1.SetRequest{Key: "k", Value: []byte("v")}); err != nil {
					t.Fatalf("idempotent call %d: %v", i, err)
				}
			}
			// Not idempotent: whoever gets it answers, nothing is sent twice.
			md := metadatav1connect.NewMetadataServiceClient(p.client, f.gateway, p.opts...)
			effects := f.instances[0].backend.Stats().SideEffects + f.instances[1].backend.Stats().SideEffects
			calls := f.calls()
			failed := 0
			for range 10 {
				_, err := md.CreateVideo(context.Background(), &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: "v1", Title: "t"}})
				if err != nil {
					if connect.CodeOf(err) != connect.CodeInternal {
						t.Fatalf("want internal from the bad instance, got %v", err)
					}
					failed++
				}
			}
			if n := f.calls() - calls; n != 10 {
				t.Fatalf("10 non-idempotent calls reached backends %d times", n)
			}
			got := f.instances[0].backend.Stats().SideEffects + f.instances[1].backend.Stats().SideEffects - effects
			if got != 10 || failed == 0 {
				t.Fatalf("%d side effects for 10 calls (%d failed on the bad instance): each must run exactly once", got, failed)
			}
		})
	}
}

func TestGatewayRetriesNeverSentRequests(t *testing.T) {
	f := setup(t, 2, gateway.Options{})
	dead := f.instances[0]
	dead.server.Close() // connection refused from now on; the registry has not noticed yet
	md := metadatav1connect.NewMetadataServiceClient(h2c(), f.gateway)
	for i := range 10 {
		if _, err := md.CreateVideo(context.Background(), &metadatav1.CreateVideoRequest{Video: &metadatav1.Video{Id: "v1", Title: "t"}}); err != nil {
			t.Fatalf("call %d: a refused connection never reached a backend and must be retried: %v", i, err)
		}
	}
	if n := f.instances[1].backend.Stats().SideEffects; n != 10 {
		t.Fatalf("%d side effects, want 10", n)
	}
}

func TestGatewayDeadlines(t *testing.T) {
	// Every expired call counts against the one backend (it was too slow); the breaker
	// must not open before the last of them.
	breaker := rpc.DefaultBreakerConfig()
	breaker.FailureThreshold, breaker.Window = 20, 20
	f := setup(t, 1, gateway.Options{Timeout: 400 * time.Millisecond, Breaker: breaker})
	b := f.instances[0].backend
	for _, p := range protocols() {
		t.Run(p.name+" forwarded", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			// A long-running stream is not cut by the gateway's 400 ms default...
			stream, err := p.watch(f.gateway).CallServerStream(ctx, connect.NewRequest(&cachev1.GetRequest{Key: "3:300"}))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for stream.Receive() {
				n++
			}
			if err := stream.Err(); err != nil || n != 3 {
				t.Fatalf("stream cut after %d messages: %v", n, err)
			}
			// ...and the caller's deadline reaches the backend, minus the time spent.
			if got := b.Stats().LastDeadlineMs; got > 3000 || got < 1500 {
				t.Fatalf("backend saw %d ms left of a 3 s deadline", got)
			}
			if _, err := p.cache(f.gateway).Get(ctx, &cachev1.GetRequest{Key: "k"}); err != nil {
				t.Fatal(err)
			}
			if got := b.Stats().LastDeadlineMs; got > 3000 || got < 1500 {
				t.Fatalf("unary: backend saw %d ms left", got)
			}
			// Without a caller deadline, unary calls get the gateway's default.
			if _, err := p.cache(f.gateway).Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
				t.Fatal(err)
			}
			if got := b.Stats().LastDeadlineMs; got > 400 || got < 100 {
				t.Fatalf("default: backend saw %d ms left, want about 400", got)
			}
		})
	}
	b.SetFault(testbackend.ModeOK, 5*time.Second)
	for _, p := range protocols() {
		t.Run(p.name+" expires", func(t *testing.T) {
			cancelled := b.Stats().Cancelled
			start := time.Now()
			// The caller's own client deadline is longer: the answer must come from the
			// gateway's enforcement of the forwarded one.
			req := connect.NewRequest(&cachev1.GetRequest{Key: "k"})
			if p.name == "connect-json" || p.name == "connect-proto" {
				req.Header().Set("Connect-Timeout-Ms", "300")
			} else {
				req.Header().Set("Grpc-Timeout", "300m")
			}
			client := connect.NewClient[cachev1.GetRequest, cachev1.GetResponse](p.client, f.gateway+"/reelway.cache.v1.CacheService/Get", p.opts...)
			_, err := client.CallUnary(context.Background(), req)
			elapsed := time.Since(start)
			if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
				t.Fatalf("want deadline_exceeded, got %v", err)
			}
			if elapsed < 250*time.Millisecond || elapsed > 2*time.Second {
				t.Fatalf("deadline of 300 ms took %s", elapsed)
			}
			waitFor(t, "backend context cancelled", func() error {
				if b.Stats().Cancelled == cancelled {
					return errors.New("backend still working")
				}
				return nil
			})
		})
	}
	// Connect over plain HTTP sees 504.
	req, _ := http.NewRequest(http.MethodPost, f.gateway+"/reelway.cache.v1.CacheService/Get", strings.NewReader(`{"key":"k"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Timeout-Ms", "200")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "deadline_exceeded") {
		t.Fatalf("connect 504: %d %s", resp.StatusCode, body)
	}
}

func TestGatewayStreamsIncrementally(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	gate := make(chan struct{})
	f.instances[0].backend.Gate = gate
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := p.watch(f.gateway).CallServerStream(ctx, connect.NewRequest(&cachev1.GetRequest{Key: "3:0"}))
			if err != nil {
				t.Fatal(err)
			}
			// The backend sends message i+1 only after the caller got message i: a proxy
			// that buffered would deadlock here until the timeout.
			for i := range 3 {
				if !stream.Receive() {
					t.Fatalf("message %d: %v", i, stream.Err())
				}
				if got := string(stream.Msg().GetValue()); got != fmt.Sprint(i) {
					t.Fatalf("message %d is %q", i, got)
				}
				if i < 2 {
					gate <- struct{}{}
				}
			}
			if stream.Receive() || stream.Err() != nil {
				t.Fatalf("end: %v", stream.Err())
			}
		})
	}
}

func TestGatewayEndsCutStreamsInCallersProtocol(t *testing.T) {
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			f := setup(t, 1, gateway.Options{})
			gate := make(chan struct{})
			f.instances[0].backend.Gate = gate
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := p.watch(f.gateway).CallServerStream(ctx, connect.NewRequest(&cachev1.GetRequest{Key: "3:0"}))
			if err != nil {
				t.Fatal(err)
			}
			if !stream.Receive() {
				t.Fatalf("first message: %v", stream.Err())
			}
			f.instances[0].server.Close() // the backend dies mid-stream
			if stream.Receive() {
				t.Fatal("a message after the backend died")
			}
			if code := connect.CodeOf(stream.Err()); code != connect.CodeUnavailable {
				t.Fatalf("want unavailable in the caller's protocol, got %v", stream.Err())
			}
		})
	}
}

func TestGatewayCORS(t *testing.T) {
	f := setup(t, 1, gateway.Options{CORSOrigins: []string{"https://app.example"}})
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, f.gateway+"/reelway.cache.v1.CacheService/Get", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "connect-protocol-version,connect-timeout-ms,content-type,grpc-timeout,x-grpc-web,x-user-agent")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	self := f.gateway // the gateway's own origin
	for _, origin := range []string{"https://app.example", self} {
		resp := preflight(origin)
		if resp.StatusCode/100 != 2 || resp.Header.Get("Access-Control-Allow-Origin") != origin {
			t.Fatalf("%s: preflight %d %v", origin, resp.StatusCode, resp.Header)
		}
		allowed := strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers"))
		for _, h := range []string{"connect-protocol-version", "connect-timeout-ms", "grpc-timeout", "x-grpc-web"} {
			if !strings.Contains(allowed, h) {
				t.Errorf("%s: %s not allowed: %q", origin, h, allowed)
			}
		}
	}
	if resp := preflight("https://evil.example"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("unlisted origin allowed: %v", resp.Header)
	}
	// A browser tus client resumes with PATCH and reads the offset and Location back.
	tusReq, _ := http.NewRequest(http.MethodOptions, f.gateway+"/v1/uploads/tus/abc", nil)
	tusReq.Header.Set("Origin", "https://app.example")
	tusReq.Header.Set("Access-Control-Request-Method", "PATCH")
	tusReq.Header.Set("Access-Control-Request-Headers", "content-type,tus-resumable,upload-checksum,upload-offset")
	tusResp, err := http.DefaultClient.Do(tusReq)
	if err != nil {
		t.Fatal(err)
	}
	tusResp.Body.Close()
	if tusResp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(tusResp.Header.Get("Access-Control-Allow-Methods"), "PATCH") {
		t.Fatalf("tus preflight refused: %d %v", tusResp.StatusCode, tusResp.Header)
	}
	// The actual response exposes the gRPC-Web status headers.
	req, _ := http.NewRequest(http.MethodPost, f.gateway+"/reelway.cache.v1.CacheService/Get", strings.NewReader(`{"key":"k"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "https://app.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	exposed := strings.ToLower(resp.Header.Get("Access-Control-Expose-Headers"))
	for _, h := range []string{"grpc-status", "grpc-message", "grpc-status-details-bin", "upload-offset", "location"} {
		if !strings.Contains(exposed, h) {
			t.Errorf("%s not exposed: %q", h, exposed)
		}
	}
	// HLS preflights are not the gateway's to refuse: they reach streaming, which allows
	// players on any origin (here no streaming instance runs, so the gateway says so).
	hls, _ := http.NewRequest(http.MethodOptions, f.gateway+"/v1/hls/abc/master.m3u8", nil)
	hls.Header.Set("Origin", "https://player.example")
	hls.Header.Set("Access-Control-Request-Method", "GET")
	hlsResp, err := http.DefaultClient.Do(hls)
	if err != nil {
		t.Fatal(err)
	}
	hlsResp.Body.Close()
	if hlsResp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("HLS preflight answered by the gateway's CORS layer: %d %v", hlsResp.StatusCode, hlsResp.Header)
	}
	// With no configured origins, another origin is refused.
	g2 := setup(t, 1, gateway.Options{})
	req, _ = http.NewRequest(http.MethodOptions, g2.gateway+"/reelway.cache.v1.CacheService/Get", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("default policy allowed a foreign origin: %v", resp.Header)
	}
}

func TestGatewayMetricsEndpoint(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	if _, err := protocols()[0].cache(f.gateway).Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	m := metrics(t, f.gateway)
	for _, want := range []string{
		`reelway_gateway_requests_total{code="ok",route="/reelway.cache.v1.CacheService/Get"} 1`,
		`reelway_gateway_breaker_state{instance="` + f.instances[0].id + `"} 0`,
		`reelway_gateway_catalog_age_seconds `,
		`reelway_gateway_retry_budget_exhausted_total 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestMalformedFramesDoNotEjectBackend sends truncated gRPC-Web and Connect streaming
// frames: connect reports them as internal "protocol error", which is the caller's fault,
// so the breaker must stay closed and a valid call still succeed.
func TestMalformedFramesDoNotEjectBackend(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	bad := []struct{ ctype, body string }{
		{"application/grpc-web+proto", "\x00\x00\x00\x00\x10\x08"},          // promises 16 bytes, sends 1
		{"application/connect+json", "\x00\x00\x00\x00\x1b{\"key\":\"k\"}"}, // a streaming type on a unary method (415)
	}
	for i := range 12 {
		b := bad[i%len(bad)]
		resp, err := http.Post(f.gateway+"/reelway.cache.v1.CacheService/Get", b.ctype, strings.NewReader(b.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for _, p := range protocols() {
		if _, err := p.cache(f.gateway).Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
			t.Fatalf("%s: valid call after malformed frames: %v", p.name, err)
		}
	}
}

// TestGatewayMetricsCountConnectErrorCodes checks that calls are counted under the code
// the caller gets, in every protocol: for Connect unary errors the HTTP status stands for
// several codes (409: already_exists or aborted), so the code comes from the error body;
// a handler's answer that carries no code (a bodyless 415 or 405) is counted under its
// HTTP status.
func TestGatewayMetricsCountConnectErrorCodes(t *testing.T) {
	f := setup(t, 1, gateway.Options{})
	codes := []connect.Code{
		connect.CodeAlreadyExists, connect.CodeAborted, connect.CodeFailedPrecondition,
		connect.CodeOutOfRange, connect.CodePermissionDenied, connect.CodeDataLoss,
	}
	for _, p := range protocols() {
		for _, code := range codes {
			_, err := p.cache(f.gateway).Get(context.Background(), &cachev1.GetRequest{Key: "code:" + code.String()})
			if connect.CodeOf(err) != code {
				t.Fatalf("%s: want %v, got %v", p.name, code, err)
			}
		}
	}
	// Bodyless refusals from the backend's handlers: a streaming content type on a unary
	// method (415) and a GET of a method with side effects (405).
	refusals := []struct {
		method, path, ctype string
		want                int
	}{
		{http.MethodPost, "/reelway.cache.v1.CacheService/Get", "application/connect+json", http.StatusUnsupportedMediaType},
		{http.MethodGet, "/reelway.metadata.v1.MetadataService/CreateVideo?encoding=json&message=%7B%7D", "", http.StatusMethodNotAllowed},
	}
	for _, r := range refusals {
		req, _ := http.NewRequest(r.method, f.gateway+r.path, strings.NewReader(`{"key":"k"}`))
		if r.ctype != "" {
			req.Header.Set("Content-Type", r.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != r.want {
			t.Fatalf("%s %s: %d, want %d", r.method, r.path, resp.StatusCode, r.want)
		}
	}
	if _, err := protocols()[0].cache(f.gateway).Get(context.Background(), &cachev1.GetRequest{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	m := metrics(t, f.gateway)
	const get, create = "/reelway.cache.v1.CacheService/Get", "/reelway.metadata.v1.MetadataService/CreateVideo"
	want := []struct{ route, code, n string }{
		{get, "ok", "1"},
		{get, "415", "1"},
		{create, "405", "1"},
		// What the HTTP statuses alone would have said.
		{get, "unknown", ""},
		{get, "invalid_argument", ""},
		{get, "internal", ""},
		{create, "unknown", ""},
	}
	for _, code := range codes {
		want = append(want, struct{ route, code, n string }{get, code.String(), fmt.Sprint(len(protocols()))})
	}
	for _, w := range want {
		series := `reelway_gateway_requests_total{code="` + w.code + `",route="` + w.route + `"}`
		if got := metric(m, series); got != w.n {
			t.Errorf("%s = %q, want %q", series, got, w.n)
		}
	}
}
