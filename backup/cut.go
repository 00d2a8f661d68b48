package backup

import (
	"fmt"
	"time"

	"tally/ledger"
)

// Log is what the cut rule reads of one shard: a replica's applied
// events and its transfer records. Its methods are called from one
// goroutine.
type Log interface {
	// Event returns the event at seq (1 to the replica's applied seq).
	Event(seq uint64) (ledger.Event, error)
	// RecordSeq returns the seq of the event that created transfer
	// record id (a saga's hold on its source shard, or its credit
	// decision, under ledger.SagaKey, on its destination), and false
	// when this replica holds no such record. That seq never changes
	// once the record exists.
	RecordSeq(id string) (uint64, bool, error)
}

// Skew bounds how far apart the clocks of two nodes may be. The cut rule
// looks at the events whose log time is at most Skew before the earliest
// event at a shard's cut (see Cut).
const Skew = 10 * time.Second

// Cut lowers heads (one seq per shard, each at most that shard's applied
// seq in logs) to a cut that keeps every cross-shard saga whole:
//
//   - a credit decision (SagaCredited, SagaCreditRejected) inside the cut
//     on the destination has the saga's hold (SagaDebitHeld) inside on
//     the source;
//   - an end (SagaCompleted, SagaAborted) inside on the source has the
//     credit decision it followed inside on the destination.
//
// A saga whose hold is inside and whose decision is not is inside as an
// in-flight saga, as the live cluster held it. A violation lowers the
// cut of the shard holding the later event to just before it, until no
// violation is left: cuts only go down, so this ends.
//
// Only events near the cut can violate: the partner of a violating event
// lies beyond another shard's cut, so it happened after the event at that
// cut, and the violating event after its partner. Cut therefore looks at
// each shard's events from its cut down to those logged more than Skew
// before the earliest event at any cut (every event, when some cut is 0),
// which assumes node clocks within Skew of each other.
func Cut(logs []Log, heads []uint64) ([]uint64, error) {
	cut := append([]uint64(nil), heads...)
	for changed := true; changed; {
		changed = false
		floor, err := timeFloor(logs, cut)
		if err != nil {
			return nil, err
		}
		for i := range logs {
			lowered, err := lowerShard(logs, cut, i, floor)
			if err != nil {
				return nil, fmt.Errorf("cut shard %d: %w", i, err)
			}
			changed = changed || lowered
		}
	}
	return cut, nil
}

// timeFloor is the log time below which no event can violate the rule:
// Skew before the earliest event at a cut, or 0 (look at everything)
// when a cut is empty.
func timeFloor(logs []Log, cut []uint64) (ledger.Time, error) {
	var floor ledger.Time
	for i, l := range logs {
		if cut[i] == 0 {
			return 0, nil
		}
		e, err := l.Event(cut[i])
		if err != nil {
			return 0, err
		}
		if i == 0 || e.Time < floor {
			floor = e.Time
		}
	}
	return floor - ledger.Time(Skew), nil
}

// lowerShard looks at shard i's events from its cut down to floor and
// lowers its cut below the lowest event that breaks the rule, if any.
func lowerShard(logs []Log, cut []uint64, i int, floor ledger.Time) (bool, error) {
	lowered := false
	for seq := cut[i]; seq > 0; seq-- {
		e, err := logs[i].Event(seq)
		if err != nil {
			return lowered, err
		}
		if e.Time < floor {
			break
		}
		ok, err := whole(logs, cut, i, &e)
		if err != nil {
			return lowered, err
		}
		if !ok {
			cut[i], lowered = seq-1, true
		}
	}
	return lowered, nil
}

// whole reports whether event e of shard i has the partner it depends on
// inside the cut.
func whole(logs []Log, cut []uint64, i int, e *ledger.Event) (bool, error) {
	if e.Data.Peer == nil {
		return true, nil
	}
	peer := *e.Data.Peer
	if peer < 0 || peer >= len(logs) || peer == i {
		return false, fmt.Errorf("event %d: saga peer shard %d", e.Seq, peer)
	}
	var id string
	switch e.Type {
	case ledger.SagaCredited, ledger.SagaCreditRejected:
		if e.Data.Transfer == nil {
			return false, fmt.Errorf("event %d: saga decision without transfer", e.Seq)
		}
		id = e.Data.Transfer.ID // the hold on the source
	case ledger.SagaCompleted, ledger.SagaAborted:
		id = ledger.SagaKey(i, e.Data.PendingID) // the decision on the destination
	default:
		return true, nil
	}
	seq, ok, err := logs[peer].RecordSeq(id)
	if err != nil {
		return false, err
	}
	return ok && seq <= cut[peer], nil
}
