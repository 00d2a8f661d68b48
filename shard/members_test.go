package shard_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"tally/cluster"
	"tally/shard"
	"tally/shard/shardtest"
)

// voter reports whether node id is a voter of shard s as h sees it, and
// whether it is a member at all.
func voter(t *testing.T, h *shard.Host, s int, id string) (isVoter, isMember bool) {
	t.Helper()
	st, err := h.Status(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range st.Servers {
		if srv.ID == id {
			return srv.Voter, true
		}
	}
	return false, false
}

// TestPromoteRule pins the catch-up distance of the promotion rule.
func TestPromoteRule(t *testing.T) {
	for _, tc := range []struct {
		applied, commit uint64
		want            bool
	}{
		{0, 0, true},
		{0, shard.PromoteLag, true},
		{0, shard.PromoteLag + 1, false},
		{1000, 1000 + shard.PromoteLag, true},
		{1000, 1001 + shard.PromoteLag, false},
		{2000, 1000, true},
	} {
		if got := (shard.Progress{Applied: tc.applied, Commit: tc.commit}).CaughtUp(); got != tc.want {
			t.Errorf("applied %d, commit %d: caught up %v, want %v", tc.applied, tc.commit, got, tc.want)
		}
	}
}

// TestJoinAsNonvoter removes a node from a shard, lets the shard's log
// run far ahead of it while its Raft link is cut, and joins it again: it
// must stay a non-voter while it lags (the join waits, then gives up
// with ErrUnavailable), and the leader must promote it once it has caught
// up. Joining a voter again must leave it a voter.
func TestJoinAsNonvoter(t *testing.T) {
	c := shardtest.New(t, 3, 1, shardtest.WithTiming(shardtest.SteadyTiming))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := c.WaitLeader(t, 0)
	n := 3
	if c.Num(l) == 3 {
		n = 2
	}
	id := c.ID(n)
	if err := l.Leave(ctx, 0, id); err != nil {
		t.Fatalf("leave %s: %v", id, err)
	}
	c.PartitionShards([]int{0}, n)
	tg := tagOn(0, 1)
	for i := range shard.PromoteLag + 20 {
		submit(t, c, openCmd(acct(fmt.Sprintf("a%d", i), tg)))
	}
	l = c.WaitLeader(t, 0)
	jctx, jcancel := context.WithTimeout(ctx, time.Second)
	err := l.Join(jctx, 0, id, c.RaftAddr(n), c.HTTPAddr(n))
	jcancel()
	if !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("join of a lagging node: %v, want ErrUnavailable", err)
	}
	if v, m := voter(t, l, 0, id); v || !m {
		t.Fatalf("%s lagging: voter %v member %v, want a non-voter\n%s", id, v, m, c.Describe())
	}
	before := l.Promotions()
	c.Heal()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if v, _ := voter(t, c.WaitLeader(t, 0), 0, id); v {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not promoted after catching up\n%s", id, c.Describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l.Promotions() <= before && c.WaitLeader(t, 0) == l {
		t.Errorf("the leader counted no promotion")
	}
	l = c.WaitLeader(t, 0)
	if err := l.Join(ctx, 0, id, c.RaftAddr(n), c.HTTPAddr(n)); err != nil {
		t.Fatalf("join again: %v", err)
	}
	if v, _ := voter(t, l, 0, id); !v {
		t.Fatalf("joining again demoted %s", id)
	}
	c.WaitConverged(t)
}

// TestLeaveHandsOff removes a shard's leader: the leader hands the shard
// over to another voter first and says who that is, and the removal runs
// there, so the shard is never without a leader for an election timeout.
func TestLeaveHandsOff(t *testing.T) {
	c := shardtest.New(t, 3, 2, shardtest.WithTiming(shardtest.SteadyTiming))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := c.WaitLeader(t, 0)
	id := l.NodeID()
	err := l.Leave(ctx, 0, id)
	var nl *shard.NotLeaderError
	if !errors.As(err, &nl) {
		t.Fatalf("leader leaving: %v, want a NotLeaderError after the hand-off", err)
	}
	if r, _ := l.Replica(0); r.Group.IsLeader() {
		t.Fatalf("%s still leads shard 0 after leaving", id)
	}
	next := c.WaitLeader(t, 0, l)
	if err := next.Leave(ctx, 0, id); err != nil {
		t.Fatalf("leave on the new leader %s: %v", next.NodeID(), err)
	}
	if _, m := voter(t, next, 0, id); m {
		t.Fatalf("%s is still a member of shard 0", id)
	}
	if c.Leader(0) == nil {
		t.Fatalf("shard 0 has no leader after the leave\n%s", c.Describe())
	}
	submit(t, c, openCmd(acct("after", tagOn(0, 2))))
}
