package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"tally/backup"
	"tally/cluster"
	"tally/fsm"
)

// Restore entries stay well inside one Raft entry and one Badger
// transaction, as the batcher's do.
const (
	restoreEntryBytes  = 256 << 10
	restoreEntryEvents = 1024
)

// Restore fills the shards of a new cluster, whose only member is this
// node, from the backup r: each shard's events go through its Raft log
// in restore entries (fsm/restore.go), then every shard records the cut
// and its restore epoch (the backup's plus one). Only then do its
// leaders take writes and finish the sagas the backup holds in flight.
// The caller has read the whole file once (backup.Check) so that a bad
// file is refused before anything is written; r is read again here and
// still checked as it goes.
func (h *Host) Restore(ctx context.Context, r *backup.Reader) error {
	hd := r.Header()
	if hd.Shards != len(h.replicas) {
		return fmt.Errorf("restore: the backup has %d shards, the node %d", hd.Shards, len(h.replicas))
	}
	for _, rep := range h.replicas {
		if err := waitLeader(ctx, rep); err != nil {
			return err
		}
	}
	epoch := hd.Epoch + 1
	var chunk [][]byte
	size, cur := 0, 0
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := h.proposeRestore(ctx, cur, fsm.EncodeRestoreEvents(epoch, chunk))
		chunk, size = chunk[:0], 0
		return err
	}
	for {
		sh, raw, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if sh != cur || size+len(raw) > restoreEntryBytes || len(chunk) == restoreEntryEvents {
			if err := flush(); err != nil {
				return err
			}
			cur = sh
		}
		chunk, size = append(chunk, raw), size+len(raw)
	}
	if err := flush(); err != nil {
		return err
	}
	for i, p := range hd.Cut {
		if err := h.proposeRestore(ctx, i, fsm.EncodeRestoreFinish(epoch, p.Seq, p.Head)); err != nil {
			return err
		}
	}
	return nil
}

// waitLeader waits until this node leads r's shard (a bootstrapped
// group elects its only member).
func waitLeader(ctx context.Context, r *Replica) error {
	for !r.Group.IsLeader() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("restore: shard %d has no leader here: %w", r.ID, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// proposeRestore applies one restore entry to shard i and returns its
// refusal as an error.
func (h *Host) proposeRestore(ctx context.Context, i int, data []byte) error {
	r := h.replicas[i]
	resp, err := r.Group.Apply(ctx, data)
	if err != nil {
		var nl *cluster.NotLeaderError
		if errors.As(err, &nl) {
			return fmt.Errorf("restore shard %d: %w", i, h.notLeader(r))
		}
		return fmt.Errorf("restore shard %d: %w", i, err)
	}
	rr, ok := resp.(*fsm.RestoreResponse)
	if !ok {
		return fmt.Errorf("restore shard %d: restore entry answered %T", i, resp)
	}
	if rr.Err != "" {
		return fmt.Errorf("restore shard %d: %s", i, rr.Err)
	}
	return nil
}

// Epoch returns shard i's restore epoch on this replica (fsm.FSM.Epoch):
// 0 unless the cluster was restored from a backup.
func (h *Host) Epoch(i int) uint64 {
	r, err := h.Replica(i)
	if err != nil {
		return 0
	}
	return r.FSM.Epoch()
}
