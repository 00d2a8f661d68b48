// Package ledger holds Tally's rules: accounts, transfers, result codes,
// events and how they change balances. It is pure and deterministic: no
// clocks, randomness, I/O, logging or goroutines. Time and the Raft index
// arrive as inputs, so every replica that folds the same commands reaches
// the same state and the same hash chain.
package ledger

import "math"

// Limits. Every input is checked against these at the edge and again in
// Decide, so a command that slipped past the edge still cannot break state.
const (
	MaxIDLen        = 64
	MaxCurrencyLen  = 12
	MaxMetaKeys     = 16
	MaxMetaBytes    = 1024
	MaxReferenceLen = 256
	MaxBatch        = 8190
	MaxAmount       = math.MaxInt64
	// MaxTimeoutSeconds caps a pending transfer's timeout (about ten years)
	// so that time + timeout cannot overflow.
	MaxTimeoutSeconds = 10 * 365 * 24 * 3600
)

// World is the implicit counterparty of deposits and withdrawals. It exists
// on every shard for every currency and may go negative.
const World = "@world"

// ClearingPrefix names the per-shard-pair counterparties of saga legs.
const ClearingPrefix = "@clearing:"

// Code is a per-item result.
type Code string

// Transfer result codes, in the order a client transfer is checked: when
// a transfer fails several checks, the code listed first is the answer,
// so results are deterministic. Each code sits where it is first checked;
// three are checked again further on, for another reason:
//
//   - invalid_id: first the transfer id (before the idempotency lookup,
//     which must never match a saga record's "@saga:" key), then, after
//     linked_event_failed, the debit, credit and pending ids, interleaved
//     with the invalid_request shape checks.
//   - amount_invalid: for a post or a void, again after the pending
//     checks, against the held amount.
//   - limit_exceeded: first the reference and metadata sizes, then, after
//     currency_mismatch (or after account_closed for a saga's hold), a
//     balance that would overflow.
//
// account_closed is checked for a post after the pending checks, and
// otherwise after both accounts are found. A post or void takes the
// pending_* branch and never meets cross_shard_not_supported or the
// *_not_found codes; exists and exists_with_different_fields, like
// pending_already_resolved and pending_expired, are two answers of one
// check. linked_event_failed answers a member of a failed chain whose
// own checks did not run: only an invalid id or a known id beats it.
// ledger/order_test.go keeps this list and the checks in step.
const (
	OK                        Code = "ok"
	InvalidID                 Code = "invalid_id"
	Exists                    Code = "exists"
	ExistsWithDifferentFields Code = "exists_with_different_fields"
	LinkedEventFailed         Code = "linked_event_failed"
	// InvalidRequest is a shape no other code names (for example both
	// post_pending_id and void_pending_id).
	InvalidRequest          Code = "invalid_request"
	LimitExceeded           Code = "limit_exceeded"
	AmountInvalid           Code = "amount_invalid"
	AccountsMustBeDifferent Code = "accounts_must_be_different"
	// WrongShard means a command reached a shard that does not own the
	// account: a routing bug in the caller, never a client error.
	WrongShard             Code = "wrong_shard"
	PendingNotFound        Code = "pending_not_found"
	PendingAlreadyResolved Code = "pending_already_resolved"
	PendingExpired         Code = "pending_expired"
	CrossShardNotSupported Code = "cross_shard_not_supported"
	DebitAccountNotFound   Code = "debit_account_not_found"
	CreditAccountNotFound  Code = "credit_account_not_found"
	AccountClosed          Code = "account_closed"
	CurrencyMismatch       Code = "currency_mismatch"
	InsufficientFunds      Code = "insufficient_funds"
)

// Codes only account commands return, in the order they are checked. An
// account creation is checked: invalid_id, currency_invalid,
// metadata_invalid, invalid_request, wrong_shard, then exists or
// exists_with_different_fields (validation comes before the lookup, the
// other way round from transfers). A close: invalid_id,
// account_not_found, account_closed.
const (
	CurrencyInvalid Code = "currency_invalid"
	MetadataInvalid Code = "metadata_invalid"
	AccountNotFound Code = "account_not_found"
)

// SagaAbortedCode answers a credit that arrives after the source shard
// gave the saga up (the destination was fenced). A saga credit is checked
// on its destination shard: credit_account_not_found, account_closed,
// currency_mismatch, limit_exceeded.
const SagaAbortedCode Code = "saga_aborted"

// Status is where a transfer stands.
type Status string

const (
	StatusPosted   Status = "posted"
	StatusPending  Status = "pending"
	StatusVoided   Status = "voided"
	StatusRejected Status = "rejected"
	StatusInFlight Status = "in_flight"
)

// Account is one balance in one currency. Balance fields are minor units.
// Invariants kept by Decide: every field is >= 0,
// DebitsPosted+DebitsPending and CreditsPosted+CreditsPending never exceed
// MaxInt64, and without AllowNegative DebitsPosted+DebitsPending never
// exceeds CreditsPosted.
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
	CreatedSeq     uint64            `json:"created_seq"`
	CreatedAt      int64             `json:"created_at"` // unix nanoseconds, log time
}

