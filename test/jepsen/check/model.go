package check

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"sort"
	"strings"
)

// The reference model folds one shard's event log the way docs/spec.md says
// events change balances (sections 2-6), independently of the product's
// code. It checks, event by event: the seq and the hash chain, the
// balances the event reports, that the decision the event records was the
// right one (no posted overdraft, no wrongful insufficient_funds), that
// every currency sums to 0 (C1) and that no account is overdrawn (C2).

const (
	world         = "@world"
	clearingPrefx = "@clearing:"
)

func isSystem(id string) bool { return strings.HasPrefix(id, "@") }

// accountKey is the state key of an account: its id, or for a system
// account (which exists once per currency) its id and currency.
func accountKey(id, cur string) string {
	if isSystem(id) {
		return id + "/" + cur
	}
	return id
}

type mAccount struct {
	ID, Currency          string
	AllowNegative, Closed bool
	DP, CP, DPend, CPend  int64
}

func (a *mAccount) overdrawn() bool {
	return !a.AllowNegative && a.DP+a.DPend > a.CP
}

func (a *mAccount) available() int64 { return a.CP - a.DP - a.DPend }

// Problem is one violation, attributed to the checker it belongs to.
type Problem struct {
	Checker string // "C1" ... "C9"
	Msg     string
}

// Model is the reference state of one shard.
type Model struct {
	Shard    int
	Seq      uint64
	Head     string // hex
	Accounts map[string]*mAccount
	// Open holds the open pending transfers and the sagas this shard
	// started and has not finished, by transfer id, with their amounts.
	Open map[string]openHold
	// Decided counts, per transfer id, the events that decided it.
	Decided map[string]map[string]int
	// Currencies seen, for the conservation check.
	problems []Problem
	// VerifyHashes recomputes each event's hash from its raw bytes.
	VerifyHashes bool
}

type openHold struct {
	Amount        int64
	Debit, Credit string // account keys holding the pending amounts
	Saga          bool
}

// NewModel starts an empty shard.
func NewModel(shard int) *Model {
	return &Model{Shard: shard, Head: zeroHash, Accounts: map[string]*mAccount{},
		Open: map[string]openHold{}, Decided: map[string]map[string]int{}, VerifyHashes: true}
}

func (m *Model) fail(checker string, e *Event, format string, args ...any) {
	m.problems = append(m.problems, Problem{checker,
		fmt.Sprintf("shard %d seq %d (%s): %s", m.Shard, e.Seq, e.Type, fmt.Sprintf(format, args...))})
}

// Problems returns what the fold found so far.
func (m *Model) Problems() []Problem { return m.problems }

// account returns the account with key k, creating a system account on
// first use (system accounts exist implicitly and may go negative).
func (m *Model) account(id, cur string) *mAccount {
	k := accountKey(id, cur)
	if a := m.Accounts[k]; a != nil {
		return a
	}
	if !isSystem(id) {
		return nil
	}
	a := &mAccount{ID: id, Currency: cur, AllowNegative: true}
	m.Accounts[k] = a
	return a
}

// currencyOf returns the currency of a transfer: that of its client
// account(s).
func (m *Model) currencyOf(t *TransferData, fallback string) string {
	for _, id := range []string{t.Debit, t.Credit} {
		if !isSystem(id) {
			if a := m.Accounts[id]; a != nil {
				return a.Currency
			}
		}
	}
	return fallback
}

func (m *Model) decided(id, typ string) {
	d := m.Decided[id]
	if d == nil {
		d = map[string]int{}
		m.Decided[id] = d
	}
	d[typ]++
}

