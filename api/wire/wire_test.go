package wire

import (
	"encoding/json"
	"testing"
	"time"

	"tally/ledger"
)

// TestEncoding pins the bytes of each answer: a renamed field, a changed
// type or omitempty choice, or a reordered field shows up here, where
// docs/api.md's examples only check that the shown fields are present.
func TestEncoding(t *testing.T) {
	t0 := int64(1_800_000_000_000_000_000) // 2027-01-15T08:00:00Z
	acct := &ledger.Account{ID: "alice", Currency: "USD", Metadata: map[string]string{"kyc": "ok"},
		DebitsPosted: 2500, CreditsPosted: 10000, DebitsPending: 100, CreatedSeq: 1, CreatedAt: t0}
	pending := &ledger.Record{Transfer: ledger.Transfer{ID: "p-1", Debit: "alice", Credit: "carol", Amount: 100,
		Pending: true, TimeoutSeconds: 60}, Result: ledger.OK, Status: ledger.StatusPending, Seq: 5, Time: t0,
		ExpiresAt: t0 + int64(time.Minute)}
	saga := &ledger.Record{Transfer: ledger.Transfer{ID: "x-1", Debit: "alice", Credit: "dave", Amount: 500},
		Result: ledger.OK, Status: ledger.StatusInFlight, Seq: 8, Time: t0,
		Saga: &ledger.Saga{Role: ledger.RoleSource, Peer: 0, Currency: "USD", Step: ledger.StepHeld}}
	var h ledger.Hash
	h[0] = 0xab
	for _, c := range []struct {
		name string
		v    any
		want string
	}{
		{"account", AccountOf(acct, 3, 17),
			`{"id":"alice","currency":"USD","allow_negative":false,"metadata":{"kyc":"ok"},"closed":false,` +
				`"debits_posted":2500,"credits_posted":10000,"debits_pending":100,"credits_pending":0,` +
				`"balance":7500,"available":7400,"shard":3,"seq":17,"created_seq":1,"created_at":"2027-01-15T08:00:00Z"}`},
		{"account without creation time", AccountOf(&ledger.Account{ID: "@world", Currency: "USD", AllowNegative: true}, 0, 2),
			`{"id":"@world","currency":"USD","allow_negative":true,"closed":false,"debits_posted":0,"credits_posted":0,` +
				`"debits_pending":0,"credits_pending":0,"balance":0,"available":0,"shard":0,"seq":2,"created_seq":0,` +
				`"created_at":"1970-01-01T00:00:00Z"}`},
		{"pending transfer", TransferOf(pending, 3),
			`{"id":"p-1","debit":"alice","credit":"carol","amount":100,"status":"pending","result":"ok","cross_shard":false,` +
				`"shard":3,"seq":5,"time":"2027-01-15T08:00:00Z","expires_at":"2027-01-15T08:01:00Z",` +
				`"transfer":{"id":"p-1","debit":"alice","credit":"carol","amount":100,"pending":true,"timeout_seconds":60}}`},
		{"cross-shard transfer", TransferOf(saga, 3),
			`{"id":"x-1","debit":"alice","credit":"dave","amount":500,"status":"in_flight","result":"ok","cross_shard":true,` +
				`"shard":3,"seq":8,"time":"2027-01-15T08:00:00Z",` +
				`"saga":{"role":"source","peer_shard":0,"currency":"USD","step":"held"},` +
				`"transfer":{"id":"x-1","debit":"alice","credit":"dave","amount":500}}`},
		{"saga", Sagas{Sagas: []Saga{SagaOf(saga, 3, 1500*time.Millisecond)}},
			`{"sagas":[{"id":"x-1","shard":3,"peer_shard":0,"debit":"alice","credit":"dave","amount":500,"currency":"USD",` +
				`"status":"in_flight","result":"ok","step":"held","time":"2027-01-15T08:00:00Z","age_seconds":1.5,` +
				`"attempts":0,"stuck":false}]}`},
		{"last page", Page{Events: []ledger.Event{}}, `{"events":[],"next":""}`},
		{"verify", VerifyReport{Shard: 3, Node: "n1", OK: true, Events: 42, AppliedSeq: 42, HeadHash: "ab", StateHash: "cd", Accounts: 2},
			`{"accounts":2,"applied_seq":42,"error":"","events":42,"head_hash":"ab","node":"n1","ok":true,"shard":3,"state_hash":"cd"}`},
		{"hash", HashAt{Shard: 3, Seq: 2, Hash: h},
			`{"hash":"ab00000000000000000000000000000000000000000000000000000000000000","seq":2,"shard":3}`},
		{"shard state", ShardState{Shard: 3, Node: "n1", AppliedIndex: 120, AppliedSeq: 42, HeadHash: "ab", StateHash: "cd",
			Accounts: 2, Pending: 1, RaftState: "Leader", Term: 3, Leader: "n1", CommitIndex: 120},
			`{"shard":3,"node":"n1","applied_index":120,"applied_seq":42,"head_hash":"ab","state_hash":"cd","accounts":2,` +
				`"pending":1,"raft_state":"Leader","term":3,"leader":"n1","commit_index":120}`},
		{"cluster", Cluster{Shards: []Shard{{Shard: 0, Leader: "n1", LeaderHTTP: "h1", AppliedSeq: 4, CommitIndex: 9,
			Replicas: []Replica{{Node: "n1", Raft: "r1", HTTP: "h1", Suffrage: Voter, State: "leader", AppliedSeq: 4, AppliedIndex: 9},
				{Node: "n4", Raft: "r4", HTTP: "h4", Suffrage: Nonvoter, State: "follower", AppliedSeq: 1, AppliedIndex: 5, Lag: 4}}}},
			Nodes: []Node{{ID: "n1", HTTP: "h1", Raft: "r1"}}},
			`{"shards":[{"shard":0,"leader":"n1","leader_http":"h1","applied_seq":4,"commit_index":9,"replicas":[{"node":"n1","raft":"r1",` +
				`"http":"h1","suffrage":"voter","state":"leader","applied_seq":4,"applied_index":9,"lag":0},` +
				`{"node":"n4","raft":"r4","http":"h4","suffrage":"nonvoter","state":"follower","applied_seq":1,"applied_index":5,"lag":4}]}],` +
				`"nodes":[{"id":"n1","http":"h1","raft":"r1"}]}`},
		{"new accounts", AccountsIn{Accounts: []AccountIn{{ID: "bob", Currency: "EUR"}}},
			`{"accounts":[{"id":"bob","currency":"EUR","allow_negative":false}]}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(b) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, b, c.want)
		}
	}
}

func TestPageNext(t *testing.T) {
	for in, want := range map[string]string{
		`{"events":[],"next":"41"}`: "41",
		`{"events":[],"next":41}`:   "41",
		`{"events":[],"next":""}`:   "",
		`{"events":[]}`:             "",
	} {
		var p Page
		if err := json.Unmarshal([]byte(in), &p); err != nil || p.Next != want {
			t.Errorf("%s: next %q, err %v; want %q", in, p.Next, err, want)
		}
	}
	for _, in := range []string{`{"next":-1}`, `{"next":1.5}`, `{"next":true}`} {
		var p Page
		if err := json.Unmarshal([]byte(in), &p); err == nil {
			t.Errorf("%s: want an error", in)
		}
	}
}
