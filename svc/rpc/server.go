package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/validate"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Server collects one service's handlers and turns them into an http.Handler that serves
// gRPC, gRPC-Web and Connect, gRPC reflection, gRPC health and GET /healthz.
type Server struct {
	log      *slog.Logger
	mux      *http.ServeMux
	names    []string
	opts     []connect.HandlerOption
	status   func() any
	reflectN []string
	catchAll bool
	patterns map[string]bool
	front    func(http.Handler) http.Handler
	unknown  http.Handler
}

// HasRoute reports whether a plain route was added with exactly this pattern.
func (s *Server) HasRoute(pattern string) bool { return s.patterns[pattern] }

// NewServer returns an empty server. status, if not nil, is rendered into /healthz.
func NewServer(log *slog.Logger, status func() any) *Server {
	s := &Server{log: log, mux: http.NewServeMux(), status: status}
	s.unknown = WithHTTPLogging(log, http.HandlerFunc(s.notFound))
	s.opts = []connect.HandlerOption{
		connect.WithInterceptors(newLogInterceptor(log), validate.NewInterceptor()),
		connect.WithRecover(s.recovered),
		// A caller cannot make a service buffer an arbitrarily large message before
		// validation sees it: upload chunks are at most 4 MiB, everything else is small.
		connect.WithReadMaxBytes(MaxMessageBytes),
		// Compressing a few hundred bytes costs more CPU than it saves on the wire.
		connect.WithCompressMinBytes(1024),
		connect.WithCodec(jsonCodec{name: "json"}),
		connect.WithCodec(jsonCodec{name: "json; charset=utf-8"}),
	}
	return s
}

// MaxMessageBytes caps one request message on every handler.
const MaxMessageBytes = 8 << 20

