package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/sync/errgroup"

	"tally/edge"
	"tally/ledger"
)

// Where a shard starts when neither a consumer's stored offset nor
// SubscribeOptions.After says.
const (
	FromStart = "start" // from seq 1
	FromEnd   = "end"   // after the seq the cluster had applied when Subscribe started
)

// Defaults of a subscription.
const (
	// DefaultCommitEvery is how often a consumer's offsets are committed.
	DefaultCommitEvery = time.Second
	// defaultCallTimeout bounds the calls beside the stream: hashes,
	// offsets, the cluster's shape.
	defaultCallTimeout = 5 * time.Second
	// finalCommitTimeout bounds the commit made as Subscribe returns.
	finalCommitTimeout = 5 * time.Second
)

// SubscribeOptions says what Subscribe follows, from where, and how. Set
// it before calling Subscribe and do not change it while Subscribe runs.
type SubscribeOptions struct {
	// Endpoints are the addresses ("host:port") of nodes or proxies, at
	// least one. A stream that cannot start, breaks or stays silent moves
	// on to the next, round and round, with backoff in between.
	Endpoints []string
	// Shards lists the shards to follow, each on a stream of its own;
	// empty follows every shard on one all-shards stream.
	Shards []int
	// Follow keeps delivering as events are applied, until ctx ends.
	// Without it, Subscribe returns nil once every shard has delivered
	// what the serving replica had applied.
	Follow bool
	// From is FromStart (when empty) or FromEnd: where a shard starts when
	// neither the consumer's stored offset nor After gives a position.
	From string
	// After gives, per shard, the seq after which delivery starts (the
	// last one the caller processed). A consumer's stored offsets, when it
	// has any, take precedence.
	After map[int]uint64
	// Hashes gives, per shard in After, the hash of the event at that seq,
	// to check the first event delivered against without asking a node
	// (GET /v1/shards/{shard}/hash asks otherwise).
	Hashes map[int]ledger.Hash
	// Consumer names the consumer whose stored offsets say where to start,
	// and to which Subscribe commits the seq of each event the handler
	// accepted (PUT /v1/consumers/{name}/offsets/{shard}), batched every
	// CommitEvery and once more when it returns.
	Consumer string
	// CommitEvery is the commit period (default DefaultCommitEvery).
	CommitEvery time.Duration
	// Types, Account and Currency filter the events delivered on the
	// server. With a filter, the hash chain is checked only between
	// consecutive seqs, since skipped events never reach the client.
	Types    []ledger.EventType
	Account  string
	Currency string
	// Idle is how long a stream may stay silent before it is taken as cut
	// off (default DefaultStreamIdle).
	Idle time.Duration
	// Timeout bounds each call beside the streams, and the wait for a
	// stream to start (default 5s).
	Timeout time.Duration
	// NewBackOff makes the backoff between failed attempts; it is reset
	// after each attempt that delivered anything. The default waits 100 ms
	// to 2 s and never gives up; one that returns backoff.Stop makes
	// Subscribe return the last attempt's error.
	NewBackOff func() backoff.BackOff
	// Logger receives reconnections and failed commits (default: none).
	Logger *slog.Logger
	// HTTPClient sends the requests (default: one of the client's own).
	HTTPClient *http.Client
	// Epoch is the cluster's restore epoch that After, Hashes or the
	// consumer's offsets belong to, as the caller last saw it
	// (Subscription epochs are in StreamItem.Epoch). 0 takes the epoch of
	// the first stream; either way a stream of another epoch ends
	// Subscribe with ErrRestored.
	Epoch uint64
}

// ErrRestored ends a subscription whose streams come from a cluster
// restored from a backup since the positions it holds were taken: the
// same seqs may now name other events, and the caller decides where to
// start again (docs/streaming.md).
var ErrRestored = errors.New("restored: the cluster's restore epoch changed")

// Handler processes one event. Subscribe calls it on one goroutine at a
// time, each shard's events in seq order, every event at least once (once
// unless the process restarts before its offset was committed). A nil
// return acknowledges the event; an error ends Subscribe with that error,
// and the event is delivered again on the next start.
type Handler func(ctx context.Context, e ledger.Event) error

// ErrChain is matched (errors.Is) by every *ChainError.
var ErrChain = errors.New("hash chain broken")

// ChainError is a gap or a fork in a shard's log as the client received
// it: an event whose seq does not follow the previous one, an event whose
// prev_hash is not the previous event's hash, or progress beyond the last
// event of an unfiltered stream. Subscribe never skips one silently.
type ChainError struct {
	Shard    int
	Seq      uint64 // the seq received (of the event, or of the progress)
	Last     uint64 // the last seq delivered before it
	Want     ledger.Hash
	Got      ledger.Hash
	Endpoint string
	Fork     bool // false: a gap
}

