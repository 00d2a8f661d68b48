package check_test

import (
	"encoding/json"
	"math"
	"math/rand"
	"strings"
	"testing"

	"tally/ledger"
	"tally/test/jepsen/check"
)

// The checker recomputes hashes on its own (canon.go); this test, outside
// the package, holds it to the ledger's: for random events of both
// encodings, served as JSON, the checker finds the hash the ledger sealed,
// and a changed field breaks it.
func TestHashAgreesWithLedger(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	texts := []string{"", "a", "acct-1{eu}", "@world", "USD", "café ✓", `"quoted" \ <&>`, "\u2028", "🙂", strings.Repeat("z", 200)}
	text := func() string { return texts[r.Intn(len(texts))] }
	num := func() int64 {
		switch r.Intn(4) {
		case 0:
			return 0
		case 1:
			return math.MaxInt64 - r.Int63n(2)
		case 2:
			return -r.Int63n(1 << 40)
		}
		return r.Int63n(1 << 40)
	}
	meta := func() map[string]string {
		if r.Intn(2) == 0 {
			return nil
		}
		m := map[string]string{}
		for n := r.Intn(5); n >= 0; n-- {
			m[text()] = text()
		}
		return m
	}
	var prev ledger.Hash
	var page []json.RawMessage
	var sealed []ledger.Event
	for i := 0; i < 2000; i++ {
		e := ledger.Event{Shard: r.Intn(64), Seq: uint64(i + 1), RaftIndex: uint64(num()), Time: ledger.Time(num()),
			Type: ledger.EventTypes[r.Intn(len(ledger.EventTypes))], PrevHash: prev, Enc: ledger.EncBinary}
		if i%4 == 0 {
			e.Enc = ledger.EncJSON
		}
		d := &e.Data
		if r.Intn(2) == 0 {
			d.Account = &ledger.Account{ID: text(), Currency: text(), AllowNegative: r.Intn(2) == 0, Metadata: meta(),
				Closed: r.Intn(2) == 0, DebitsPosted: num(), CreditsPosted: num(), DebitsPending: num(), CreditsPending: num(),
				CreatedSeq: uint64(num()), CreatedAt: num()}
		}
		if r.Intn(2) == 0 {
			d.Transfer = &ledger.Transfer{ID: text(), Debit: text(), Credit: text(), Amount: num(), Pending: r.Intn(2) == 0,
				TimeoutSeconds: num(), PostPendingID: text(), VoidPendingID: text(), Linked: r.Intn(2) == 0,
				Reference: text(), Metadata: meta()}
		}
		d.AccountID, d.Result, d.PendingID, d.Currency, d.Note = text(), ledger.Code(text()), text(), text(), text()
		d.Amount, d.ExpiresAt = num(), ledger.Time(num())
		if r.Intn(2) == 0 {
			p := r.Intn(64)
			d.Peer = &p
		}
		for n := r.Intn(3); n > 0; n-- {
			e.Balances = append(e.Balances, ledger.Balance{Account: text(), Currency: text(), DebitsPosted: num(),
				CreditsPosted: num(), DebitsPending: num(), CreditsPending: num(), Balance: num(), Available: num()})
		}
		if e.Balances == nil {
			e.Balances = []ledger.Balance{}
		}
		e.Seal()
		prev = e.Hash
		b, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		page = append(page, b)
		sealed = append(sealed, e)
	}
	body, _ := json.Marshal(map[string]any{"events": page, "next": ""})
	evs, _, err := check.ParseEvents(body)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		if got := e.ComputeHash(); got != sealed[i].Hash.String() || got != e.Hash {
			t.Fatalf("event %d (enc %d): checker %s, ledger %s\n%s", e.Seq, sealed[i].Enc, got, sealed[i].Hash, e.Raw)
		}
		// A changed amount, or a field the hash does not cover, breaks it.
		bad := e
		bad.Raw = json.RawMessage(strings.Replace(string(e.Raw), `"seq":`, `"seq":1`, 1))
		if bad.ComputeHash() == e.Hash {
			t.Fatalf("event %d: a changed seq keeps the hash", e.Seq)
		}
		bad.Raw = json.RawMessage(string(e.Raw[:len(e.Raw)-1]) + `,"x":1}`)
		if bad.ComputeHash() == e.Hash {
			t.Fatalf("event %d: an extra field keeps the hash", e.Seq)
		}
	}
}

// TestHashOfReplayedLog: the events a real state emits, over an upgrade
// (entries of version 1, then 2), check in the checker.
func TestHashOfReplayedLog(t *testing.T) {
	st := ledger.NewState(0, 1, nil)
	var all []ledger.Event
	for i, v := range []byte{1, 1, 2, 2} {
		st.BeginEntry(uint64(i+1), ledger.Time(1_700_000_000_000_000_000+int64(i)*1_000_000_007), v)
		st.Execute(&ledger.Command{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{
			{ID: "a" + string(rune('0'+i)), Currency: "USD", Metadata: map[string]string{"i": string(rune('0' + i))}}}})
		st.Execute(&ledger.Command{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{
			{ID: "f" + string(rune('0'+i)), Debit: ledger.World, Credit: "a" + string(rune('0'+i)), Amount: 10, Reference: "r"},
			{ID: "p" + string(rune('0'+i)), Debit: "a" + string(rune('0'+i)), Credit: ledger.World, Amount: 3, Pending: true, TimeoutSeconds: 1},
		}})
		all = append(all, st.Flush().Events...)
	}
	var page []json.RawMessage
	for _, e := range all {
		b, _ := json.Marshal(&e)
		page = append(page, b)
	}
	body, _ := json.Marshal(map[string]any{"events": page})
	evs, _, err := check.ParseEvents(body)
	if err != nil {
		t.Fatal(err)
	}
	encs := map[uint8]int{}
	for i, e := range evs {
		encs[all[i].Enc]++
		if e.ComputeHash() != e.Hash {
			t.Fatalf("event %d (enc %d): checker %s, hash %s", e.Seq, all[i].Enc, e.ComputeHash(), e.Hash)
		}
	}
	if encs[ledger.EncJSON] == 0 || encs[ledger.EncBinary] == 0 {
		t.Fatalf("encodings %v: want both", encs)
	}
}
