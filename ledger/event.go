package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// EventType names an event. The set only grows; a name never changes.
type EventType string

const (
	AccountOpened      EventType = "AccountOpened"
	AccountClosedEv    EventType = "AccountClosed"
	TransferPosted     EventType = "TransferPosted"
	TransferPending    EventType = "TransferPending"
	PendingPosted      EventType = "PendingPosted"
	PendingVoided      EventType = "PendingVoided"
	PendingExpiredEv   EventType = "PendingExpired"
	TransferRejected   EventType = "TransferRejected"
	SagaDebitHeld      EventType = "SagaDebitHeld"
	SagaCredited       EventType = "SagaCredited"
	SagaCreditRejected EventType = "SagaCreditRejected"
	SagaCompleted      EventType = "SagaCompleted"
	SagaAborted        EventType = "SagaAborted"
)

// EventTypes lists every event type, for those that filter by type.
var EventTypes = []EventType{AccountOpened, AccountClosedEv, TransferPosted, TransferPending, PendingPosted,
	PendingVoided, PendingExpiredEv, TransferRejected, SagaDebitHeld, SagaCredited, SagaCreditRejected,
	SagaCompleted, SagaAborted}

// Hash is a SHA-256 digest, hex in JSON.
type Hash [32]byte

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes h as lowercase hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes 64 hex digits.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*len(h) {
		return fmt.Errorf("hash: want %d hex digits, got %d", 2*len(h), len(b))
	}
	_, err := hex.Decode(h[:], b)
	return err
}

// Time is log time in unix nanoseconds, RFC 3339 in JSON.
type Time int64

// MarshalText encodes t as RFC 3339 with nanoseconds, in UTC.
func (t Time) MarshalText() ([]byte, error) {
	return []byte(time.Unix(0, int64(t)).UTC().Format(time.RFC3339Nano)), nil
}

// UnmarshalText parses RFC 3339.
func (t *Time) UnmarshalText(b []byte) error {
	v, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return err
	}
	*t = Time(v.UnixNano())
	return nil
}

// Data holds an event's fields; each type uses a few of them.
type Data struct {
	Account   *Account  `json:"account,omitempty"`    // AccountOpened
	AccountID string    `json:"account_id,omitempty"` // AccountClosed
	Transfer  *Transfer `json:"transfer,omitempty"`   // transfers, posts, voids, rejections
	Result    Code      `json:"result,omitempty"`     // TransferRejected
	PendingID string    `json:"pending_id,omitempty"` // PendingPosted/Voided/Expired
	Amount    int64     `json:"amount,omitempty"`     // amount posted or released
	Currency  string    `json:"currency,omitempty"`
	ExpiresAt Time      `json:"expires_at,omitempty"` // TransferPending with a timeout
	Peer      *int      `json:"peer_shard,omitempty"` // saga events: the other shard
	Note      string    `json:"note,omitempty"`       // a saga resolved by hand
}

// Balance is an account's balances right after an event.
type Balance struct {
	Account        string `json:"account"`
	Currency       string `json:"currency"`
	DebitsPosted   int64  `json:"debits_posted"`
	CreditsPosted  int64  `json:"credits_posted"`
	DebitsPending  int64  `json:"debits_pending"`
	CreditsPending int64  `json:"credits_pending"`
	Balance        int64  `json:"balance"`
	Available      int64  `json:"available"`
}

func balanceOf(a *Account) Balance {
	return Balance{Account: a.ID, Currency: a.Currency, DebitsPosted: a.DebitsPosted,
		CreditsPosted: a.CreditsPosted, DebitsPending: a.DebitsPending,
		CreditsPending: a.CreditsPending, Balance: a.Balance(), Available: a.Available()}
}

