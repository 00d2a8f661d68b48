// Package nats publishes the ledger's events to a NATS JetStream stream:
// a sink.Target that sends every event, as the API's JSON, on the subject
// <prefix>.<shard>.<type> with the header Nats-Msg-Id: <shard>-<seq>.
//
// The target keeps no positions of its own: the sink resumes from its
// consumer's offsets in the cluster, which move only after Apply returned,
// and Apply returns only once JetStream acknowledged every message of the
// batch. What is sent again (the batch a crash or an outage interrupted)
// carries the same message ids, and JetStream's duplicate window drops
// it, so the stream holds each event once.
package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsio "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tally/ledger"
	"tally/sink"
)

var _ sink.Target = (*Target)(nil)

// Defaults and limits.
const (
	// DefaultPrefix is the first token of every subject.
	DefaultPrefix = "tally"
	// DefaultDuplicateWindow is how long JetStream remembers a message id.
	// A re-send is at most the batch in flight at a crash or an outage, so
	// the window must outlast the longest time a sink stays down (or its
	// server does) between sending a batch and committing its offsets.
	// JetStream keeps every id of the window in memory, so it is not
	// unbounded either.
	DefaultDuplicateWindow = 10 * time.Minute
	// DefaultAckWait bounds the wait for JetStream to acknowledge a batch.
	DefaultAckWait = 10 * time.Second
	// maxPending bounds the messages in flight without an ack; a batch
	// larger than this waits for acks before it sends more.
	maxPending = 4096
	// reconnectWait is the pause between attempts to reach the server.
	reconnectWait = 500 * time.Millisecond
	// connCheckEvery is how often a wait for acks looks at the connection.
	connCheckEvery = 100 * time.Millisecond
)

// Config configures a Target.
type Config struct {
	URL    string // nats://host:port, or several separated by commas
	Stream string // the JetStream stream, created when missing
	// Prefix is the subjects' first token(s) (default DefaultPrefix); the
	// stream takes <Prefix>.>.
	Prefix string
	// DuplicateWindow is the stream's duplicate window when the target
	// creates it (default DefaultDuplicateWindow).
	DuplicateWindow time.Duration
	// AckWait bounds the wait for a batch's acks (default DefaultAckWait).
	AckWait time.Duration
	// Logger receives connection changes (default: none).
	Logger *slog.Logger
}

// Target publishes events to JetStream. Its methods are called from one
// goroutine (the sink's), except Duplicates and Close, which are safe for
// concurrent use.
type Target struct {
	cfg Config
	nc  *natsio.Conn
	js  jetstream.JetStream

	ready bool // the stream has been found or created and checked

	// lastErr is why the connection is down, for the retry's reason.
	mu      sync.Mutex
	lastErr error

	duplicates atomic.Int64
	closeOnce  sync.Once
}

