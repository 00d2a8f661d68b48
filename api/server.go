// Package api is the node's HTTP/JSON API: each handler decodes a
// request, calls the node's service (tally/node) and encodes its answer.
// What every request passes first (known route and query parameters,
// deadline, body limit, error answers) is the edge package's, shared with
// the proxy. Statuses and bodies are those of docs/api.md.
package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"time"

	"tally/edge"
	"tally/node"
)

// Server serves the API of one node. It is safe for concurrent use.
type Server struct {
	log     *slog.Logger
	mux     *http.ServeMux
	guard   *edge.Guard
	metrics *metrics
	// closing ends the event streams when the node shuts down (StopStreams).
	closing     context.Context
	stopStreams context.CancelFunc
	// patterns are the routes served through handlers, for the test that
	// keeps them and edge.Routes equal.
	patterns []string
	// The service, as each handler file sees it.
	accounts  accountService
	transfers transferService
	sagas     sagaService
	shards    shardService
	members   clusterService
	internal  internalService
	events    eventService
	consumers consumerService
	backups   backupService
}

// Option configures a Server.
type Option func(*Server)

// WithGuard makes the server admit requests by g: who may use which
// route. Without it every request is admitted (edge.Guard's zero value).
func WithGuard(g *edge.Guard) Option { return func(s *Server) { s.guard = g } }

// New returns the API of the node service svc.
func New(svc *node.Service, log *slog.Logger, opts ...Option) *Server {
	s := &Server{log: log, mux: http.NewServeMux(), accounts: svc, transfers: svc, sagas: svc,
		shards: svc, members: svc, internal: svc, events: svc, consumers: svc, backups: svc, guard: &edge.Guard{}}
	for _, o := range opts {
		o(s)
	}
	s.closing, s.stopStreams = context.WithCancel(context.Background())
	s.metrics = newMetrics(svc.Host())
	s.routes()
	return s
}

// StopStreams ends every event stream this server is sending, for a
// graceful shutdown (http.Server.RegisterOnShutdown): streams have no
// natural end. It is safe to call more than once.
func (s *Server) StopStreams() { s.stopStreams() }

// handler is one endpoint: it returns the 200 answer's body, or an error
// that node.Problem maps to the error answer.
type handler func(r *http.Request) (any, error)

func (s *Server) routes() {
	for _, group := range []map[string]handler{s.accountRoutes(), s.transferRoutes(), s.sagaRoutes(), s.eventRoutes(),
		s.shardRoutes(), s.clusterRoutes(), s.consumerRoutes(), s.backupRoutes(), {"POST " + node.InternalPrefix + "{op}": s.internalCall}} {
		for pattern, fn := range group {
			s.mux.Handle(pattern, s.serve(fn))
			s.patterns = append(s.patterns, pattern)
		}
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.mux.Handle("GET /readyz", s.serve(s.ready))
	s.mux.Handle("GET /metrics", s.metrics.handler())
	// Profiles of the running node (go tool pprof http://NODE/debug/pprof/profile).
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	s.mux.HandleFunc("/", edge.NoRoute)
}

// serve runs fn and writes its answer.
func (s *Server) serve(fn handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if st, ok := v.(streamFunc); ok {
			if err := st(w); err != nil {
				// The answer has started: log only.
				s.log.Error("stream failed", "path", r.URL.Path, "err", err)
			}
			return
		}
		if raw, ok := v.(text); ok {
			io.WriteString(w, string(raw))
			return
		}
		edge.WriteJSON(w, http.StatusOK, v)
	})
}

// text is a plain-text answer.
type text string

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	// A 500 is logged even when it reached here as an answer (a part of a
	// batch, another node's): an operator must see every internal error.
	e, reported := node.Problem(err)
	if reported || e.Status == http.StatusInternalServerError {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	edge.WriteError(w, e)
}

