package edge

import (
	"log/slog"
	"net/http"
	"time"
)

// Server timeouts, the same at a node and at the proxy.
const (
	// ReadTimeout bounds reading a whole request, body included, so a
	// client that stalls mid-body cannot hold a handler. Net/http clears
	// the read deadline once the handler has the body, so it does not cut
	// a long event stream.
	ReadTimeout = 30 * time.Second
	// IdleTimeout closes keep-alive connections nobody uses.
	IdleTimeout = 2 * time.Minute
	// WriteSlack is how long after its deadline an answer may still take
	// to write: a client that stops reading cannot hold a handler longer.
	WriteSlack = 10 * time.Second
	// StreamWriteTimeout bounds each write of an event stream, which has
	// no deadline of its own: a reader that reads nothing for this long
	// loses its stream and resumes from its last seq.
	StreamWriteTimeout = 30 * time.Second
)

// LimitWrite sets the write deadline of w's connection d from now. A
// writer that cannot take one (a test recorder) is left as it is.
func LimitWrite(w http.ResponseWriter, d time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
}

// NewServer returns the HTTP server a node or the proxy serves h with.
// It has no write timeout of its own, since event streams run for as long
// as their reader reads: each request sets its own write deadline
// (LimitWrite), its deadline plus WriteSlack, or StreamWriteTimeout per
// write of a stream.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