// New connects to the server. It does not wait for it: a server that is
// down is tried again in the background, and Positions and Apply fail
// (and the sink retries them, saying why) until it answers. Only a URL or
// a name that can never work is an error here.
func New(cfg Config) (*Target, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.DuplicateWindow <= 0 {
		cfg.DuplicateWindow = DefaultDuplicateWindow
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := checkPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if err := checkStream(cfg.Stream); err != nil {
		return nil, err
	}
	t := &Target{cfg: cfg}
	nc, err := natsio.Connect(cfg.URL,
		natsio.Name("tally sink"),
		// Keep trying for ever, from the first connect on: the sink shows
		// why it waits, and a server that comes back is used again.
		natsio.RetryOnFailedConnect(true),
		natsio.MaxReconnects(-1),
		natsio.ReconnectWait(reconnectWait),
		natsio.Timeout(2*time.Second),
		// No buffering while disconnected: a publish then fails at once
		// and the whole batch is sent again once the server is back,
		// instead of parts of it being flushed later behind our back.
		natsio.ReconnectBufSize(-1),
		natsio.ConnectHandler(func(*natsio.Conn) { t.setErr(nil) }),
		natsio.ReconnectHandler(func(*natsio.Conn) {
			t.setErr(nil)
			cfg.Logger.Info("reconnected to nats", "url", cfg.URL)
		}),
		natsio.DisconnectErrHandler(func(_ *natsio.Conn, err error) {
			if err != nil {
				t.setErr(err)
			}
		}),
		natsio.ReconnectErrHandler(func(_ *natsio.Conn, err error) { t.setErr(err) }),
	)
	if err != nil {
		return nil, fmt.Errorf("nats url %q: %w", cfg.URL, err)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(cfg.AckWait),
		jetstream.WithDefaultTimeout(cfg.AckWait))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	t.nc, t.js = nc, js
	return t, nil
}

// Name names the target in status lines and metrics.
func (t *Target) Name() string { return "nats" }

// Positions finds or creates the stream and checks it; the target keeps
// no positions (ok is false), so the sink resumes from its consumer's
// offsets. A stream that cannot take our subjects is a permanent error.
func (t *Target) Positions(ctx context.Context) (map[int]sink.Position, bool, error) {
	return nil, false, t.ensure(ctx)
}

// Apply publishes the events asynchronously and returns once JetStream
// acknowledged every one of them (nil), or with the first failure; the
// sink then gives the whole batch again, and the messages JetStream
// already stored are dropped as duplicates.
func (t *Target) Apply(ctx context.Context, events []ledger.Event) error {
	if err := t.ensure(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.AckWait)
	defer cancel()
	futs := make([]jetstream.PubAckFuture, 0, len(events))
	for i := range events {
		if err := t.connected(); err != nil {
			return err
		}
		m, err := Message(t.cfg.Prefix, &events[i])
		if err != nil {
			return sink.Permanent(err)
		}
		// The expected stream makes JetStream refuse the message if
		// another stream took the subject.
		f, err := t.js.PublishMsgAsync(m, jetstream.WithExpectStream(t.cfg.Stream), jetstream.WithStallWait(t.cfg.AckWait))
		if err != nil {
			return t.failed("publish", m, err)
		}
		futs = append(futs, f)
	}
	return t.wait(ctx, futs)
}

// wait waits for every future's ack. A connection lost meanwhile ends the
// wait at once rather than at the ack timeout: those acks will not come.
func (t *Target) wait(ctx context.Context, futs []jetstream.PubAckFuture) error {
	tick := time.NewTicker(connCheckEvery)
	defer tick.Stop()
	for _, f := range futs {
		for done := false; !done; {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					t.duplicates.Add(1)
				}
				done = true
			case err := <-f.Err():
				return t.failed("ack of", f.Msg(), err)
			case <-tick.C:
				if err := t.connected(); err != nil {
					t.ready = false
					return err
				}
			case <-ctx.Done():
				return fmt.Errorf("wait for jetstream's acks: %w", ctx.Err())
			}
		}
	}
	return nil
}

// Duplicates returns how many messages JetStream dropped as re-sends since
// the target was made.
func (t *Target) Duplicates() int64 { return t.duplicates.Load() }

// Close closes the connection; it may be called more than once.
func (t *Target) Close() error {
	t.closeOnce.Do(func() { t.nc.Close() })
	return nil
}

// ensure finds the stream, creating it when missing, and checks that it
// takes our subjects, once per target (and again after a failed publish,
// in case the stream was deleted).
func (t *Target) ensure(ctx context.Context) error {
	if t.ready {
		return nil
	}
	if err := t.connected(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.AckWait)
	defer cancel()
	s, err := t.js.Stream(ctx, t.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = t.js.CreateStream(ctx, t.streamConfig())
		if err != nil {
			return t.createFailed(err)
		}
		t.cfg.Logger.Info("created stream", "stream", t.cfg.Stream, "subjects", t.subjects())
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", t.cfg.Stream, err)
	}
	if err := t.check(s.CachedInfo().Config); err != nil {
		return sink.Permanent(err)
	}
	t.ready = true
	return nil
}

// streamConfig is the stream the target creates. Every option that
// matters to the guarantee is set on purpose rather than left to the
// server's defaults.
func (t *Target) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        t.cfg.Stream,
		Description: "the tally ledger's events, one message per (shard, seq)",
		Subjects:    []string{t.subjects()},
		// Kept on disk: the stream is a durable copy of the log.
		Storage: jetstream.FileStorage,
		// Limits retention with no limit: nothing is removed by reading.
		Retention: jetstream.LimitsPolicy,
		MaxMsgs:   -1,
		MaxBytes:  -1,
		MaxAge:    0,
		// How long a message id is remembered; see DefaultDuplicateWindow.
		Duplicates: t.cfg.DuplicateWindow,
		Replicas:   1,
	}
}

