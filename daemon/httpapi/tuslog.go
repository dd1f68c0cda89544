package httpapi

import (
	"context"
	"log/slog"
	"strings"

	"github.com/tus/tusd/v2/pkg/handler"
	expslog "golang.org/x/exp/slog"
)

// tusLogger adapts tusd's logger (golang.org/x/exp/slog) to the daemon's
// log/slog handler. tusd logs every request event; those go to debug, so
// the daemon's own one line per request stays the default. An upload body
// that the client cut (see cutByClient) is a warning, not an error.
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

// cutByClient are the body read errors of tusd that mean the client
// stopped sending: its connection closed or was reset, or it sent nothing
// for body_timeout. The bytes that arrived stay; the client resumes.
var cutByClient = []string{handler.ErrUnexpectedEOF.ErrorCode, handler.ErrConnectionReset.ErrorCode, handler.ErrReadTimeout.ErrorCode}

// bodyCut is the message of a body cut by the client.
const bodyCut = "upload cut: the client stopped sending before the end of the body; the upload keeps the bytes that arrived and resumes from its offset"

func (t tusHandler) Handle(ctx context.Context, r expslog.Record) error {
	lvl, msg := level(r.Level), r.Message
	var attrs []slog.Attr
	r.Attrs(func(a expslog.Attr) bool {
		if msg == "BodyReadError" && a.Key == "error" {
			for _, code := range cutByClient {
				if strings.HasPrefix(a.Value.String(), code+":") {
					lvl, msg = slog.LevelWarn, bodyCut
				}
			}
		}
		attrs = append(attrs, slog.Any(a.Key, a.Value.Any()))
		return true
	})
	if !t.h.Enabled(ctx, lvl) {
		return nil
	}
	out := slog.NewRecord(r.Time, lvl, msg, r.PC)
	out.AddAttrs(attrs...)
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