// ServeHTTP runs the edge's checks (route, query parameters, deadline,
// who the caller is and whether the route admits them, body limit), recovers from panics in handlers (a bug must not take the
// node down) and records metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: 200}
	route := "other"
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panic", "path", r.URL.Path, "panic", p)
			edge.WriteError(sw, edge.Internal("internal error"))
		}
		s.metrics.observe(route, sw.status, time.Since(start))
	}()
	rt, d, e := edge.Check(r)
	if rt == nil {
		edge.NoRoute(sw, r)
		return
	}
	route = rt.String()
	if e == nil {
		e = s.guard.Admit(r, rt)
	}
	if e != nil {
		edge.WriteError(sw, e)
		return
	}
	q := r.URL.Query()
	long := rt.Unbounded(q)
	ctx, cancel := s.deadline(r.Context(), q, d, long)
	defer cancel()
	if long {
		var stop context.CancelFunc
		ctx, stop = s.guard.Revoked(ctx, r, rt)
		defer stop()
	} else {
		edge.LimitWrite(sw, d+edge.WriteSlack)
	}
	if n, err := strconv.Atoi(r.Header.Get(edge.HopHeader)); err == nil && n > 0 {
		ctx = node.WithHops(ctx, n)
	}
	if q.Get("forward") == "false" {
		ctx = node.WithoutForwarding(ctx)
	}
	r.Body = http.MaxBytesReader(sw, r.Body, edge.MaxBody)
	s.mux.ServeHTTP(sw, r.WithContext(ctx))
}

// deadline is a request's context: it ends after d, but an answer that
// runs past its deadline (long: a stream that follows the log, a backup,
// a profile) runs until its reader leaves, unless it asked for a
// deadline, or until the node shuts down.
func (s *Server) deadline(parent context.Context, q url.Values, d time.Duration, long bool) (context.Context, context.CancelFunc) {
	if !long {
		return context.WithTimeout(parent, d)
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if q.Get("timeout") != "" {
		ctx, cancel = context.WithTimeout(parent, d)
	} else {
		ctx, cancel = context.WithCancel(parent)
	}
	stop := context.AfterFunc(s.closing, cancel)
	return ctx, func() { stop(); cancel() }
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (write
// deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// internalService is what the internal endpoint needs: the operations
// other nodes call through their Peer.
type internalService interface {
	Internal(ctx context.Context, op, shard string, body []byte) (any, error)
}

// internalCall serves another node's call (node.Peer).
func (s *Server) internalCall(r *http.Request) (any, error) {
	body, e := edge.Read(r)
	if e != nil {
		return nil, e
	}
	return s.internal.Internal(r.Context(), r.PathValue("op"), r.URL.Query().Get("shard"), body)
}

// shardParam reads the {shard} path value of a cluster of shards shards.
func shardParam(r *http.Request, shards int) (int, error) {
	n, err := strconv.Atoi(r.PathValue("shard"))
	if err != nil || n < 0 || n >= shards {
		return 0, edge.NotFound(edge.CodeShardNotFound, "shard %q does not exist (0 to %d)", r.PathValue("shard"), shards-1)
	}
	return n, nil
}

// shardQuery reads an optional ?shard= of a cluster of shards shards
// (nil when absent).
func shardQuery(r *http.Request, shards int) (*int, error) {
	q := r.URL.Query()
	if q.Get("shard") == "" {
		return nil, nil
	}
	n, e := edge.Uint(q, "shard")
	if e != nil {
		return nil, e
	}
	if n >= uint64(shards) {
		return nil, edge.Invalid("shard %d out of range (0 to %d)", n, shards-1)
	}
	i := int(n)
	return &i, nil
}

// limitQuery reads an optional ?limit= (0 when absent), bounded.
func limitQuery(r *http.Request) (int, error) {
	n, e := edge.Uint(r.URL.Query(), "limit")
	if e != nil {
		return 0, e
	}
	return int(min(n, 1<<20)), nil
}

func (s *Server) ready(*http.Request) (any, error) {
	if err := s.shards.Ready(); err != nil {
		return nil, err
	}
	return text("ready\n"), nil
}

// decode reads r's JSON body strictly into v.
func decode(r *http.Request, v any) error {
	if e := edge.Decode(r, v); e != nil {
		return e
	}
	return nil
}

// decodeBatch reads r's batch body, {"<list>": [item, ...]}, strictly
// into v; a fault in an item names the item (edge.DecodeBatch).
func decodeBatch(r *http.Request, v any, list string, item func() any) error {
	body, e := edge.Read(r)
	if e == nil {
		e = edge.DecodeBatch(body, v, list, item)
	}
	if e != nil {
		return e
	}
	return nil
}