func (s *Server) recovered(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	s.log.ErrorContext(ctx, "rpc.panic", "procedure", spec.Procedure, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

// HandlerOptions are the options every Connect handler of this server must be built with.
func (s *Server) HandlerOptions() []connect.HandlerOption { return s.opts }

// Mount adds a generated Connect handler for a proto service (full name). A method the
// service's schema does not declare gets unimplemented in the caller's protocol, as an
// unknown service does, instead of the generated handler's plain-text 404 page.
func (s *Server) Mount(protoService, path string, h http.Handler) {
	s.names = append(s.names, protoService)
	s.reflectN = append(s.reflectN, protoService)
	s.mux.Handle(path, s.refuseUnknownMethods(protoService, h))
}

// refuseUnknownMethods sends the requests for methods protoService does not declare through
// h with a writer that turns h's http.NotFound into notFound's answer. They still go through
// h, rather than straight to notFound, so that whatever h wraps around the generated handler
// (CORS headers, preflights) and any extra procedure it serves under the same prefix keep
// working. Declared methods cost one map lookup.
func (s *Server) refuseUnknownMethods(protoService string, h http.Handler) http.Handler {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(protoService))
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if err != nil || !ok {
		return h
	}
	methods := sd.Methods()
	known := make(map[string]struct{}, methods.Len())
	for i := range methods.Len() {
		known["/"+protoService+"/"+string(methods.Get(i).Name())] = struct{}{}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := known[r.URL.Path]; ok {
			h.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(&notFoundCatcher{ResponseWriter: w, r: r, notFound: s.unknown}, r)
	})
}

// notFoundCatcher passes a response through unless it starts as http.NotFound's page (404,
// text/plain), which it replaces with notFound's answer and whose body it drops.
type notFoundCatcher struct {
	http.ResponseWriter
	r        *http.Request
	notFound http.Handler
	started  bool
	caught   bool
}

func (c *notFoundCatcher) WriteHeader(code int) {
	if c.started {
		c.ResponseWriter.WriteHeader(code)
		return
	}
	c.started = true
	h := c.Header()
	if code == http.StatusNotFound && h.Get("Content-Type") == "text/plain; charset=utf-8" {
		c.caught = true
		h.Del("Content-Type")
		h.Del("X-Content-Type-Options")
		c.notFound.ServeHTTP(c.ResponseWriter, c.r)
		return
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *notFoundCatcher) Write(b []byte) (int, error) {
	if !c.started {
		c.WriteHeader(http.StatusOK)
	}
	if c.caught {
		return len(b), nil
	}
	return c.ResponseWriter.Write(b)
}

// Flush passes flushes through, for handlers that assert http.Flusher directly (streams).
func (c *notFoundCatcher) Flush() {
	if c.caught {
		return
	}
	c.started = true
	_ = http.NewResponseController(c.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer (deadlines, full duplex).
func (c *notFoundCatcher) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// AddReflection lists extra proto services in reflection without mounting them (the
// gateway describes the services it proxies).
func (s *Server) AddReflection(protoServices ...string) {
	s.reflectN = append(s.reflectN, protoServices...)
}

// Handle adds a plain HTTP route; requests get a request id and a log line.
func (s *Server) Handle(pattern string, h http.Handler) {
	if pattern == "/" {
		s.catchAll = true
	}
	if s.patterns == nil {
		s.patterns = make(map[string]bool)
	}
	s.patterns[pattern] = true
	s.mux.Handle(pattern, WithHTTPLogging(s.log, h))
}

// Front puts wrap around the whole handler, in front of the mux: it sees each request
// before the mux cleans its path (by redirecting, with an HTML body), so a proxy can refuse
// such paths in its own format.
func (s *Server) Front(wrap func(http.Handler) http.Handler) { s.front = wrap }

// ProtoServices returns the proto services mounted so far.
func (s *Server) ProtoServices() []string { return append([]string(nil), s.names...) }

// Handler returns the complete handler.
func (s *Server) Handler() http.Handler {
	slices.Sort(s.reflectN)
	reflector := grpcreflect.NewStaticReflector(slices.Compact(s.reflectN)...)
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	s.mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(s.names...)))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	if !s.catchAll {
		s.mux.Handle("/", s.unknown)
	}
	if s.front != nil {
		return s.front(s.mux)
	}
	return s.mux
}

// notFound answers paths no route serves. An RPC to an unknown method gets unimplemented
// in the caller's protocol rather than the mux's plain-text 404 page.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	errw := connect.NewErrorWriter()
	if r.Method == http.MethodPost && procedurePath(r.URL.Path) && errw.IsSupported(r) {
		_ = errw.Write(w, r, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("%s is not implemented", r.URL.Path)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = fmt.Fprintf(w, "{\"code\":\"not_found\",\"message\":%q}\n", "no route for "+r.URL.Path)
}

// procedurePath says whether path has the form of an RPC procedure, /pkg.Service/Method.
// Any other path (a plain route's /v1/uploads/) is not found rather than unimplemented.
func procedurePath(path string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return ok && strings.Contains(svc, ".") && method != "" && !strings.Contains(method, "/")
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{"status": "ok"}
	if s.status != nil {
		detail := s.status()
		body["detail"] = detail
		// Still 200: every instance shares the same NATS, so failing the check would take
		// reads down too. "degraded" tells operators that events are not flowing.
		if d, ok := detail.(interface{ Degraded() bool }); ok && d.Degraded() {
			body["status"] = "degraded"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

// NewHTTPServer returns an http.Server for h that speaks HTTP/1.1 and HTTP/2 without TLS
// (h2c), so gRPC clients and curl share one port.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           withHost(h),
		Protocols:         &p,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    1 << 20,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// withHost gives a request that came without a Host (HTTP/1.0 allows it) the address the
// client reached, so whatever builds URLs from the host (tus Locations, the gateway's
// X-Forwarded-Host) names a reachable one rather than none.
func withHost(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "" {
			if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
				r.Host = a.String()
			}
		}
		h.ServeHTTP(w, r)
	})
}
