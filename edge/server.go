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
)

// NewServer returns the HTTP server a node or the proxy serves h with.
// There is no write timeout: event streams run for as long as their
// reader stays.
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
