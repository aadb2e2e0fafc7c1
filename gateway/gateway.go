// Package gateway is Reelway's front door. It derives its route table from the registry
// (each instance's meta names the proto services it serves) and proxies gRPC, gRPC-Web
// and Connect over h2c with trailers intact. Each backend instance sits behind its own
// circuit breaker; requests go to the instance with fewer requests in flight of two
// picked at random; calls are retried on another instance only when that is safe; caller
// deadlines are forwarded; and every error the gateway makes itself is written in the
// caller's protocol.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	gatewayv1 "github.com/reelway/reelway/gen/reelway/gateway/v1"
	"github.com/reelway/reelway/gen/reelway/gateway/v1/gatewayv1connect"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/rs/cors"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Errors the gateway reports to callers.
var (
	// ErrNoBackend means no passing instance serves the requested service.
	ErrNoBackend = errors.New("gateway: no healthy instance")
	// ErrUnknownRoute means nothing in the platform serves the path.
	ErrUnknownRoute = errors.New("gateway: unknown route")
	// ErrBackendUnavailable means every instance tried failed or refused the call.
	ErrBackendUnavailable = errors.New("gateway: backend unavailable")
	// ErrDeadline means the call's deadline expired at the gateway.
	ErrDeadline = errors.New("gateway: deadline exceeded")
	// ErrMethodNotAllowed means a plain route does not serve the request's method.
	ErrMethodNotAllowed = errors.New("gateway: method not allowed")
	// ErrBadPath means the request path has an empty segment, a dot segment or an
	// encoded slash, which no route serves and which must not reach a backend.
	ErrBadPath = errors.New("gateway: path with an empty segment, a dot segment or an encoded slash")
)

// Routes is what the gateway needs from the registry.
type Routes interface {
	// ResolveProto returns the passing instances serving a proto service full name.
	ResolveProto(protoService string) []registry.Instance
	// Resolve returns the passing instances of a registered service name.
	Resolve(ctx context.Context, name string) ([]registry.Instance, error)
	// Routes returns the whole proto service → instances table.
	Routes() map[string][]registry.Instance
	// Age is how long ago the table last synced with the registry.
	Age() time.Duration
}

var _ Routes = (*registry.Catalog)(nil)

// DefaultTimeout is the deadline of unary calls that arrive without one.
const DefaultTimeout = 30 * time.Second

// deadlineBackstop is how long after a call's deadline the gateway cuts it if the backend
// has not ended it.
const deadlineBackstop = 100 * time.Millisecond

// Options tune a gateway; the zero value is the production default.
type Options struct {
	// Timeout is the deadline given to unary RPCs that carry none (0: DefaultTimeout,
	// negative: none). A unary call's deadline bounds the whole call, the reading of its
	// request body included. Streaming RPCs and upload/HLS transfers never get one.
	Timeout time.Duration
	// CORSOrigins lists the browser origins allowed besides the gateway's own; "*"
	// allows any origin.
	CORSOrigins []string
	// Breaker configures every instance's circuit breaker (zero: rpc.DefaultBreakerConfig).
	Breaker rpc.BreakerConfig
	// Metrics receives the gateway's metrics, served at GET /metrics; nil uses a new
	// registry of the gateway's own.
	Metrics *prometheus.Registry
}

// Gateway proxies requests to the platform's services.
type Gateway struct {
	log       *slog.Logger
	routes    Routes
	known     map[string]bool
	methods   map[string]*method
	timeout   time.Duration
	breakers  *rpc.Breakers
	budget    *retryBudget
	metrics   *metrics
	cors      *cors.Cors
	base      http.RoundTripper
	plain     http.RoundTripper
	transport *transport
	buffers   *sync.Pool // RPC bodies: messages are small
	transfers *sync.Pool // plain-route bodies: segments, downloads, uploads
	watches   sync.Pool  // *bodyWatch, with their timers
	errw      *connect.ErrorWriter

	mu       sync.RWMutex
	backends map[string]*backend
}

// backend is one instance as the balancer sees it.
type backend struct {
	id       string
	hostport string
	breaker  *rpc.Breaker
	inflight atomic.Int64
}

var _ gatewayv1connect.GatewayServiceHandler = (*Gateway)(nil)