func (e *ChainError) Error() string {
	if e.Fork {
		return fmt.Sprintf("shard %d: fork at seq %d from %s: prev_hash %s, the hash of seq %d is %s",
			e.Shard, e.Seq, e.Endpoint, e.Got, e.Last, e.Want)
	}
	return fmt.Sprintf("shard %d: gap from %s: seq %d after %d", e.Shard, e.Endpoint, e.Seq, e.Last)
}

func (e *ChainError) Unwrap() error { return ErrChain }

// Subscribe follows shards' logs through o.Endpoints and calls h with
// each event: per shard in order, from where the consumer (or After, or
// From) says, resuming after a reconnect from the last event h accepted,
// with duplicates (by shard and seq) dropped and the hash chain checked
// (docs/streaming.md). It blocks until ctx ends (ctx's error), h fails
// (h's error), the chain breaks (a *ChainError), a request is refused for
// good (a 4xx *Error, such as a bad filter), the backoff gives up (the
// last error), or, without Follow, every shard has caught up (nil).
func Subscribe(ctx context.Context, o SubscribeOptions, h Handler) error {
	s, err := newSubscription(o, h)
	if err != nil {
		return err
	}
	if err := s.start(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	committed := make(chan struct{})
	go func() { defer close(committed); s.commitLoop(ctx) }()
	err = s.run(ctx)
	cancel()
	<-committed
	s.commitFinal(context.WithoutCancel(ctx))
	return err
}

// subscription is one Subscribe call's state.
type subscription struct {
	o        SubscribeOptions
	h        Handler
	clients  []*Client
	log      *slog.Logger
	stream   StreamOpts
	filtered bool

	// cur is each followed shard's cursor; a cursor is touched only by
	// the goroutine that reads its shard.
	cur map[int]*cursor
	// hmu makes the handler run on one goroutine at a time.
	hmu sync.Mutex

	mu        sync.Mutex
	epoch     uint64 // the restore epoch seen, once seenEpoch
	seenEpoch bool
	done      map[int]uint64 // seq up to which each shard is processed
	committed map[int]uint64
	next      int // the endpoint the next attempt starts with
}

// cursor is where a shard's delivery stands: the last seq delivered (or
// skipped by a filter) and, when known, the hash of the event at it.
type cursor struct {
	seq   uint64
	hash  ledger.Hash
	known bool
}

func newSubscription(o SubscribeOptions, h Handler) (*subscription, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("subscribe: no endpoints")
	}
	if o.From != "" && o.From != FromStart && o.From != FromEnd {
		return nil, fmt.Errorf("subscribe: from %q is neither %q nor %q", o.From, FromStart, FromEnd)
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultCallTimeout
	}
	if o.CommitEvery <= 0 {
		o.CommitEvery = DefaultCommitEvery
	}
	s := &subscription{o: o, h: h, log: o.Logger, cur: map[int]*cursor{}, done: map[int]uint64{}, committed: map[int]uint64{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, addr := range o.Endpoints {
		opts := []Option{WithTimeout(o.Timeout)}
		if o.HTTPClient != nil {
			opts = append(opts, WithHTTPClient(o.HTTPClient))
		}
		s.clients = append(s.clients, New(addr, opts...))
	}
	s.stream = StreamOpts{Follow: o.Follow, Types: o.Types, Account: o.Account, Currency: o.Currency, Idle: o.Idle}
	s.filtered = s.stream.filtered()
	return s, nil
}

func (s *subscription) newBackOff() backoff.BackOff {
	if s.o.NewBackOff != nil {
		return s.o.NewBackOff()
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	b.MaxElapsedTime = 0 // a subscription outlives any outage; ctx ends it
	return b
}

// start sets every followed shard's cursor: the consumer's stored offset,
// else After, else From.
func (s *subscription) start(ctx context.Context) error {
	var st *ClusterStatus
	err := s.call(ctx, func(ctx context.Context, c *Client) (err error) { st, err = c.Cluster(ctx); return err })
	if err != nil {
		return fmt.Errorf("subscribe: cluster: %w", err)
	}
	shards := s.o.Shards
	if len(shards) == 0 {
		for i := range st.Shards {
			shards = append(shards, i)
		}
	}
	var stored map[int]uint64
	if s.o.Consumer != "" {
		if stored, err = s.offsets(ctx); err != nil {
			return err
		}
	}
	for _, sh := range shards {
		if sh < 0 || sh >= len(st.Shards) {
			return fmt.Errorf("subscribe: shard %d: the cluster has shards 0 to %d", sh, len(st.Shards)-1)
		}
		c := &cursor{}
		switch seq, ok := s.o.After[sh]; {
		case stored != nil:
			c.seq = stored[sh]
		case ok:
			c.seq = seq
			c.hash, c.known = s.o.Hashes[sh]
		case s.o.From == FromEnd:
			c.seq = st.Shards[sh].AppliedSeq
		}
		c.known = c.known || c.seq == 0 // the chain starts from the zero hash
		s.cur[sh] = c
		if stored == nil && s.o.Consumer != "" && c.seq > 0 {
			// A new consumer keeps where it started, so that a restart
			// before its first event does not start elsewhere.
			s.done[sh] = c.seq
		}
	}
	return nil
}

// offsets reads the consumer's stored offsets; nil when it has none.
func (s *subscription) offsets(ctx context.Context) (map[int]uint64, error) {
	var cs *Consumer
	err := s.call(ctx, func(ctx context.Context, c *Client) (err error) {
		cs, err = c.Consumer(ctx, s.o.Consumer)
		return err
	})
	if IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("subscribe: offsets of consumer %s: %w", s.o.Consumer, err)
	}
	out := map[int]uint64{}
	for _, sh := range cs.Shards {
		out[sh.Shard] = sh.Seq
		s.committed[sh.Shard] = sh.Seq
	}
	return out, nil
}

// call runs f on each endpoint in turn until one answers, and returns the
// last error when none does. A definite refusal (4xx) is not retried.
func (s *subscription) call(ctx context.Context, f func(ctx context.Context, c *Client) error) error {
	var err error
	for i := range s.clients {
		s.mu.Lock()
		c := s.clients[(s.next+i)%len(s.clients)]
		s.mu.Unlock()
		if err = f(ctx, c); err == nil || permanent(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// permanent reports whether err is an answer that another endpoint or a
// later attempt would give the same way: a 4xx other than 408, 421, 429.
func permanent(err error) bool {
	e, ok := errors.AsType[*Error](err)
	if !ok || e.Status/100 != 4 {
		return false
	}
	switch e.Status {
	case http.StatusRequestTimeout, http.StatusMisdirectedRequest, http.StatusTooManyRequests:
		return false
	}
	return true
}

// fatal marks an error that ends Subscribe rather than the attempt: the
// handler's, or a broken chain.
type fatal struct{ err error }

func (f fatal) Error() string { return f.err.Error() }
func (f fatal) Unwrap() error { return f.err }

// run follows the shards: one all-shards stream, or one stream per shard.
func (s *subscription) run(ctx context.Context) error {
	if len(s.o.Shards) == 0 {
		return s.follow(ctx, -1)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, sh := range s.o.Shards {
		g.Go(func() error { return s.follow(gctx, sh) })
	}
	err := g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return ctx.Err()
	}
	return err
}

// follow keeps one stream going (shard < 0: the all-shards one), moving
// to the next endpoint after each failure, until the stream is done or a
// fatal error ends it.
func (s *subscription) follow(ctx context.Context, shard int) error {
	b := s.newBackOff()
	for {
		c := s.endpoint()
		got, caughtUp, err := s.attempt(ctx, c, shard)
		if f, ok := errors.AsType[fatal](err); ok {
			return f.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && caughtUp {
			return nil
		}
		if err == nil {
			err = errors.New("the stream ended before it caught up")
		}
		if permanent(err) {
			return err
		}
		if got {
			b.Reset()
		}
		wait := b.NextBackOff()
		if wait == backoff.Stop {
			return fmt.Errorf("subscribe: giving up: %w", err)
		}
		s.log.Warn("stream interrupted; resuming on the next endpoint", "endpoint", c.Addr(), "shard", shard,
			"err", err, "wait", wait)
		s.rotate(c)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func (s *subscription) endpoint() *Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients[s.next%len(s.clients)]
}

// rotate moves the next attempt to the endpoint after c, unless another
// stream has already moved it.
func (s *subscription) rotate(c *Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clients[s.next%len(s.clients)] == c {
		s.next++
	}
}

// attempt reads one stream from c from the cursors on. got says whether
// anything arrived; caughtUp whether a stream that does not follow ended
// on its final progress line.
func (s *subscription) attempt(ctx context.Context, c *Client, shard int) (got, caughtUp bool, err error) {
	fn := func(it StreamItem) error {
		if err := s.checkEpoch(it.Epoch); err != nil {
			return fatal{err}
		}
		got, caughtUp = true, it.Progress != nil
		if it.Progress != nil {
			return s.progress(c, it.Progress)
		}
		return s.deliver(ctx, c, it.Event)
	}
	if shard >= 0 {
		err = c.StreamShard(ctx, shard, s.cur[shard].seq, s.stream, fn)
		return got, caughtUp, err
	}
	after := make([]uint64, len(s.cur))
	for sh, cur := range s.cur {
		after[sh] = cur.seq
	}
	err = c.StreamAll(ctx, after, s.stream, fn)
	return got, caughtUp, err
}

// deliver checks one event against its shard's cursor and hands it to
// the handler: a duplicate is dropped, a gap or fork is fatal.
func (s *subscription) deliver(ctx context.Context, c *Client, e *ledger.Event) error {
	cur, ok := s.cur[e.Shard]
	if !ok {
		return fatal{fmt.Errorf("subscribe: %s sent an event of shard %d, which is not followed", c.Addr(), e.Shard)}
	}
	if e.Seq <= cur.seq {
		return nil // seen before a reconnect: (shard, seq) is the key
	}
	if e.Seq != cur.seq+1 && !s.filtered {
		return fatal{&ChainError{Shard: e.Shard, Seq: e.Seq, Last: cur.seq, Endpoint: c.Addr()}}
	}
	if e.Seq == cur.seq+1 {
		if !cur.known {
			h, err := c.HashAt(ctx, e.Shard, cur.seq)
			if err != nil {
				return fmt.Errorf("hash of shard %d at %d: %w", e.Shard, cur.seq, err)
			}
			cur.hash, cur.known = h, true
		}
		if e.PrevHash != cur.hash {
			return fatal{&ChainError{Shard: e.Shard, Seq: e.Seq, Last: cur.seq, Want: cur.hash, Got: e.PrevHash,
				Endpoint: c.Addr(), Fork: true}}
		}
	}
	s.hmu.Lock()
	err := s.h(ctx, *e)
	s.hmu.Unlock()
	if err != nil {
		return fatal{err}
	}
	cur.seq, cur.hash, cur.known = e.Seq, e.Hash, true
	s.processed(e.Shard, e.Seq)
	return nil
}

// progress moves a filtered stream's cursors to where the replica has
// looked, so that a consumer commits past events the filter skipped. On
// an unfiltered stream progress beyond the last event is a gap.
func (s *subscription) progress(c *Client, p *Progress) error {
	for sh, seq := range p.Seqs {
		cur, ok := s.cur[sh]
		if !ok || seq <= cur.seq {
			continue
		}
		if !s.filtered {
			return fatal{&ChainError{Shard: sh, Seq: seq, Last: cur.seq, Endpoint: c.Addr()}}
		}
		cur.seq, cur.known = seq, false
		s.processed(sh, seq)
	}
	return nil
}

func (s *subscription) processed(shard int, seq uint64) {
	if s.o.Consumer == "" {
		return
	}
	s.mu.Lock()
	s.done[shard] = seq
	s.mu.Unlock()
}

// commitLoop commits the consumer's offsets every CommitEvery until ctx
// ends.
func (s *subscription) commitLoop(ctx context.Context) {
	if s.o.Consumer == "" {
		return
	}
	t := time.NewTicker(s.o.CommitEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.commit(ctx)
		}
	}
}

// commitFinal commits what is left as Subscribe returns, within
// finalCommitTimeout even when the caller's ctx has ended.
func (s *subscription) commitFinal(ctx context.Context) {
	if s.o.Consumer == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, finalCommitTimeout)
	defer cancel()
	s.commit(ctx)
}

// commit stores each shard's processed seq that is ahead of the committed
// one. A failed commit is logged and tried again next time: delivery is
// at least once, so a lost commit only means events delivered again.
func (s *subscription) commit(ctx context.Context) {
	s.mu.Lock()
	var todo [][2]uint64
	for sh, seq := range s.done {
		if seq > s.committed[sh] {
			todo = append(todo, [2]uint64{uint64(sh), seq})
		}
	}
	s.mu.Unlock()
	for _, t := range todo {
		sh, seq := int(t[0]), t[1]
		err := s.call(ctx, func(ctx context.Context, c *Client) error {
			_, err := c.SetOffset(ctx, s.o.Consumer, sh, seq)
			return err
		})
		if e, ok := errors.AsType[*Error](err); ok && e.Code == edge.CodeOffsetBackwards {
			// Another process of the same consumer, or a reset, is ahead:
			// the stored offset stays, and so does this one's delivery.
			s.log.Warn("consumer offset is ahead of this subscription", "consumer", s.o.Consumer, "shard", sh, "seq", seq)
			err = nil
		}
		if err != nil {
			s.log.Warn("commit consumer offset", "consumer", s.o.Consumer, "shard", sh, "seq", seq, "err", err)
			continue
		}
		s.mu.Lock()
		s.committed[sh] = max(s.committed[sh], seq)
		s.mu.Unlock()
	}
}

// checkEpoch compares a stream's restore epoch with the one the
// subscription holds positions of.
func (s *subscription) checkEpoch(e uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.seenEpoch {
		s.seenEpoch = true
		if s.o.Epoch == 0 {
			s.epoch = e
		} else {
			s.epoch = s.o.Epoch
		}
	}
	if e != s.epoch {
		return fmt.Errorf("%w: positions of epoch %d, the stream is of epoch %d", ErrRestored, s.epoch, e)
	}
	return nil
}
