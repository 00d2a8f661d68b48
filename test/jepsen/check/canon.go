package check

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// The binary canonical encoding an event with "enc": 2 is hashed over
// (fsm/DESIGN.md, "Value encodings"), rebuilt here from the event's JSON
// alone, apart from the product's own encoder:
//
//	0x02, shard (zigzag varint), seq, raft_index (uvarint), time (zigzag
//	varint of unix ns), type (string), data, balances
//
// A string is a uvarint byte length and the bytes; metadata is a uvarint
// count and each key and value, keys in byte order. Data is a uvarint of
// the fields present (bit 0 account ... bit 9 note, as in hashData) and
// those fields in bit order. The hash is SHA-256(prev_hash || encoding).

// hashEvent is every field of an event as the API serves it. Decoding
// refuses any other field: a field the hash does not cover could be
// changed unseen.
type hashEvent struct {
	Shard     int64         `json:"shard"`
	Seq       uint64        `json:"seq"`
	RaftIndex uint64        `json:"raft_index"`
	Time      string        `json:"time"`
	Type      string        `json:"type"`
	Data      hashData      `json:"data"`
	Balances  []hashBalance `json:"balances"`
	PrevHash  string        `json:"prev_hash"`
	Hash      string        `json:"hash"`
	Enc       int           `json:"enc"`
}

type hashData struct {
	Account   *hashAccount  `json:"account"`    // bit 0
	AccountID string        `json:"account_id"` // bit 1
	Transfer  *hashTransfer `json:"transfer"`   // bit 2
	Result    string        `json:"result"`     // bit 3
	PendingID string        `json:"pending_id"` // bit 4
	Amount    int64         `json:"amount"`     // bit 5
	Currency  string        `json:"currency"`   // bit 6
	ExpiresAt string        `json:"expires_at"` // bit 7
	Peer      *int64        `json:"peer_shard"` // bit 8
	Note      string        `json:"note"`       // bit 9
}

type hashAccount struct {
	ID             string            `json:"id"`
	Currency       string            `json:"currency"`
	AllowNegative  bool              `json:"allow_negative"`
	Metadata       map[string]string `json:"metadata"`
	Closed         bool              `json:"closed"`
	DebitsPosted   int64             `json:"debits_posted"`
	CreditsPosted  int64             `json:"credits_posted"`
	DebitsPending  int64             `json:"debits_pending"`
	CreditsPending int64             `json:"credits_pending"`
	CreatedSeq     uint64            `json:"created_seq"`
	CreatedAt      int64             `json:"created_at"`
}

type hashTransfer struct {
	ID             string            `json:"id"`
	Debit          string            `json:"debit"`
	Credit         string            `json:"credit"`
	Amount         int64             `json:"amount"`
	Pending        bool              `json:"pending"`
	TimeoutSeconds int64             `json:"timeout_seconds"`
	PostPendingID  string            `json:"post_pending_id"`
	VoidPendingID  string            `json:"void_pending_id"`
	Linked         bool              `json:"linked"`
	Reference      string            `json:"reference"`
	Metadata       map[string]string `json:"metadata"`
}

type hashBalance struct {
	Account        string `json:"account"`
	Currency       string `json:"currency"`
	DebitsPosted   int64  `json:"debits_posted"`
	CreditsPosted  int64  `json:"credits_posted"`
	DebitsPending  int64  `json:"debits_pending"`
	CreditsPending int64  `json:"credits_pending"`
	Balance        int64  `json:"balance"`
	Available      int64  `json:"available"`
}