// New returns a gateway routing through routes. known lists every proto service of the
// schema: a request for a known service with no backend is "unavailable" rather than
// "unimplemented", and the schema of those services (from the linked generated code)
// says which methods are safe to retry and which stream.
func New(log *slog.Logger, routes Routes, known []string, opts Options) *Gateway {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	g := &Gateway{
		log:      log,
		routes:   routes,
		known:    make(map[string]bool, len(known)),
		methods:  methodTable(protoregistry.GlobalFiles, known),
		timeout:  timeout,
		budget:   newRetryBudget(0.2, 100, 10),
		base:     rpc.NewH2CTransport(),
		plain:    newPlainTransport(),
		errw:     connect.NewErrorWriter(),
		backends: make(map[string]*backend),
	}
	for _, k := range known {
		g.known[k] = true
	}
	reg := opts.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	g.metrics = newMetrics(reg, g)
	g.breakers = rpc.NewBreakersWith(log, opts.Breaker, g.metrics.transition)
	g.cors = newCORS(opts.CORSOrigins)
	g.transport = &transport{g: g}
	g.buffers = newBuffers(32 << 10)
	g.transfers = newBuffers(transferBufferSize)
	return g
}

// Mount adds the gateway's own service, reflection for every known service, the metrics
// endpoint, and the catch-all proxy, all behind the CORS policy, and in front of them the
// refusal of unclean paths.
func (g *Gateway) Mount(srv *rpc.Server) error {
	srv.Front(g.refuseUncleanPaths)
	path, h := gatewayv1connect.NewGatewayServiceHandler(g, srv.HandlerOptions()...)
	srv.Mount(gatewayv1connect.GatewayServiceName, path, g.cors.Handler(h))
	known := make([]string, 0, len(g.known))
	for k := range g.known {
		known = append(known, k)
	}
	slices.Sort(known)
	srv.AddReflection(known...)
	srv.Handle("GET /metrics", g.metrics.handler())
	withCORS := g.cors.Handler(http.HandlerFunc(g.serve))
	srv.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Players on any origin may load public streams: streaming answers CORS for its
		// own files (preflights included), so the gateway's origin policy stays out.
		if strings.HasPrefix(r.URL.Path, "/v1/hls/") {
			g.serve(w, r)
			return
		}
		withCORS.ServeHTTP(w, r)
	}))
	return nil
}

// Start forgets, every 30 s, the breakers and balancer state of instances that left the
// registry, until ctx ends.
func (g *Gateway) Start(ctx context.Context) error {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.prune()
		}
	}
}

