// Package sink keeps a derived view of the ledger in another system: it
// follows every shard's events through the cluster's stream (as a named
// consumer) and hands them, in batches, to a Target (PostgreSQL,
// JetStream), then moves the consumer's offset in the cluster.
//
// The log is the source of truth and a view is its fold: a Target applies
// a batch idempotently, so that the batch a crash interrupted can be
// applied again, and says where to resume when it stores its own
// positions (in the same transaction as its rows). A Target that is down
// is retried with backoff, the reason shown, and the stream waits: no
// event is skipped, none applied twice.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"tally/client"
	"tally/edge"
	"tally/ledger"
)

// Target is a system that keeps a view of the log. Its methods are called
// from one goroutine.
type Target interface {
	// Name names the target in status lines and metrics ("postgres").
	Name() string
	// Positions returns, per shard, the seq of the last event the target
	// holds and that event's hash; ok is false when the target keeps no
	// positions of its own (the consumer's offsets in the cluster say
	// where to resume).
	Positions(ctx context.Context) (pos map[int]Position, ok bool, err error)
	// Apply makes events durable in the target, each shard's in seq
	// order. It may be given again events it already applied (after a
	// crash between Apply and the offset commit) and must then change
	// nothing twice. An error leaves the batch to be given again, after a
	// wait; an error wrapped with Permanent stops the sink instead (a
	// target that is not as the sink made it).
	Apply(ctx context.Context, events []ledger.Event) error
	// Close releases the target's connections.
	Close() error
}

// Permanent marks err as one that retrying cannot cure: Run stops with it.
func Permanent(err error) error { return backoff.Permanent(err) }

// Position is where a target stands on one shard.
type Position struct {
	Seq  uint64
	Hash ledger.Hash
}

// Options configure Run.
type Options struct {
	// Endpoints are the nodes or proxies to follow the stream through.
	Endpoints []string
	// Consumer names the cluster consumer whose offsets the sink moves
	// after each applied batch (so its lag shows in the cluster), and
	// where it resumes when the target keeps no positions.
	Consumer string
	// Batch bounds the events of one Apply (default 1000); FlushEvery
	// bounds how long an event waits for its batch to fill (default
	// 100 ms).
	Batch      int
	FlushEvery time.Duration
	// Status, when set, is called every second and on each change of
	// state with what the sink is doing.
	Status func(Status)
	// Logger receives retries and reconnections (default: none).
	Logger *slog.Logger
	// NewBackOff makes the wait between failed applies (default: 100 ms
	// to 10 s, never giving up).
	NewBackOff func() backoff.BackOff
}

// Status is what a sink is doing, for its progress line, --json and
// metrics.
type Status struct {
	Target  string         `json:"target"`
	State   string         `json:"state"` // "following", "retrying", "stopped"
	Reason  string         `json:"reason,omitempty"`
	Applied map[int]uint64 `json:"applied"` // seq per shard in the target
	Lag     map[int]uint64 `json:"lag,omitempty"`
	Events  int64          `json:"events"` // applied since the start
	Rate    float64        `json:"events_per_sec"`
	Retries int64          `json:"retries"`
}

// States of a sink.
const (
	StateFollowing = "following"
	StateRetrying  = "retrying"
	StateStopped   = "stopped"
)

// queueLen bounds the events read ahead of the target.
const queueLen = 4096

