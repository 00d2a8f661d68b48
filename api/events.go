package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"tally/edge"
	"tally/ledger"
	"tally/stream"
)

// eventService is what the event handlers need of the node.
type eventService interface {
	Shards() int
	Epoch(i int) uint64
	Events(i int, after uint64, limit int) ([]ledger.Event, error)
	WaitApplied(ctx context.Context, i int, seq uint64) error
	Follow(ctx context.Context, i int, after uint64, o stream.Options,
		emit func(seq uint64, raw []byte) error, progress func(seq uint64) error) error
	FollowAll(ctx context.Context, after []uint64, o stream.Options,
		emit func(shard int, seq uint64, raw []byte) error, progress func(pos []uint64) error) error
}

func (s *Server) eventRoutes() map[string]handler {
	return map[string]handler{
		"GET /v1/shards/{shard}/events": s.shardEvents,
		"GET /v1/events":                s.allEvents,
	}
}

// streamFunc is an answer written as a stream rather than one JSON value.
type streamFunc func(w http.ResponseWriter) error

// eventsQuery is what both event endpoints read from the query.
type eventsQuery struct {
	follow bool
	sse    bool
	filter *stream.Filter
	limit  int
}

func readEventsQuery(r *http.Request) (eventsQuery, error) {
	q := r.URL.Query()
	var eq eventsQuery
	switch f := q.Get("follow"); f {
	case "", "false":
	case "true":
		eq.follow = true
	default:
		return eq, edge.Invalid("follow must be true or false, not %q", f)
	}
	f, err := stream.ParseFilter(q.Get("types"), q.Get("account"), q.Get("currency"))
	if err != nil {
		return eq, edge.Invalid("%v", err)
	}
	eq.filter = f
	if eq.limit, err = limitQuery(r); err != nil {
		return eq, err
	}
	eq.sse = strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	return eq, nil
}