func (g *Gateway) prune() {
	live := make(map[string]bool)
	for _, ins := range g.routes.Routes() {
		for _, in := range ins {
			live[in.ID] = true
		}
	}
	keep := func(id string) bool { return live[id] }
	g.mu.Lock()
	for id, be := range g.backends {
		if !keep(id) && be.inflight.Load() == 0 {
			delete(g.backends, id)
			g.metrics.transitions.DeletePartialMatch(prometheus.Labels{"instance": id})
		}
	}
	g.mu.Unlock()
	g.breakers.Retain(func(id string) bool {
		g.mu.RLock()
		defer g.mu.RUnlock()
		_, ok := g.backends[id]
		return ok
	})
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

// call is what the gateway decided about one request before proxying it; the transport
// reads it from the request context.
type call struct {
	route      string
	key        string
	wire       rpc.Wire
	instances  []registry.Instance
	idempotent bool
	// unary: one request message, one response message.
	unary bool
	// streamBody: the request body may carry more than one message (client streaming,
	// uploads): it is never buffered for replay.
	streamBody bool
	deadline   time.Time
	// timeoutHeader is the header that forwards the remaining time ("" for none).
	timeoutHeader string
	// watch bounds the read of a unary call's request body by deadline (nil: unbounded,
	// as for streams and transfers); watchGen is its arming.
	watch    *bodyWatch
	watchGen uint64
	// text: the caller speaks gRPC-Web text, translated to binary gRPC-Web for the
	// backend (wire is then WireGRPCWeb).
	text bool
}

// bodyIn tells the call's watch, if any, that the request body is in.
func (c *call) bodyIn() {
	if c.watch != nil {
		c.watch.stop(c.watchGen)
	}
}

type callKey struct{}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	c := &call{}
	var pb *plainBody
	if p, ok := plainRoute(r.URL.Path); ok {
		if !p.forwards(r.Method) {
			g.refuseMethod(w, r, &p)
			return
		}
		c.route, c.key, c.wire = p.route, p.service, rpc.WireHTTP
		c.idempotent = r.Method == http.MethodGet || r.Method == http.MethodHead
		c.streamBody = true
		c.instances, _ = g.routes.Resolve(r.Context(), p.service)
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			pb = newPlainBody(r)
			r.Body = pb
		}
	} else {
		protoService, _, ok := splitProcedure(r.URL.Path)
		if !ok {
			g.metrics.failed("unknown", rpc.WireHTTP, http.StatusNotFound, 0)
			writePlainError(w, http.StatusNotFound, "not_found", "no route for "+r.URL.Path)
			return
		}
		if !supportedRPC(r) {
			route := "unknown"
			if m := g.methods[r.URL.Path]; m != nil {
				route = m.route
			}
			g.metrics.failed(route, rpc.WireHTTP, http.StatusUnsupportedMediaType, 0)
			writeUnsupportedMediaType(w, r)
			return
		}
		bareGRPCType(r)
		c.key, c.wire = protoService, rpc.WireOfRequest(r)
		unary := c.wire == rpc.WireConnectUnary
		c.streamBody = !unary
		c.route = "/" + protoService + "/unknown"
		if m := g.methods[r.URL.Path]; m != nil {
			c.route, c.idempotent, c.streamBody, unary = m.route, m.idempotent, m.clientStream, m.unary()
			if !unary && c.wire == rpc.WireConnectUnary {
				// The handler would answer a bodyless 415; say what a stream takes.
				g.metrics.failed(c.route, rpc.WireHTTP, http.StatusUnsupportedMediaType, 0)
				writeStreamingType(w, r)
				return
			}
		}
		c.unary = unary
		c.instances = g.routes.ResolveProto(protoService)
		if len(c.instances) == 0 && !g.known[protoService] {
			c.route = "unknown"
			g.writeError(w, r, c, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("%w: %s", ErrUnknownRoute, protoService)))
			return
		}
		timeout, header, err := callerTimeout(r, c.wire)
		if err != nil {
			g.writeError(w, r, c, connect.NewError(connect.CodeInvalidArgument, err))
			return
		}
		if timeout < 0 && unary && g.timeout > 0 {
			timeout = g.timeout
		}
		if timeout >= 0 {
			c.deadline = time.Now().Add(timeout)
			c.timeoutHeader = header
		}
	}
	if len(c.instances) == 0 {
		err := fmt.Errorf("%w for %s", ErrNoBackend, c.key)
		if c.wire == rpc.WireHTTP {
			g.metrics.failed(c.route, c.wire, http.StatusServiceUnavailable, connect.CodeUnavailable)
			writePlainError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		g.writeError(w, r, c, connect.NewError(connect.CodeUnavailable, err))
		return
	}
	if !c.streamBody && r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		// One request message (unary and server-streaming calls): it must arrive by the
		// call's deadline or, for a stream, which the gateway's default does not cut,
		// within that default, or a caller that stalls holds the call open forever.
		deadline := c.deadline
		if deadline.IsZero() && g.timeout > 0 {
			deadline = time.Now().Add(g.timeout)
		}
		if !deadline.IsZero() {
			c.watch, c.watchGen = g.watchBody(w, deadline)
			defer g.releaseWatch(c.watch, c.watchGen)
		}
	}
	if c.wire == rpc.WireGRPCWebText {
		if err := readTextRequest(r, c); err != nil {
			code := connect.CodeInvalidArgument
			if errors.Is(err, errLateBody) {
				code, err = connect.CodeDeadlineExceeded, ErrDeadline
			}
			g.writeError(w, r, c, connect.NewError(code, err))
			return
		}
		c.wire = rpc.WireGRPCWeb
	}
	ctx := r.Context()
	if !c.deadline.IsZero() {
		// The backend gets the true remaining time and normally ends the call itself, in
		// its protocol; the gateway's own cut is a backstop a little later, so it does not
		// race the backend's answer.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, c.deadline.Add(deadlineBackstop))
		defer cancel()
	}
	g.budget.deposit()
	g.forward(ctx, w, r, c, pb)
}

