package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"tally/edge"
	"tally/ledger"
	"tally/stream"
)

// Limits of a stream read by the client.
const (
	// DefaultStreamIdle is how long a stream may stay silent before the
	// client takes it as cut off: the server sends a progress line after
	// a second without events, so five seconds of silence mean the node
	// or the path to it is gone, even when no TCP error says so.
	DefaultStreamIdle = 5 * time.Second
	// streamStart bounds the wait for a stream's headers when the client
	// has no timeout of its own.
	streamStart = 10 * time.Second
	// maxLine bounds one line of a stream: an event with its metadata.
	maxLine = 16 << 20
)

// Errors that end a stream.
var (
	// ErrStreamIdle ends a stream that sent nothing, not even a progress
	// line, for StreamOpts.Idle.
	ErrStreamIdle = errors.New("stream silent for too long: the node or the path to it is gone")
	// ErrStreamEnded ends a following stream that the server closed (it
	// shut down, or a proxy in between gave up): resume elsewhere.
	ErrStreamEnded = errors.New("the server ended a following stream")
)

// StreamOpts shapes one stream request (docs/streaming.md). The zero
// value reads every event that is applied now and ends.
type StreamOpts struct {
	// Follow keeps the stream going as events are applied.
	Follow bool
	// Types, Account and Currency filter the events sent (any when
	// empty); progress lines still flow, so a filtered reader moves.
	Types    []ledger.EventType
	Account  string
	Currency string
	// MinSeq makes a one-shard stream wait until the replica has applied
	// this seq before it starts (read-your-writes on any replica).
	MinSeq uint64
	// Limit, when positive, ends the stream after that many events.
	Limit int
	// Idle is how long the stream may stay silent before it ends with
	// ErrStreamIdle; 0 means DefaultStreamIdle.
	Idle time.Duration
	// CheckHashes recomputes each event's hash from its fields
	// (ledger.Event.ComputeHash, over the encoding its "enc" names) and
	// ends the stream with an error wrapping ErrChain when it differs:
	// the event changed after it was hashed. Linking each event to the
	// one before it (prev_hash) is Subscribe's part.
	CheckHashes bool
}

func (o *StreamOpts) filtered() bool {
	return len(o.Types) > 0 || o.Account != "" || o.Currency != ""
}

