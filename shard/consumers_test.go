package shard_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"tally/cluster"
	"tally/ledger"
	"tally/shard"
	"tally/shard/shardtest"
)

// TestOffsetsSurviveLeaderKill sets consumer offsets on a shard's leader,
// kills that leader, and reads the same offsets from the new one; the
// new leader refuses to move them backwards as the old one did.
func TestOffsetsSurviveLeaderKill(t *testing.T) {
	c := shardtest.New(t, 3, 2)
	const s = 1
	tg := tagOn(s, c.Shards())
	wantOK(t, submit(t, c, openCmd(acct("a", tg), acct("b", tg), acct("c", tg))))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := c.WaitLeader(t, s)
	if _, err := old.SetOffset(ctx, s, "sink", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := old.ResetOffset(ctx, s, "tail", 0, true); err != nil {
		t.Fatal(err)
	}
	_, err := old.SetOffset(ctx, s, "sink", 1)
	var oe *shard.OffsetError
	if !errors.Is(err, shard.ErrOffsetBackwards) || !errors.As(err, &oe) || oe.Offset.Seq != 2 {
		t.Fatalf("set backwards: %v, want ErrOffsetBackwards at 2", err)
	}
	if _, err := old.SetOffset(ctx, s, "sink", 99); !errors.Is(err, shard.ErrOffsetBeyond) {
		t.Fatalf("set beyond the log: %v, want ErrOffsetBeyond", err)
	}
	if f := c.Follower(s); f != nil {
		if _, err := f.SetOffset(ctx, s, "sink", 3); !errors.Is(err, cluster.ErrNotLeader) {
			t.Fatalf("set on a follower: %v, want not leader", err)
		}
	}
	want := map[string]uint64{"sink": 2, "tail": 3}
	c.Kill(c.Num(old))
	nl := c.WaitLeader(t, s, old)
	shardtest.WaitFor(t, shardtest.LeaderTimeout, "the new leader reading the offsets", func() bool {
		offs, applied, err := nl.Offsets(ctx, s, shard.ReadOpts{})
		return err == nil && maps.Equal(offs, want) && applied == 3
	})
	if _, err := nl.SetOffset(ctx, s, "sink", 1); !errors.Is(err, shard.ErrOffsetBackwards) {
		t.Fatalf("set backwards on the new leader: %v", err)
	}
	if _, err := nl.SetOffset(ctx, s, "sink", 3); err != nil {
		t.Fatal(err)
	}
	if err := nl.DeleteConsumer(ctx, s, "tail"); err != nil {
		t.Fatal(err)
	}
	if err := nl.DeleteConsumer(ctx, s, "tail"); !errors.Is(err, shard.ErrConsumerNotFound) {
		t.Fatalf("delete twice: %v, want ErrConsumerNotFound", err)
	}
	wantOK(t, submit(t, c, transfers(xfer("dep-"+tg, ledger.World, acct("a", tg), 5))))
	c.WaitConverged(t)
	for _, h := range c.Live() {
		offs, applied, err := h.Offsets(ctx, s, shard.ReadOpts{Stale: true})
		if err != nil || !maps.Equal(offs, map[string]uint64{"sink": 3}) || applied != 4 {
			t.Errorf("%s: offsets %v at %d, %v", h.NodeID(), offs, applied, err)
		}
		// Offsets of one shard are its own: the other shard has none.
		if offs, _, err := h.Offsets(ctx, 0, shard.ReadOpts{Stale: true}); err != nil || len(offs) != 0 {
			t.Errorf("%s: shard 0 offsets %v, %v", h.NodeID(), offs, err)
		}
	}
	c.VerifyAll(t)
}
