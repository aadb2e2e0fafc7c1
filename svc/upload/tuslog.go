package upload

import (
	"context"
	"log/slog"

	expslog "golang.org/x/exp/slog"
)

// newTusLogger gives tusd (which logs through golang.org/x/exp/slog) the service's logger.
// tusd logs every request and chunk at info level; those become debug lines, since the
// service logs each request once already. A client dropping its connection mid-PATCH is
// how resumable uploads are used, so tusd's BodyReadError is info, not error.
func newTusLogger(log *slog.Logger) *expslog.Logger {
	return expslog.New(tusLogHandler{h: log.Handler()})
}

// tusLogHandler forwards x/exp/slog records to a log/slog handler.
type tusLogHandler struct{ h slog.Handler }

var _ expslog.Handler = tusLogHandler{}

func tusLevel(l expslog.Level, msg string) slog.Level {
	switch {
	case msg == "BodyReadError":
		return slog.LevelInfo
	case l >= expslog.LevelError:
		return slog.LevelError
	case l >= expslog.LevelWarn:
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

func (t tusLogHandler) Enabled(ctx context.Context, l expslog.Level) bool {
	return t.h.Enabled(ctx, min(tusLevel(l, ""), slog.LevelInfo))
}

func (t tusLogHandler) Handle(ctx context.Context, r expslog.Record) error {
	level := tusLevel(r.Level, r.Message)
	if !t.h.Enabled(ctx, level) {
		return nil
	}
	rec := slog.NewRecord(r.Time, level, "tus."+r.Message, r.PC)
	r.Attrs(func(a expslog.Attr) bool {
		if keep(a) {
			rec.AddAttrs(slog.Any(a.Key, a.Value.Any()))
		}
		return true
	})
	return t.h.Handle(ctx, rec)
}

func (t tusLogHandler) WithAttrs(attrs []expslog.Attr) expslog.Handler {
	out := make([]slog.Attr, 0, len(attrs))
	for _, a := range attrs {
		if keep(a) {
			out = append(out, slog.Any(a.Key, a.Value.Any()))
		}
	}
	return tusLogHandler{h: t.h.WithAttrs(out)}
}

func (t tusLogHandler) WithGroup(name string) expslog.Handler {
	return tusLogHandler{h: t.h.WithGroup(name)}
}

// keep drops tusd's requestId when empty: the service's request_id is on every line.
func keep(a expslog.Attr) bool {
	return a.Key != "requestId" || a.Value.String() != ""
}
