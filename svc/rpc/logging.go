package rpc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
)

// logInterceptor gives every RPC a request id (the caller's X-Request-Id when it is sane)
// and logs one line when the call ends.
type logInterceptor struct {
	log *slog.Logger
}

var _ connect.Interceptor = (*logInterceptor)(nil)

func newLogInterceptor(log *slog.Logger) *logInterceptor { return &logInterceptor{log: log} }

func (l *logInterceptor) begin(ctx context.Context, h http.Header) context.Context {
	id := h.Get(HeaderRequestID)
	if !validRequestID(id) {
		id = NewRequestID()
	}
	return WithRequestID(ctx, id)
}

func (l *logInterceptor) end(ctx context.Context, procedure string, start time.Time, err error) {
	code := "ok"
	level := slog.LevelInfo
	if err != nil {
		code = connect.CodeOf(err).String()
		if c := connect.CodeOf(err); c == connect.CodeInternal || c == connect.CodeUnknown || c == connect.CodeDataLoss {
			level = slog.LevelError
		}
	}
	l.log.Log(ctx, level, "rpc", "procedure", procedure, "code", code, "duration", time.Since(start), "err", errString(err))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// WrapUnary implements connect.Interceptor.
func (l *logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		ctx = l.begin(ctx, req.Header())
		res, err := next(ctx, req)
		if res != nil {
			res.Header().Set(HeaderRequestID, RequestID(ctx))
		}
		var ce *connect.Error
		if errors.As(err, &ce) {
			ce.Meta().Set(HeaderRequestID, RequestID(ctx))
		}
		l.end(ctx, req.Spec().Procedure, start, err)
		return res, err
	}
}

// WrapStreamingClient implements connect.Interceptor.
func (l *logInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (l *logInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		ctx = l.begin(ctx, conn.RequestHeader())
		conn.ResponseHeader().Set(HeaderRequestID, RequestID(ctx))
		err := next(ctx, conn)
		l.end(ctx, conn.Spec().Procedure, start, err)
		return err
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush passes flushes through, for handlers that assert http.Flusher directly.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer (flush, deadlines).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ReadFrom keeps the connection's sendfile path open to files served through the
// recorder: http.ServeContent copies with io.CopyN, which only finds it via io.ReaderFrom.
func (r *statusRecorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return io.Copy(r.ResponseWriter, src)
}

// WithHTTPLogging gives a plain HTTP handler the same request id and log line as RPCs.
func WithHTTPLogging(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = NewRequestID()
		}
		ctx := WithRequestID(r.Context(), id)
		w.Header().Set(HeaderRequestID, id)
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r.WithContext(ctx))
		log.InfoContext(ctx, "http", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start))
	})
}
