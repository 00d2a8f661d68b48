package shard_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"tally/cluster"
	"tally/ledger"
	"tally/shard"
	"tally/shard/shardtest"
)

// TestClusterBasic writes to every shard of a 3-node cluster and reads
// back at each consistency: linearizable on the leader (refused by a
// follower), min_seq and stale on followers.
func TestClusterBasic(t *testing.T) {
	c := shardtest.New(t, 3, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for s := 0; s < c.Shards(); s++ {
		tg := tagOn(s, c.Shards())
		a, b := acct("alice", tg), acct("bob", tg)
		res := submit(t, c, openCmd(a, b))
		for _, r := range res {
			if r.Result != ledger.OK || r.Shard != s {
				t.Fatalf("open %s: %+v, want ok on shard %d", r.ID, r, s)
			}
		}
		wantOK(t, submit(t, c, transfers(xfer("dep-"+tg, ledger.World, a, 1000))))
		res = submit(t, c, transfers(xfer("t1-"+tg, a, b, 300), xfer("t2-"+tg, a, b, 10_000)))
		if res[0].Result != ledger.OK || res[0].Status != ledger.StatusPosted {
			t.Fatalf("transfer t1: %+v, want ok posted", res[0])
		}
		if res[1].Result != ledger.InsufficientFunds || res[1].Status != ledger.StatusRejected {
			t.Fatalf("transfer t2: %+v, want insufficient_funds", res[1])
		}
		seq := res[1].Seq

		leader := c.WaitLeader(t, s)
		got, at, err := leader.Account(ctx, s, a, shard.ReadOpts{})
		if err != nil || got.Balance() != 700 || at < seq {
			t.Fatalf("linearizable read of %s: balance %d at seq %d, err %v; want 700 at >= %d", a, got.Balance(), at, err, seq)
		}
		rec, _, err := leader.Transfer(ctx, s, "t1-"+tg, shard.ReadOpts{})
		if err != nil || rec.Status != ledger.StatusPosted || rec.Result != ledger.OK || rec.Transfer.Amount != 300 {
			t.Fatalf("transfer record t1: %+v, %v", rec, err)
		}
		if _, _, err := leader.Transfer(ctx, s, "nope-"+tg, shard.ReadOpts{}); !errors.Is(err, shard.ErrNotFound) {
			t.Fatalf("read of an unknown transfer: %v, want not found", err)
		}

		for _, h := range c.Live() {
			if h == leader {
				continue
			}
			if _, _, err := h.Account(ctx, s, a, shard.ReadOpts{}); !errors.Is(err, cluster.ErrNotLeader) {
				t.Errorf("linearizable read on follower %s: %v, want not leader", h.NodeID(), err)
			}
			got, at, err := h.Account(ctx, s, b, shard.ReadOpts{MinSeq: seq})
			if err != nil || got.Balance() != 300 || at < seq {
				t.Errorf("min_seq read on %s: balance %d at seq %d, err %v; want 300 at >= %d", h.NodeID(), got.Balance(), at, err, seq)
			}
		}
	}

	c.WaitConverged(t)
	for s := 0; s < c.Shards(); s++ {
		a := acct("alice", tagOn(s, c.Shards()))
		for _, h := range c.Live() {
			got, _, err := h.Account(ctx, s, a, shard.ReadOpts{Stale: true})
			if err != nil || got.Balance() != 700 || got.DebitsPosted != 300 {
				t.Errorf("stale read of %s on %s after convergence: %+v, %v", a, h.NodeID(), got, err)
			}
		}
	}
	c.VerifyAll(t)
}
