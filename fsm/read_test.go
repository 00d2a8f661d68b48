package fsm

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

func xfer(id, debit, credit string, amount int64) ledger.Transfer {
	return ledger.Transfer{ID: id, Debit: debit, Credit: credit, Amount: amount}
}

func transfers(ts ...ledger.Transfer) ledger.Command {
	return ledger.Command{Kind: ledger.CmdTransfers, Transfers: ts}
}

// readFixture applies a small known ledger: "al" and "alice" (one id a
// prefix of the other), "bob", "eve" in EUR; deposits, transfers, a
// rejection, a pending transfer posted in part, and 20 small transfers
// between alice and bob in entries of their own.
func readFixture(t *testing.T) *FSM {
	t.Helper()
	f := open(t, t.TempDir())
	es := []ledger.Entry{
		{Time: t0, Commands: []ledger.Command{{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{
			{ID: "al", Currency: "USD"}, {ID: "alice", Currency: "USD"}, {ID: "bob", Currency: "USD"}, {ID: "eve", Currency: "EUR"}}}}},
		{Time: t0 + 1, Commands: []ledger.Command{transfers(
			xfer("d1", ledger.World, "alice", 1000), xfer("d2", ledger.World, "bob", 500), xfer("d3", ledger.World, "al", 50))}},
		{Time: t0 + 2, Commands: []ledger.Command{transfers(
			xfer("x1", "alice", "bob", 300), xfer("x2", "bob", "alice", 100), xfer("x3", "alice", "bob", 5000),
			ledger.Transfer{ID: "p1", Debit: "alice", Credit: "bob", Amount: 200, Pending: true, TimeoutSeconds: 10})}},
		{Time: t0 + 3, Commands: []ledger.Command{transfers(
			ledger.Transfer{ID: "post1", Debit: "alice", Credit: "bob", Amount: 150, PostPendingID: "p1"}, xfer("x4", "al", "alice", 10))}},
	}
	for i := range 20 {
		x := xfer("s"+string(rune('a'+i)), "alice", "bob", 1)
		if i%2 == 1 {
			x.Debit, x.Credit = x.Credit, x.Debit
		}
		es = append(es, ledger.Entry{Time: t0 + ledger.Time(4+i), Commands: []ledger.Command{transfers(x)}})
	}
	var logs []*raft.Log
	for i, e := range es {
		logs = append(logs, entryLog(uint64(i+1), e))
	}
	applyIn(f, logs, 3)
	return f
}

func TestReadAccountAndTransfer(t *testing.T) {
	f := readFixture(t)
	st := status(t, f)
	a, seq, err := f.Account("alice")
	if err != nil {
		t.Fatal(err)
	}
	if seq != st.AppliedSeq {
		t.Fatalf("account read reflects seq %d, applied seq is %d", seq, st.AppliedSeq)
	}
	want := ledger.Account{ID: "alice", Currency: "USD", CreditsPosted: 1000 + 100 + 10 + 10,
		DebitsPosted: 300 + 150 + 10, CreatedSeq: 2, CreatedAt: int64(t0)}
	if !equalAccount(a, want) {
		t.Fatalf("alice: %+v\nwant    %+v", a, want)
	}
	w, _, err := f.Account(ledger.AccountKey(ledger.World, "USD"))
	if err != nil || w.DebitsPosted != 1550 || !w.AllowNegative {
		t.Fatalf("@world/USD: %+v, %v", w, err)
	}
	for _, k := range []string{"nobody", "ali", ledger.World, ledger.AccountKey(ledger.World, "EUR")} {
		if _, _, err := f.Account(k); !errors.Is(err, ErrNotFound) {
			t.Fatalf("account %q: %v, want ErrNotFound", k, err)
		}
	}

	for _, tc := range []struct {
		id     string
		result ledger.Code
		status ledger.Status
	}{
		{"d1", ledger.OK, ledger.StatusPosted},
		{"x3", ledger.InsufficientFunds, ledger.StatusRejected},
		{"p1", ledger.OK, ledger.StatusPosted},
		{"post1", ledger.OK, ledger.StatusPosted},
	} {
		r, seq, err := f.Transfer(tc.id)
		if err != nil || r.Result != tc.result || r.Status != tc.status || r.Transfer.ID != tc.id || seq != st.AppliedSeq {
			t.Fatalf("transfer %s: %+v at seq %d, %v; want %s %s", tc.id, r, seq, err, tc.result, tc.status)
		}
	}
	if r, _, _ := f.Transfer("p1"); r.ResolvedBy != "post1" || r.ResolvedAmount != 150 || r.ExpiresAt != int64(t0+2)+10e9 {
		t.Fatalf("p1: %+v", r)
	}
	if _, _, err := f.Transfer("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown transfer: %v, want ErrNotFound", err)
	}
}

