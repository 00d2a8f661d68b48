package client

import (
	"encoding/json"
	"fmt"
	"strconv"

	"tally/ledger"
)

// Consistency levels of a read (docs/api.md, "Accounts").
const (
	Linearizable = "linearizable"
	Stale        = "stale"
)

// ReadOpts says how an account read is served. The zero value is a
// linearizable read of the sum over all shards (for @world).
type ReadOpts struct {
	// Consistency is Linearizable (the default when empty) or Stale.
	Consistency string
	// MinSeq makes a replica wait until it has applied this seq of the
	// account's shard (read-your-writes without going to the leader).
	MinSeq uint64
	// AtSeq asks for the balance right after this seq (time travel).
	AtSeq uint64
	// Currency selects the currency of a system account such as @world.
	Currency string
	// Shard selects one shard of a system account; nil means the sum over
	// every shard.
	Shard *int
}

// AccountView is the answer to GET /v1/accounts/{id}.
type AccountView struct {
	ID             string            `json:"id"`
	Currency       string            `json:"currency"`
	AllowNegative  bool              `json:"allow_negative"`
	Metadata       map[string]string `json:"metadata,omitempty"`
	Closed         bool              `json:"closed"`
	DebitsPosted   int64             `json:"debits_posted"`
	CreditsPosted  int64             `json:"credits_posted"`
	DebitsPending  int64             `json:"debits_pending"`
	CreditsPending int64             `json:"credits_pending"`
	Balance        int64             `json:"balance"`
	Available      int64             `json:"available"`
	Shard          int               `json:"shard"`
	// Seq is the shard's applied seq that this answer reflects.
	Seq        uint64      `json:"seq"`
	CreatedSeq uint64      `json:"created_seq"`
	CreatedAt  ledger.Time `json:"created_at,omitzero"`
}

// TransferView is the answer to GET /v1/transfers/{id}.
type TransferView struct {
	ID         string        `json:"id"`
	Debit      string        `json:"debit"`
	Credit     string        `json:"credit"`
	Amount     int64         `json:"amount"`
	Status     ledger.Status `json:"status"`
	Result     ledger.Code   `json:"result"`
	CrossShard bool          `json:"cross_shard"`
	Shard      int           `json:"shard"`
	Seq        uint64        `json:"seq"`
	Time       ledger.Time   `json:"time,omitzero"`
	// Transfer is the request as the ledger recorded it.
	Transfer *ledger.Transfer `json:"transfer,omitempty"`
	// Set once a pending transfer is resolved: the post or void id, or
	// "expired".
	ResolvedBy     string `json:"resolved_by,omitempty"`
	ResolvedSeq    uint64 `json:"resolved_seq,omitempty"`
	ResolvedAmount int64  `json:"resolved_amount,omitempty"`
	// Saga is set for a cross-shard transfer: the step its source shard
	// reached, and the driver's attempts when the source leader has them.
	Saga *SagaState `json:"saga,omitempty"`
}

// SagaState is a cross-shard transfer's progress on its source shard.
type SagaState struct {
	ledger.Saga
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// Saga is one entry of GET /v1/sagas.
type Saga struct {
	ID         string        `json:"id"`
	Shard      int           `json:"shard"`
	PeerShard  int           `json:"peer_shard"`
	Debit      string        `json:"debit"`
	Credit     string        `json:"credit"`
	Amount     int64         `json:"amount"`
	Currency   string        `json:"currency"`
	Status     ledger.Status `json:"status"`
	Result     ledger.Code   `json:"result"`
	Step       string        `json:"step"`
	Time       ledger.Time   `json:"time"`
	AgeSeconds float64       `json:"age_seconds"`
	Attempts   int           `json:"attempts"`
	LastError  string        `json:"last_error,omitempty"`
	Note       string        `json:"note,omitempty"`
	Stuck      bool          `json:"stuck"`
}

// HistoryOpts pages through an account's history.
type HistoryOpts struct {
	// After is a cursor: the Next of the previous page, or empty.
	After string
	// Limit is the page size; 0 lets the server choose (100).
	Limit int
	// Order is "asc" or "desc"; empty lets the server choose.
	Order string
}

// EventPage is a page of events from an account's history or a shard's log.
type EventPage struct {
	Events []ledger.Event `json:"events"`
	// Next is the cursor of the following page; empty on the last page.
	Next string `json:"next,omitempty"`
}

// UnmarshalJSON accepts next as a string or as a number, so that a cursor
// that happens to be a seq decodes either way.
func (p *EventPage) UnmarshalJSON(b []byte) error {
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

// ClusterStatus is the answer to GET /v1/cluster.
type ClusterStatus struct {
	Shards []ShardInfo `json:"shards"`
	Nodes  []Node      `json:"nodes"`
}

// ShardInfo is one shard's Raft group as a node sees it.
type ShardInfo struct {
	Shard      int       `json:"shard"`
	Leader     string    `json:"leader"`
	LeaderHTTP string    `json:"leader_http"`
	AppliedSeq uint64    `json:"applied_seq"`
	Replicas   []Replica `json:"replicas"`
}

// Replica is one member of a shard's Raft group.
type Replica struct {
	Node       string `json:"node"`
	Raft       string `json:"raft"`
	HTTP       string `json:"http"`
	State      string `json:"state"`
	AppliedSeq uint64 `json:"applied_seq"`
}

// Node is one tally server process.
type Node struct {
	ID   string `json:"id"`
	HTTP string `json:"http"`
	Raft string `json:"raft"`
}

// ShardState is the answer to GET /v1/shards/{n}/state: one replica's
// view of its shard.
type ShardState struct {
	Shard        int    `json:"shard"`
	Node         string `json:"node"`
	AppliedIndex uint64 `json:"applied_index"`
	AppliedSeq   uint64 `json:"applied_seq"`
	HeadHash     string `json:"head_hash"`
	StateHash    string `json:"state_hash"`
	RaftState    string `json:"raft_state"`
	Term         uint64 `json:"term"`
	Leader       string `json:"leader"`
	CommitIndex  uint64 `json:"commit_index"`
}

// VerifyReport is the answer to GET /v1/shards/{n}/verify: the outcome of
// one replica replaying its event log from seq 1.
type VerifyReport struct {
	Shard      int    `json:"shard"`
	Node       string `json:"node"`
	OK         bool   `json:"ok"`
	Events     uint64 `json:"events"`
	AppliedSeq uint64 `json:"applied_seq"`
	HeadHash   string `json:"head_hash"`
	StateHash  string `json:"state_hash"`
	Error      string `json:"error,omitempty"`
}

// hashAnswer is the answer to GET /v1/shards/{n}/hash?seq=N.
type hashAnswer struct {
	Shard int         `json:"shard"`
	Seq   uint64      `json:"seq"`
	Hash  ledger.Hash `json:"hash"`
}

// accountIn is the wire form of an account creation: only the fields a
// client may set, so that a server rejecting unknown fields accepts it.
type accountIn struct {
	ID            string            `json:"id"`
	Currency      string            `json:"currency"`
	AllowNegative bool              `json:"allow_negative"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}

type resultsAnswer struct {
	Results []ledger.Result `json:"results"`
}

type okAnswer struct {
	OK bool `json:"ok"`
}
