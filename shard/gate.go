package shard

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"tally/cluster"
	"tally/ledger"
)

// A backup's cut is whole when no saga is in flight inside it. Under load
// some saga is always in flight, so a backup briefly holds back new
// cross-shard transfers on every node (HoldSagas), waits until the sagas
// already started have finished (their steps are not held back), takes
// every shard's head as the cut, and lets transfers go again
// (ReleaseSagas). Same-shard writes never wait. The hold is a lease: a
// backup that dies holding it holds nothing for long.

// MaxSagaHold bounds a hold's lease.
const MaxSagaHold = 5 * time.Second

// sagaGate holds back the transfers that would start a saga. Every
// transfer command passes it; while no hold is on, passing costs two
// atomic operations and no look at the command.
type sagaGate struct {
	// heldUntil is the end of the hold's lease in Unix nanoseconds; 0:
	// open.
	heldUntil atomic.Int64
	// inFlight counts the transfer commands that passed while no hold was
	// on and are not yet answered: a hold waits for them, as they may
	// start sagas. Each adds itself before it looks at heldUntil, and a
	// hold sets heldUntil before it looks at inFlight, so no command can
	// slip between the two unseen.
	inFlight atomic.Int64
	mu       sync.Mutex
	opened   chan struct{} // closed when the last hold is released
	holders  int           // holds not yet released; guarded by mu
	// holds and waited count the holds and the commands that waited for
	// one (metrics).
	holds, waited atomic.Uint64
}

// hold holds the gate for lease. Holds of backups that overlap add up:
// the gate opens at the last one's release, or when the latest lease
// ends.
func (g *sagaGate) hold(lease time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.heldUntil.Load() == 0 {
		g.opened, g.holders = make(chan struct{}), 0
	}
	g.holders++
	g.heldUntil.Store(max(g.heldUntil.Load(), time.Now().Add(min(lease, MaxSagaHold)).UnixNano()))
	g.holds.Add(1)
}

func (g *sagaGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holders > 0 {
		g.holders--
	}
	if g.holders == 0 && g.heldUntil.Swap(0) != 0 {
		close(g.opened)
	}
}

// pass lets a transfer command through, waiting while a hold is on if
// crosses says the command may start a saga; the caller calls done when
// its command is answered. It fails, with nothing applied, when ctx ends
// first.
func (g *sagaGate) pass(ctx context.Context, crosses func() bool) (done func(), err error) {
	for {
		g.inFlight.Add(1)
		until := g.heldUntil.Load()
		wait := time.Duration(until - time.Now().UnixNano())
		if until == 0 || wait <= 0 {
			return func() { g.inFlight.Add(-1) }, nil
		}
		g.inFlight.Add(-1)
		if !crosses() {
			return func() {}, nil
		}
		g.mu.Lock()
		ch := g.opened
		g.mu.Unlock()
		g.waited.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("new cross-shard transfers are held for a backup: %w", cluster.ErrUnavailable)
		}
		t.Stop()
	}
}

// startsSaga reports whether transfer command cmd may start a saga.
func (h *Host) startsSaga(cmd *ledger.Command) bool {
	for k := range cmd.Transfers {
		if ledger.Crosses(&cmd.Transfers[k], len(h.replicas)) {
			return true
		}
	}
	return false
}

// HoldSagas holds back new sagas on this node for lease, and waits until
// every shard it leads has no saga in flight and no transfer command that
// passed before the hold is unanswered. It returns the shards it leads
// that got there before ctx ended.
func (h *Host) HoldSagas(ctx context.Context, lease time.Duration) []int {
	h.gate.hold(lease)
	var drained []int
	for _, r := range h.replicas {
		if !r.Group.IsLeader() {
			continue
		}
		for {
			// The commands in flight first: one that starts a saga and is
			// answered between the two looks has its saga open by then.
			changed := r.FSM.SagasChanged()
			idle := h.gate.inFlight.Load() == 0
			open, _ := r.FSM.OpenSagas(nil)
			if idle && len(open) == 0 {
				drained = append(drained, r.ID)
				break
			}
			select {
			case <-ctx.Done():
				return drained
			case <-changed:
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return drained
}

// ReleaseSagas lets new sagas start again on this node.
func (h *Host) ReleaseSagas() { h.gate.release() }

// SagaHolds returns how many times backups held new sagas back on this
// node, and how many commands waited for a hold to end.
func (h *Host) SagaHolds() (holds, waited uint64) { return h.gate.holds.Load(), h.gate.waited.Load() }
