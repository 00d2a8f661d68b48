// Package check holds the fault suite's checkers C1-C10 (test/README.md,
// docs/testing.md "Checkers"). They read a run's history and every replica's
// final event log and state, and judge them against docs/spec.md alone: this
// package imports nothing of the product (no ledger, fsm or shard), so a
// bug shared by the product and its own verifier cannot hide here.
package check

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"tally/test/jepsen/history"
)

// Final is what the harness exported from the cluster after the run:
// every replica's event log and state, once every fault was healed and
// every replica caught up.
type Final struct {
	Shards   int       `json:"shards"`
	Replicas []Replica `json:"replicas"`
	// Quiesced is false when the replicas did not catch up within the
	// harness's wait: convergence cannot be judged then.
	Quiesced bool `json:"quiesced"`
}

// Replica is one node's replica of one shard.
type Replica struct {
	Node   string      `json:"node"`
	Shard  int         `json:"shard"`
	State  *StateView  `json:"state,omitempty"`
	Verify *VerifyView `json:"verify,omitempty"`
	Events []Event     `json:"-"`
	Err    string      `json:"err,omitempty"` // the export failed
}

// StateView is GET /v1/shards/N/state (docs/api.md).
type StateView struct {
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

// VerifyView is GET /v1/shards/N/verify.
type VerifyView struct {
	OK         bool   `json:"ok"`
	Events     uint64 `json:"events"`
	AppliedSeq uint64 `json:"applied_seq"`
	HeadHash   string `json:"head_hash"`
	StateHash  string `json:"state_hash"`
	Error      string `json:"error"`
}

// Event is one event of a shard's log as the API serves it (docs/spec.md 5,
// docs/api.md "Events"). Raw keeps the bytes the server sent, from which
// the hash is recomputed.
type Event struct {
	Shard     int                      `json:"shard"`
	Seq       uint64                   `json:"seq"`
	RaftIndex uint64                   `json:"raft_index"`
	Time      string                   `json:"time"`
	Type      string                   `json:"type"`
	Data      EventData                `json:"data"`
	Balances  []history.AccountBalance `json:"balances"`
	PrevHash  string                   `json:"prev_hash"`
	Hash      string                   `json:"hash"`
	Raw       json.RawMessage          `json:"-"`
}

// EventData holds the fields of the event types the checkers fold.
type EventData struct {
	Account   *AccountData  `json:"account,omitempty"`
	AccountID string        `json:"account_id,omitempty"`
	Transfer  *TransferData `json:"transfer,omitempty"`
	Result    string        `json:"result,omitempty"`
	PendingID string        `json:"pending_id,omitempty"`
	Amount    int64         `json:"amount,omitempty"`
	Currency  string        `json:"currency,omitempty"`
	Peer      *int          `json:"peer_shard,omitempty"`
}

// AccountData is an opened account.
type AccountData struct {
	ID            string `json:"id"`
	Currency      string `json:"currency"`
	AllowNegative bool   `json:"allow_negative"`
}

// TransferData is a transfer as an event carries it.
type TransferData struct {
	ID             string `json:"id"`
	Debit          string `json:"debit"`
	Credit         string `json:"credit"`
	Amount         int64  `json:"amount"`
	Pending        bool   `json:"pending,omitempty"`
	TimeoutSeconds int64  `json:"timeout_seconds,omitempty"`
	PostPendingID  string `json:"post_pending_id,omitempty"`
	VoidPendingID  string `json:"void_pending_id,omitempty"`
	Linked         bool   `json:"linked,omitempty"`
	Reference      string `json:"reference,omitempty"`
}

// TransferID returns the id of the transfer an event is about, or "".
func (e *Event) TransferID() string {
	if e.Data.Transfer != nil {
		return e.Data.Transfer.ID
	}
	return e.Data.PendingID
}

// ParseEvents decodes a page of events ({"events": [...]}) keeping each
// event's raw bytes.
func ParseEvents(page []byte) ([]Event, string, error) {
	var p struct {
		Events []json.RawMessage `json:"events"`
		Next   string            `json:"next"`
	}
	if err := json.Unmarshal(page, &p); err != nil {
		return nil, "", fmt.Errorf("decode events page: %w", err)
	}
	out := make([]Event, 0, len(p.Events))
	for _, raw := range p.Events {
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, "", fmt.Errorf("decode event: %w", err)
		}
		e.Raw = append(json.RawMessage(nil), raw...)
		out = append(out, e)
	}
	return out, p.Next, nil
}

var zeroHash = strings.Repeat("0", 64)

// ComputeHash recomputes SHA-256(prev_hash || canonical encoding) from the
// raw event (docs/spec.md 5). The event's "enc" says which encoding: absent,
// the event as served with both hashes zeroed (the events of version-1
// entries); 2, the binary encoding (canon.go). It returns "" when the raw
// bytes are missing, name another encoding, or do not hold what the
// encoding needs.
func (e *Event) ComputeHash() string {
	if len(e.Raw) == 0 || len(e.PrevHash) != 64 || len(e.Hash) != 64 {
		return ""
	}
	switch enc, ok := encodingOf(e.Raw); {
	case !ok:
		return ""
	case enc == 2:
		return binaryHash(e.Raw)
	case enc != 0:
		return ""
	}
	ph := []byte(`"prev_hash":"` + e.PrevHash + `"`)
	h := []byte(`"hash":"` + e.Hash + `"`)
	if bytes.Count(e.Raw, ph) != 1 {
		return ""
	}
	c := bytes.Replace(e.Raw, ph, []byte(`"prev_hash":"`+zeroHash+`"`), 1)
	// After the first replacement the only "hash":"<hash>" left is the
	// event's own (prev_hash now holds zeros).
	if bytes.Count(c, h) != 1 {
		return ""
	}
	c = bytes.Replace(c, h, []byte(`"hash":"`+zeroHash+`"`), 1)
	prev, err := hex.DecodeString(e.PrevHash)
	if err != nil {
		return ""
	}
	s := sha256.New()
	s.Write(prev)
	s.Write(c)
	return hex.EncodeToString(s.Sum(nil))
}