func equalAccount(a, b ledger.Account) bool {
	return a.ID == b.ID && a.Currency == b.Currency && a.AllowNegative == b.AllowNegative && a.Closed == b.Closed &&
		a.DebitsPosted == b.DebitsPosted && a.CreditsPosted == b.CreditsPosted && a.DebitsPending == b.DebitsPending &&
		a.CreditsPending == b.CreditsPending && a.CreatedSeq == b.CreatedSeq && a.CreatedAt == b.CreatedAt &&
		maps.Equal(a.Metadata, b.Metadata)
}

func TestReadEvents(t *testing.T) {
	f := readFixture(t)
	st := status(t, f)
	all, err := f.Events(0, MaxPage)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(all)) != st.AppliedSeq {
		t.Fatalf("%d events, applied seq %d", len(all), st.AppliedSeq)
	}
	var prev ledger.Hash
	for i, e := range all {
		if e.Seq != uint64(i+1) || e.PrevHash != prev || e.ComputeHash() != e.Hash {
			t.Fatalf("event %d: seq %d, chain broken", i, e.Seq)
		}
		prev = e.Hash
	}
	if prev != st.Head {
		t.Fatalf("last event's hash %s, head %s", prev, st.Head)
	}
	if def, err := f.Events(0, 0); err != nil || !slices.EqualFunc(def, all, sameEvent) {
		t.Fatalf("default page: %d events, %v", len(def), err)
	}
	var paged []ledger.Event
	for after := uint64(0); ; {
		page, err := f.Events(after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 3 || page[0].Seq != after+1 {
			t.Fatalf("page after %d: %d events from seq %d", after, len(page), page[0].Seq)
		}
		paged = append(paged, page...)
		after = page[len(page)-1].Seq
	}
	if !slices.EqualFunc(paged, all, sameEvent) {
		t.Fatal("pages of 3 differ from one page")
	}

	// HashAt is the chain value right after each seq.
	if h, err := f.HashAt(0); err != nil || h != (ledger.Hash{}) {
		t.Fatalf("HashAt(0) = %s, %v", h, err)
	}
	for _, e := range all {
		if h, err := f.HashAt(e.Seq); err != nil || h != e.Hash {
			t.Fatalf("HashAt(%d) = %s, %v; want %s", e.Seq, h, err, e.Hash)
		}
	}
	// No seq follows the largest one: nothing comes after it.
	if evs, err := f.Events(^uint64(0), 10); err != nil || len(evs) != 0 {
		t.Fatalf("events after the largest seq: %v, %v", seqs(evs), err)
	}
	if _, err := f.HashAt(st.AppliedSeq + 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("HashAt past the head: %v, want ErrNotFound", err)
	}
}

func sameEvent(a, b ledger.Event) bool { return a.Seq == b.Seq && a.Hash == b.Hash }

// TestEventsPageLimit: a page never holds more than MaxPage events.
func TestEventsPageLimit(t *testing.T) {
	f := open(t, t.TempDir())
	applyIn(f, logsOf(1, newGen(13).data(260)), 65)
	st := status(t, f)
	if st.AppliedSeq <= MaxPage {
		t.Fatalf("only %d events: cannot check the page limit", st.AppliedSeq)
	}
	page, err := f.Events(0, 5*MaxPage)
	if err != nil || len(page) != MaxPage {
		t.Fatalf("asked for %d events: got %d, %v; want %d", 5*MaxPage, len(page), err, MaxPage)
	}
	if n := len(allEvents(t, f)); uint64(n) != st.AppliedSeq {
		t.Fatalf("paging found %d events, applied seq %d", n, st.AppliedSeq)
	}
}

