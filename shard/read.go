package shard

import (
	"context"
	"errors"
	"fmt"

	"tally/cluster"
	"tally/fsm"
	"tally/internal/plant"
	"tally/ledger"
	"tally/stream"
)

// ReadOpts chooses how a read is served.
type ReadOpts struct {
	// Stale reads the local replica as it is.
	Stale bool
	// MinSeq, when set, reads the local replica once it has applied this
	// seq (read-your-writes without the leader).
	MinSeq uint64
}

// read serves fn at the requested consistency. The default is
// linearizable: the shard's leader takes a read index (after its term's
// barrier), waits until its FSM has applied it, reads, and then confirms
// with a quorum that it still led, so a deposed leader never answers.
func (h *Host) read(ctx context.Context, i int, o ReadOpts, fn func(f *fsm.FSM) error) error {
	r, err := h.Replica(i)
	if err != nil {
		return err
	}
	switch {
	case o.MinSeq > 0:
		if err := r.FSM.WaitSeq(ctx, o.MinSeq); err != nil {
			return fmt.Errorf("%w: shard %d has not applied seq %d: %v", cluster.ErrUnavailable, i, o.MinSeq, err)
		}
		return fn(r.FSM)
	case o.Stale, plant.StaleRead:
		return fn(r.FSM)
	}
	idx, err := r.Group.ReadIndex(ctx)
	if err != nil {
		return h.mapErr(r, err)
	}
	if err := r.FSM.WaitIndex(ctx, idx); err != nil {
		return fmt.Errorf("%w: shard %d: wait for index %d: %v", cluster.ErrUnavailable, i, idx, err)
	}
	if err := fn(r.FSM); err != nil {
		return err
	}
	return h.mapErr(r, r.Group.VerifyLeader(ctx))
}

func (h *Host) mapErr(r *Replica, err error) error {
	if errors.Is(err, cluster.ErrNotLeader) {
		return h.notLeader(r)
	}
	return err
}

// Account reads the account with state key k from shard i, with the seq
// the answer reflects. A missing account wraps fsm.ErrNotFound.
func (h *Host) Account(ctx context.Context, i int, k string, o ReadOpts) (a ledger.Account, seq uint64, err error) {
	err = h.read(ctx, i, o, func(f *fsm.FSM) error {
		a, seq, err = f.Account(k)
		return err
	})
	return a, seq, err
}

// AccountAt reads account key k of shard i as it was right after seq.
func (h *Host) AccountAt(ctx context.Context, i int, k string, seq uint64, o ReadOpts) (a ledger.Account, err error) {
	err = h.read(ctx, i, o, func(f *fsm.FSM) error {
		a, err = f.AccountAt(k, seq)
		return err
	})
	return a, err
}

// AccountAtTime reads account key k of shard i as it was right after the
// last event at or before log time t, and that event's seq. The seq is
// found and the account read within one read of fn, so a linearizable
// read covers both.
func (h *Host) AccountAtTime(ctx context.Context, i int, k string, t ledger.Time, o ReadOpts) (a ledger.Account, seq uint64, err error) {
	err = h.read(ctx, i, o, func(f *fsm.FSM) error {
		a, seq, err = f.AccountAtTime(k, t)
		return err
	})
	return a, seq, err
}

// Transfer reads the record of transfer id from shard i.
func (h *Host) Transfer(ctx context.Context, i int, id string, o ReadOpts) (r ledger.Record, seq uint64, err error) {
	err = h.read(ctx, i, o, func(f *fsm.FSM) error {
		r, seq, err = f.Transfer(id)
		return err
	})
	return r, seq, err
}

// History reads the events that touched account key k on shard i.
func (h *Host) History(ctx context.Context, i int, k string, after uint64, limit int, desc bool, o ReadOpts) (evs []ledger.Event, err error) {
	err = h.read(ctx, i, o, func(f *fsm.FSM) error {
		evs, err = f.History(k, after, limit, desc)
		return err
	})
	return evs, err
}

// Events reads a page of shard i's event log from the local replica.
func (h *Host) Events(i int, after uint64, limit int) ([]ledger.Event, error) {
	r, err := h.Replica(i)
	if err != nil {
		return nil, err
	}
	return r.FSM.Events(after, limit)
}

// Log is shard i's applied log on the local replica, for streams.
func (h *Host) Log(i int) (stream.Log, error) {
	r, err := h.Replica(i)
	if err != nil {
		return nil, err
	}
	return r.FSM, nil
}
