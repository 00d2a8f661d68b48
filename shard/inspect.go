package shard

import (
	"context"

	"tally/fsm"
	"tally/ledger"
)

// Names from fsm that the API uses, so it needs no import of fsm.
type (
	// Summary digests a replica's committed state.
	Summary = fsm.Status
	// VerifyReport is the outcome of a replay of a replica's log.
	VerifyReport = fsm.Report
	// SnapshotStats counts the snapshots a replica wrote.
	SnapshotStats = fsm.SnapshotStats
)

// Snapshots returns the counts of the snapshots this node's replica of
// shard i wrote.
func (h *Host) Snapshots(i int) (*SnapshotStats, error) {
	r, err := h.Replica(i)
	if err != nil {
		return nil, err
	}
	return r.FSM.Snapshots(), nil
}

// MaxPage bounds a page of events.
const MaxPage = fsm.MaxPage

// ErrNotFound is wrapped by reads of an absent account or transfer.
var ErrNotFound = fsm.ErrNotFound

// ErrFuture is wrapped by a read at a seq the replica has not applied.
var ErrFuture = fsm.ErrFuture

// Summary digests this node's committed state of shard i.
func (h *Host) Summary(i int) (Summary, error) {
	r, err := h.Replica(i)
	if err != nil {
		return Summary{}, err
	}
	return r.FSM.Status()
}

// Verify replays this node's event log of shard i and compares it with
// the stored state.
func (h *Host) Verify(ctx context.Context, i int) (VerifyReport, error) {
	r, err := h.Replica(i)
	if err != nil {
		return VerifyReport{}, err
	}
	return r.FSM.Verify(ctx)
}

// HashAt returns the hash-chain value of shard i right after seq.
func (h *Host) HashAt(i int, seq uint64) (ledger.Hash, error) {
	r, err := h.Replica(i)
	if err != nil {
		return ledger.Hash{}, err
	}
	return r.FSM.HashAt(seq)
}
