// Package stream follows shards' event logs for readers outside the
// cluster: one shard's events in seq order, or every shard's interleaved,
// as they are applied, with progress marks while nothing passes.
//
// A stream reads the replica's stored events a page at a time and never
// the Raft log, so only applied (hence committed) events ever leave a
// node. It holds at most a page per shard: a reader slower than the log
// falls behind and is fed from storage when it asks for more, so no
// reader can make a node buffer without limit, and nothing is skipped.
package stream

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sync/errgroup"

	"tally/internal/plant"
)

// Limits of a stream.
const (
	// Page is how many events a stream reads from storage at a time: with
	// the queue below, it bounds the memory one stream holds per shard.
	Page = 256
	// Idle is how long a stream stays silent before it sends progress.
	Idle = time.Second
	// queue is how many pages of all shards' events wait for the writer of
	// an all-shards stream.
	queue = 4
)

// Log is one shard's applied log on this node's replica (fsm.FSM). Its
// methods are safe for concurrent use.
type Log interface {
	// EventsRaw returns the JSON of up to limit events after seq after,
	// as the API serves them, in seq order; seqs have no gaps.
	EventsRaw(after uint64, limit int) ([][]byte, error)
	// Applied returns the applied Raft index and event seq.
	Applied() (index, seq uint64)
	// WaitSeq blocks until seq is applied or ctx ends.
	WaitSeq(ctx context.Context, seq uint64) error
}

// Options shape a stream.
type Options struct {
	// Filter passes the events to send; nil passes every event.
	Filter *Filter
	// Follow keeps the stream going as events are applied; without it the
	// stream ends once it has sent every event applied when it started.
	Follow bool
	// Idle is the silence after which progress is sent (default Idle).
	Idle time.Duration
	// Limit, when positive, ends the stream after that many events.
	Limit int
	// Flush, when set, is called when the stream has sent all it has read
	// and is about to read or wait for more: the moment to push buffered
	// output to the reader.
	Flush func() error
}

func (o *Options) flush() error {
	if o.Flush == nil {
		return nil
	}
	return o.Flush()
}

func (o *Options) idle() time.Duration {
	if o.Idle <= 0 {
		return Idle
	}
	return o.Idle
}

// Shard sends the events of one shard's log with seq > after to emit, in
// seq order, and calls progress with the last seq it has looked at
// whenever it has sent nothing for the idle time (with a filter, events it
// skipped count as looked at), and once more when a stream that does not
// follow has caught up. It returns nil when such a stream has caught up or
// reached its limit, ctx's error when ctx ends,
// and emit's or progress's error when they fail (the reader left).
func Shard(ctx context.Context, log Log, after uint64, o Options, emit func(seq uint64, raw []byte) error,
	progress func(seq uint64) error) error {
	cursor, sent := after, 0
	if plant.StreamSkip && after > 0 {
		// Planted bug (selftest): the position is taken as the seq to
		// send next, so a resumed stream starts one event late.
		cursor++
	}
	quiet := time.Now()
	for {
		page, err := log.EventsRaw(cursor, Page)
		if err != nil {
			return err
		}
		for _, raw := range page {
			cursor++
			ok, err := o.Filter.Match(raw)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if err := emit(cursor, raw); err != nil {
				return err
			}
			sent++
			quiet = time.Now()
			if o.Limit > 0 && sent >= o.Limit {
				return nil
			}
		}
		if err := o.flush(); err != nil {
			return err
		}
		if len(page) > 0 {
			if time.Since(quiet) >= o.idle() {
				if err := progress(cursor); err != nil {
					return err
				}
				quiet = time.Now()
			}
			continue
		}
		if !o.Follow {
			// Caught up: the position is where a next stream resumes.
			return progress(cursor)
		}
		wait, cancel := context.WithTimeout(ctx, max(o.idle()-time.Since(quiet), time.Millisecond))
		err = log.WaitSeq(wait, cursor+1)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			// Nothing new for the idle time: say how far this replica is.
			if err := progress(cursor); err != nil {
				return err
			}
			quiet = time.Now()
		}
	}
}

// item is one shard's page of matching events, or its position once it
// has caught up (raw empty).
type item struct {
	shard  int
	seqs   []uint64
	raw    [][]byte
	cursor uint64
}

// All sends the events of every shard of logs (shard i's after after[i])
// to emit, each shard's in seq order, the shards interleaved as their
// events are read. It calls progress with every shard's position (the
// last seq looked at) whenever it has sent nothing for the idle time. It
// ends as Shard does; without Follow, once every shard has caught up.
func All(ctx context.Context, logs []Log, after []uint64, o Options, emit func(shard int, seq uint64, raw []byte) error,
	progress func(pos []uint64) error) error {
	if len(after) != len(logs) {
		return errors.New("stream: one position per shard is needed")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan item, queue)
	g, gctx := errgroup.WithContext(ctx)
	per := o
	per.Limit, per.Flush = 0, nil
	per.Idle = o.idle() / 2
	for i, log := range logs {
		g.Go(func() error { return readShard(gctx, i, log, after[i], per, ch) })
	}
	done := make(chan error, 1)
	go func() { done <- g.Wait(); close(ch) }()
	err := write(ctx, ch, after, o, emit, progress)
	cancel()
	if gerr := <-done; err == nil && gerr != nil && !errors.Is(gerr, context.Canceled) {
		err = gerr
	}
	return err
}

// readShard follows one shard for All, a page at a time into ch.
func readShard(ctx context.Context, i int, log Log, after uint64, o Options, ch chan<- item) error {
	var pending item
	flush := func() error {
		if len(pending.raw) == 0 {
			return nil
		}
		select {
		case ch <- pending:
		case <-ctx.Done():
			return ctx.Err()
		}
		pending = item{shard: i}
		return nil
	}
	pending.shard = i
	// Hand each page over as soon as it is read, so that live events wait
	// for no later ones.
	o.Flush = flush
	err := Shard(ctx, log, after, o, func(seq uint64, raw []byte) error {
		pending.seqs, pending.raw, pending.cursor = append(pending.seqs, seq), append(pending.raw, raw), seq
		if len(pending.raw) >= Page {
			return flush()
		}
		return nil
	}, func(seq uint64) error {
		if err := flush(); err != nil {
			return err
		}
		select {
		case ch <- item{shard: i, cursor: seq}:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return err
}

// write is All's writer: it sends what the shards read and the progress.
func write(ctx context.Context, ch <-chan item, after []uint64, o Options,
	emit func(shard int, seq uint64, raw []byte) error, progress func(pos []uint64) error) error {
	pos := append([]uint64(nil), after...)
	tick := time.NewTicker(o.idle() / 4)
	defer tick.Stop()
	quiet, sent := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case it, ok := <-ch:
			if !ok {
				// Every shard caught up (a stream that does not follow):
				// say where a next stream resumes.
				return progress(pos)
			}
			for k, raw := range it.raw {
				if err := emit(it.shard, it.seqs[k], raw); err != nil {
					return err
				}
				quiet = time.Now()
				if sent++; o.Limit > 0 && sent >= o.Limit {
					return nil
				}
			}
			pos[it.shard] = max(pos[it.shard], it.cursor)
			if len(ch) == 0 {
				if err := o.flush(); err != nil {
					return err
				}
			}
		case <-tick.C:
			if time.Since(quiet) < o.idle() {
				continue
			}
			if err := progress(pos); err != nil {
				return err
			}
			if err := o.flush(); err != nil {
				return err
			}
			quiet = time.Now()
		}
	}
}
