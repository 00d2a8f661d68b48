package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"tally/shard/shardtest"
)

// TestForwarding runs writes and reads on nodes that do not lead the
// shard: by default they are forwarded to the leader; with
// ?forward=false they are refused with 421 not_leader naming the leader.
func TestForwarding(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes := startCluster3(t)
	// alice and carol live on homeShard, bob on otherShard, x{eu} on 1.
	lead := leaderOf(t, nodes, homeShard)
	fol := followerOf(t, nodes, homeShard)
	t.Logf("leaders: %s %s %s %s", leaderOf(t, nodes, 0).id, leaderOf(t, nodes, 1).id, leaderOf(t, nodes, 2).id, lead.id)

	body := acs(ac("alice", "USD"), ac("bob", "USD"), ac("x{eu}", "USD"), ac("carol", "USD"))
	rs := results(t, fol.post(t, "/v1/accounts", body), "create through a follower")
	wantShards := []int{homeShard, otherShard, 1, homeShard}
	if len(rs) != 4 || rs[0].ID != "alice" || rs[1].ID != "bob" || rs[2].ID != "x{eu}" || rs[3].ID != "carol" {
		t.Fatalf("results not in request order: %+v", rs)
	}
	for i, r := range rs {
		if r.Result != "ok" || r.Shard != wantShards[i] {
			t.Errorf("create [%d]: %+v, want ok on shard %d", i, r, wantShards[i])
		}
	}

	dep := map[string]any{"id": "dep", "debit": "@world", "credit": "alice", "amount": 1000}
	r := fol.transfer(t, dep)
	if r.Result != "ok" || r.Status != "posted" || r.Shard != homeShard {
		t.Fatalf("deposit through a follower: %+v", r)
	}
	for _, nd := range nodes {
		if again := nd.transfer(t, dep); again.Result != "exists" || again.Seq != r.Seq {
			t.Errorf("retry through %s: %+v", nd.id, again)
		}
		if a := nd.account(t, "alice"); a.Balance != 1000 {
			t.Errorf("linearizable read of alice through %s: %+v", nd.id, a)
		}
		a := mustOK(t, nd.get(t, fmt.Sprintf("/v1/accounts/alice?min_seq=%d&forward=false", r.Seq)), "min_seq read")
		var local account
		if err := json.Unmarshal(a.body, &local); err != nil || local.Balance != 1000 {
			t.Errorf("min_seq read of alice on %s: %s", nd.id, a.body)
		}
	}

	t.Run("forward=false", func(t *testing.T) {
		// lead reads its own replica of each shard: let every replica
		// catch up on the writes before, or one arriving meanwhile counts.
		waitSynced(t, nodes)
		before := lead.logLengths(t)
		cases := []struct {
			name, method, path, body string
		}{
			{"transfer", "POST", "/v1/transfers?forward=false", trs(tr("nf-1", "alice", "carol", 1))},
			{"accounts", "POST", "/v1/accounts?forward=false", acs(ac("dave{alice}", "USD"))},
			{"close", "POST", "/v1/accounts/carol/close?forward=false", ""},
			{"linearizable read", "GET", "/v1/accounts/alice?forward=false", ""},
			{"transfer read", "GET", fmt.Sprintf("/v1/transfers/dep?forward=false&shard=%d", homeShard), ""},
		}
		for _, c := range cases {
			var b []byte
			if c.method == "POST" {
				b = []byte(c.body)
			}
			a := do(t, c.method, fol.url()+c.path, b)
			if a.status != http.StatusMisdirectedRequest {
				t.Errorf("%s: status %d, want 421: %s", c.name, a.status, a.body)
				continue
			}
			code, e := a.errorCode(t)
			if code != "not_leader" || e["leader_http"] != lead.addr() {
				t.Errorf("%s: %s, want not_leader with leader_http %s", c.name, a.body, lead.addr())
			}
		}
		if after := lead.logLengths(t); !slices.Equal(before, after) {
			t.Errorf("refused writes changed the logs from %v to %v", before, after)
		}
		// The leader itself answers as usual.
		if r := results(t, lead.post(t, "/v1/transfers?forward=false", trs(tr("nf-2", "alice", "carol", 1))), "on the leader"); r[0].Result != "ok" {
			t.Errorf("forward=false on the leader: %+v", r)
		}
	})

	t.Run("hop limit", func(t *testing.T) {
		// lead reads its own replica of each shard: let every replica
		// catch up on the writes before, or one arriving meanwhile counts.
		waitSynced(t, nodes)
		before := lead.logLengths(t)
		a := do(t, "POST", fol.url()+"/v1/transfers", []byte(trs(tr("hop-1", "alice", "carol", 1))), "X-Tally-Hops", "2")
		if code, _ := a.errorCode(t); a.status != http.StatusServiceUnavailable || code != "unavailable" {
			t.Errorf("third hop: %d %s, want 503 unavailable", a.status, a.body)
		}
		if after := lead.logLengths(t); !slices.Equal(before, after) {
			t.Errorf("refused write changed the logs from %v to %v", before, after)
		}
	})

	t.Run("batch over shards", func(t *testing.T) {
		lead.transfer(t, map[string]any{"id": "dep-bob", "debit": "@world", "credit": "bob", "amount": 100})
		b := trs(tr("b-1", "alice", "carol", 10), tr("b-2", "bob", "@world", 5), tr("b-3", "@world", "x{eu}", 7), tr("b-4", "carol", "alice", 1))
		for _, nd := range nodes {
			rs := results(t, nd.post(t, "/v1/transfers", b), "batch through "+nd.id)
			want := []struct {
				id    string
				shard int
			}{{"b-1", homeShard}, {"b-2", otherShard}, {"b-3", 1}, {"b-4", homeShard}}
			res := "ok"
			if nd != nodes[0] {
				res = "exists"
			}
			for i, r := range rs {
				if r.ID != want[i].id || r.Result != res || r.Shard != want[i].shard {
					t.Errorf("batch through %s [%d]: %+v, want %s %s on shard %d", nd.id, i, r, want[i].id, res, want[i].shard)
				}
			}
		}
		for _, nd := range nodes {
			for id, bal := range map[string]int64{"alice": 991 - 1, "carol": 9 + 1, "bob": 95, "x{eu}": 7} {
				if a := nd.account(t, id); a.Balance != bal {
					t.Errorf("%s through %s: balance %d, want %d", id, nd.id, a.Balance, bal)
				}
			}
		}
	})

	t.Run("bad input on a follower", func(t *testing.T) {
		waitSynced(t, nodes)
		// lead reads its own replica of each shard: let every replica
		// catch up on the writes before, or one arriving meanwhile counts.
		waitSynced(t, nodes)
		before := lead.logLengths(t)
		for _, nd := range nodes {
			checkBad(t, nd, badCase{"", "", "/v1/transfers", trs(tr("bad", "alice", "carol", "1e30")), http.StatusBadRequest, "invalid_request", 0, "amount_invalid"})
		}
		if after := lead.logLengths(t); !slices.Equal(before, after) {
			t.Errorf("logs changed from %v to %v", before, after)
		}
	})

	t.Run("cluster", func(t *testing.T) {
		for _, nd := range nodes {
			a := mustOK(t, nd.get(t, "/v1/cluster"), "cluster")
			var v struct {
				Shards []struct {
					Shard      int    `json:"shard"`
					Leader     string `json:"leader"`
					LeaderHTTP string `json:"leader_http"`
					Replicas   []struct {
						Node, State string
					} `json:"replicas"`
				} `json:"shards"`
				Nodes []struct{ ID, HTTP string } `json:"nodes"`
			}
			if err := json.Unmarshal(a.body, &v); err != nil || len(v.Shards) != testShards || len(v.Nodes) != 3 {
				t.Fatalf("cluster through %s: %v: %s", nd.id, err, a.body)
			}
			for i, s := range v.Shards {
				l := leaderOf(t, nodes, i)
				if s.Shard != i || s.Leader != l.id || s.LeaderHTTP != l.addr() || len(s.Replicas) != 3 {
					t.Errorf("cluster through %s: shard %d: %+v", nd.id, i, s)
				}
			}
		}
		// Leadership to the node that leads already is done; to a
		// stranger it is refused, on any node.
		l0 := leaderOf(t, nodes, 0)
		mustOK(t, followerOf(t, nodes, 0).post(t, "/v1/cluster/transfer-leader", fmt.Sprintf(`{"shard": 0, "to": %q}`, l0.id)), "transfer-leader to the leader")
		for _, nd := range nodes {
			a := nd.post(t, "/v1/cluster/transfer-leader", `{"shard": 0, "to": "n9"}`)
			if code, _ := a.errorCode(t); a.status != http.StatusBadRequest || code != "invalid_request" {
				t.Errorf("transfer-leader to a stranger through %s: %d %s", nd.id, a.status, a.body)
			}
		}
	})
}

// waitSynced waits until every node's replica of every shard holds the
// same number of events.
func waitSynced(t *testing.T, nodes []*node) {
	t.Helper()
	shardtest.WaitFor(t, 10*time.Second, "replicas in sync", func() bool {
		first := nodes[0].logLengths(t)
		for _, nd := range nodes[1:] {
			if !slices.Equal(nd.logLengths(t), first) {
				return false
			}
		}
		return true
	})
}
