package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"tally/client"
)

// recorder is an httptest server that answers with a fixed handler and
// remembers the last request body per path.
type recorder struct {
	mu     sync.Mutex
	bodies map[string]string
	srv    *httptest.Server
}

func newRecorder(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) *recorder {
	t.Helper()
	rec := &recorder{bodies: map[string]string{}}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.bodies[r.URL.Path] = string(b)
		rec.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (rec *recorder) addr() string { return strings.TrimPrefix(rec.srv.URL, "http://") }

func (rec *recorder) body(path string) string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.bodies[path]
}

func TestClusterCommands(t *testing.T) {
	status := client.ClusterStatus{
		Shards: []client.ShardInfo{
			{Shard: 0, Leader: "n1", LeaderHTTP: "127.0.0.1:8001", AppliedSeq: 42, CommitIndex: 90, Replicas: []client.Replica{
				{Node: "n1", Raft: "127.0.0.1:7001", HTTP: "127.0.0.1:8001", Suffrage: "voter", State: "leader", AppliedSeq: 42, AppliedIndex: 90},
				{Node: "n2", Raft: "127.0.0.1:7002", HTTP: "127.0.0.1:8002", Suffrage: "voter", State: "follower", AppliedSeq: 41, AppliedIndex: 89, Lag: 1},
				{Node: "n3", Raft: "127.0.0.1:7003", HTTP: "127.0.0.1:8003", Suffrage: "nonvoter", State: "follower", AppliedSeq: 7, AppliedIndex: 20, Lag: 70}}},
			{Shard: 1, Replicas: []client.Replica{}},
		},
		Nodes: []client.Node{{ID: "n1", HTTP: "127.0.0.1:8001", Raft: "127.0.0.1:7001"}, {ID: "n2", HTTP: "127.0.0.1:8002", Raft: "127.0.0.1:7002"}},
	}
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/cluster" {
			json.NewEncoder(w).Encode(status)
			return
		}
		if strings.Contains(r.URL.Path, "leave") {
			w.WriteHeader(404)
			io.WriteString(w, `{"error": {"code": "not_found", "message": "no node n9"}}`)
			return
		}
		io.WriteString(w, `{"ok": true}`)
	})

	out := mustRun(t, rec.addr(), "cluster", "status")
	if got := strings.Join(fields(t, out, "0"), " "); got != "0 n1 127.0.0.1:8001 42 90 n1=leader@42 n2=follower@41,lag=1 n3=follower@7,lag=70" {
		t.Errorf("shard 0 line %q\n%s", got, out)
	}
	if got := strings.Join(fields(t, out, "1"), " "); got != "1 - - 0 0 - -" {
		t.Errorf("leaderless shard line %q", got)
	}
	if got := strings.Join(fields(t, out, "n2"), " "); got != "n2 127.0.0.1:8002 127.0.0.1:7002" {
		t.Errorf("node line %q", got)
	}
	out = mustRun(t, rec.addr(), "--json", "cluster", "status")
	var back client.ClusterStatus
	if err := json.Unmarshal([]byte(out), &back); err != nil || len(back.Shards) != 2 || back.Shards[0].Replicas[1].AppliedSeq != 41 {
		t.Errorf("json %v: %s", err, out)
	}

	tests := []struct {
		args     []string
		path     string
		wantBody string
		wantOut  string
	}{
		{[]string{"cluster", "join", "n4", "127.0.0.1:7004", "127.0.0.1:8004"}, "/v1/cluster/join",
			`{"http":"127.0.0.1:8004","id":"n4","raft":"127.0.0.1:7004"}`, "n4 joined\n"},
		{[]string{"cluster", "transfer-leader", "2", "n3"}, "/v1/cluster/transfer-leader",
			`{"shard":2,"to":"n3"}`, "shard 2: leadership transferred to n3\n"},
		{[]string{"cluster", "transfer-leader", "0"}, "/v1/cluster/transfer-leader",
			`{"shard":0}`, "shard 0: leadership transferred to another voter\n"},
		{[]string{"--json", "cluster", "join", "n5", "r", "h"}, "/v1/cluster/join",
			`{"http":"h","id":"n5","raft":"r"}`, "{\n  \"ok\": true\n}\n"},
	}
	for _, tt := range tests {
		out := mustRun(t, rec.addr(), tt.args...)
		if got := strings.TrimSpace(rec.body(tt.path)); got != tt.wantBody {
			t.Errorf("%v: body %s, want %s", tt.args, got, tt.wantBody)
		}
		if out != tt.wantOut {
			t.Errorf("%v: printed %q, want %q", tt.args, out, tt.wantOut)
		}
	}
	_, _, err := run(t, rec.addr(), "cluster", "leave", "n9")
	if err == nil || err.Error() != "leave n9: not_found: no node n9 (HTTP 404)" {
		t.Errorf("leave: %v", err)
	}
	if got := rec.body("/v1/cluster/leave"); strings.TrimSpace(got) != `{"id":"n9"}` {
		t.Errorf("leave body %s", got)
	}
}