// Run follows the log into t until ctx ends (nil after a clean stop: the
// last batch applied and its offsets committed) or the stream fails for
// good (a broken hash chain, a refused request).
func Run(ctx context.Context, t Target, o Options) error {
	if o.Batch <= 0 {
		o.Batch = 1000
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NewBackOff == nil {
		o.NewBackOff = func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 100*time.Millisecond, 10*time.Second, 0
			return b
		}
	}
	r := &runner{t: t, o: o, events: make(chan ledger.Event, queueLen), committed: map[int]uint64{},
		st: Status{Target: t.Name(), State: StateFollowing, Applied: map[int]uint64{}}}
	for _, addr := range o.Endpoints {
		r.cls = append(r.cls, client.New(addr, client.WithTimeout(5*time.Second)))
	}
	sub, err := r.subscription(ctx)
	if err != nil {
		return err
	}
	subCtx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	subErr := make(chan error, 1)
	go func() {
		defer close(r.events)
		subErr <- client.Subscribe(subCtx, sub, func(ctx context.Context, e ledger.Event) error {
			select {
			case r.events <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	ticks, stopTicks := context.WithCancel(ctx)
	ticked := make(chan struct{})
	go func() { defer close(ticked); r.tick(ticks) }()
	err = r.apply(ctx)
	stopSub()
	serr := <-subErr
	stopTicks()
	<-ticked
	r.commit(context.WithoutCancel(ctx)) // what the last batch reached
	r.setState(StateStopped, "")
	if err == nil && serr != nil && !errors.Is(serr, context.Canceled) {
		err = serr
	}
	return err
}

type runner struct {
	t      Target
	o      Options
	cls    []*client.Client // one per endpoint, for the consumer's offsets
	events chan ledger.Event

	// committed is what the consumer's offsets in the cluster say, per
	// shard; tick's goroutine and the final commit only.
	committed map[int]uint64

	mu    sync.Mutex
	st    Status
	start time.Time
}

// subscription says where the stream starts: the target's own positions
// when it keeps them, else the consumer's offsets.
func (r *runner) subscription(ctx context.Context) (client.SubscribeOptions, error) {
	o := client.SubscribeOptions{Endpoints: r.o.Endpoints, Follow: true, Logger: r.o.Logger}
	var pos map[int]Position
	var ok bool
	err := r.retry(ctx, "read the target's positions", func() error {
		var err error
		pos, ok, err = r.t.Positions(ctx)
		return err
	})
	if err != nil {
		return o, err
	}
	if ok {
		o.After, o.Hashes = map[int]uint64{}, map[int]ledger.Hash{}
		for sh, p := range pos {
			o.After[sh], o.Hashes[sh] = p.Seq, p.Hash
			r.st.Applied[sh] = p.Seq
		}
		return o, nil
	}
	var c *client.Consumer
	err = r.retry(ctx, "read consumer "+r.o.Consumer, func() error {
		err := r.anyNode(func(cl *client.Client) (err error) { c, err = cl.Consumer(ctx, r.o.Consumer); return err })
		if refused(err) {
			return Permanent(err) // a 404 is a new consumer: no retry
		}
		return err
	})
	var ce *client.Error
	switch {
	case errors.As(err, &ce) && ce.Status == 404:
		return o, nil // a new consumer starts from the beginning
	case err != nil:
		return o, fmt.Errorf("read consumer %s: %w", r.o.Consumer, err)
	}
	o.After = map[int]uint64{}
	for _, s := range c.Shards {
		o.After[s.Shard] = s.Seq
		r.st.Applied[s.Shard] = s.Seq
	}
	return o, nil
}

// apply batches the stream's events into the target until the stream
// ends, then applies what is left.
func (r *runner) apply(ctx context.Context) error {
	r.start = time.Now()
	tick := time.NewTicker(r.o.FlushEvery)
	defer tick.Stop()
	var batch []ledger.Event
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := r.applyBatch(context.WithoutCancel(ctx), ctx, batch)
		batch = batch[:0]
		return err
	}
	for {
		select {
		case e, open := <-r.events:
			if !open {
				return flush()
			}
			if batch = append(batch, e); len(batch) >= r.o.Batch {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-tick.C:
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// applyBatch applies one batch, retrying while the target fails (until
// stop ends), and notes what the target now holds. The batch is applied
// even when stop has ended, so that a clean stop leaves nothing read but
// not applied; only the retries end.
func (r *runner) applyBatch(ctx, stop context.Context, batch []ledger.Event) error {
	err := r.retry(stop, "apply to "+r.t.Name(), func() error { return r.t.Apply(ctx, batch) })
	if err != nil {
		return err
	}
	last := map[int]uint64{}
	for _, e := range batch {
		last[e.Shard] = max(last[e.Shard], e.Seq)
	}
	r.mu.Lock()
	for sh, seq := range last {
		r.st.Applied[sh] = seq
	}
	r.st.Events += int64(len(batch))
	r.mu.Unlock()
	return nil
}

// retry runs fn until it succeeds or ctx ends, showing why it waits.
func (r *runner) retry(ctx context.Context, what string, fn func() error) error {
	b := backoff.WithContext(r.o.NewBackOff(), ctx)
	failed := false
	err := backoff.RetryNotify(fn, b, func(err error, wait time.Duration) {
		failed = true
		r.mu.Lock()
		r.st.Retries++
		r.mu.Unlock()
		reason := fmt.Sprintf("%s: %v (retrying in %s)", what, err, wait.Round(time.Millisecond))
		r.o.Logger.Warn("sink waiting", "reason", reason)
		r.setState(StateRetrying, reason)
	})
	if failed && err == nil {
		r.setState(StateFollowing, "")
	}
	return err
}

func (r *runner) setState(state, reason string) {
	r.mu.Lock()
	r.st.State, r.st.Reason = state, reason
	st := r.copyStatus()
	r.mu.Unlock()
	if r.o.Status != nil {
		r.o.Status(st)
	}
}

// tick commits the consumer's offsets and reports the status once a
// second, until ctx ends, off the apply loop so that a slow node never
// holds a batch back.
func (r *runner) tick(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.commit(ctx)
			r.report(ctx)
		}
	}
}

// commit moves the consumer's offsets in the cluster to what the target
// holds, for the shards that moved. They follow the target for its lag,
// and are where a target that keeps no positions resumes, so they never
// run ahead of it; a failed commit is tried again next time. At most one
// commit a second keeps the Raft writes few.
func (r *runner) commit(ctx context.Context) {
	r.mu.Lock()
	applied := maps.Clone(r.st.Applied)
	r.mu.Unlock()
	for _, sh := range slices.Sorted(maps.Keys(applied)) {
		seq := applied[sh]
		if seq == r.committed[sh] {
			continue
		}
		err := r.anyNode(func(cl *client.Client) error { _, err := cl.SetOffset(ctx, r.o.Consumer, sh, seq); return err })
		var ce *client.Error
		switch {
		case errors.As(err, &ce) && ce.Code == edge.CodeOffsetBackwards:
			// The consumer is further on (a reset by an operator, another
			// process): leave it, and do not ask again until we move.
			r.o.Logger.Info("the consumer's offset is ahead of the target; left as it is", "shard", sh, "seq", seq)
		case err != nil:
			r.o.Logger.Warn("commit the consumer's offset", "shard", sh, "seq", seq, "err", err)
			continue
		}
		r.committed[sh] = seq
	}
}

// anyNode runs fn with each endpoint's client in turn until one answers;
// a refusal (4xx) is final.
func (r *runner) anyNode(fn func(*client.Client) error) error {
	var err error
	for _, cl := range r.cls {
		if err = fn(cl); err == nil {
			return nil
		}
		if refused(err) {
			return err
		}
	}
	return err
}

// refused reports whether err is the cluster's refusal (a 4xx), which
// another node or another try would answer the same.
func refused(err error) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Status/100 == 4
}

// report sends the status with the lag read from the cluster.
func (r *runner) report(ctx context.Context) {
	lag := map[int]uint64{}
	var c *client.Consumer
	if r.anyNode(func(cl *client.Client) (err error) { c, err = cl.Consumer(ctx, r.o.Consumer); return err }) == nil {
		for _, s := range c.Shards {
			r.mu.Lock()
			applied := r.st.Applied[s.Shard]
			r.mu.Unlock()
			if s.AppliedSeq > applied {
				lag[s.Shard] = s.AppliedSeq - applied
			} else {
				lag[s.Shard] = 0
			}
		}
	}
	r.mu.Lock()
	r.st.Lag = lag
	if el := time.Since(r.start).Seconds(); el > 0 {
		r.st.Rate = float64(r.st.Events) / el
	}
	st := r.copyStatus()
	r.mu.Unlock()
	if r.o.Status != nil {
		r.o.Status(st)
	}
}

// copyStatus copies the status; r.mu is held.
func (r *runner) copyStatus() Status {
	st := r.st
	st.Applied, st.Lag = maps.Clone(r.st.Applied), maps.Clone(r.st.Lag)
	return st
}
