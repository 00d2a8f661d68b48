package wire

import (
	"encoding/json"
	"fmt"
	"strconv"

	"tally/ledger"
)

// Page is a page of events from an account's history or a shard's log.
type Page struct {
	Events []ledger.Event `json:"events"`
	// Next is the cursor of the following page; empty on the last page.
	Next string `json:"next"`
}

// UnmarshalJSON accepts next as a string or as a number, so that a cursor
// that happens to be a seq decodes either way.
func (p *Page) UnmarshalJSON(b []byte) error {
	var raw struct {
		Events []ledger.Event   `json:"events"`
		Next   *json.RawMessage `json:"next"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	p.Events, p.Next = raw.Events, ""
	if raw.Next == nil {
		return nil
	}
	var s string
	if err := json.Unmarshal(*raw.Next, &s); err == nil {
		p.Next = s
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(*raw.Next, &n); err != nil {
		return fmt.Errorf("next: want a string or a number, got %s", *raw.Next)
	}
	if _, err := strconv.ParseUint(n.String(), 10, 64); err != nil {
		return fmt.Errorf("next: %w", err)
	}
	p.Next = n.String()
	return nil
}

// Cluster is the answer to GET /v1/cluster (and /v1/cluster/local, one
// node's own view).
type Cluster struct {
	Shards []Shard `json:"shards"`
	Nodes  []Node  `json:"nodes"`
}

// Shard is one shard's Raft group as a node sees it. CommitIndex is the
// leader's commit index (0 when no leader answered).
type Shard struct {
	Shard       int       `json:"shard"`
	Leader      string    `json:"leader"`
	LeaderHTTP  string    `json:"leader_http"`
	AppliedSeq  uint64    `json:"applied_seq"`
	CommitIndex uint64    `json:"commit_index"`
	Replicas    []Replica `json:"replicas"`
}

// Suffrage of a replica: a voter counts towards commits and elections; a
// non-voter (a joining node still catching up) only receives the log.
const (
	Voter    = "voter"
	Nonvoter = "nonvoter"
)

// Replica is one member of a shard's Raft group. AppliedIndex is the Raft
// index it reports having applied; Lag is how far that is behind the
// leader's commit index, meaningful when both answered (State is neither
// unknown nor unreachable, and the shard's CommitIndex is set).
type Replica struct {
	Node         string `json:"node"`
	Raft         string `json:"raft"`
	HTTP         string `json:"http"`
	Suffrage     string `json:"suffrage"`
	State        string `json:"state"`
	AppliedSeq   uint64 `json:"applied_seq"`
	AppliedIndex uint64 `json:"applied_index"`
	Lag          uint64 `json:"lag"`
}

// Node is one tally server process.
type Node struct {
	ID   string `json:"id"`
	HTTP string `json:"http"`
	Raft string `json:"raft"`
}

// ShardState is the answer to GET /v1/shards/{n}/state: one replica's
// view of its shard, for verify and the fault tests. Hashes are
// lowercase hex (ledger.Hash.String).
type ShardState struct {
	Shard        int    `json:"shard"`
	Node         string `json:"node"`
	AppliedIndex uint64 `json:"applied_index"`
	AppliedSeq   uint64 `json:"applied_seq"`
	HeadHash     string `json:"head_hash"`
	StateHash    string `json:"state_hash"`
	Accounts     int    `json:"accounts"`
	Pending      int    `json:"pending"`
	RaftState    string `json:"raft_state"`
	Term         uint64 `json:"term"`
	Leader       string `json:"leader"`
	CommitIndex  uint64 `json:"commit_index"`
}

// VerifyReport is the answer to GET /v1/shards/{n}/verify: the outcome of
// one replica replaying its event log from seq 1. Hashes are lowercase
// hex; Error is empty when OK. The fields are in alphabetical order, the
// order the answer's keys have always had on the wire.
type VerifyReport struct {
	Accounts   int    `json:"accounts"`
	AppliedSeq uint64 `json:"applied_seq"`
	Error      string `json:"error"`
	Events     uint64 `json:"events"`
	HeadHash   string `json:"head_hash"`
	Node       string `json:"node"`
	OK         bool   `json:"ok"`
	Shard      int    `json:"shard"`
	StateHash  string `json:"state_hash"`
}

// HashAt is the answer to GET /v1/shards/{n}/hash?seq=N: the hash-chain
// value right after seq. The fields are in alphabetical order, the order
// the answer's keys have always had on the wire.
type HashAt struct {
	Hash  ledger.Hash `json:"hash"`
	Seq   uint64      `json:"seq"`
	Shard int         `json:"shard"`
}
