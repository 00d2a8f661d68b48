package shard_test

import (
	"testing"
	"time"

	"tally/shard/shardtest"
)

// TestLeadersSpread starts 3 nodes with 4 shards, all first led by the
// bootstrapping node, and waits for the leaders to spread so that no node
// leads more than its share (2).
func TestLeadersSpread(t *testing.T) {
	c := shardtest.New(t, 3, 4)
	const bound = 20 * time.Second
	start := time.Now()
	for {
		led := map[string]int{}
		most, missing := 0, false
		for s := 0; s < c.Shards(); s++ {
			h := c.Leader(s)
			if h == nil {
				missing = true
				continue
			}
			led[h.NodeID()]++
			most = max(most, led[h.NodeID()])
		}
		if !missing && most <= 2 {
			t.Logf("leaders spread after %v: %v", time.Since(start), led)
			break
		}
		if time.Since(start) > bound {
			t.Fatalf("leaders still %v after %v\n%s", led, bound, c.Describe())
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.WaitLeaders(t)
}