func TestReadHistory(t *testing.T) {
	f := readFixture(t)
	all, err := f.Events(0, MaxPage)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"alice", "al", "bob", "eve", ledger.AccountKey(ledger.World, "USD")} {
		t.Run(k, func(t *testing.T) {
			var want []ledger.Event
			for _, e := range all {
				for _, b := range e.Balances {
					if ledger.AccountKey(b.Account, b.Currency) == k {
						want = append(want, e)
						break
					}
				}
			}
			if len(want) == 0 {
				t.Fatal("no events touch it: the check proves nothing")
			}
			asc, err := f.History(k, 0, MaxPage, false)
			if err != nil || !slices.EqualFunc(asc, want, sameEvent) {
				t.Fatalf("ascending history: %v, %v\nwant %v", seqs(asc), err, seqs(want))
			}
			desc, err := f.History(k, 0, MaxPage, true)
			rev := slices.Clone(want)
			slices.Reverse(rev)
			if err != nil || !slices.EqualFunc(desc, rev, sameEvent) {
				t.Fatalf("descending history: %v, %v\nwant %v", seqs(desc), err, seqs(rev))
			}
			if got := pages(t, f, k, false); !slices.EqualFunc(got, want, sameEvent) {
				t.Fatalf("ascending pages of 4: %v\nwant %v", seqs(got), seqs(want))
			}
			if got := pages(t, f, k, true); !slices.EqualFunc(got, rev, sameEvent) {
				t.Fatalf("descending pages of 4: %v\nwant %v", seqs(got), seqs(rev))
			}
		})
	}
	// The newest event of an account carries its balances as stored.
	h, err := f.History("alice", 0, 1, true)
	if err != nil || len(h) != 1 {
		t.Fatalf("newest of alice: %v, %v", h, err)
	}
	a, _, err := f.Account("alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range h[0].Balances {
		if b.Account == "alice" && (b.CreditsPosted != a.CreditsPosted || b.DebitsPosted != a.DebitsPosted || b.Available != a.Available()) {
			t.Fatalf("alice's newest event says %+v, the account %+v", b, a)
		}
	}
	if h, err := f.History("alice", ^uint64(0), 10, false); err != nil || len(h) != 0 {
		t.Fatalf("history after the largest seq: %v, %v", seqs(h), err)
	}
	if h2, err := f.History("alice", ^uint64(0), 1, true); err != nil || len(h2) != 1 || h2[0].Seq != h[0].Seq {
		t.Fatalf("history before the largest seq: %v, %v; want [%d]", seqs(h2), err, h[0].Seq)
	}
	if h, err := f.History("nobody", 0, 10, false); err != nil || len(h) != 0 {
		t.Fatalf("history of an unknown account: %v, %v", seqs(h), err)
	}
}

// pages walks k's history in pages of 4, with after (ascending) or before
// (descending) set to the last seq of the previous page.
func pages(t *testing.T, f *FSM, k string, desc bool) []ledger.Event {
	t.Helper()
	var out []ledger.Event
	var cursor uint64
	for {
		page, err := f.History(k, cursor, 4, desc)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		if len(page) > 4 {
			t.Fatalf("page of %d events, limit 4", len(page))
		}
		out = append(out, page...)
		cursor = page[len(page)-1].Seq
	}
}

func seqs(es []ledger.Event) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func TestWait(t *testing.T) {
	f := readFixture(t)
	idx, seq := f.Applied()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := f.WaitIndex(ctx, idx); err != nil {
		t.Fatalf("WaitIndex of the applied index: %v", err)
	}
	if err := f.WaitSeq(ctx, seq); err != nil {
		t.Fatalf("WaitSeq of the applied seq: %v", err)
	}

	done := make(chan error, 2)
	go func() { done <- f.WaitIndex(ctx, idx+2) }()
	go func() { done <- f.WaitSeq(ctx, seq+1) }()
	// A node entry moves the index but not the seq: neither waiter is done.
	f.ApplyBatch([]*raft.Log{{Index: idx + 1, Type: raft.LogCommand, Data: EncodeNode("n1", "h:1")}})
	select {
	case err := <-done:
		t.Fatalf("a waiter returned (%v) before its position was applied", err)
	default:
	}
	f.ApplyBatch([]*raft.Log{entryLog(idx+2, ledger.Entry{Time: t0 + 100, Commands: []ledger.Command{
		transfers(xfer("late", ledger.World, "bob", 1))}})})
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("waiter: %v", err)
		}
	}

	short, cancel2 := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel2()
	if err := f.WaitSeq(short, seq+1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSeq past the deadline: %v", err)
	}
	if err := f.WaitIndex(short, idx+1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIndex past the deadline: %v", err)
	}
}