// Apply folds one event. It never stops: every problem is recorded and
// the fold goes on with the event's effects applied as well as it can.
func (m *Model) Apply(e *Event) {
	if e.Seq != m.Seq+1 {
		m.fail("C4", e, "seq follows %d: the log has a gap or a repeat", m.Seq)
	}
	if e.PrevHash != m.Head {
		m.fail("C4", e, "prev_hash %.12s does not chain to the previous hash %.12s", e.PrevHash, m.Head)
	}
	if m.VerifyHashes {
		if h := e.ComputeHash(); h != e.Hash {
			m.fail("C4", e, "hash %.12s is not SHA-256(prev_hash || event) (%.12s)", e.Hash, h)
		}
	}
	m.Seq, m.Head = e.Seq, e.Hash
	touched := m.effects(e)
	m.compareBalances(e, touched)
	m.conservation(e)
}

func (m *Model) effects(e *Event) []*mAccount {
	d := &e.Data
	switch e.Type {
	case "AccountOpened":
		if d.Account == nil {
			m.fail("C4", e, "no account")
			return nil
		}
		if _, ok := m.Accounts[d.Account.ID]; ok {
			m.fail("C4", e, "account %s opened twice", d.Account.ID)
		}
		a := &mAccount{ID: d.Account.ID, Currency: d.Account.Currency, AllowNegative: d.Account.AllowNegative}
		m.Accounts[a.ID] = a
		return []*mAccount{a}
	case "AccountClosed":
		if a := m.Accounts[d.AccountID]; a != nil {
			a.Closed = true
			return []*mAccount{a}
		}
		m.fail("C4", e, "closes unknown account %s", d.AccountID)
		return nil
	case "TransferPosted", "TransferPending":
		return m.transfer(e)
	case "PendingPosted", "PendingVoided", "PendingExpired":
		return m.resolvePending(e)
	case "TransferRejected":
		if d.Transfer == nil || d.Result == "" || d.Result == "ok" {
			m.fail("C4", e, "rejection without transfer or code")
			return nil
		}
		m.decided(d.Transfer.ID, e.Type)
		m.checkRejection(e)
		return nil
	case "SagaDebitHeld":
		return m.sagaHeld(e)
	case "SagaCredited", "SagaCreditRejected":
		return m.sagaCredit(e)
	case "SagaCompleted", "SagaAborted":
		return m.sagaEnd(e)
	}
	m.fail("C4", e, "event type %q is not in docs/spec.md", e.Type)
	return nil
}

// legs returns the debit and credit accounts of t, reporting missing or
// mismatched ones.
func (m *Model) legs(e *Event, t *TransferData) (dr, cr *mAccount) {
	cur := m.currencyOf(t, e.Data.Currency)
	dr, cr = m.account(t.Debit, cur), m.account(t.Credit, cur)
	if dr == nil || cr == nil {
		m.fail("C4", e, "transfer %s moves money of an account that does not exist (%s -> %s)", t.ID, t.Debit, t.Credit)
		return nil, nil
	}
	if dr.Currency != cr.Currency {
		m.fail("C4", e, "transfer %s between currencies %s and %s", t.ID, dr.Currency, cr.Currency)
	}
	return dr, cr
}

func (m *Model) transfer(e *Event) []*mAccount {
	t := e.Data.Transfer
	if t == nil {
		m.fail("C4", e, "no transfer")
		return nil
	}
	m.decided(t.ID, e.Type)
	if t.PostPendingID != "" || t.VoidPendingID != "" {
		// Posts and voids are decided here but move money in their
		// PendingPosted/PendingVoided events.
		return nil
	}
	dr, cr := m.legs(e, t)
	if dr == nil {
		return nil
	}
	if dr.Closed || cr.Closed {
		m.fail("C4", e, "transfer %s touches a closed account", t.ID)
	}
	if !dr.AllowNegative && dr.DP+dr.DPend+t.Amount > dr.CP {
		m.fail("C2", e, "transfer %s of %d overdraws %s (available %d)", t.ID, t.Amount, dr.ID, dr.available())
	}
	if e.Type == "TransferPending" {
		dr.DPend += t.Amount
		cr.CPend += t.Amount
		m.Open[t.ID] = openHold{Amount: t.Amount, Debit: accountKey(dr.ID, dr.Currency), Credit: accountKey(cr.ID, cr.Currency)}
	} else {
		dr.DP += t.Amount
		cr.CP += t.Amount
	}
	return []*mAccount{dr, cr}
}

