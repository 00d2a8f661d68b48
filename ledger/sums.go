package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"math/big"
)

// Sums returns, per currency, the sum of balance over every account of the
// state, system accounts included. Conservation means every sum is 0.
// Sums use big integers: many large balances can overflow int64.
func (st *State) Sums() map[string]*big.Int {
	out := map[string]*big.Int{}
	for _, a := range st.Accounts {
		s := out[a.Currency]
		if s == nil {
			s = new(big.Int)
			out[a.Currency] = s
		}
		s.Add(s, big.NewInt(a.Balance()))
	}
	return out
}

// Overdrawn returns the accounts without allow_negative whose posted and
// held debits exceed their posted credits. It must always be empty.
func (st *State) Overdrawn() []string {
	var out []string
	for _, k := range sortedKeys(st.Accounts) {
		a := st.Accounts[k]
		if !a.AllowNegative && a.DebitsPosted+a.DebitsPending > a.CreditsPosted {
			out = append(out, k)
		}
	}
	return out
}

// StateHash digests the balances, flags and open pending transfers in key
// order, with the seq and hash-chain head. Replicas at the same seq must
// agree on it.
func (st *State) StateHash() Hash {
	h := sha256.New()
	var b []byte
	b = binary.AppendUvarint(b, st.Seq)
	b = append(b, st.Head[:]...)
	for _, k := range sortedKeys(st.Accounts) {
		a := st.Accounts[k]
		b = appendStr(b, k)
		b = appendStr(b, a.Currency)
		b = appendBool(b, a.AllowNegative)
		b = appendBool(b, a.Closed)
		for _, v := range []int64{a.DebitsPosted, a.CreditsPosted, a.DebitsPending, a.CreditsPending} {
			b = binary.AppendVarint(b, v)
		}
		h.Write(b)
		b = b[:0]
	}
	for _, id := range sortedKeys(st.pending) {
		b = appendStr(b, id)
		b = binary.AppendVarint(b, st.pending[id].Transfer.Amount)
		h.Write(b)
		b = b[:0]
	}
	h.Write(b)
	var out Hash
	h.Sum(out[:0])
	return out
}
