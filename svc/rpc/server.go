package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/validate"
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
}

// NewServer returns an empty server. status, if not nil, is rendered into /healthz.
func NewServer(log *slog.Logger, status func() any) *Server {
	s := &Server{log: log, mux: http.NewServeMux(), status: status}
	s.opts = []connect.HandlerOption{
		connect.WithInterceptors(newLogInterceptor(log), validate.NewInterceptor()),
		connect.WithRecover(s.recovered),
	}
	return s
}

func (s *Server) recovered(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	s.log.ErrorContext(ctx, "rpc.panic", "procedure", spec.Procedure, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

// HandlerOptions are the options every Connect handler of this server must be built with.
func (s *Server) HandlerOptions() []connect.HandlerOption { return s.opts }

// Mount adds a generated Connect handler for a proto service (full name).
func (s *Server) Mount(protoService, path string, h http.Handler) {
	s.names = append(s.names, protoService)
	s.reflectN = append(s.reflectN, protoService)
	s.mux.Handle(path, h)
}

// AddReflection lists extra proto services in reflection without mounting them (the
// gateway describes the services it proxies).
func (s *Server) AddReflection(protoServices ...string) {
	s.reflectN = append(s.reflectN, protoServices...)
}

// Handle adds a plain HTTP route; requests get a request id and a log line.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, WithHTTPLogging(s.log, h))
}

// ProtoServices returns the proto services mounted so far.
func (s *Server) ProtoServices() []string { return append([]string(nil), s.names...) }

// Handler returns the complete handler.
func (s *Server) Handler() http.Handler {
	reflector := grpcreflect.NewStaticReflector(s.reflectN...)
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	s.mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(s.names...)))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	return s.mux
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{"status": "ok"}
	if s.status != nil {
		body["detail"] = s.status()
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
		Handler:           h,
		Protocols:         &p,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    1 << 20,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
