package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"tally/api/wire"
)

// consumerStep is one request of a consumer walkthrough, sent to one node
// of the cluster, with the answer it must get.
type consumerStep struct {
	name   string
	method string
	path   string
	body   string // "" : none
	status int
	code   string // error code, "" for a 200
	// check, when set, looks at a 200 answer's body.
	check func(t *testing.T, body []byte)
}

// consumerOf decodes a consumer answer.
func consumerOf(t *testing.T, b []byte) wire.Consumer {
	t.Helper()
	var c wire.Consumer
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("consumer answer: %v: %s", err, b)
	}
	return c
}

// positions renders a consumer's shards as "shard:seq/applied" items.
func positions(c wire.Consumer) string {
	var out []string
	for _, s := range c.Shards {
		out = append(out, fmt.Sprintf("%d:%d/%d", s.Shard, s.Seq, s.AppliedSeq))
	}
	return strings.Join(out, " ")
}

// wantPositions checks a consumer answer's name, shards and total lag.
func wantPositions(name, pos string, lag uint64) func(t *testing.T, b []byte) {
	return func(t *testing.T, b []byte) {
		t.Helper()
		c := consumerOf(t, b)
		if c.Name != name || positions(c) != pos || c.Lag != lag {
			t.Fatalf("consumer %s at %q lag %d, want %s at %q lag %d", c.Name, positions(c), c.Lag, name, pos, lag)
		}
	}
}