func (o *StreamOpts) query() url.Values {
	q := url.Values{}
	if o.Follow {
		q.Set("follow", "true")
	}
	if len(o.Types) > 0 {
		ts := make([]string, len(o.Types))
		for i, t := range o.Types {
			ts[i] = string(t)
		}
		q.Set("types", strings.Join(ts, ","))
	}
	if o.Account != "" {
		q.Set("account", o.Account)
	}
	if o.Currency != "" {
		q.Set("currency", o.Currency)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	return q
}

func (o *StreamOpts) idle() time.Duration {
	if o.Idle <= 0 {
		return DefaultStreamIdle
	}
	return o.Idle
}

// Progress is a progress line: how far the serving replica has looked at
// each shard's log (the last seq it read, whether it sent that event or a
// filter skipped it). A one-shard stream's progress has one entry.
type Progress struct {
	Seqs map[int]uint64
	Time ledger.Time
	// Epoch is the replica's restore epoch (0: never restored).
	Epoch uint64
}

// StreamItem is one line of a stream: an Event or a Progress, never both.
type StreamItem struct {
	Event    *ledger.Event
	Progress *Progress
	// Epoch is the restore epoch of the replica serving the stream (its
	// Tally-Epoch header; 0: never restored). Seqs of one shard name the
	// same events only within one epoch.
	Epoch uint64
}

// StreamShard reads one shard's events with seq > after, in seq order,
// from the answering replica, and calls fn with each event and each
// progress line, in the order they arrive, on the calling goroutine.
//
// It returns when ctx ends (ctx's error), when fn returns an error (that
// error), when the stream breaks or stays silent for the idle time (a
// transport error or ErrStreamIdle), or when a following stream is closed
// by the server (ErrStreamEnded). A stream that does not follow returns
// nil once the replica has sent all it had, its last item a progress
// line. The client's timeout bounds the wait for the stream to start,
// never the stream. It neither retries nor checks the hash chain:
// Subscribe does both.
func (c *Client) StreamShard(ctx context.Context, shard int, after uint64, o StreamOpts, fn func(StreamItem) error) error {
	q := o.query()
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if o.MinSeq > 0 {
		q.Set("min_seq", strconv.FormatUint(o.MinSeq, 10))
	}
	// Without follow the node answers one page of JSON unless asked for
	// server-sent events, which end once caught up as NDJSON would.
	return c.stream(ctx, shardPath(shard, "events"), q, !o.Follow, &o, fn)
}

// StreamAll reads every shard's events, shard i's after after[i] (a
// shard beyond the list from 0), interleaved, each shard's in seq order;
// otherwise it is StreamShard.
func (c *Client) StreamAll(ctx context.Context, after []uint64, o StreamOpts, fn func(StreamItem) error) error {
	q := o.query()
	if len(after) > 0 {
		q.Set("after", stream.FormatPositions(after))
	}
	return c.stream(ctx, "/v1/events", q, false, &o, fn)
}

// stream sends one stream request and reads its lines until it ends. A
// watchdog cancels the request when the stream is silent too long; it is
// stopped while fn runs, so a slow handler is never taken for a dead node.
func (c *Client) stream(ctx context.Context, path string, q url.Values, sse bool, o *StreamOpts, fn func(StreamItem) error) error {
	op := "GET " + path
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := streamStart
	if c.timeout > 0 {
		start = c.timeout
	}
	idle := o.idle()
	watchdog := time.AfterFunc(start, func() { cancel(ErrStreamIdle) })
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path+"?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Accept", "application/x-ndjson")
	c.authorize(req)
	if sse {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.streamFailed(ctx, op+" at "+req.URL.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody)) // a cut body still decodes to an *Error
		return decodeError(resp.StatusCode, body)
	}
	epoch, _ := strconv.ParseUint(resp.Header.Get(edge.EpochHeader), 10, 64) // absent (an older node): 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	watchdog.Reset(idle)
	for sc.Scan() {
		it, ok, err := parseLine(sc.Bytes(), sse)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if !ok {
			continue
		}
		if e := it.Event; e != nil && o.CheckHashes {
			if h := e.ComputeHash(); h != e.Hash {
				return fmt.Errorf("%s: %w: shard %d seq %d: hash %s is not that of the event (%s)", op, ErrChain, e.Shard, e.Seq, e.Hash, h)
			}
		}
		it.Epoch = epoch
		watchdog.Stop()
		if err := fn(it); err != nil {
			return err
		}
		watchdog.Reset(idle)
	}
	if err := sc.Err(); err != nil {
		return c.streamFailed(ctx, op+" at "+req.URL.Host, err)
	}
	if cause := context.Cause(ctx); cause != nil {
		return c.streamFailed(ctx, op+" at "+req.URL.Host, cause)
	}
	if o.Follow {
		return fmt.Errorf("%s at %s: %w", op, req.URL.Host, ErrStreamEnded)
	}
	return nil
}

// streamFailed says why a stream broke: the caller's ctx, the watchdog,
// or the connection (a transport error, so IsUnavailable holds for a
// refused dial).
func (c *Client) streamFailed(ctx context.Context, op string, err error) error {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, ErrStreamIdle):
		return fmt.Errorf("%s: %w", op, ErrStreamIdle)
	case cause != nil:
		// The caller's ctx ended: its own error, as every method returns.
		return cause
	}
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	return &transportError{op: op, err: err, sent: !isDialError(err)}
}

var (
	progressPrefix = []byte(`{"progress"`)
	ssePrefix      = []byte("data:")
)

// parseLine decodes one line of a stream; ok is false for a line that
// carries nothing (an SSE id, event name or blank line).
func parseLine(line []byte, sse bool) (it StreamItem, ok bool, err error) {
	if sse {
		if !bytes.HasPrefix(line, ssePrefix) {
			return it, false, nil
		}
		line = bytes.TrimPrefix(line[len(ssePrefix):], []byte(" "))
	}
	if len(bytes.TrimSpace(line)) == 0 {
		return it, false, nil
	}
	if bytes.HasPrefix(line, progressPrefix) {
		var p struct {
			Progress struct {
				Shard *int           `json:"shard"`
				Seq   *uint64        `json:"seq"`
				Seqs  map[int]uint64 `json:"seqs"`
				Time  ledger.Time    `json:"time"`
				Epoch uint64         `json:"epoch"`
			} `json:"progress"`
		}
		if err := json.Unmarshal(line, &p); err != nil {
			return it, false, fmt.Errorf("decode progress line: %w", err)
		}
		pr := &Progress{Seqs: p.Progress.Seqs, Time: p.Progress.Time, Epoch: p.Progress.Epoch}
		if p.Progress.Shard != nil && p.Progress.Seq != nil {
			pr.Seqs = map[int]uint64{*p.Progress.Shard: *p.Progress.Seq}
		}
		return StreamItem{Progress: pr}, true, nil
	}
	var e ledger.Event
	if err := json.Unmarshal(line, &e); err != nil {
		return it, false, fmt.Errorf("decode event line: %w", err)
	}
	return StreamItem{Event: &e}, true, nil
}
