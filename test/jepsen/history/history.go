// Package history is the record of a fault run: every operation a client
// invoked and how it completed, as JSON lines, the way Jepsen keeps them.
// Each operation is two lines with the same Index: an invoke, then ok
// (it happened, with what the server answered), fail (it definitely did
// not happen: a business rejection, a 503, a 4xx, never sent) or info
// (unknown: a timeout, a reset after sending, a 504). The checkers read
// nothing else from the run but this history and the replicas' final logs.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
)

// Type says where an operation stands.
type Type string

const (
	Invoke Type = "invoke"
	OK     Type = "ok"
	Fail   Type = "fail"
	Info   Type = "info"
)

// Operation kinds (the F of an Op).
const (
	FOpen          = "open"           // create one account (setup)
	FDeposit       = "deposit"        // @world -> an account (setup)
	FTransfer      = "transfer"       // a transfer between two accounts of one shard
	FCross         = "cross"          // a transfer between accounts of two shards
	FRead          = "read"           // a linearizable account read through the proxy
	FNodeRead      = "node_read"      // a linearizable account read sent to one node
	FShardRead     = "shard_read"     // a page of a shard's event log through the proxy
	FReplay        = "replay"         // an earlier transfer id sent again with its body
	FReplayChanged = "replay_changed" // an earlier transfer id sent with a changed body
)

// IsWrite reports whether f sends a transfer.
func IsWrite(f string) bool {
	switch f {
	case FDeposit, FTransfer, FCross, FReplay, FReplayChanged:
		return true
	}
	return false
}

// Transfer is a transfer request as the workload sends it.
type Transfer struct {
	ID        string `json:"id"`
	Debit     string `json:"debit"`
	Credit    string `json:"credit"`
	Amount    int64  `json:"amount"`
	Reference string `json:"reference,omitempty"`
}

// Same reports whether t and u are the same request.
func (t Transfer) Same(u Transfer) bool { return t == u }

// Balance is what an account read answered.
type Balance struct {
	Currency       string `json:"currency"`
	AllowNegative  bool   `json:"allow_negative,omitempty"`
	DebitsPosted   int64  `json:"debits_posted"`
	CreditsPosted  int64  `json:"credits_posted"`
	DebitsPending  int64  `json:"debits_pending"`
	CreditsPending int64  `json:"credits_pending"`
	Balance        int64  `json:"balance"`
	Available      int64  `json:"available"`
}

// AccountBalance is an account's balances right after an event.
type AccountBalance struct {
	Account        string `json:"account"`
	Currency       string `json:"currency"`
	DebitsPosted   int64  `json:"debits_posted"`
	CreditsPosted  int64  `json:"credits_posted"`
	DebitsPending  int64  `json:"debits_pending"`
	CreditsPending int64  `json:"credits_pending"`
}

// EventRef is an event a shard read was served: enough to compare it with
// the final log and to fold the balances it carries.
type EventRef struct {
	Seq      uint64           `json:"seq"`
	Type     string           `json:"type"`
	PrevHash string           `json:"prev_hash"`
	Hash     string           `json:"hash"`
	Balances []AccountBalance `json:"balances,omitempty"`
}

// Op is one line of the history.
type Op struct {
	Index   int    `json:"index"`
	Process int    `json:"process"`
	Type    Type   `json:"type"`
	F       string `json:"f"`
	Time    int64  `json:"time"` // nanoseconds since the run started

	// What was asked (invoke; repeated on the completion).
	Transfer *Transfer `json:"transfer,omitempty"`
	Account  string    `json:"account,omitempty"`
	Currency string    `json:"currency,omitempty"`
	Shard    int       `json:"shard"`           // the account's shard, the transfer's home shard, the shard read
	Dest     int       `json:"dest,omitempty"`  // cross: the credit account's shard
	Node     string    `json:"node,omitempty"`  // node_read: the node asked
	After    uint64    `json:"after,omitempty"` // shard_read: the cursor
	Of       int       `json:"of,omitempty"`    // replays: the Index of the op whose id is sent again
	Batch    int       `json:"batch,omitempty"` // sent in one request with Batch-1 other transfers

	// What came back (completions).
	Result   string     `json:"result,omitempty"`
	Status   string     `json:"status,omitempty"`
	Original string     `json:"original,omitempty"`
	Seq      uint64     `json:"seq,omitempty"` // the event's seq (writes) or the applied seq (reads)
	Read     *Balance   `json:"read,omitempty"`
	Events   []EventRef `json:"events,omitempty"`
	Error    string     `json:"error,omitempty"`
	Attempts int        `json:"attempts,omitempty"`
	HTTP     int        `json:"http,omitempty"` // the last HTTP status, 0 when none came
}

