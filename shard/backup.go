package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"tally/backup"
	"tally/fsm"
	"tally/ledger"
)

// A backup is taken from this node's replicas of every shard: each is a
// prefix of its shard's committed log, so the cut (backup.Cut) is taken
// at what this node has applied. Events never change once applied, so
// the file is written from any number of read transactions after the
// cut is chosen, while writes go on.

// BackupHeader chooses a cut of this node's replicas that keeps every
// saga whole and returns the header of a backup at that cut. The cut
// starts from heads (one seq per shard: the leaders' heads while sagas
// were held, HoldSagas), once this node's replicas have applied them, or
// from what they have applied when heads is nil; the cut rule lowers it
// where a saga would be half inside. The header counts the sagas still in
// flight at the cut.
func (h *Host) BackupHeader(ctx context.Context, heads []uint64) (backup.Header, error) {
	hd := backup.Header{Format: backup.FormatVersion, Shards: len(h.replicas), Created: time.Now().UTC()}
	if heads != nil && len(heads) != len(h.replicas) {
		return hd, fmt.Errorf("%d heads for %d shards", len(heads), len(h.replicas))
	}
	logs := make([]backup.Log, len(h.replicas))
	start := make([]uint64, len(h.replicas))
	for i, r := range h.replicas {
		if r.FSM.Restoring() {
			return hd, fmt.Errorf("shard %d: %w", i, ErrRestoring)
		}
		logs[i] = &replicaLog{ctx: ctx, f: r.FSM, seen: map[uint64]ledger.Event{}, recs: map[string]uint64{}}
		if heads == nil {
			_, start[i] = r.FSM.Applied()
		} else if err := r.FSM.WaitSeq(ctx, heads[i]); err != nil {
			return hd, fmt.Errorf("shard %d: waiting to apply seq %d: %w", i, heads[i], err)
		} else {
			start[i] = heads[i]
		}
		hd.Epoch = max(hd.Epoch, r.FSM.Epoch())
	}
	cut, err := backup.Cut(logs, start)
	if err != nil {
		return hd, err
	}
	for i, r := range h.replicas {
		head, err := r.FSM.HashAt(cut[i])
		if err != nil {
			return hd, fmt.Errorf("shard %d: head at %d: %w", i, cut[i], err)
		}
		hd.Cut = append(hd.Cut, backup.Point{Shard: i, Seq: cut[i], Head: head})
		n, err := inFlightAt(ctx, r, cut[i])
		if err != nil {
			return hd, fmt.Errorf("shard %d: sagas in flight at %d: %w", i, cut[i], err)
		}
		hd.InFlight += n
	}
	return hd, nil
}

// inFlightAt counts the sagas of source shard r that were in flight at
// seq: held at or before it, ended after it or not yet. Those open now
// are in memory; those that ended since are among the events after seq,
// which near a recent cut are few.
func inFlightAt(ctx context.Context, r *Replica, seq uint64) (int, error) {
	ids := map[string]bool{}
	open, err := r.FSM.OpenSagas(nil)
	if err != nil {
		return 0, err
	}
	for _, rec := range open {
		if rec.Saga != nil && rec.Saga.Role == ledger.RoleSource && rec.Seq <= seq {
			ids[rec.Transfer.ID] = true
		}
	}
	_, now := r.FSM.Applied()
	for after := seq; after < now; {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		evs, err := r.FSM.Events(after, int(min(backupPage, now-after)))
		if err != nil {
			return 0, err
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if e.Type != ledger.SagaCompleted && e.Type != ledger.SagaAborted {
				continue
			}
			rec, _, err := r.FSM.Transfer(e.Data.PendingID)
			if err != nil {
				return 0, fmt.Errorf("event %d: saga %q: %w", e.Seq, e.Data.PendingID, err)
			}
			if rec.Seq <= seq {
				ids[e.Data.PendingID] = true
			}
		}
		after = evs[len(evs)-1].Seq
	}
	return len(ids), nil
}

// ErrRestoring is returned for a backup of a node whose shards are
// being restored.
var ErrRestoring = errors.New("being restored")

// backupPage is how many events a backup reads at a time.
const backupPage = 1000

// WriteBackup writes the backup of header hd (from BackupHeader) to w,
// reading every shard's events from this node's replicas, a page at a
// time.
func (h *Host) WriteBackup(ctx context.Context, hd backup.Header, w io.Writer) (backup.Summary, error) {
	bw, err := backup.NewWriter(w, hd)
	if err != nil {
		return backup.Summary{}, err
	}
	for i, r := range h.replicas {
		for after := uint64(0); after < hd.Cut[i].Seq; {
			if err := ctx.Err(); err != nil {
				return backup.Summary{}, err
			}
			evs, err := r.FSM.EventsStored(after, int(min(backupPage, hd.Cut[i].Seq-after)))
			if err != nil {
				return backup.Summary{}, fmt.Errorf("shard %d: %w", i, err)
			}
			if len(evs) == 0 {
				return backup.Summary{}, fmt.Errorf("shard %d: no events after %d", i, after)
			}
			for _, raw := range evs {
				if err := bw.Event(raw); err != nil {
					return backup.Summary{}, err
				}
			}
			after += uint64(len(evs))
		}
		if err := bw.EndShard(); err != nil {
			return backup.Summary{}, err
		}
	}
	return bw.Close()
}

// replicaLog is what the cut rule reads of a replica. The rule walks
// down from the cut, pass after pass, so it reads a page ending at the
// event asked for and keeps what it read: the events it looks at are
// those of the last seconds before the cut, not the history.
type replicaLog struct {
	ctx  context.Context
	f    *fsm.FSM
	seen map[uint64]ledger.Event
	// recs keeps the record seqs read: they never change, and each pass
	// of the rule asks again for the same sagas.
	recs map[string]uint64
}

func (l *replicaLog) Event(seq uint64) (ledger.Event, error) {
	if e, ok := l.seen[seq]; ok {
		return e, nil
	}
	if err := l.ctx.Err(); err != nil {
		return ledger.Event{}, err
	}
	after := seq - min(seq, cutPage)
	evs, err := l.f.Events(after, int(seq-after))
	if err != nil {
		return ledger.Event{}, err
	}
	if len(l.seen)+len(evs) > cutCache {
		// A walk far down (a shard with an empty cut makes the rule look
		// at every event) reads again rather than hold the history.
		clear(l.seen)
	}
	for _, e := range evs {
		l.seen[e.Seq] = e
	}
	e, ok := l.seen[seq]
	if !ok {
		return ledger.Event{}, fmt.Errorf("event %d not found", seq)
	}
	return e, nil
}

// cutPage is how many events the cut rule reads at a time, and cutCache
// how many it keeps per shard.
const (
	cutPage  = 256
	cutCache = 64 << 10
)

func (l *replicaLog) RecordSeq(id string) (uint64, bool, error) {
	if seq, ok := l.recs[id]; ok {
		return seq, true, nil
	}
	r, _, err := l.f.Transfer(id)
	if errors.Is(err, fsm.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if len(l.recs) < cutCache {
		l.recs[id] = r.Seq
	}
	return r.Seq, true, nil
}