func (m *Model) resolvePending(e *Event) []*mAccount {
	id := e.Data.PendingID
	h, ok := m.Open[id]
	if !ok || h.Saga {
		m.fail("C4", e, "resolves %q, which is not an open pending transfer", id)
		return nil
	}
	delete(m.Open, id)
	dr, cr := m.Accounts[h.Debit], m.Accounts[h.Credit]
	dr.DPend -= h.Amount
	cr.CPend -= h.Amount
	if e.Type == "PendingPosted" {
		amt := e.Data.Amount
		if amt <= 0 || amt > h.Amount {
			m.fail("C4", e, "posts %d of a hold of %d", amt, h.Amount)
		}
		dr.DP += amt
		cr.CP += amt
	}
	return []*mAccount{dr, cr}
}

// checkRejection checks that an insufficient_funds rejection was right.
func (m *Model) checkRejection(e *Event) {
	t := e.Data.Transfer
	if e.Data.Result != "insufficient_funds" || t.PostPendingID != "" || t.VoidPendingID != "" {
		return
	}
	dr := m.account(t.Debit, m.currencyOf(t, e.Data.Currency))
	if dr != nil && (dr.AllowNegative || dr.DP+dr.DPend+t.Amount <= dr.CP) {
		m.fail("C4", e, "transfer %s of %d rejected insufficient_funds but %s had %d available", t.ID, t.Amount, dr.ID, dr.available())
	}
}

// Saga legs (docs/spec.md 6): the source holds the debit against
// @clearing:<dest>, the destination credits against @clearing:<source>,
// and the source posts or releases its holds.
func (m *Model) sagaHeld(e *Event) []*mAccount {
	t, peer := e.Data.Transfer, e.Data.Peer
	if t == nil || peer == nil {
		m.fail("C7", e, "saga hold without transfer or peer shard")
		return nil
	}
	m.decided(t.ID, e.Type)
	cur := m.currencyOf(t, e.Data.Currency)
	dr := m.account(t.Debit, cur)
	cl := m.account(fmt.Sprintf("%s%d", clearingPrefx, *peer), cur)
	if dr == nil {
		m.fail("C4", e, "saga %s holds on unknown account %s", t.ID, t.Debit)
		return nil
	}
	if !dr.AllowNegative && dr.DP+dr.DPend+t.Amount > dr.CP {
		m.fail("C2", e, "saga %s holds %d of %s, available %d", t.ID, t.Amount, dr.ID, dr.available())
	}
	dr.DPend += t.Amount
	cl.CPend += t.Amount
	m.Open[t.ID] = openHold{Amount: t.Amount, Debit: accountKey(dr.ID, cur), Credit: accountKey(cl.ID, cur), Saga: true}
	return []*mAccount{dr, cl}
}

func (m *Model) sagaCredit(e *Event) []*mAccount {
	t, peer := e.Data.Transfer, e.Data.Peer
	if t == nil || peer == nil {
		m.fail("C7", e, "saga credit without transfer or peer shard")
		return nil
	}
	m.decided(t.ID, e.Type)
	if e.Type == "SagaCreditRejected" {
		return nil
	}
	cur := m.currencyOf(t, e.Data.Currency)
	cr := m.account(t.Credit, cur)
	cl := m.account(fmt.Sprintf("%s%d", clearingPrefx, *peer), cur)
	if cr == nil {
		m.fail("C4", e, "saga %s credits unknown account %s", t.ID, t.Credit)
		return nil
	}
	cr.CP += t.Amount
	cl.DP += t.Amount
	return []*mAccount{cr, cl}
}