// shardEvents answers one shard's events: a page of JSON, or, with
// follow=true or Accept: text/event-stream, a stream (NDJSON or
// server-sent events) from this replica.
func (s *Server) shardEvents(r *http.Request) (any, error) {
	sh, err := shardParam(r, s.events.Shards())
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	after, e := edge.Uint(q, "after")
	if e != nil {
		return nil, e
	}
	minSeq, e := edge.Uint(q, "min_seq")
	if e != nil {
		return nil, e
	}
	eq, err := readEventsQuery(r)
	if err != nil {
		return nil, err
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		if after, err = resumeShard(id, sh); err != nil {
			return nil, err
		}
	}
	if minSeq > 0 {
		wait, cancel := context.WithTimeout(r.Context(), waitTimeout(r))
		err := s.events.WaitApplied(wait, sh, minSeq)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	if !eq.follow && !eq.sse && eq.filter == nil {
		evs, err := s.events.Events(sh, after, eq.limit)
		if err != nil {
			return nil, err
		}
		return page(evs, eq.limit), nil
	}
	if !eq.follow && !eq.sse {
		return s.filteredPage(r, sh, after, eq)
	}
	epoch := s.events.Epoch(sh)
	return streamFunc(func(w http.ResponseWriter) error {
		w.Header().Set(edge.EpochHeader, strconv.FormatUint(epoch, 10))
		out := newEventWriter(w, eq.sse)
		o := stream.Options{Filter: eq.filter, Follow: eq.follow, Limit: eq.limit, Flush: out.flush}
		err := s.events.Follow(r.Context(), sh, after, o,
			func(seq uint64, raw []byte) error {
				return out.event(func() string { return fmt.Sprintf("%d:%d", sh, seq) }, raw)
			},
			func(seq uint64) error {
				return out.progress(progress{Shard: &sh, Seq: &seq, Time: ledger.Time(time.Now().UnixNano()), Epoch: epoch})
			})
		return out.end(err)
	}), nil
}

// filteredPage answers a page of the events that pass a filter; next is
// the last seq looked at, so that the following page does not read the
// skipped events again.
func (s *Server) filteredPage(r *http.Request, sh int, after uint64, eq eventsQuery) (any, error) {
	evs := []json.RawMessage{}
	next := after
	o := stream.Options{Filter: eq.filter, Limit: pageLimit(eq.limit)}
	err := s.events.Follow(r.Context(), sh, after, o,
		func(seq uint64, raw []byte) error { evs, next = append(evs, raw), seq; return nil },
		func(seq uint64) error { next = seq; return nil })
	if err != nil {
		return nil, err
	}
	cursor := ""
	if next > after {
		cursor = strconv.FormatUint(next, 10)
	}
	return struct {
		Events []json.RawMessage `json:"events"`
		Next   string            `json:"next"`
	}{evs, cursor}, nil
}

// allEvents streams every shard's events from this node's replicas,
// interleaved; after lists where each shard starts (shard:seq pairs).
// Without follow=true the stream ends once it has caught up.
func (s *Server) allEvents(r *http.Request) (any, error) {
	after, err := stream.ParsePositions(r.URL.Query().Get("after"), s.events.Shards())
	if err != nil {
		return nil, edge.Invalid("after: %v", err)
	}
	eq, err := readEventsQuery(r)
	if err != nil {
		return nil, err
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		if after, err = stream.ParsePositions(id, s.events.Shards()); err != nil {
			return nil, edge.Invalid("Last-Event-ID: %v", err)
		}
	}
	epoch := s.events.Epoch(-1)
	return streamFunc(func(w http.ResponseWriter) error {
		w.Header().Set(edge.EpochHeader, strconv.FormatUint(epoch, 10))
		out := newEventWriter(w, eq.sse)
		pos := append([]uint64(nil), after...)
		o := stream.Options{Filter: eq.filter, Follow: eq.follow, Limit: eq.limit, Flush: out.flush}
		err := s.events.FollowAll(r.Context(), after, o,
			func(sh int, seq uint64, raw []byte) error {
				pos[sh] = seq
				return out.event(func() string { return stream.FormatPositions(pos) }, raw)
			},
			func(p []uint64) error {
				seqs := make(map[string]uint64, len(p))
				for i, v := range p {
					seqs[strconv.Itoa(i)] = v
				}
				copy(pos, p)
				return out.progress(progress{Seqs: seqs, Time: ledger.Time(time.Now().UnixNano()), Epoch: epoch})
			})
		return out.end(err)
	}), nil
}

// resumeShard reads a Last-Event-ID of a one-shard stream: "shard:seq".
func resumeShard(id string, sh int) (uint64, error) {
	s, seq, ok := strings.Cut(id, ":")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || s != strconv.Itoa(sh) || err != nil {
		return 0, edge.Invalid("Last-Event-ID %q is not %d:SEQ", id, sh)
	}
	return n, nil
}

// waitTimeout bounds a stream's wait for min_seq: the request's timeout
// (default edge.DefaultTimeout), though the stream itself runs until the
// reader leaves.
func waitTimeout(r *http.Request) time.Duration {
	d, e := edge.Timeout(r.URL.Query())
	if e != nil {
		return edge.DefaultTimeout
	}
	return d
}

// progress is a stream's progress line: how far the replica has looked,
// one shard's (Shard, Seq) or every shard's (Seqs).
type progress struct {
	Shard *int              `json:"shard,omitempty"`
	Seq   *uint64           `json:"seq,omitempty"`
	Seqs  map[string]uint64 `json:"seqs,omitempty"`
	Time  ledger.Time       `json:"time"`
	// Epoch is the replica's restore epoch, when it was restored.
	Epoch uint64 `json:"epoch,omitempty"`
}

// eventWriter writes a stream as NDJSON or as server-sent events, through
// a buffer that the stream flushes whenever it has sent all it read.
type eventWriter struct {
	w   http.ResponseWriter
	b   *bufio.Writer
	sse bool
}

// newEventWriter starts a stream's answer: its headers go out at once, so
// that a reader (and the proxy, which waits for them) knows the stream is
// open before the first event.
func newEventWriter(w http.ResponseWriter, sse bool) *eventWriter {
	o := &eventWriter{w: w, b: bufio.NewWriterSize(deadlineWriter{w}, 64<<10), sse: sse}
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	// A failed flush means the reader left; the stream's next write ends it.
	_ = o.flush()
	return o
}

// event writes one event; id, the server-sent event's id, is asked for
// only on such a stream.
func (o *eventWriter) event(id func() string, raw []byte) error {
	if !o.sse {
		o.b.Write(raw)
		return o.b.WriteByte('\n')
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return fmt.Errorf("stored event does not decode: %w", err)
	}
	fmt.Fprintf(o.b, "id: %s\nevent: %s\ndata: ", id(), head.Type)
	o.b.Write(raw)
	_, err := o.b.WriteString("\n\n")
	return err
}

func (o *eventWriter) progress(p progress) error {
	b, err := json.Marshal(struct {
		Progress progress `json:"progress"`
	}{p})
	if err != nil {
		return err
	}
	if o.sse {
		o.b.WriteString("event: progress\ndata: ")
	}
	o.b.Write(b)
	if o.sse {
		o.b.WriteByte('\n')
	}
	return o.b.WriteByte('\n')
}

// deadlineWriter gives each write of a stream StreamWriteTimeout: a
// stream has no deadline, and a reader that stopped reading must not hold
// it, and its goroutine, for ever.
type deadlineWriter struct{ w http.ResponseWriter }

func (d deadlineWriter) Write(p []byte) (int, error) {
	edge.LimitWrite(d.w, edge.StreamWriteTimeout)
	return d.w.Write(p)
}

// flush pushes buffered lines to the reader.
func (o *eventWriter) flush() error {
	if err := o.b.Flush(); err != nil {
		return err
	}
	edge.LimitWrite(o.w, edge.StreamWriteTimeout)
	if f, ok := o.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// end finishes a stream that ended with err: the stream just ends, and
// the reader resumes from the last seq it got (a failure inside a node is
// in its log).
func (o *eventWriter) end(err error) error {
	// A failed flush means the reader left; there is no one to tell.
	_ = o.flush()
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
