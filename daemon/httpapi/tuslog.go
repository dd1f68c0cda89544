package httpapi

import (
	"context"
	"log/slog"

	expslog "golang.org/x/exp/slog"
)

// tusLogger adapts tusd's logger (golang.org/x/exp/slog) to the daemon's
// log/slog handler. tusd logs every request event; those go to debug, so
// the daemon's own one line per request stays the default.
func tusLogger(h slog.Handler) *expslog.Logger {
	return expslog.New(tusHandler{h: h})
}

type tusHandler struct{ h slog.Handler }

func level(l expslog.Level) slog.Level {
	if l <= expslog.LevelInfo {
		return slog.LevelDebug
	}
	return slog.Level(l)
}

func (t tusHandler) Enabled(ctx context.Context, l expslog.Level) bool {
	return t.h.Enabled(ctx, level(l))
}

func (t tusHandler) Handle(ctx context.Context, r expslog.Record) error {
	out := slog.NewRecord(r.Time, level(r.Level), r.Message, r.PC)
	r.Attrs(func(a expslog.Attr) bool {
		out.AddAttrs(slog.Any(a.Key, a.Value.Any()))
		return true
	})
	return t.h.Handle(ctx, out)
}

func (t tusHandler) WithAttrs(attrs []expslog.Attr) expslog.Handler {
	conv := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		conv[i] = slog.Any(a.Key, a.Value.Any())
	}
	return tusHandler{h: t.h.WithAttrs(conv)}
}

func (t tusHandler) WithGroup(name string) expslog.Handler {
	return tusHandler{h: t.h.WithGroup(name)}
}
