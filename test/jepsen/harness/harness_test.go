package harness

import (
	"strings"
	"testing"
)

// The placement examples of docs/api.md (4 shards): the suite's own
// placement must agree with the product's, or its accounts would not land
// where the workload thinks.
func TestShardOfMatchesTheDocs(t *testing.T) {
	for id, want := range map[string]int{"alice": 3, "carol": 3, "bob": 2, "dave": 0} {
		if got := ShardOf(id, 4); got != want {
			t.Errorf("ShardOf(%q) = %d, want %d", id, got, want)
		}
	}
	if ShardOf("x{eu}", 4) != ShardOf("y{eu}", 4) {
		t.Error("ids with the same {tag} must share a shard")
	}
}

func TestShardLinkRules(t *testing.T) {
	r := shardLinkRules(4, 2)
	for k := 0; k < 4; k++ {
		if !strings.Contains(r, "@ih,0,8 "+string(rune('0'+k))+" ct mark set "+string(rune('1'+k))) {
			t.Errorf("no marking rule for shard %d:\n%s", k, r)
		}
	}
	if strings.Count(r, "ct mark 3 counter drop") != 2 {
		t.Errorf("shard 2 must be dropped on input and output:\n%s", r)
	}
	if strings.Contains(shardLinkRules(4, -1), "drop") {
		t.Error("no shard cut, yet a drop rule")
	}
}

func TestOnlyPrivateAddresses(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:8080": true, "198.18.0.12:8000": true,
		"198.19.0.1:80": false, "10.0.0.1:80": false, "8.8.8.8:53": false, "[::1]:80": true} {
		if err := checkAddr(addr); (err == nil) != ok {
			t.Errorf("checkAddr(%s) = %v", addr, err)
		}
	}
}