// TestConsumers walks the named consumer endpoints on a three-node
// cluster, each request sent to a node that does not lead the shards it
// changes, so that every change is forwarded to a leader; bad input is
// refused with its code before anything is proposed.
func TestConsumers(t *testing.T) {
	nodes := startCluster3(t)
	nodes[0].accounts(t, "alice", "USD", "carol", "USD", "bob", "USD") // shard 3: seqs 1, 2; shard 2: seq 1
	via := followerOf(t, nodes, homeShard)
	const C = "/v1/consumers/"
	const P = C + "sink/offsets/3"
	bad, nf, conflict := http.StatusBadRequest, http.StatusNotFound, http.StatusConflict
	long := strings.Repeat("n", 65)
	steps := []consumerStep{
		{"list, none yet", "GET", "/v1/consumers", "", 200, "", func(t *testing.T, b []byte) {
			if strings.TrimSpace(string(b)) != `{"consumers":[]}` {
				t.Fatalf("list %s, want none", b)
			}
		}},
		{"unknown consumer", "GET", C + "sink", "", nf, "consumer_not_found", nil},
		{"set creates", "PUT", P, `{"seq": 1}`, 200, "", func(t *testing.T, b []byte) {
			var o wire.ConsumerOffset
			if err := json.Unmarshal(b, &o); err != nil || o != (wire.ConsumerOffset{Name: "sink", ConsumerShard: wire.ConsumerShard{Shard: 3, Seq: 1, AppliedSeq: 2, Lag: 1}}) {
				t.Fatalf("answer %s (%v)", b, err)
			}
		}},
		{"set forwards", "PUT", P, `{"seq": 2}`, 200, "", nil},
		{"set the same again", "PUT", P, `{"seq": 2}`, 200, "", nil},
		{"set backwards", "PUT", P, `{"seq": 1}`, conflict, "offset_backwards", nil},
		{"set beyond the log", "PUT", P, `{"seq": 3}`, bad, "invalid_request", nil},
		{"set on another shard", "PUT", C + "sink/offsets/2", `{"seq": 1}`, 200, "", nil},
		{"read", "GET", C + "sink", "", 200, "", wantPositions("sink", "0:0/0 1:0/0 2:1/1 3:2/2", 0)},
		{"a second consumer", "PUT", C + "audit.v2_x-1/offsets/3", `{"seq": 0}`, 200, "", nil},
		{"list", "GET", "/v1/consumers", "", 200, "", func(t *testing.T, b []byte) {
			var cs wire.Consumers
			if err := json.Unmarshal(b, &cs); err != nil || len(cs.Consumers) != 2 ||
				cs.Consumers[0].Name != "audit.v2_x-1" || cs.Consumers[0].Lag != 3 || cs.Consumers[1].Name != "sink" {
				t.Fatalf("list %s (%v)", b, err)
			}
		}},

		{"seq negative", "PUT", P, `{"seq": -1}`, bad, "invalid_request", nil},
		{"seq 2^64", "PUT", P, `{"seq": 18446744073709551616}`, bad, "invalid_request", nil},
		{"seq fraction", "PUT", P, `{"seq": 1.5}`, bad, "invalid_request", nil},
		{"seq string", "PUT", P, `{"seq": "2"}`, bad, "invalid_request", nil},
		{"seq null", "PUT", P, `{"seq": null}`, bad, "invalid_request", nil},
		{"seq missing", "PUT", P, `{}`, bad, "invalid_request", nil},
		{"unknown field", "PUT", P, `{"seq": 2, "force": true}`, bad, "invalid_request", nil},
		{"empty body", "PUT", P, ``, bad, "invalid_request", nil},
		{"trailing data", "PUT", P, `{"seq": 2} {}`, bad, "invalid_request", nil},
		{"shard out of range", "PUT", C + "sink/offsets/4", `{"seq": 0}`, nf, "shard_not_found", nil},
		{"shard negative", "PUT", C + "sink/offsets/-1", `{"seq": 0}`, nf, "shard_not_found", nil},
		{"shard not a number", "PUT", C + "sink/offsets/x", `{"seq": 0}`, nf, "shard_not_found", nil},
		{"name with a space", "PUT", C + "a%20b/offsets/3", `{"seq": 0}`, bad, "invalid_request", nil},
		{"name too long", "PUT", C + long + "/offsets/3", `{"seq": 0}`, bad, "invalid_request", nil},
		{"name not ascii", "GET", C + "s%C3%A9", "", bad, "invalid_request", nil},
		{"unknown query parameter", "GET", "/v1/consumers?limit=1", "", bad, "invalid_request", nil},
		{"wrong method", "POST", C + "sink", "{}", http.StatusMethodNotAllowed, "method_not_allowed", nil},
		{"wrong method on offsets", "GET", P, "", http.StatusMethodNotAllowed, "method_not_allowed", nil},

		{"reset one shard back", "POST", C + "sink/reset", `{"to": "3:0"}`, 200, "", wantPositions("sink", "3:0/2", 2)},
		{"reset leaves other shards", "GET", C + "sink", "", 200, "", wantPositions("sink", "0:0/0 1:0/0 2:1/1 3:0/2", 2)},
		{"reset to the end", "POST", C + "sink/reset", `{"to": "end"}`, 200, "", wantPositions("sink", "0:0/0 1:0/0 2:1/1 3:2/2", 0)},
		{"reset to the start", "POST", C + "sink/reset", `{"to": "start"}`, 200, "", wantPositions("sink", "0:0/0 1:0/0 2:0/1 3:0/2", 3)},
		{"reset a list", "POST", C + "sink/reset", `{"to": "3:2, 2:1"}`, 200, "", wantPositions("sink", "2:1/1 3:2/2", 0)},
		{"reset creates", "POST", C + "late/reset", `{"to": "end"}`, 200, "", nil},
		{"reset beyond the log", "POST", C + "sink/reset", `{"to": "3:3"}`, bad, "invalid_request", nil},
		{"reset to nothing", "POST", C + "sink/reset", `{"to": ""}`, bad, "invalid_request", nil},
		{"reset without to", "POST", C + "sink/reset", `{}`, bad, "invalid_request", nil},
		{"reset to a number", "POST", C + "sink/reset", `{"to": 5}`, bad, "invalid_request", nil},
		{"reset to a word", "POST", C + "sink/reset", `{"to": "latest"}`, bad, "invalid_request", nil},
		{"reset without a seq", "POST", C + "sink/reset", `{"to": "3"}`, bad, "invalid_request", nil},
		{"reset with an empty seq", "POST", C + "sink/reset", `{"to": "3:"}`, bad, "invalid_request", nil},
		{"reset without a shard", "POST", C + "sink/reset", `{"to": ":1"}`, bad, "invalid_request", nil},
		{"reset a negative seq", "POST", C + "sink/reset", `{"to": "3:-1"}`, bad, "invalid_request", nil},
		{"reset a seq over 2^64", "POST", C + "sink/reset", `{"to": "3:18446744073709551616"}`, bad, "invalid_request", nil},
		{"reset a shard out of range", "POST", C + "sink/reset", `{"to": "4:0"}`, bad, "invalid_request", nil},
		{"reset a shard twice", "POST", C + "sink/reset", `{"to": "3:1,3:2"}`, bad, "invalid_request", nil},
		{"reset with a trailing comma", "POST", C + "sink/reset", `{"to": "3:1,"}`, bad, "invalid_request", nil},
		{"reset with an unknown field", "POST", C + "sink/reset", `{"to": "end", "dry_run": true}`, bad, "invalid_request", nil},
		{"reset a bad name", "POST", C + "a%2Fb/reset", `{"to": "end"}`, bad, "invalid_request", nil},
		{"nothing moved by bad resets", "GET", C + "sink", "", 200, "", wantPositions("sink", "0:0/0 1:0/0 2:1/1 3:2/2", 0)},

		{"delete", "DELETE", C + "sink", "", 200, "", nil},
		{"deleted", "GET", C + "sink", "", nf, "consumer_not_found", nil},
		{"delete again", "DELETE", C + "sink", "", nf, "consumer_not_found", nil},
		{"delete a bad name", "DELETE", C + long, "", bad, "invalid_request", nil},
		{"set after delete starts afresh", "PUT", P, `{"seq": 1}`, 200, "", nil},
	}
	for _, st := range steps {
		if !t.Run(st.name, func(t *testing.T) {
			var body []byte
			if st.body != "" || st.method == "PUT" {
				body = []byte(st.body)
			}
			a := do(t, st.method, via.url()+st.path, body)
			if a.status != st.status {
				t.Fatalf("%s %s: status %d, want %d: %s", st.method, st.path, a.status, st.status, a.body)
			}
			if st.code != "" {
				if code, _ := a.errorCode(t); code != st.code {
					t.Fatalf("%s %s: code %s, want %s: %s", st.method, st.path, code, st.code, a.body)
				}
				return
			}
			if st.check != nil {
				st.check(t, a.body)
			}
		}) {
			break
		}
	}

	// The leader of shard 3 reports the lag of each consumer there.
	metrics := string(mustOK(t, leaderOf(t, nodes, homeShard).get(t, "/metrics"), "metrics").body)
	for _, want := range []string{`tally_consumer_lag_events{consumer="sink",shard="3"} 1`, `tally_consumer_lag_events{consumer="late",shard="3"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if m := string(mustOK(t, via.get(t, "/metrics"), "metrics").body); strings.Contains(m, `tally_consumer_lag_events{consumer="sink",shard="3"}`) {
		t.Errorf("a follower of shard 3 reports the lag there")
	}
}

// TestConsumerOffsetsSurviveLeaderLoss: offsets set through the API are
// in the shard's Raft group, so after its leader is killed the new
// leader answers them, and still refuses to move them backwards.
func TestConsumerOffsetsSurviveLeaderLoss(t *testing.T) {
	nodes := startCluster3(t)
	nodes[0].accounts(t, "alice", "USD", "carol", "USD")
	old := leaderOf(t, nodes, homeShard)
	mustOK(t, do(t, "PUT", old.url()+"/v1/consumers/sink/offsets/3", []byte(`{"seq": 2}`)), "set offset")
	mustOK(t, do(t, "PUT", old.url()+"/v1/consumers/sink/offsets/0", []byte(`{"seq": 0}`)), "set offset")

	h := old.host()
	old.c.Kill(old.num)
	var live *node
	for _, n := range nodes {
		if n != old {
			live = n
		}
	}
	for i := 0; i < testShards; i++ {
		old.c.WaitLeader(t, i, h) // the listing reads every shard on its leader
	}
	a := mustOK(t, live.get(t, "/v1/consumers/sink"), "read after the leader's loss")
	if c := consumerOf(t, a.body); positions(c) != "0:0/0 1:0/0 2:0/0 3:2/2" {
		t.Fatalf("after the leader's loss: %q", positions(c))
	}
	a = do(t, "PUT", live.url()+"/v1/consumers/sink/offsets/3", []byte(`{"seq": 1}`))
	if code, _ := a.errorCode(t); a.status != http.StatusConflict || code != "offset_backwards" {
		t.Fatalf("set backwards on the new leader: %d %s", a.status, a.body)
	}
}
