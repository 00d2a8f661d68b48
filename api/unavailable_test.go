package api_test

import (
	"net/http"
	"testing"
	"time"
)

// TestShardWithoutLeader stops one shard's Raft group and checks that
// writes and reads on it fail within their deadline with 503, and that a
// batch whose other part did commit answers 504 outcome_unknown rather
// than a 503 that would say nothing was applied.
func TestShardWithoutLeader(t *testing.T) {
	n := startCluster1(t)
	n.accounts(t, "alice", "USD", "carol", "USD", "bob", "USD")
	for _, id := range []string{"alice", "bob"} {
		if r := n.transfer(t, map[string]any{"id": "fund-" + id, "debit": "@world", "credit": id, "amount": 100}); r.Result != "ok" {
			t.Fatalf("fund %s: %+v", id, r)
		}
	}
	r, err := n.host().Replica(otherShard)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Group.Close(); err != nil {
		t.Fatalf("stop shard %d: %v", otherShard, err)
	}

	timed := func(what, method, path, body string) answer {
		t.Helper()
		var b []byte
		if method == http.MethodPost {
			b = []byte(body)
		}
		start := time.Now()
		a := do(t, method, n.url()+path, b)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: answered after %s with a 1s deadline", what, d)
		}
		return a
	}
	for _, c := range []struct {
		what, method, path, body string
		status                   int
		code                     string
	}{
		{"write", "POST", "/v1/transfers?timeout=1s", trs(tr("w-1", "bob", "@world", 1)), 503, "unavailable"},
		{"account", "POST", "/v1/accounts?timeout=1s", acs(ac("bob{bob}", "USD")), 503, "unavailable"},
		{"read", "GET", "/v1/accounts/bob?timeout=1s", "", 503, "unavailable"},
		{"batch over both", "POST", "/v1/transfers?timeout=1s", trs(tr("p-1", "alice", "carol", 10), tr("p-2", "bob", "@world", 5)), 504, "outcome_unknown"},
		{"batch retried", "POST", "/v1/transfers?timeout=1s", trs(tr("p-1", "alice", "carol", 10), tr("p-2", "bob", "@world", 5)), 504, "outcome_unknown"},
		{"readyz", "GET", "/readyz", "", 503, "unavailable"},
	} {
		a := timed(c.what, c.method, c.path, c.body)
		if code, _ := a.errorCode(t); a.status != c.status || code != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.what, a.status, a.body, c.status, c.code)
		}
	}
	// The part on the healthy shard committed once, and the answers that
	// depend only on it are unaffected.
	if a := n.account(t, "carol"); a.Balance != 10 {
		t.Errorf("carol: %+v, want balance 10", a)
	}
	if rs := results(t, n.post(t, "/v1/transfers", trs(tr("p-1", "alice", "carol", 10))), "retry on the healthy shard"); rs[0].Result != "exists" {
		t.Errorf("retry of p-1: %+v", rs[0])
	}
}