// replicaFake is one node as verify sees it.
type replicaFake struct {
	node       string
	appliedSeq uint64
	ok         bool
	stateHash  string
	// hashes is the node's hash chain by seq.
	hashes map[uint64]string
	down   bool
}

// startVerifyCluster starts one server per replica of one shard and a front
// server whose /v1/cluster lists them, and returns the front's address.
func startVerifyCluster(t *testing.T, reps []*replicaFake) string {
	t.Helper()
	var st client.ClusterStatus
	info := client.ShardInfo{Shard: 0}
	for _, rf := range reps {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/v1/shards/0/verify":
				msg := ""
				if !rf.ok {
					msg = "balance of alice differs at seq 3"
				}
				json.NewEncoder(w).Encode(client.VerifyReport{Shard: 0, Node: rf.node, OK: rf.ok, Events: rf.appliedSeq,
					AppliedSeq: rf.appliedSeq, HeadHash: rf.hashes[rf.appliedSeq], StateHash: rf.stateHash, Error: msg})
			case "/v1/shards/0/hash":
				var seq uint64
				fmt.Sscan(r.URL.Query().Get("seq"), &seq)
				fmt.Fprintf(w, `{"shard": 0, "seq": %d, "hash": %q}`, seq, rf.hashes[seq])
			default:
				http.NotFound(w, r)
			}
		}))
		t.Cleanup(srv.Close)
		addr := strings.TrimPrefix(srv.URL, "http://")
		if rf.down {
			srv.Close()
		}
		info.Replicas = append(info.Replicas, client.Replica{Node: rf.node, HTTP: addr})
		st.Nodes = append(st.Nodes, client.Node{ID: rf.node, HTTP: addr})
	}
	st.Shards = []client.ShardInfo{info}
	front := newRecorder(t, func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(st) })
	return front.addr()
}

func hashOf(b byte) string { return strings.Repeat(fmt.Sprintf("%02x", b), 32) }

func TestVerify(t *testing.T) {
	chain := map[uint64]string{40: hashOf(0xaa), 41: hashOf(0xbb), 42: hashOf(0xcc)}
	forked := map[uint64]string{40: hashOf(0x11), 42: hashOf(0x22)}
	good := func(node string, seq uint64) *replicaFake {
		return &replicaFake{node: node, appliedSeq: seq, ok: true, stateHash: fmt.Sprint("s", seq), hashes: chain}
	}
	tests := []struct {
		name    string
		reps    []*replicaFake
		wantErr string
		// wantOK is the OK column per node.
		wantOK map[string]string
	}{
		{"agree", []*replicaFake{good("n1", 42), good("n2", 42), good("n3", 40)}, "",
			map[string]string{"n1": "ok", "n2": "ok", "n3": "ok"}},
		{"hash chains fork", []*replicaFake{good("n1", 42), {node: "n2", appliedSeq: 42, ok: true, stateHash: "s42", hashes: forked}, good("n3", 40)},
			"shard 0: hash chains differ at seq 40 (n1 has aaaaaaaaaaaa, n2 has 111111111111)",
			map[string]string{"n1": "ok", "n2": "hash", "n3": "ok"}},
		{"state differs at the same seq", []*replicaFake{good("n1", 42), {node: "n2", appliedSeq: 42, ok: true, stateHash: "other", hashes: chain}},
			"shard 0: state differs at seq 42", map[string]string{"n1": "ok", "n2": "state"}},
		{"replay fails", []*replicaFake{good("n1", 42), {node: "n2", appliedSeq: 42, hashes: chain}},
			"shard 0: n2: replay failed: balance of alice differs at seq 3", map[string]string{"n1": "ok", "n2": "replay"}},
		{"node down", []*replicaFake{good("n1", 42), {node: "n2", down: true}},
			"shard 0: n2: GET /v1/shards/0/verify at", map[string]string{"n1": "ok", "n2": "GET"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startVerifyCluster(t, tt.reps)
			out, _, err := run(t, addr, "verify")
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
			for node, ok := range tt.wantOK {
				got := fields(t, strings.ReplaceAll(out, "\n0 ", "\n"), node)
				if len(got) < 7 || !strings.HasPrefix(strings.Join(got[6:], " "), ok) {
					t.Errorf("%s line %v, want OK column %q\n%s", node, got, ok, out)
				}
			}
		})
	}
	addr := startVerifyCluster(t, []*replicaFake{good("n1", 42), good("n2", 41)})
	out := mustRun(t, addr, "--json", "verify")
	var v verifyOutput
	if err := json.Unmarshal([]byte(out), &v); err != nil || !v.OK || v.Shards[0].MinSeq != 41 || v.Shards[0].Replicas[1].Hash != hashOf(0xbb) {
		t.Errorf("json %v: %s", err, out)
	}
	out = mustRun(t, addr, "verify")
	if got := fields(t, strings.ReplaceAll(out, "\n0 ", "\n"), "n1"); len(got) != 7 || strings.Join(append(got[:2:2], got[3:]...), " ") != "n1 42 42 cccccccccccc bbbbbbbbbbbb@41 ok" {
		t.Errorf("table line %v\n%s", got, out)
	}
}
