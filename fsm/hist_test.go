package fsm

import (
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

// The history index groups an entry's events per account. Walking it must
// give exactly the events that touch an account, in both directions and in
// pages whose cursors fall inside a group, and an account's balance at any
// seq must be the one its latest event at or before that seq carries.
func TestHistoryGroups(t *testing.T) {
	f := open(t, t.TempDir())
	accts := []string{"a", "b", "c", "d"}
	setup := ledger.Entry{Time: t0, Commands: []ledger.Command{{Kind: ledger.CmdOpenAccounts}, {Kind: ledger.CmdTransfers}}}
	for _, id := range accts {
		setup.Commands[0].Accounts = append(setup.Commands[0].Accounts, ledger.Account{ID: id, Currency: "USD"})
		setup.Commands[1].Transfers = append(setup.Commands[1].Transfers, xfer("fund-"+id, ledger.World, id, 1000))
	}
	logs := []*raft.Log{entryLog(1, setup)}
	r := rand.New(rand.NewSource(7))
	for i := range 30 {
		c := ledger.Command{Kind: ledger.CmdTransfers}
		for j := range 1 + r.Intn(6) { // groups of 1 to 6 events, some accounts untouched
			d := r.Intn(3)
			c.Transfers = append(c.Transfers, xfer(fmt.Sprintf("t%d-%d", i, j), accts[d], accts[d+1], 1+r.Int63n(5)))
		}
		logs = append(logs, entryLog(uint64(i+2), ledger.Entry{Time: t0 + ledger.Time(i+1), Commands: []ledger.Command{c}}))
	}
	f.ApplyBatch(logs[:10])
	f.ApplyBatch(logs[10:])
	all, err := f.Events(0, MaxPage)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append(slices.Clone(accts), ledger.AccountKey(ledger.World, "USD")) {
		var want []ledger.Event
		for _, e := range all {
			if slices.ContainsFunc(e.Balances, func(b ledger.Balance) bool { return ledger.AccountKey(b.Account, b.Currency) == k }) {
				want = append(want, e)
			}
		}
		rev := slices.Clone(want)
		slices.Reverse(rev)
		for _, size := range []int{1, 2, 3, 5, MaxPage} {
			if got := walk(t, f, k, size, false); !slices.EqualFunc(got, want, sameEvent) {
				t.Fatalf("%s ascending, pages of %d: %v\nwant %v", k, size, seqs(got), seqs(want))
			}
			if got := walk(t, f, k, size, true); !slices.EqualFunc(got, rev, sameEvent) {
				t.Fatalf("%s descending, pages of %d: %v\nwant %v", k, size, seqs(got), seqs(rev))
			}
		}
		// A balance at every seq, from inside and between groups.
		for seq := uint64(1); seq <= all[len(all)-1].Seq; seq++ {
			var last *ledger.Event
			for i := range want {
				if want[i].Seq <= seq {
					last = &want[i]
				}
			}
			a, err := f.AccountAt(k, seq)
			if last == nil {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("%s at %d: %+v, %v; want not found", k, seq, a, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s at %d: %v", k, seq, err)
			}
			for _, b := range last.Balances {
				if ledger.AccountKey(b.Account, b.Currency) == k && (a.DebitsPosted != b.DebitsPosted || a.CreditsPosted != b.CreditsPosted) {
					t.Fatalf("%s at %d: debits %d credits %d; event %d says %+v", k, seq, a.DebitsPosted, a.CreditsPosted, last.Seq, b)
				}
			}
		}
	}
}

// walk pages through k's history with the given page size.
func walk(t *testing.T, f *FSM, k string, size int, desc bool) []ledger.Event {
	t.Helper()
	var out []ledger.Event
	var cursor uint64
	for {
		page, err := f.History(k, cursor, size, desc)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		cursor = page[len(page)-1].Seq
	}
}

func TestDecodeHistRejectsBadValues(t *testing.T) {
	k := histKey("a", 9)
	if h, err := decodeHist(k, encodeSeqs([]uint64{3, 5, 9})); err != nil || !slices.Equal(h, []uint64{3, 5, 9}) {
		t.Fatalf("good value: %+v, %v", h, err)
	}
	if h, err := decodeHist(k, nil); err != nil || !slices.Equal(h, []uint64{9}) {
		t.Fatalf("a key of an earlier build (one event, empty value): %+v, %v", h, err)
	}
	for name, v := range map[string][]byte{
		"wrong end":    encodeSeqs([]uint64{3, 5}),
		"repeated seq": encodeSeqs([]uint64{3, 3, 9}),
		"truncated":    {0x80},
	} {
		if _, err := decodeHist(k, v); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// FuzzDecodeHist: a damaged history value is an error, never a panic, and
// what decodes is ascending and ends at the key's seq.
func FuzzDecodeHist(f *testing.F) {
	f.Add(uint64(9), encodeSeqs([]uint64{3, 5, 9}))
	f.Add(uint64(1), []byte{})
	f.Add(uint64(7), []byte{0x80, 0x80})
	f.Fuzz(func(t *testing.T, last uint64, v []byte) {
		seqs, err := decodeHist(histKey("a", last), v)
		if err != nil {
			return
		}
		if len(seqs) == 0 || seqs[len(seqs)-1] != last || !slices.IsSorted(seqs) {
			t.Fatalf("decoded %v for key seq %d", seqs, last)
		}
		for i := 1; i < len(seqs); i++ {
			if seqs[i] == seqs[i-1] {
				t.Fatalf("repeated seq in %v", seqs)
			}
		}
	})
}
