// Package wire declares the JSON bodies of Tally's HTTP API
// (docs/api.md) once, for the server that encodes them (api), and for the
// client and the proxy that decode them. A field added here reaches both
// sides at once.
//
// The types are plain data: safe to copy, and safe for concurrent reads.
// Their json tags are the contract; changing a name, a type or an
// omitempty choice changes the API. The package imports only the standard
// library and tally/ledger.
package wire

import (
	"time"

	"tally/ledger"
)

// AccountIn is an account as a client creates it: only the fields a
// client may set, so that anything else is an unknown field.
type AccountIn struct {
	ID            string            `json:"id"`
	Currency      string            `json:"currency"`
	AllowNegative bool              `json:"allow_negative"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}

// AccountsIn is the body of POST /v1/accounts.
type AccountsIn struct {
	Accounts []AccountIn `json:"accounts"`
}

// TransfersIn is the body of POST /v1/transfers.
type TransfersIn struct {
	Transfers []ledger.Transfer `json:"transfers"`
}

// Results is the answer to POST /v1/accounts and POST /v1/transfers:
// one result per item, in request order.
type Results struct {
	Results []ledger.Result `json:"results"`
}

// OK is the answer of a membership change ({"ok": true}).
type OK struct {
	OK bool `json:"ok"`
}

// Account is the answer to GET /v1/accounts/{id}.
type Account struct {
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
	CreatedAt  ledger.Time `json:"created_at"`
}

// AccountOf is the view of account a on shard as of the shard's seq.
func AccountOf(a *ledger.Account, shard int, seq uint64) Account {
	return Account{ID: a.ID, Currency: a.Currency, AllowNegative: a.AllowNegative, Metadata: a.Metadata,
		Closed: a.Closed, DebitsPosted: a.DebitsPosted, CreditsPosted: a.CreditsPosted,
		DebitsPending: a.DebitsPending, CreditsPending: a.CreditsPending, Balance: a.Balance(),
		Available: a.Available(), Shard: shard, Seq: seq, CreatedSeq: a.CreatedSeq, CreatedAt: ledger.Time(a.CreatedAt)}
}

// Transfer is the answer to GET /v1/transfers/{id}.
type Transfer struct {
	ID         string        `json:"id"`
	Debit      string        `json:"debit"`
	Credit     string        `json:"credit"`
	Amount     int64         `json:"amount"`
	Status     ledger.Status `json:"status"`
	Result     ledger.Code   `json:"result"`
	CrossShard bool          `json:"cross_shard"`
	Shard      int           `json:"shard"`
	Seq        uint64        `json:"seq"`
	Time       ledger.Time   `json:"time"`
	// ExpiresAt is set on a pending transfer with a timeout.
	ExpiresAt *ledger.Time `json:"expires_at,omitempty"`
	// Set once a pending transfer is resolved: the post or void id, or
	// "expired".
	ResolvedBy     string `json:"resolved_by,omitempty"`
	ResolvedSeq    uint64 `json:"resolved_seq,omitempty"`
	ResolvedAmount int64  `json:"resolved_amount,omitempty"`
	// Saga is set for a cross-shard transfer: the step its source shard
	// reached, and the driver's attempts when the source leader has them.
	Saga *SagaState `json:"saga,omitempty"`
	// Transfer is the request as the ledger recorded it. The server always
	// sets it; it is a pointer so that a client can tell an answer
	// without it.
	Transfer *ledger.Transfer `json:"transfer"`
}

// SagaState is a cross-shard transfer's progress, as its source shard
// has it.
type SagaState struct {
	ledger.Saga
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// TransferOf is the view of the transfer record rec on shard. The saga's
// attempts are the caller's to add: only the source leader knows them.
func TransferOf(rec *ledger.Record, shard int) Transfer {
	t := rec.Transfer
	v := Transfer{ID: t.ID, Debit: t.Debit, Credit: t.Credit, Amount: t.Amount, Status: rec.Status,
		Result: rec.Result, Shard: shard, Seq: rec.Seq, Time: ledger.Time(rec.Time),
		ResolvedBy: rec.ResolvedBy, ResolvedSeq: rec.ResolvedSeq, ResolvedAmount: rec.ResolvedAmount, Transfer: &t}
	if rec.Saga != nil {
		v.CrossShard = true
		v.Saga = &SagaState{Saga: *rec.Saga}
	}
	if rec.ExpiresAt != 0 {
		e := ledger.Time(rec.ExpiresAt)
		v.ExpiresAt = &e
	}
	return v
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

// SagaOf is the view of the saga of record rec, kept by its source shard,
// age after it began. Attempts, LastError and Stuck are the caller's to
// set: they depend on the saga driver.
func SagaOf(rec *ledger.Record, shard int, age time.Duration) Saga {
	t := &rec.Transfer
	v := Saga{ID: t.ID, Shard: shard, Debit: t.Debit, Credit: t.Credit, Amount: t.Amount,
		Status: rec.Status, Result: rec.Result, Time: ledger.Time(rec.Time), AgeSeconds: age.Seconds()}
	if rec.Saga != nil {
		v.PeerShard, v.Currency, v.Step, v.Note = rec.Saga.Peer, rec.Saga.Currency, rec.Saga.Step, rec.Saga.Note
	}
	return v
}

// Sagas is the answer to GET /v1/sagas.
type Sagas struct {
	Sagas []Saga `json:"sagas"`
}
