package shardtest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"tally/shard"
)

// WaitFor polls cond, at the harness's poll interval, until it holds,
// failing the test with what once d has passed. It is for conditions the
// harness has no method for.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(pollEvery)
	}
}

// Follower returns a live host that does not lead shard s, the first in
// node order, or nil when the shard has no leader or no other live host.
func (c *Cluster) Follower(s int) *shard.Host {
	l := c.Leader(s)
	if l == nil {
		return nil
	}
	for _, h := range c.Live() {
		if h != l {
			return h
		}
	}
	return nil
}

// WaitReady waits until every shard has a leader that every live node
// names, as WaitLeaders does, and every live node also knows that
// leader's HTTP address: then any node can forward a request to any
// shard's leader, and a node's readiness check passes.
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	c.waitGaps(t, "not ready", c.readyGaps)
}

func (c *Cluster) readyGaps() string {
	if gap := c.leaderGaps(); gap != "" {
		return gap
	}
	for s := 0; s < c.shards; s++ {
		for _, h := range c.Live() {
			if id, addr := h.Leader(s); addr == "" {
				return fmt.Sprintf("%s does not know the HTTP address of %s, leader of shard %d", h.NodeID(), id, s)
			}
		}
	}
	return ""
}

// SpreadLeaders hands each shard's leadership to the node its hosts
// prefer (the live node ids sorted, shard s preferring the s-th modulo
// their number), rather than waiting seconds for the hosts to do it
// themselves, then waits until leadership has settled: every live node
// names the same leader of each shard, no node leads more than its share,
// and both still hold a heartbeat later. A handover that fails is logged,
// not fatal: the hosts spread leadership on their own as well.
func (c *Cluster) SpreadLeaders(t testing.TB) {
	t.Helper()
	hosts := c.Live()
	ids := make([]string, len(hosts))
	for i, h := range hosts {
		ids[i] = h.NodeID()
	}
	slices.Sort(ids)
	for s := 0; s < c.shards && len(ids) > 1; s++ {
		want := ids[s%len(ids)]
		l := c.WaitLeader(t, s)
		if l.NodeID() == want {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), AttemptTimeout)
		if err := l.TransferLeader(ctx, s, want); err != nil {
			t.Logf("hand shard %d to %s: %v", s, want, err)
		}
		cancel()
	}
	deadline := time.Now().Add(SpreadTimeout)
	for {
		gap := c.spreadGaps(len(ids))
		if gap == "" {
			time.Sleep(c.timing.Heartbeat)
			if gap = c.spreadGaps(len(ids)); gap == "" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("leadership not settled within %v: %s\n%s", SpreadTimeout, gap, c.Describe())
		}
		time.Sleep(pollEvery)
	}
}

// spreadGaps says why leadership has not settled among the given number
// of live nodes, or is "".
func (c *Cluster) spreadGaps(nodes int) string {
	if gap := c.leaderGaps(); gap != "" {
		return gap
	}
	share := (c.shards + nodes - 1) / nodes
	led := map[string]int{}
	for s := 0; s < c.shards; s++ {
		l := c.Leader(s)
		if l == nil {
			return fmt.Sprintf("shard %d has no leader", s)
		}
		id := l.NodeID()
		if led[id]++; led[id] > share {
			return fmt.Sprintf("%s leads more than %d shards", id, share)
		}
	}
	return ""
}