// Event is an immutable fact in a shard's log.
type Event struct {
	Shard     int       `json:"shard"`
	Seq       uint64    `json:"seq"`
	RaftIndex uint64    `json:"raft_index"`
	Time      Time      `json:"time"`
	Type      EventType `json:"type"`
	Data      Data      `json:"data"`
	Balances  []Balance `json:"balances"`
	PrevHash  Hash      `json:"prev_hash"`
	Hash      Hash      `json:"hash"`
	// Enc is the encoding the hash covers and the log stores the event
	// in, fixed by the version of the entry that produced it (EncodingOf):
	// EncJSON (absent in the JSON, so that the JSON such an event was
	// hashed over is unchanged) or EncBinary. A reader of the JSON needs
	// it to recompute the hash.
	Enc uint8 `json:"enc,omitempty"`
	// Raw is the event's stored form with both hashes filled in, set by
	// Seal; the apply path stores it, so an event is encoded once. It is
	// never part of the encoding itself.
	Raw []byte `json:"-"`
}

// Canonical is the encoding the hash covers: the event without its
// hashes, in its encoding (Enc). For EncJSON it is the JSON of the event
// with both hashes zero: JSON of a struct is deterministic (fields in
// declaration order, map keys sorted), so every replica produces the same
// bytes. For EncBinary it is AppendCanonical. It is nil for an encoding
// this build does not know.
func (e *Event) Canonical() []byte {
	switch e.Enc {
	case EncJSON:
		return e.canonicalJSON()
	case EncBinary:
		return e.AppendCanonical(make([]byte, 0, e.sizeHint()))
	}
	return nil
}

func (e *Event) canonicalJSON() []byte {
	c := *e
	c.PrevHash, c.Hash, c.Raw = Hash{}, Hash{}, nil
	b, err := json.Marshal(&c)
	if err != nil {
		// Every field is a plain value; failing here is a programming error.
		panic(fmt.Sprintf("ledger: encode event %d: %v", e.Seq, err))
	}
	return b
}

// sizeHint is room enough for most events' binary form.
func (e *Event) sizeHint() int { return 160 + hashesLen + 48*len(e.Balances) }

// ComputeHash returns SHA-256(prev_hash || canonical encoding), or the
// zero hash for an encoding this build does not know (which then matches
// no event's hash).
func (e *Event) ComputeHash() Hash {
	c := e.Canonical()
	if c == nil {
		return Hash{}
	}
	return hashOf(e.PrevHash, c)
}

func hashOf(prev Hash, canonical []byte) Hash {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canonical)
	var out Hash
	h.Sum(out[:0])
	return out
}

// zeroTail is how the canonical JSON encoding ends: the two hashes are the
// last fields and are zero in it (enc is omitted for EncJSON).
var zeroTail = []byte(`"prev_hash":"` + Hash{}.String() + `","hash":"` + Hash{}.String() + `"}`)

// Seal sets e.Hash from e.PrevHash and the canonical encoding, and e.Raw
// to the stored form, which it builds from the same bytes: the event is
// encoded once, not twice. The binary form is the canonical bytes and the
// two hashes. The JSON form differs from the canonical JSON only in the
// two hashes at its end; were they ever not the last fields, Raw stays
// nil and the store encodes the event itself.
func (e *Event) Seal() {
	e.Raw = nil
	if e.Enc == EncBinary {
		raw := e.AppendCanonical(make([]byte, 0, e.sizeHint()))
		e.Hash = hashOf(e.PrevHash, raw)
		raw = append(raw, e.PrevHash[:]...)
		e.Raw = append(raw, e.Hash[:]...)
		return
	}
	c := e.Canonical()
	e.Hash = hashOf(e.PrevHash, c)
	if e.Enc != EncJSON || !bytes.HasSuffix(c, zeroTail) {
		return
	}
	raw := c[:len(c)-len(zeroTail)]
	raw = append(raw, `"prev_hash":"`...)
	raw = hex.AppendEncode(raw, e.PrevHash[:])
	raw = append(raw, `","hash":"`...)
	raw = hex.AppendEncode(raw, e.Hash[:])
	e.Raw = append(raw, `"}`...)
}
