// Package api is the node's HTTP/JSON API: it decodes and validates every
// request at the edge, runs it on this node's replica when it leads the
// shard or forwards it to the leader, and maps results and errors to the
// statuses of docs/api.md.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"tally/cluster"
	"tally/ledger"
	"tally/shard"
)

// Limits at the edge.
const (
	MaxBody        = 4 << 20
	DefaultTimeout = 10 * time.Second
	MaxTimeout     = 60 * time.Second
	maxHops        = 2
	hopHeader      = "X-Tally-Hops"
)

// Host is what the API needs of the node's shard host.
type Host interface {
	NodeID() string
	HTTPAddr() string
	RaftAddr() string
	Shards() int
	Leader(i int) (id, http string)
	Submit(ctx context.Context, i int, cmd ledger.Command) ([]ledger.Result, error)
	Account(ctx context.Context, i int, key string, o shard.ReadOpts) (ledger.Account, uint64, error)
	AccountAt(ctx context.Context, i int, key string, seq uint64, o shard.ReadOpts) (ledger.Account, error)
	Transfer(ctx context.Context, i int, id string, o shard.ReadOpts) (ledger.Record, uint64, error)
	History(ctx context.Context, i int, key string, after uint64, limit int, desc bool, o shard.ReadOpts) ([]ledger.Event, error)
	Events(i int, after uint64, limit int) ([]ledger.Event, error)
	Status(i int) (shard.ReplicaStatus, error)
	Summary(i int) (shard.Summary, error)
	Verify(ctx context.Context, i int) (shard.VerifyReport, error)
	HashAt(i int, seq uint64) (ledger.Hash, error)
	Join(ctx context.Context, i int, id, raftAddr, httpAddr string) error
	WaitTransfer(ctx context.Context, i int, id string) (ledger.Record, error)
	Sagas(ctx context.Context, i int, aborted bool, limit int, o shard.ReadOpts) ([]shard.SagaView, error)
	SagaInfo(i int, id string) (shard.SagaInfo, bool)
	ResolveSaga(ctx context.Context, i int, id, note string) error
	Audit(ctx context.Context, i int) (ledger.ShardBooks, error)
	Leave(ctx context.Context, i int, id string) error
	TransferLeader(ctx context.Context, i int, to string) error
}

// Server serves the API of one node.
type Server struct {
	h       Host
	log     *slog.Logger
	hc      *http.Client
	mux     *http.ServeMux
	metrics *metrics
}

// New returns the API of host h.
func New(h Host, log *slog.Logger) *Server {
	s := &Server{h: h, log: log, mux: http.NewServeMux(),
		hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}}
	s.metrics = newMetrics(h)
	s.routes()
	return s
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("POST /v1/accounts", s.createAccounts)
	m.HandleFunc("GET /v1/accounts/{id}", s.getAccount)
	m.HandleFunc("POST /v1/accounts/{id}/close", s.closeAccount)
	m.HandleFunc("GET /v1/accounts/{id}/history", s.history)
	m.HandleFunc("POST /v1/transfers", s.createTransfers)
	m.HandleFunc("GET /v1/transfers/{id}", s.getTransfer)
	m.HandleFunc("GET /v1/sagas", s.sagas)
	m.HandleFunc("POST /v1/sagas/{id}/resolve", s.resolveSaga)
	m.HandleFunc("GET /v1/audit", s.audit)
	m.HandleFunc("GET /v1/shards/{shard}/audit", s.shardAudit)
	m.HandleFunc("POST "+shard.InternalCommandsPath, s.internalCommand)
	m.HandleFunc("GET /v1/shards/{shard}/events", s.events)
	m.HandleFunc("GET /v1/shards/{shard}/state", s.shardState)
	m.HandleFunc("GET /v1/shards/{shard}/verify", s.verify)
	m.HandleFunc("GET /v1/shards/{shard}/hash", s.hashAt)
	m.HandleFunc("GET /v1/cluster", s.clusterStatus)
	m.HandleFunc("GET /v1/cluster/local", s.clusterLocal)
	m.HandleFunc("POST /v1/cluster/join", s.join)
	m.HandleFunc("POST /v1/cluster/leave", s.leave)
	m.HandleFunc("POST /v1/cluster/transfer-leader", s.transferLeader)
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	m.HandleFunc("GET /readyz", s.ready)
	m.Handle("GET /metrics", s.metrics.handler())
	// Profiles of the running node (go tool pprof http://NODE/debug/pprof/profile).
	m.HandleFunc("GET /debug/pprof/", pprof.Index)
	m.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	m.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	m.HandleFunc("/", s.noRoute)
}

// noRoute answers what no route takes: 405 when the path has routes for
// other methods (the catch-all pattern would otherwise hide the mux's own
// 405), else 404.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host}
		if _, p := s.mux.Handler(probe); m != r.Method && p != "" && p != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
			Message: r.Method + " is not allowed on " + r.URL.Path + "; use " + strings.Join(allow, " or ")})
		return
	}
	writeError(w, &apiError{Status: http.StatusNotFound, Code: "not_found", Message: "no route for " + r.Method + " " + r.URL.Path})
}

