package shard_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"tally/shard/shardtest"
)

// TestSnapshotCatchUp wipes a follower's data while it is down and the
// leaders snapshot and compact their logs, so that on restart it can only
// catch up by installing a snapshot, then the rest of the log.
func TestSnapshotCatchUp(t *testing.T) {
	c := shardtest.New(t, 3, 4)
	w := newWorkload(t, c) // for its accounts; the writes below are sequential
	write := func(round string, n int) {
		t.Helper()
		for s, tg := range w.tags {
			for i := 0; i < n; i++ {
				wantOK(t, submit(t, c, transfers(xfer(fmt.Sprintf("%s.%d.%d", round, s, i), acct("src", tg), acct("dst", tg), 1))))
			}
		}
	}
	write("a", 5)

	const victim = 3
	c.Kill(victim)
	if err := os.RemoveAll(c.Dir(victim)); err != nil {
		t.Fatal(err)
	}
	write("b", 5)
	// Keep only 2 entries behind each snapshot. shard.Config does not
	// expose the threshold; Raft's reloadable config does.
	for _, h := range c.Live() {
		for s := 0; s < c.Shards(); s++ {
			r, _ := h.Replica(s)
			rf := r.Group.Raft()
			err := rf.ReloadConfig(raft.ReloadableConfig{TrailingLogs: 2, SnapshotInterval: time.Minute,
				SnapshotThreshold: 1 << 20, HeartbeatTimeout: c.Timing().Heartbeat, ElectionTimeout: c.Timing().Election})
			if err != nil {
				t.Fatalf("reload raft config of %s shard %d: %v", h.NodeID(), s, err)
			}
			if err := rf.Snapshot().Error(); err != nil {
				t.Fatalf("snapshot %s shard %d: %v", h.NodeID(), s, err)
			}
			// The snapshot is counted for the operator's metrics.
			if st, err := h.Snapshots(s); err != nil || st.Count.Load() < 1 || st.Bytes.Load() == 0 {
				t.Fatalf("%s shard %d: snapshot counts %v, %v", h.NodeID(), s, st, err)
			}
		}
	}
	write("c", 3) // entries after the snapshot, replayed from the log

	c.Restart(victim)
	c.WaitConverged(t)
	h := c.Host(victim)
	for s := 0; s < c.Shards(); s++ {
		r, _ := h.Replica(s)
		// Raft notes the installed snapshot just after the FSM restored it.
		deadline := time.Now().Add(5 * time.Second)
		st := r.Group.Raft().Stats()
		for st["last_snapshot_index"] == "0" && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			st = r.Group.Raft().Stats()
		}
		if st["last_snapshot_index"] == "0" {
			t.Errorf("shard %d: n%d caught up without a snapshot: %v", s, victim, st)
		}
		// The state was copied once: one full stream, built by the
		// leader from its state when the follower needed it.
		var sent int64
		for _, o := range c.Live() {
			if st, err := o.Snapshots(s); err == nil {
				sent += st.Sent.Load()
			}
		}
		if sent != 1 {
			t.Errorf("shard %d: %d full streams sent to catch up one follower, want 1", s, sent)
		}
	}
	// The restored replica keeps up with new writes and replays cleanly.
	write("d", 3)
	c.WaitConverged(t)
	c.VerifyAll(t)
}