// callerTimeout reads the caller's deadline from the header of its protocol; a negative
// timeout means none. header is the header to forward the remaining time in.
func callerTimeout(r *http.Request, wire rpc.Wire) (time.Duration, string, error) {
	switch wire {
	case rpc.WireConnectUnary, rpc.WireConnectStream:
		v := r.Header.Get(headerConnectTimeout)
		if v == "" {
			return -1, headerConnectTimeout, nil
		}
		d, err := parseConnectTimeout(v)
		return d, headerConnectTimeout, err
	case rpc.WireGRPC, rpc.WireGRPCWeb, rpc.WireGRPCWebText:
		v := r.Header.Get(headerGRPCTimeout)
		if v == "" {
			return -1, headerGRPCTimeout, nil
		}
		d, err := parseGRPCTimeout(v)
		return d, headerGRPCTimeout, err
	}
	return -1, "", nil
}

// newPlainTransport is the HTTP/1.1 connection pool for the plain routes (uploads, HLS):
// over HTTP/1.1 a backend serves files with sendfile and the gateway moves them in large
// reads, where HTTP/2 would cut them into small frames on both hops.
func newPlainTransport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // uploads take as long as they take
		// A caller's "Expect: 100-continue" waits for the backend's own 100 (sent when the
		// upload handler starts reading) before the gateway reads the body, so a body the
		// backend refuses from its headers (413) is never asked for, as with no proxy.
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ReadBufferSize:        64 << 10,
		WriteBufferSize:       64 << 10,
	}
}

// backendFor returns the balancer's record of an instance.
func (g *Gateway) backendFor(in *registry.Instance) *backend {
	g.mu.RLock()
	be, ok := g.backends[in.ID]
	g.mu.RUnlock()
	if ok {
		return be
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if be, ok := g.backends[in.ID]; ok {
		return be
	}
	be = &backend{id: in.ID, hostport: in.HostPort(), breaker: g.breakers.For(in.ID)}
	g.backends[in.ID] = be
	return be
}

func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	c, _ := r.Context().Value(callKey{}).(*call)
	if c == nil {
		c = &call{route: "unknown", wire: rpc.WireHTTP}
	}
	code := connect.CodeUnavailable
	cause := ErrBackendUnavailable
	level := slog.LevelWarn
	switch {
	case errors.Is(err, errLateBody):
		// Checked first: on HTTP/1 the failed body read also cancelled the request.
		code = connect.CodeDeadlineExceeded
		cause = ErrDeadline
		level = slog.LevelDebug
	case errors.Is(err, errBadBody):
		// The caller's body broke (bad chunked framing, cut short): the caller's doing,
		// never counted against a backend.
		code = connect.CodeInvalidArgument
		cause = err
		level = slog.LevelDebug
	case errors.Is(r.Context().Err(), context.Canceled):
		code = connect.CodeCanceled
		cause = context.Canceled
		level = slog.LevelDebug
	case errors.Is(r.Context().Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
		cause = ErrDeadline
	}
	g.log.Log(r.Context(), level, "proxy.error", "route", c.route, "code", code.String(), "err", err)
	if c.wire == rpc.WireHTTP {
		g.metrics.failed(c.route, c.wire, connectHTTPStatus(code), code)
		writePlainError(w, connectHTTPStatus(code), code.String(), cause.Error())
		return
	}
	g.writeError(w, r, c, connect.NewError(code, cause))
}

// writeError answers an RPC in the caller's protocol: Connect unary JSON, Connect
// end-of-stream message, gRPC trailers-only or gRPC-Web trailers.
func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, c *call, err error) {
	g.metrics.failed(c.route, c.wire, connectHTTPStatus(connect.CodeOf(err)), connect.CodeOf(err))
	if c.text || c.wire == rpc.WireGRPCWebText {
		// connect's error writer knows binary gRPC-Web only: a trailers-only answer is
		// the same in both, bar the content type.
		r.Header.Set("Content-Type", binaryWebType(r.Header.Get("Content-Type")))
		w = &textWriter{ResponseWriter: w}
	}
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
	case connect.CodeInvalidArgument:
		return http.StatusBadRequest
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	default:
		return http.StatusServiceUnavailable
	}
}

func writePlainError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"code\":%q,\"message\":%q}\n", code, msg)
}
