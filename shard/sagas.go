package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tally/cluster"
	"tally/fsm"
	"tally/ledger"
)

// SagaView is an open or finished saga with what the driver knows of it.
type SagaView struct {
	Record ledger.Record
	Info   *SagaInfo // nil unless this node leads the source shard
	Age    time.Duration
}

// Sagas lists shard i's open sagas (or aborted ones), read at o.
func (h *Host) Sagas(ctx context.Context, i int, aborted bool, limit int, o ReadOpts) ([]SagaView, error) {
	var recs []ledger.Record
	err := h.read(ctx, i, o, func(f *fsm.FSM) error {
		var err error
		recs, _, err = f.Sagas(aborted, limit)
		return err
	})
	if err != nil {
		return nil, err
	}
	r := h.replicas[i]
	out := make([]SagaView, len(recs))
	for k, rec := range recs {
		out[k] = SagaView{Record: rec, Age: time.Since(time.Unix(0, rec.Time))}
		if in, ok := r.saga.snapshot(rec.Transfer.ID); ok {
			out[k].Info = &in
		}
	}
	return out, nil
}

// SagaInfo returns the driver's view of saga id on shard i, if this node
// leads shard i and the saga is open.
func (h *Host) SagaInfo(i int, id string) (SagaInfo, bool) {
	r, err := h.Replica(i)
	if err != nil {
		return SagaInfo{}, false
	}
	return r.saga.snapshot(id)
}

// ErrNotSaga is returned when asked to resolve what is not an open saga.
var ErrNotSaga = errors.New("not an open saga")

// ResolveSaga asks shard i's driver, on its leader, to give saga id up:
// the destination is fenced, and the saga aborts, or completes if the
// destination had already credited. The note is recorded in the event.
func (h *Host) ResolveSaga(ctx context.Context, i int, id, note string) error {
	r, err := h.Replica(i)
	if err != nil {
		return err
	}
	if !r.Group.IsLeader() {
		return h.notLeader(r)
	}
	rec, _, err := r.FSM.Transfer(id)
	if errors.Is(err, fsm.ErrNotFound) || err == nil && (rec.Saga == nil || rec.Saga.Role != ledger.RoleSource || !rec.Open()) {
		return fmt.Errorf("saga %s on shard %d: %w", id, i, ErrNotSaga)
	}
	if err != nil {
		return err
	}
	if note == "" {
		note = "resolved by an operator"
	}
	r.saga.requestAbort(id, note)
	return nil
}

// WaitTransfer waits until transfer id on shard i is no longer in flight
// (a saga that completed or aborted) or ctx ends, and returns its record
// as this replica has it.
func (h *Host) WaitTransfer(ctx context.Context, i int, id string) (ledger.Record, error) {
	r, err := h.Replica(i)
	if err != nil {
		return ledger.Record{}, err
	}
	rec, _, err := r.FSM.Transfer(id)
	if err != nil || rec.Status != ledger.StatusInFlight {
		return rec, err
	}
	// Wait on the in-memory set of open sagas, not by reading the record
	// after every applied batch: many requests wait at once under load.
	if err := r.FSM.WaitSagaClosed(ctx, id); err != nil {
		return rec, nil
	}
	rec, _, err = r.FSM.Transfer(id)
	return rec, err
}

// Audit reads shard i's clearing accounts and sums at one point, through
// the leader.
func (h *Host) Audit(ctx context.Context, i int) (ledger.ShardBooks, error) {
	var a ledger.ShardBooks
	err := h.read(ctx, i, ReadOpts{}, func(f *fsm.FSM) error {
		var err error
		a, err = f.Audit()
		return err
	})
	if err != nil && !errors.Is(err, cluster.ErrNotLeader) {
		return a, fmt.Errorf("audit shard %d: %w", i, err)
	}
	return a, err
}