// TestNodeDirectory sets, replaces and forgets nodes through log entries.
func TestNodeDirectory(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	f.ApplyBatch([]*raft.Log{entryLog(1, ledger.Entry{Time: t0, Commands: []ledger.Command{
		{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "a", Currency: "USD"}}}}})})
	_, seq := f.Applied()
	steps := []struct {
		id, addr string
		want     map[string]string
	}{
		{"n1", "10.0.0.1:80", map[string]string{"n1": "10.0.0.1:80"}},
		{"n2", "10.0.0.2:80", map[string]string{"n1": "10.0.0.1:80", "n2": "10.0.0.2:80"}},
		{"n1", "10.0.0.9:80", map[string]string{"n1": "10.0.0.9:80", "n2": "10.0.0.2:80"}},
		{"n2", "", map[string]string{"n1": "10.0.0.9:80"}},
		{"n7", "", map[string]string{"n1": "10.0.0.9:80"}},
	}
	var prev map[string]string
	var prevCopy map[string]string
	for i, s := range steps {
		index := uint64(i + 2)
		resp := f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: EncodeNode(s.id, s.addr)}})[0]
		if resp != nil {
			t.Fatalf("node entry answered %s", show(resp))
		}
		got := f.Nodes()
		if !maps.Equal(got, s.want) {
			t.Fatalf("after %s=%q: nodes %v, want %v", s.id, s.addr, got, s.want)
		}
		if prev != nil && !maps.Equal(prev, prevCopy) {
			t.Fatalf("a map returned by Nodes changed under its reader: %v, was %v", prev, prevCopy)
		}
		prev, prevCopy = got, maps.Clone(got)
		if i, sq := f.Applied(); i != index || sq != seq {
			t.Fatalf("applied %d seq %d after a node entry, want %d seq %d", i, sq, index, seq)
		}
	}
	want := steps[len(steps)-1].want
	before := status(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = open(t, dir)
	if got := f.Nodes(); !maps.Equal(got, want) {
		t.Fatalf("after reopening: nodes %v, want %v", got, want)
	}
	if s := status(t, f); s != before {
		t.Fatalf("after reopening: %+v, before %+v", s, before)
	}
	verify(t, f)
}

func TestNodeEncoding(t *testing.T) {
	long := strings.Repeat("h", 256)
	for _, tc := range []struct{ id, addr string }{
		{"n1", "10.0.0.1:8080"}, {"n1", ""}, {long, long}, {"ü", "[::1]:80"},
	} {
		for _, data := range [][]byte{EncodeNode(tc.id, tc.addr), bareNodeEntry(tc.id, tc.addr)} {
			k, p, err := decodeEnvelope(data)
			if err != nil || k != nodeKind {
				t.Fatalf("envelope of %x: %v %v", data, k, err)
			}
			id, addr, err := decodeNode(p)
			if err != nil || id != tc.id || addr != tc.addr {
				t.Fatalf("round trip of %q %q in %x: %q %q %v", tc.id, tc.addr, data, id, addr, err)
			}
		}
	}
	payload := func(id, addr string) []byte { return appendNode(nil, id, addr) }
	for _, p := range [][]byte{
		nil, {}, payload("", "x"), payload(long+"h", "x"), payload("n", long+"h"),
		append(payload("n", "x"), 0), payload("n", "x")[1:], {1, 'n', 5, 'x'},
	} {
		if id, addr, err := decodeNode(p); err == nil {
			t.Fatalf("decodeNode(%q) = %q %q, want an error", p, id, addr)
		}
	}
}