func (m *Model) sagaEnd(e *Event) []*mAccount {
	id := e.TransferID()
	m.decided(id, e.Type)
	h, ok := m.Open[id]
	if !ok || !h.Saga {
		m.fail("C7", e, "ends saga %q, which is not open on this shard", id)
		return nil
	}
	delete(m.Open, id)
	dr, cl := m.Accounts[h.Debit], m.Accounts[h.Credit]
	dr.DPend -= h.Amount
	cl.CPend -= h.Amount
	if e.Type == "SagaCompleted" {
		dr.DP += h.Amount
		cl.CP += h.Amount
	}
	return []*mAccount{dr, cl}
}

// compareBalances checks the balances the event reports against the
// model, for every account the model says it touched and every one it
// lists.
func (m *Model) compareBalances(e *Event, touched []*mAccount) {
	listed := map[string]bool{}
	for _, b := range e.Balances {
		k := accountKey(b.Account, b.Currency)
		listed[k] = true
		a := m.Accounts[k]
		if a == nil {
			m.fail("C4", e, "reports balances of %s, which the model does not know", k)
			continue
		}
		if a.DP != b.DebitsPosted || a.CP != b.CreditsPosted || a.DPend != b.DebitsPending || a.CPend != b.CreditsPending {
			m.fail("C4", e, "reports %s as dp=%d cp=%d dpend=%d cpend=%d, the model has dp=%d cp=%d dpend=%d cpend=%d",
				k, b.DebitsPosted, b.CreditsPosted, b.DebitsPending, b.CreditsPending, a.DP, a.CP, a.DPend, a.CPend)
		}
		if a.overdrawn() {
			m.fail("C2", e, "%s is overdrawn: debits %d + pending %d > credits %d", k, a.DP, a.DPend, a.CP)
		}
	}
	for _, a := range touched {
		if k := accountKey(a.ID, a.Currency); !listed[k] && e.Type != "AccountOpened" && e.Type != "AccountClosed" {
			m.fail("C4", e, "changes %s but does not report its balances", k)
		}
	}
}

// conservation checks that every currency sums to 0 on this shard.
func (m *Model) conservation(e *Event) {
	for cur, s := range m.Sums() {
		if s.Sign() != 0 {
			m.fail("C1", e, "%s sums to %s on shard %d, not 0", cur, s, m.Shard)
		}
	}
}

// Sums returns, per currency, the sum of balances over every account.
func (m *Model) Sums() map[string]*big.Int {
	out := map[string]*big.Int{}
	for _, a := range m.Accounts {
		s := out[a.Currency]
		if s == nil {
			s = new(big.Int)
			out[a.Currency] = s
		}
		s.Add(s, big.NewInt(a.CP-a.DP))
	}
	return out
}

// StateHash digests the balances, flags and open holds in key order with
// the seq and chain head, as the API's state_hash does: uvarint seq, the
// head's 32 bytes; per account key in order: the key and currency as
// uvarint-length strings, allow_negative and closed as one byte each, and
// the four balance fields as varints; per open hold in id order: the id
// and the amount.
func (m *Model) StateHash() string {
	h := sha256.New()
	head, _ := hex.DecodeString(m.Head)
	if len(head) != 32 {
		head = make([]byte, 32)
	}
	b := binary.AppendUvarint(nil, m.Seq)
	b = append(b, head...)
	keys := make([]string, 0, len(m.Accounts))
	for k := range m.Accounts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a := m.Accounts[k]
		b = appendStr(b, k)
		b = appendStr(b, a.Currency)
		b = appendBool(b, a.AllowNegative)
		b = appendBool(b, a.Closed)
		for _, v := range []int64{a.DP, a.CP, a.DPend, a.CPend} {
			b = binary.AppendVarint(b, v)
		}
		h.Write(b)
		b = b[:0]
	}
	ids := make([]string, 0, len(m.Open))
	for id := range m.Open {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		b = appendStr(b, id)
		b = binary.AppendVarint(b, m.Open[id].Amount)
		h.Write(b)
		b = b[:0]
	}
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}
