// Package gateway is Reelway's front door. It derives its route table from the registry
// (each instance's meta names the proto services it serves), proxies gRPC, gRPC-Web and
// Connect over h2c with trailers intact, and answers in the caller's protocol when no
// healthy backend is available.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"
	gatewayv1 "github.com/reelway/reelway/gen/reelway/gateway/v1"
	"github.com/reelway/reelway/gen/reelway/gateway/v1/gatewayv1connect"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
)

// Errors the gateway reports to callers.
var (
	// ErrNoBackend means no passing instance serves the requested service.
	ErrNoBackend = errors.New("gateway: no healthy instance")
	// ErrUnknownRoute means nothing in the platform serves the path.
	ErrUnknownRoute = errors.New("gateway: unknown route")
)

// Routes is what the gateway needs from the registry.
type Routes interface {
	// ResolveProto returns the passing instances serving a proto service full name.
	ResolveProto(protoService string) []registry.Instance
	// Resolve returns the passing instances of a registered service name.
	Resolve(ctx context.Context, name string) ([]registry.Instance, error)
	// Routes returns the whole proto service → instances table.
	Routes() map[string][]registry.Instance
}

var _ Routes = (*registry.Catalog)(nil)

// plainRoutes maps the gateway's plain HTTP prefixes to the registered service behind them.
func plainRoute(path string) (service string, ok bool) {
	switch {
	case path == "/v1/uploads" || strings.HasPrefix(path, "/v1/uploads/"):
		return "upload", true
	case strings.HasPrefix(path, "/v1/hls/"):
		return "streaming", true
	}
	return "", false
}

// Gateway proxies requests to the platform's services.
type Gateway struct {
	log      *slog.Logger
	routes   Routes
	known    map[string]bool
	breakers *rpc.Breakers
	proxy    *httputil.ReverseProxy
	errw     *connect.ErrorWriter

	mu   sync.Mutex
	next map[string]*atomic.Uint64
}

// New returns a gateway routing through routes. known lists every proto service of the
// schema, so a request for a known service with no backend is "unavailable" rather than
// "unimplemented".
func New(log *slog.Logger, routes Routes, known []string) *Gateway {
	g := &Gateway{
		log:      log,
		routes:   routes,
		known:    make(map[string]bool, len(known)),
		breakers: rpc.NewBreakers(log),
		errw:     connect.NewErrorWriter(),
		next:     make(map[string]*atomic.Uint64),
	}
	for _, k := range known {
		g.known[k] = true
	}
	transport := rpc.NewH2CTransport()
	g.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			in := pr.In.Context().Value(targetKey{}).(registry.Instance)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = in.HostPort()
			pr.Out.Host = in.HostPort()
			pr.Out.Header.Set(rpc.HeaderRequestID, rpc.RequestID(pr.In.Context()))
			pr.SetXForwarded()
		},
		Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			in := req.Context().Value(targetKey{}).(registry.Instance)
			return g.breakers.RoundTrip(transport, in.ID, req)
		}),
		// Flush every write at once: server-streaming responses must arrive message by message.
		FlushInterval: -1,
		ErrorHandler:  g.proxyError,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return g
}

type targetKey struct{}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Mount adds the gateway's own service, reflection for every known service, and the
// catch-all proxy.
func (g *Gateway) Mount(srv *rpc.Server) error {
	path, h := gatewayv1connect.NewGatewayServiceHandler(g, srv.HandlerOptions()...)
	srv.Mount(gatewayv1connect.GatewayServiceName, path, h)
	known := make([]string, 0, len(g.known))
	for k := range g.known {
		known = append(known, k)
	}
	slices.Sort(known)
	srv.AddReflection(known...)
	srv.Handle("/", http.HandlerFunc(g.serve))
	return nil
}

// ListRoutes implements gatewayv1connect.GatewayServiceHandler.
func (g *Gateway) ListRoutes(context.Context, *gatewayv1.ListRoutesRequest) (*gatewayv1.ListRoutesResponse, error) {
	table := g.routes.Routes()
	res := &gatewayv1.ListRoutesResponse{}
	for ps, ins := range table {
		r := &gatewayv1.Route{ProtoService: ps}
		for _, in := range ins {
			r.Service = in.Name
			r.Endpoints = append(r.Endpoints, in.BaseURL())
		}
		res.Routes = append(res.Routes, r)
	}
	slices.SortFunc(res.Routes, func(a, b *gatewayv1.Route) int { return strings.Compare(a.ProtoService, b.ProtoService) })
	return res, nil
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	if service, ok := plainRoute(r.URL.Path); ok {
		ins, _ := g.routes.Resolve(r.Context(), service)
		g.forward(w, r, service, ins, false)
		return
	}
	protoService, _, ok := splitProcedure(r.URL.Path)
	if !ok {
		writePlainError(w, http.StatusNotFound, "not_found", "no route for "+r.URL.Path)
		return
	}
	ins := g.routes.ResolveProto(protoService)
	if len(ins) == 0 && !g.known[protoService] {
		g.writeError(w, r, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("%w: %s", ErrUnknownRoute, protoService)))
		return
	}
	g.forward(w, r, protoService, ins, true)
}

// forward picks an instance round robin, skipping instances whose breaker is open.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, key string, ins []registry.Instance, isRPC bool) {
	if len(ins) == 0 {
		err := fmt.Errorf("%w for %s", ErrNoBackend, key)
		if isRPC {
			g.writeError(w, r, connect.NewError(connect.CodeUnavailable, err))
		} else {
			writePlainError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		}
		return
	}
	start := int(g.counter(key).Add(1))
	target := ins[start%len(ins)]
	for i := range ins {
		in := ins[(start+i)%len(ins)]
		if g.breakers.For(in.ID).IsClosed() {
			target = in
			break
		}
	}
	ctx := context.WithValue(r.Context(), targetKey{}, target)
	g.proxy.ServeHTTP(w, r.WithContext(ctx))
}

func (g *Gateway) counter(key string) *atomic.Uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.next[key]
	if !ok {
		c = new(atomic.Uint64)
		g.next[key] = c
	}
	return c
}

func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	code := connect.CodeUnavailable
	switch {
	case errors.Is(r.Context().Err(), context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.Is(r.Context().Err(), context.Canceled):
		code = connect.CodeCanceled
	}
	g.log.WarnContext(r.Context(), "proxy.error", "path", r.URL.Path, "code", code.String(), "err", err)
	if _, ok := plainRoute(r.URL.Path); ok {
		writePlainError(w, connectHTTPStatus(code), code.String(), "backend unavailable")
		return
	}
	g.writeError(w, r, connect.NewError(code, errors.New("backend unavailable")))
}

func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if werr := g.errw.Write(w, r, err); werr != nil {
		g.log.DebugContext(r.Context(), "error.write", "err", werr)
	}
}

// splitProcedure splits "/pkg.Service/Method".
func splitProcedure(path string) (service, method string, ok bool) {
	rest, found := strings.CutPrefix(path, "/")
	if !found {
		return "", "", false
	}
	service, method, ok = strings.Cut(rest, "/")
	if !ok || service == "" || method == "" || strings.Contains(method, "/") || !strings.Contains(service, ".") {
		return "", "", false
	}
	return service, method, true
}

func connectHTTPStatus(code connect.Code) int {
	switch code {
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeCanceled:
		return 499
	default:
		return http.StatusServiceUnavailable
	}
}

func writePlainError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"code\":%q,\"message\":%q}\n", code, msg)
}
