package api_test

import (
	"fmt"
	"testing"

	"tally/ledger"
)

// TestForwardedSagasSettle: a cross-shard transfer sent to a node that
// does not lead its source shard is settled on the leader, as one sent to
// the leader is: the answer says posted (or rejected), not in_flight,
// when the saga ends within the deadline.
func TestForwardedSagasSettle(t *testing.T) {
	nodes := startCluster3(t)
	// alice and dave live on different shards (README's walkthrough).
	src, dst := ledger.ShardOf("alice", 4), ledger.ShardOf("dave", 4)
	if src == dst {
		t.Fatalf("alice and dave share shard %d", src)
	}
	leaderOf(t, nodes, src).accounts(t, "alice", "USD", "dave", "USD")
	leaderOf(t, nodes, src).transfer(t, map[string]any{"id": "fund", "debit": "@world", "credit": "alice", "amount": 1000})
	via := followerOf(t, nodes, src)
	for i := range 5 {
		r := via.transfer(t, map[string]any{"id": fmt.Sprintf("x-%d", i), "debit": "alice", "credit": "dave", "amount": 10})
		if r.Result != "ok" || r.Status != "posted" {
			t.Fatalf("cross-shard transfer through a follower: result %s, status %s; want ok, posted", r.Result, r.Status)
		}
	}
}