// Balance is credits_posted - debits_posted. It cannot overflow because
// both fields are in [0, MaxInt64].
func (a *Account) Balance() int64 { return a.CreditsPosted - a.DebitsPosted }

// Available is the balance less the holds. It cannot overflow because
// DebitsPosted+DebitsPending <= MaxInt64.
func (a *Account) Available() int64 { return a.CreditsPosted - (a.DebitsPosted + a.DebitsPending) }

// Key is the account's key in a shard's state: its id, or for a system
// account its id and currency ("@world/USD"). '/' is not in the id
// alphabet, so a key never collides with a client account.
func (a *Account) Key() string { return AccountKey(a.ID, a.Currency) }

// AccountKey returns the state key of account id in currency cur (cur only
// matters for system accounts).
func AccountKey(id, cur string) string {
	if IsSystem(id) {
		return id + "/" + cur
	}
	return id
}

// IsSystem reports whether id names a reserved system account.
func IsSystem(id string) bool { return len(id) > 0 && id[0] == '@' }

// Transfer is a client's request to move money. ID is the idempotency key:
// every field takes part in the "same request" comparison.
type Transfer struct {
	ID             string            `json:"id"`
	Debit          string            `json:"debit"`
	Credit         string            `json:"credit"`
	Amount         int64             `json:"amount"`
	Pending        bool              `json:"pending,omitempty"`
	TimeoutSeconds int64             `json:"timeout_seconds,omitempty"`
	PostPendingID  string            `json:"post_pending_id,omitempty"`
	VoidPendingID  string            `json:"void_pending_id,omitempty"`
	Linked         bool              `json:"linked,omitempty"`
	Reference      string            `json:"reference,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
}

// Same reports whether t and u are the same request.
func (t *Transfer) Same(u *Transfer) bool {
	return t.ID == u.ID && t.Debit == u.Debit && t.Credit == u.Credit &&
		t.Amount == u.Amount && t.Pending == u.Pending &&
		t.TimeoutSeconds == u.TimeoutSeconds && t.PostPendingID == u.PostPendingID &&
		t.VoidPendingID == u.VoidPendingID && t.Linked == u.Linked &&
		t.Reference == u.Reference && sameMeta(t.Metadata, u.Metadata)
}

// Resolves returns the pending id a post or void names, or "".
func (t *Transfer) Resolves() string {
	if t.PostPendingID != "" {
		return t.PostPendingID
	}
	return t.VoidPendingID
}

// Record is what a shard remembers of a transfer id: the request, the
// outcome, and for a pending transfer how it was resolved. Records are
// derived from events, so replay rebuilds them.
type Record struct {
	Transfer  Transfer `json:"transfer"`
	Result    Code     `json:"result"`
	Status    Status   `json:"status"` // current status
	Seq       uint64   `json:"seq"`    // seq of the deciding event
	Time      int64    `json:"time"`   // log time of the deciding event
	ExpiresAt int64    `json:"expires_at,omitempty"`
	// Set when a pending transfer is resolved.
	ResolvedSeq    uint64 `json:"resolved_seq,omitempty"`
	ResolvedBy     string `json:"resolved_by,omitempty"` // post/void transfer id, or "expired"
	ResolvedAmount int64  `json:"resolved_amount,omitempty"`
	// Saga is set for a cross-shard transfer's record, on either shard.
	Saga *Saga `json:"saga,omitempty"`
}

// Saga roles and steps.
const (
	RoleSource      = "source"
	RoleDestination = "destination"
	StepHeld        = "held"
	StepCompleted   = "completed"
	StepAborted     = "aborted"
	StepCredited    = "credited"
	StepRejected    = "rejected"
)

// Saga is a cross-shard transfer's state on one of its two shards.
type Saga struct {
	Role     string `json:"role"`
	Peer     int    `json:"peer_shard"` // the other shard
	Currency string `json:"currency"`
	Step     string `json:"step"`
	Note     string `json:"note,omitempty"` // an operator's note, when resolved by hand
}

// Open reports whether the record is a pending transfer or a saga that
// is not finished: the records a shard keeps in memory and indexes.
func (r *Record) Open() bool { return r.Status == StatusPending || r.Status == StatusInFlight }

// Tracked reports whether the record can be open at some point: the
// open-record index must follow it.
func (r *Record) Tracked() bool {
	return (r.Transfer.Pending && r.Result == OK) || (r.Saga != nil && r.Saga.Role == RoleSource)
}

// Outcome is the status the transfer had when it was decided: the answer a
// retry of the same request gets.
func (r *Record) Outcome() Status {
	switch {
	case r.Saga != nil:
		return r.Status
	case r.Result != OK:
		return StatusRejected
	case r.Transfer.Pending:
		return StatusPending
	case r.Transfer.VoidPendingID != "":
		return StatusVoided
	default:
		return StatusPosted
	}
}

// Result is the answer to one item of a command.
type Result struct {
	ID     string `json:"id"`
	Result Code   `json:"result"`
	Status Status `json:"status,omitempty"`
	// Original is the first outcome's code when Result is Exists.
	Original Code   `json:"original,omitempty"`
	Shard    int    `json:"shard"`
	Seq      uint64 `json:"seq"`
}

func sameMeta(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