// ServeHTTP applies the request deadline, recovers from panics in
// handlers (a bug must not take the node down) and records metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: 200}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panic", "path", r.URL.Path, "panic", p)
			writeError(sw, &apiError{Status: 500, Code: "internal", Message: "internal error"})
		}
		_, pattern := s.mux.Handler(r)
		s.metrics.observe(pattern, sw.status, time.Since(start))
	}()
	d, err := timeoutOf(r)
	if err != nil {
		writeError(sw, badRequest(err.Error()))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	r.Body = http.MaxBytesReader(sw, r.Body, MaxBody)
	s.mux.ServeHTTP(sw, r.WithContext(ctx))
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func timeoutOf(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout")
	if v == "" {
		return DefaultTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > MaxTimeout {
		return 0, fmt.Errorf("timeout must be a duration up to %s", MaxTimeout)
	}
	return d, nil
}

// apiError is an error answer: {"error": {...}}.
type apiError struct {
	Status     int    `json:"-"`
	Code       string `json:"code"`
	Message    string `json:"message"`
	LeaderHTTP string `json:"leader_http,omitempty"`
	Index      *int   `json:"index,omitempty"`
	Result     string `json:"result,omitempty"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func badRequest(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "invalid_request", Message: msg}
}

func itemError(i int, what string, p *ledger.Problem) *apiError {
	e := badRequest(fmt.Sprintf("%s[%d]: %s", what, i, p.Msg))
	e.Index, e.Result = &i, string(p.Code)
	return e
}

func notFound(code, msg string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: code, Message: msg}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if err := enc.Encode(v); err != nil {
		// The client has gone; nothing else to tell it.
		return
	}
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.Status, map[string]*apiError{"error": e})
}

// fail maps an error from the host to an answer: definite failures are
// 503, possible commits 504; not-found is the caller's 404.
func (s *Server) fail(w http.ResponseWriter, err error) {
	writeError(w, s.toAPI(err))
}

func (s *Server) toAPI(err error) *apiError {
	var ae *apiError
	var nl *shard.NotLeaderError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &nl):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: err.Error(), LeaderHTTP: nl.LeaderHTTP}
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		return &apiError{Status: http.StatusGatewayTimeout, Code: "outcome_unknown", Message: err.Error() + "; retry with the same ids"}
	case errors.Is(err, cluster.ErrUnavailable), errors.Is(err, cluster.ErrNotLeader),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: err.Error()}
	case errors.Is(err, shard.ErrNotSaga):
		return &apiError{Status: http.StatusConflict, Code: "not_in_flight", Message: err.Error()}
	case errors.Is(err, shard.ErrFuture):
		return badRequest(err.Error())
	case errors.Is(err, shard.ErrNoShard):
		return notFound("shard_not_found", err.Error())
	}
	s.log.Error("request failed", "err", err)
	return &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
}

// decode reads a JSON body strictly: unknown fields, trailing data and a
// body over the limit are errors. The body is read whole first, so a body
// over the limit is a 413 wherever the excess is.
func decode(r *http.Request, v any) *apiError {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return decodeError(err)
	}
	return decodeBytes(b, v)
}

func decodeBytes(b []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("body has data after the JSON value")
	}
	return nil
}

// decodeBatch decodes a batch body, {"<key>": [item, ...]}, like decode.
// When the fault is in an item, the error names the item's index and
// result code as docs/api.md promises. The items are decoded one by one
// to find it only after the whole body failed, so a good body is decoded
// once.
func decodeBatch(r *http.Request, v any, key string, item func() any) *apiError {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return decodeError(err)
	}
	ae := decodeBytes(b, v)
	if ae == nil || ae.Status != http.StatusBadRequest {
		return ae
	}
	if i, ok := badItem(b, key, item); ok {
		ae.Index = &i
		ae.Message = fmt.Sprintf("%s[%d]: %s", key, i, ae.Message)
		if ae.Result == "" {
			ae.Result = string(ledger.InvalidRequest)
		}
	}
	return ae
}

// badItem returns the index of the first item of b's key array that does
// not decode strictly on its own; false when the envelope itself is at
// fault.
func badItem(b []byte, key string, item func() any) (int, bool) {
	var env map[string]json.RawMessage
	var items []json.RawMessage
	if json.Unmarshal(b, &env) != nil || json.Unmarshal(env[key], &items) != nil {
		return 0, false
	}
	for i, raw := range items {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if dec.Decode(item()) != nil {
			return i, true
		}
	}
	return 0, false
}

func decodeError(err error) *apiError {
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &mbe):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "request_too_large",
			Message: fmt.Sprintf("body is larger than %d bytes", MaxBody)}
	case errors.As(err, &ute):
		e := badRequest(fmt.Sprintf("field %s: %.40s does not fit %s", ute.Field, ute.Value, ute.Type))
		if len(ute.Field) >= 6 && ute.Field[len(ute.Field)-6:] == "amount" {
			e.Result = string(ledger.AmountInvalid)
		}
		return e
	case errors.As(err, &se):
		return badRequest(fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, err))
	case errors.Is(err, io.EOF):
		return badRequest("empty body")
	}
	return badRequest("malformed JSON: " + err.Error())
}

func (s *Server) shardParam(r *http.Request) (int, *apiError) {
	n, err := strconv.Atoi(r.PathValue("shard"))
	if err != nil || n < 0 || n >= s.h.Shards() {
		return 0, notFound("shard_not_found", fmt.Sprintf("shard %q does not exist (0 to %d)", r.PathValue("shard"), s.h.Shards()-1))
	}
	return n, nil
}

func uintParam(r *http.Request, name string) (uint64, *apiError) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, badRequest(fmt.Sprintf("%s must be a non-negative integer", name))
	}
	return n, nil
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	for i := 0; i < s.h.Shards(); i++ {
		if id, http := s.h.Leader(i); id == "" || http == "" {
			writeError(w, &apiError{Status: 503, Code: "unavailable", Message: fmt.Sprintf("shard %d has no known leader", i)})
			return
		}
	}
	io.WriteString(w, "ready\n")
}