// check refuses a stream the target cannot use as it is: one that does
// not take <prefix>.>, or does not acknowledge.
func (t *Target) check(c jetstream.StreamConfig) error {
	want := t.subjects()
	if !slices.Contains(c.Subjects, want) {
		return fmt.Errorf("stream %s takes subjects %s, not %s: choose another --stream, or the prefix it takes with --subject-prefix",
			c.Name, strings.Join(c.Subjects, ","), want)
	}
	if c.NoAck {
		return fmt.Errorf("stream %s does not acknowledge messages (no_ack), so the sink cannot know what it stored", c.Name)
	}
	if c.Duplicates != t.cfg.DuplicateWindow {
		t.cfg.Logger.Warn("the stream's duplicate window is not the one asked for; keeping the stream's",
			"stream", c.Name, "duplicate_window", c.Duplicates, "asked", t.cfg.DuplicateWindow)
	}
	return nil
}

// createFailed explains a failed create: a clash with another stream's
// subjects never heals by waiting, an unreachable server may.
func (t *Target) createFailed(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 {
		return sink.Permanent(fmt.Errorf("create stream %s on %s: %w", t.cfg.Stream, t.subjects(), err))
	}
	return fmt.Errorf("create stream %s: %w", t.cfg.Stream, err)
}

// failed wraps a publish error; the next attempt checks the stream again.
func (t *Target) failed(what string, m *natsio.Msg, err error) error {
	t.ready = false
	if cerr := t.connected(); cerr != nil {
		return cerr
	}
	id := ""
	if m != nil {
		id = m.Header.Get(jetstream.MsgIDHeader)
	}
	return fmt.Errorf("%s %s: %w", what, id, err)
}

// connected returns nil while the connection is up, else why it is not.
func (t *Target) connected() error {
	if t.nc.IsConnected() {
		return nil
	}
	t.mu.Lock()
	err := t.lastErr
	t.mu.Unlock()
	if err == nil {
		err = errors.New(strings.ToLower(t.nc.Status().String()))
	}
	return fmt.Errorf("nats server %s unreachable: %w", t.cfg.URL, err)
}

func (t *Target) setErr(err error) {
	t.mu.Lock()
	t.lastErr = err
	t.mu.Unlock()
}

func (t *Target) subjects() string { return t.cfg.Prefix + ".>" }

// Subject is the subject of event e: <prefix>.<shard>.<type>.
func Subject(prefix string, e *ledger.Event) string {
	return prefix + "." + strconv.Itoa(e.Shard) + "." + string(e.Type)
}

// MsgID is event e's message id, its dedupe key: <shard>-<seq>.
func MsgID(e *ledger.Event) string {
	return strconv.Itoa(e.Shard) + "-" + strconv.FormatUint(e.Seq, 10)
}

// ParseMsgID returns the shard and seq of a message id.
func ParseMsgID(id string) (shard int, seq uint64, err error) {
	a, b, ok := strings.Cut(id, "-")
	if ok {
		if shard, err = strconv.Atoi(a); err == nil && shard >= 0 {
			if seq, err = strconv.ParseUint(b, 10, 64); err == nil && seq > 0 {
				return shard, seq, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("message id %q is not <shard>-<seq>", id)
}

// Message is the message that carries event e: the API's JSON of the
// event, with its message id.
func Message(prefix string, e *ledger.Event) (*natsio.Msg, error) {
	if !token(string(e.Type)) {
		return nil, fmt.Errorf("event %d-%d: type %q cannot be a subject token", e.Shard, e.Seq, e.Type)
	}
	data, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %d-%d: %w", e.Shard, e.Seq, err)
	}
	m := natsio.NewMsg(Subject(prefix, e))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, MsgID(e))
	return m, nil
}

// checkPrefix accepts one or more tokens separated by dots.
func checkPrefix(p string) error {
	for _, tok := range strings.Split(p, ".") {
		if !token(tok) {
			return fmt.Errorf("--subject-prefix %q: want tokens of letters, digits, - and _ separated by dots", p)
		}
	}
	return nil
}

// checkStream accepts what JetStream accepts as a stream name.
func checkStream(s string) error {
	if s == "" {
		return errors.New("--stream is required")
	}
	if strings.ContainsAny(s, ".*> \t\r\n/\\") {
		return fmt.Errorf("--stream %q: a stream name has no dots, wildcards, spaces or slashes", s)
	}
	return nil
}

// token reports whether s is a plain subject token: no wildcard, no dot,
// no space.
func token(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return true
}
