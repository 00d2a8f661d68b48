package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"tally/shard"
)

// TestAccountAtTime reads an account as of log times: the times of its
// own events, between and around them, in another offset, and bad or
// conflicting parameters; on the shard's leader and on a follower, which
// forwards the time to the leader.
func TestAccountAtTime(t *testing.T) {
	nodes := startCluster3(t)
	n := nodes[0]
	n.accounts(t, "alice", "USD")
	for _, d := range []map[string]any{
		{"id": "d1", "debit": "@world", "credit": "alice", "amount": 100},
		{"id": "d2", "debit": "@world", "credit": "alice", "amount": 50},
	} {
		if r := n.transfer(t, d); r.Result != "ok" {
			t.Fatalf("deposit %v: %+v", d["id"], r)
		}
	}
	a := mustOK(t, n.get(t, "/v1/accounts/alice/history"), "history")
	var page struct {
		Events []struct {
			Seq  uint64    `json:"seq"`
			Time time.Time `json:"time"`
		} `json:"events"`
	}
	if err := json.Unmarshal(a.body, &page); err != nil || len(page.Events) != 3 {
		t.Fatalf("history: %v: %.500s", err, a.body)
	}
	opened, d1, d2 := page.Events[0], page.Events[1], page.Events[2]
	at := func(x time.Time) string { return url.QueryEscape(x.Format(time.RFC3339Nano)) }
	i := shard.Of("alice", testShards)

	type want struct {
		status  int
		code    string
		seq     uint64
		balance int64
	}
	ok := func(seq uint64, balance int64) want { return want{status: http.StatusOK, seq: seq, balance: balance} }
	bad := want{status: http.StatusBadRequest, code: "invalid_request"}
	gone := want{status: http.StatusNotFound, code: "account_not_found"}
	cases := []struct {
		name  string
		query string // of alice, or of the path it starts with
		want  want
	}{
		{"at the opening", "at_time=" + at(opened.Time), ok(opened.Seq, 0)},
		{"at the first deposit", "at_time=" + at(d1.Time), ok(d1.Seq, 100)},
		{"just before the second deposit", "at_time=" + at(d2.Time.Add(-time.Nanosecond)), ok(d1.Seq, 100)},
		{"in another offset", "at_time=" + at(d1.Time.In(time.FixedZone("", 2*3600))), ok(d1.Seq, 100)},
		{"at the second deposit, stale", "at_time=" + at(d2.Time) + "&consistency=stale&min_seq=" + fmt.Sprint(d2.Seq), ok(d2.Seq, 150)},
		{"in the future: the latest", "at_time=2200-01-01T00:00:00Z", ok(d2.Seq, 150)},
		{"past what log time holds", "at_time=9999-12-31T23:59:59Z", ok(d2.Seq, 150)},
		{"before the account existed", "at_time=" + at(opened.Time.Add(-time.Nanosecond)), gone},
		{"before log time begins", "at_time=1000-01-01T00:00:00Z", gone},
		{"with at_seq", "at_seq=1&at_time=" + at(d1.Time), bad},
		{"with at_seq 0", "at_seq=0&at_time=" + at(d1.Time), bad},
		{"not a time", "at_time=yesterday", bad},
		{"empty", "at_time=", bad},
		{"a date only", "at_time=2026-01-02", bad},
		{"an offset whose + is not escaped", "at_time=2026-01-02T15:04:05+01:00", bad},
		{"twice", "at_time=" + at(d1.Time) + "&at_time=" + at(d2.Time), bad},
		{"@world summed over shards", "/v1/accounts/@world?currency=USD&at_time=" + at(d1.Time), ok(0, -100)},
		{"@world on one shard", fmt.Sprintf("/v1/accounts/@world?currency=USD&shard=%d&at_time=%s", i, at(d2.Time)), ok(d2.Seq, -150)},
		{"@world with at_seq", "/v1/accounts/@world?currency=USD&at_seq=1&at_time=" + at(d1.Time), bad},
	}
	for _, via := range []struct {
		name string
		n    *node
	}{{"leader", leaderOf(t, nodes, i)}, {"follower", followerOf(t, nodes, i)}} {
		for _, c := range cases {
			t.Run(via.name+"/"+c.name, func(t *testing.T) {
				path := c.query
				if !strings.HasPrefix(path, "/") {
					path = "/v1/accounts/alice?" + path
				}
				a := via.n.get(t, path)
				if a.status != c.want.status {
					t.Fatalf("status %d, want %d: %.300s", a.status, c.want.status, a.body)
				}
				if c.want.code != "" {
					if code, _ := a.errorCode(t); code != c.want.code {
						t.Fatalf("error.code %q, want %q: %.300s", code, c.want.code, a.body)
					}
					return
				}
				var v struct {
					Seq     uint64 `json:"seq"`
					Balance int64  `json:"balance"`
				}
				if err := json.Unmarshal(a.body, &v); err != nil || v.Seq != c.want.seq || v.Balance != c.want.balance {
					t.Fatalf("seq %d balance %d, %v; want seq %d balance %d: %.300s", v.Seq, v.Balance, err, c.want.seq, c.want.balance, a.body)
				}
			})
		}
	}
}