// encodingOf returns the "enc" of a raw event: 0 when absent.
func encodingOf(raw []byte) (int, bool) {
	var e struct {
		Enc *int `json:"enc"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return 0, false
	}
	if e.Enc == nil {
		return 0, true
	}
	return *e.Enc, true
}

// binaryHash recomputes the hash of an "enc": 2 event from its raw JSON,
// or returns "" when the JSON holds a field the encoding does not know or
// a value it cannot hold.
func binaryHash(raw []byte) string {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	var e hashEvent
	if err := d.Decode(&e); err != nil || d.More() || e.Enc != 2 {
		return ""
	}
	b, ok := e.canonical()
	prev, err := hex.DecodeString(e.PrevHash)
	if !ok || err != nil || len(prev) != sha256.Size {
		return ""
	}
	s := sha256.New()
	s.Write(prev)
	s.Write(b)
	return hex.EncodeToString(s.Sum(nil))
}

func (e *hashEvent) canonical() ([]byte, bool) {
	t, ok := unixNanos(e.Time)
	if !ok {
		return nil, false
	}
	b := []byte{2}
	b = binary.AppendVarint(b, e.Shard)
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendUvarint(b, e.RaftIndex)
	b = binary.AppendVarint(b, t)
	b = str(b, e.Type)
	b, ok = e.Data.encode(b)
	b = binary.AppendUvarint(b, uint64(len(e.Balances)))
	for _, x := range e.Balances {
		b = str(b, x.Account)
		b = str(b, x.Currency)
		for _, v := range []int64{x.DebitsPosted, x.CreditsPosted, x.DebitsPending, x.CreditsPending, x.Balance, x.Available} {
			b = binary.AppendVarint(b, v)
		}
	}
	return b, ok
}

func (d *hashData) encode(b []byte) ([]byte, bool) {
	var expires int64
	if d.ExpiresAt != "" {
		var ok bool
		if expires, ok = unixNanos(d.ExpiresAt); !ok {
			return b, false
		}
	}
	present := []bool{d.Account != nil, d.AccountID != "", d.Transfer != nil, d.Result != "", d.PendingID != "",
		d.Amount != 0, d.Currency != "", expires != 0, d.Peer != nil, d.Note != ""}
	var bits uint64
	for i, p := range present {
		if p {
			bits |= 1 << i
		}
	}
	b = binary.AppendUvarint(b, bits)
	if a := d.Account; a != nil {
		b = str(b, a.ID)
		b = str(b, a.Currency)
		b = append(b, flags(a.AllowNegative, a.Closed))
		b = meta(b, a.Metadata)
		for _, v := range []int64{a.DebitsPosted, a.CreditsPosted, a.DebitsPending, a.CreditsPending} {
			b = binary.AppendVarint(b, v)
		}
		b = binary.AppendUvarint(b, a.CreatedSeq)
		b = binary.AppendVarint(b, a.CreatedAt)
	}
	if present[1] {
		b = str(b, d.AccountID)
	}
	if t := d.Transfer; t != nil {
		b = str(b, t.ID)
		b = str(b, t.Debit)
		b = str(b, t.Credit)
		b = binary.AppendVarint(b, t.Amount)
		b = append(b, flags(t.Pending, t.Linked))
		b = binary.AppendVarint(b, t.TimeoutSeconds)
		b = str(b, t.PostPendingID)
		b = str(b, t.VoidPendingID)
		b = str(b, t.Reference)
		b = meta(b, t.Metadata)
	}
	if present[3] {
		b = str(b, d.Result)
	}
	if present[4] {
		b = str(b, d.PendingID)
	}
	if present[5] {
		b = binary.AppendVarint(b, d.Amount)
	}
	if present[6] {
		b = str(b, d.Currency)
	}
	if present[7] {
		b = binary.AppendVarint(b, expires)
	}
	if d.Peer != nil {
		b = binary.AppendVarint(b, *d.Peer)
	}
	if present[9] {
		b = str(b, d.Note)
	}
	return b, true
}

// unixNanos reads an RFC 3339 time as the API writes it.
func unixNanos(s string) (int64, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, false
	}
	return t.UnixNano(), true
}

func str(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD") // JSON decoding never leaves such bytes
	}
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func flags(first, second bool) byte {
	var f byte
	if first {
		f |= 1
	}
	if second {
		f |= 2
	}
	return f
}

func meta(b []byte, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = str(b, k)
		b = str(b, m[k])
	}
	return b
}
