package ledger

import (
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
)

// ShardBooks is one shard's books at one applied seq, as an audit reads
// them: the sum of balances per currency and the saga clearing accounts.
type ShardBooks struct {
	Shard    int               `json:"shard"`
	Seq      uint64            `json:"seq"`
	Sums     map[string]string `json:"sums"`
	Clearing []Account         `json:"clearing"`
}

// AuditReport is the outcome of CheckAudit.
type AuditReport struct {
	OK bool `json:"ok"`
	// Consistent: both rounds read every shard at the same seq, so the
	// rounds form one consistent cut and the bounds below are exact.
	Consistent bool            `json:"consistent"`
	Seqs       [][2]uint64     `json:"seqs"` // per shard: round 1, round 2
	Currencies []CurrencyAudit `json:"currencies"`
	Violations []string        `json:"violations"`
}

// CurrencyAudit sums the clearing accounts of one currency over shards.
type CurrencyAudit struct {
	Currency string `json:"currency"`
	// Net is the sum of every clearing account's balance: minus the
	// amount credited by sagas not yet completed.
	Net string `json:"net"`
	// InFlight is the amount held by open sagas on their source shards.
	InFlight string `json:"in_flight"`
}

// CheckAudit proves the books from two rounds of reads of every shard,
// the second started after the first ended. Each shard must sum to 0 per
// currency. For each pair of shards S -> D and currency, with
// completed(S) the posted credits of S's clearing account for D, held(S)
// its pending credits, and credited(D) the posted debits of D's clearing
// account for S:
//
//	completed(S, round 1) <= credited(D, round 2)
//	credited(D, round 1)  <= completed(S, round 2) + held(S, round 2)
//
// The first fails if a saga completed without its credit; the second if a
// credit has no saga behind it, or a credited saga was aborted. Reads of
// different shards happen at different times, and the rounds make each
// inequality compare a read with a later one, so no saga in flight can
// make a correct cluster fail.
func CheckAudit(r1, r2 []ShardBooks) AuditReport {
	rep := AuditReport{OK: true, Consistent: len(r1) == len(r2), Violations: []string{}}
	fail := func(format string, args ...any) {
		rep.OK = false
		rep.Violations = append(rep.Violations, fmt.Sprintf(format, args...))
	}
	if len(r1) != len(r2) {
		fail("the rounds read %d and %d shards", len(r1), len(r2))
		return rep
	}
	for i := range r1 {
		rep.Seqs = append(rep.Seqs, [2]uint64{r1[i].Seq, r2[i].Seq})
		if r1[i].Seq != r2[i].Seq {
			rep.Consistent = false
		}
		for _, b := range []*ShardBooks{&r1[i], &r2[i]} {
			for _, cur := range sortedKeys(b.Sums) {
				if b.Sums[cur] != "0" {
					fail("shard %d at seq %d: %s sums to %s, not 0", b.Shard, b.Seq, cur, b.Sums[cur])
				}
			}
		}
	}
	l1, l2 := legs(r1, fail), legs(r2, fail)
	net, held := map[string]*big.Int{}, map[string]*big.Int{}
	for _, k := range sortedLegKeys(l1, l2) {
		a1, a2 := l1[k], l2[k]
		// k.from is the shard holding the account, k.to its peer.
		out1, in2 := a1.outgoing(), l2[k.reverse()].incoming()
		if out1.completed.Cmp(in2) > 0 {
			fail("%s: shard %d completed %s towards shard %d, which credited only %s", k.cur, k.from, out1.completed, k.to, in2)
		}
		in1, out2 := l1[k.reverse()].incoming(), a2.outgoing()
		bound := new(big.Int).Add(out2.completed, out2.held)
		if in1.Cmp(bound) > 0 {
			fail("%s: shard %d credited %s from shard %d, which completed %s and holds %s", k.cur, k.to, in1, k.from, out2.completed, out2.held)
		}
		add(net, k.cur, new(big.Int).Sub(a2.credits(), a2.debits()))
		add(held, k.cur, out2.held)
	}
	for _, cur := range sortedKeys(net) {
		h := held[cur]
		if h == nil {
			h = new(big.Int)
		}
		rep.Currencies = append(rep.Currencies, CurrencyAudit{Currency: cur, Net: net[cur].String(), InFlight: h.String()})
		if rep.Consistent && (net[cur].Sign() > 0 || new(big.Int).Neg(net[cur]).Cmp(h) > 0) {
			fail("%s: clearing accounts net to %s with %s in flight", cur, net[cur], h)
		}
	}
	return rep
}

type legKey struct {
	from, to int
	cur      string
}

func (k legKey) reverse() legKey { return legKey{from: k.to, to: k.from, cur: k.cur} }

// leg is a clearing account: on shard from, for peer shard to.
type leg struct{ a Account }

type flow struct{ completed, held *big.Int }

func (l *leg) outgoing() flow {
	if l == nil {
		return flow{new(big.Int), new(big.Int)}
	}
	return flow{big.NewInt(l.a.CreditsPosted), big.NewInt(l.a.CreditsPending)}
}

func (l *leg) incoming() *big.Int {
	if l == nil {
		return new(big.Int)
	}
	return big.NewInt(l.a.DebitsPosted)
}

func (l *leg) credits() *big.Int {
	if l == nil {
		return new(big.Int)
	}
	return big.NewInt(l.a.CreditsPosted)
}

func (l *leg) debits() *big.Int {
	if l == nil {
		return new(big.Int)
	}
	return big.NewInt(l.a.DebitsPosted)
}

func legs(books []ShardBooks, fail func(string, ...any)) map[legKey]*leg {
	out := map[legKey]*leg{}
	for _, b := range books {
		for _, a := range b.Clearing {
			peer, err := strconv.Atoi(strings.TrimPrefix(a.ID, ClearingPrefix))
			if err != nil || peer == b.Shard {
				fail("shard %d has a clearing account %q", b.Shard, a.ID)
				continue
			}
			if a.DebitsPending != 0 {
				fail("shard %d: %s holds debits %d: clearing accounts are never debited by a hold", b.Shard, a.Key(), a.DebitsPending)
			}
			out[legKey{from: b.Shard, to: peer, cur: a.Currency}] = &leg{a: a}
		}
	}
	return out
}

func sortedLegKeys(ms ...map[legKey]*leg) []legKey {
	seen := map[legKey]bool{}
	var out []legKey
	for _, m := range ms {
		for k := range m {
			for _, x := range []legKey{k, k.reverse()} {
				if !seen[x] {
					seen[x] = true
					out = append(out, x)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.cur != b.cur {
			return a.cur < b.cur
		}
		if a.from != b.from {
			return a.from < b.from
		}
		return a.to < b.to
	})
	return out
}

func add(m map[string]*big.Int, k string, v *big.Int) {
	if m[k] == nil {
		m[k] = new(big.Int)
	}
	m[k].Add(m[k], v)
}