// Recorder appends operations to a JSON-lines file and keeps them in
// memory. Safe for concurrent use.
type Recorder struct {
	mu   sync.Mutex
	w    *bufio.Writer
	f    *os.File
	ops  []Op
	next int
	err  error
}

// NewRecorder writes the history to path.
func NewRecorder(path string) (*Recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &Recorder{f: f, w: bufio.NewWriterSize(f, 1<<16)}, nil
}

// NextIndex reserves an operation index.
func (r *Recorder) NextIndex() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	return r.next
}

// Add records one line.
func (r *Recorder) Add(op Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	if r.err != nil {
		return
	}
	b, err := json.Marshal(op)
	if err == nil {
		b = append(b, '\n')
		_, err = r.w.Write(b)
	}
	r.err = err
}

// Ops returns a copy of every line recorded so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Close flushes and closes the file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return r.err
	}
	if err := r.w.Flush(); err != nil && r.err == nil {
		r.err = err
	}
	if err := r.f.Close(); err != nil && r.err == nil {
		r.err = err
	}
	r.f = nil
	return r.err
}

// Read parses a JSON-lines history.
func Read(rd io.Reader) ([]Op, error) {
	var out []Op
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var op Op
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return nil, fmt.Errorf("history line %d: %w", n, err)
		}
		out = append(out, op)
	}
	return out, sc.Err()
}

// Pair is one operation: its invoke and its completion. A pair without a
// completion (the run ended first) counts as info.
type Pair struct {
	Invoke   Op
	Complete Op
}

// Type is the completion's type.
func (p *Pair) Type() Type { return p.Complete.Type }

// Start and End are the operation's real-time bounds.
func (p *Pair) Start() int64 { return p.Invoke.Time }
func (p *Pair) End() int64   { return p.Complete.Time }

// Pairs matches invokes with their completions, in invoke order. An invoke
// without a completion gets an info completion at the end of the history.
func Pairs(ops []Op) ([]Pair, error) {
	byIndex := map[int]*Pair{}
	var order []int
	var last int64
	for _, op := range ops {
		last = max(last, op.Time)
		switch op.Type {
		case Invoke:
			if _, dup := byIndex[op.Index]; dup {
				return nil, fmt.Errorf("op %d invoked twice", op.Index)
			}
			byIndex[op.Index] = &Pair{Invoke: op}
			order = append(order, op.Index)
		case OK, Fail, Info:
			p := byIndex[op.Index]
			if p == nil {
				return nil, fmt.Errorf("op %d completes without an invoke", op.Index)
			}
			if p.Complete.Type != "" {
				return nil, fmt.Errorf("op %d completes twice", op.Index)
			}
			p.Complete = op
		default:
			return nil, fmt.Errorf("op %d: unknown type %q", op.Index, op.Type)
		}
	}
	out := make([]Pair, 0, len(order))
	for _, i := range order {
		p := byIndex[i]
		if p.Complete.Type == "" {
			c := p.Invoke
			c.Type, c.Time, c.Error = Info, last+1, "no completion recorded"
			p.Complete = c
		}
		out = append(out, *p)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Invoke.Time < out[j].Invoke.Time })
	return out, nil
}
