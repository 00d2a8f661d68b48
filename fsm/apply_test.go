package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"tally/ledger"
)

// TestSameLogSameState applies one log to fresh FSMs in different batch
// splits: the state, the hash chain and every response must not depend on
// how Raft happened to batch the entries.
func TestSameLogSameState(t *testing.T) {
	logs := logsOf(1, newGen(1).data(400))
	first := open(t, t.TempDir())
	want := applyIn(first, logs, 1)
	ref := status(t, first)
	for _, per := range []int{1, 50, len(logs)} {
		f := first
		if per != 1 {
			f = open(t, t.TempDir())
			sameResponses(t, applyIn(f, logs, per), want)
		}
		s := status(t, f)
		if s != ref {
			t.Fatalf("batches of %d: status %+v, batches of 1: %+v", per, s, ref)
		}
		if idx, seq := f.Applied(); idx != uint64(len(logs)) || seq != s.AppliedSeq {
			t.Fatalf("batches of %d: Applied() = %d, %d; want %d, %d", per, idx, seq, len(logs), s.AppliedSeq)
		}
		rep := verify(t, f)
		if rep.Head != s.Head || rep.StateHash != s.StateHash || rep.Events != s.AppliedSeq {
			t.Fatalf("batches of %d: verify %+v disagrees with status %+v", per, rep, s)
		}
	}
	if ref.AppliedIndex != uint64(len(logs)) || ref.AppliedSeq < uint64(len(logs)) {
		t.Fatalf("status %+v after %d entries", ref, len(logs))
	}

	// The stream must reach the paths it is meant to cover, or the
	// comparison above proves little.
	got := codes(t, want)
	for _, c := range []ledger.Code{ledger.OK, ledger.Exists, ledger.ExistsWithDifferentFields,
		ledger.InsufficientFunds, ledger.PendingExpired, ledger.PendingAlreadyResolved,
		ledger.LinkedEventFailed, ledger.CurrencyMismatch, ledger.AccountClosed} {
		if got[c] == 0 {
			t.Errorf("the stream never produced %s (codes: %v)", c, got)
		}
	}
	types := map[ledger.EventType]int{}
	for _, e := range allEvents(t, first) {
		types[e.Type]++
	}
	for _, typ := range []ledger.EventType{ledger.AccountOpened, ledger.AccountClosedEv, ledger.TransferPosted,
		ledger.TransferPending, ledger.PendingPosted, ledger.PendingVoided, ledger.PendingExpiredEv, ledger.TransferRejected} {
		if types[typ] == 0 {
			t.Errorf("the stream never produced a %s event (events: %v)", typ, types)
		}
	}
	if len(first.Nodes()) == 0 {
		t.Errorf("the stream never left a node in the directory")
	}
}

// TestSkipApplied re-applies entries at or below the applied index, as
// Raft does after a restart: they change nothing and answer nil.
func TestSkipApplied(t *testing.T) {
	logs := logsOf(1, newGen(2).data(150))
	ref := open(t, t.TempDir())
	want := applyIn(ref, logs, 10)

	dir := t.TempDir()
	f := open(t, dir)
	applyIn(f, logs[:100], 10)
	before := status(t, f)

	for _, resp := range f.ApplyBatch(logs[50:100]) {
		if resp != nil {
			t.Fatalf("a replayed entry answered %s", show(resp))
		}
	}
	if s := status(t, f); s != before {
		t.Fatalf("replaying applied entries changed the status: %+v, was %+v", s, before)
	}

	// A batch that straddles the applied index applies only the new part.
	got := f.ApplyBatch(logs[90:120])
	for i, resp := range got[:10] {
		if resp != nil {
			t.Fatalf("entry %d at or below the applied index answered %s", 91+i, show(resp))
		}
	}
	sameResponses(t, got[10:], want[100:120])

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = open(t, dir)
	mid := status(t, f)
	for _, resp := range applyIn(f, logs[:120], 7) {
		if resp != nil {
			t.Fatalf("after reopening, a replayed entry answered %s", show(resp))
		}
	}
	if s := status(t, f); s != mid || s.AppliedIndex != 120 {
		t.Fatalf("after reopening, replay changed the status: %+v, was %+v", s, mid)
	}
	sameResponses(t, applyIn(f, logs[120:], 7), want[120:])
	if s, r := status(t, f), status(t, ref); s != r {
		t.Fatalf("status %+v, reference %+v", s, r)
	}

	// Entries of other types take an index and nothing else.
	seq := status(t, f).AppliedSeq
	conf := &raft.Log{Index: 151, Term: 1, Type: raft.LogConfiguration, Data: []byte("not ours")}
	if resp := f.ApplyBatch([]*raft.Log{conf})[0]; resp != nil {
		t.Fatalf("a configuration entry answered %s", show(resp))
	}
	if idx, s := f.Applied(); idx != 151 || s != seq {
		t.Fatalf("after a configuration entry: applied %d seq %d, want 151 seq %d", idx, s, seq)
	}
}

// TestRestart closes and reopens the state: balances, the hash chain, the
// node directory and the open pending transfers with their expiry are all
// back, and the reopened state goes on exactly like one that never
// stopped.
func TestRestart(t *testing.T) {
	g := newGen(3)
	logs := logsOf(1, g.data(200))
	// Two holds with timeouts and one without, on accounts of their own.
	at := g.now + ledger.Time(time.Second)
	holds := ledger.Entry{Time: at, Commands: []ledger.Command{
		{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "hold-a", Currency: "USD"}, {ID: "hold-b", Currency: "USD"}}},
		{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{
			{ID: "fund", Debit: ledger.World, Credit: "hold-a", Amount: 1000},
			{ID: "pa", Debit: "hold-a", Credit: "hold-b", Amount: 100, Pending: true, TimeoutSeconds: 60},
			{ID: "pb", Debit: "hold-a", Credit: "hold-b", Amount: 200, Pending: true, TimeoutSeconds: 30},
			{ID: "pc", Debit: "hold-a", Credit: "hold-b", Amount: 300, Pending: true},
		}},
	}}
	logs = append(logs, entryLog(201, holds))
	later := []*raft.Log{
		entryLog(202, ledger.Entry{Time: at + ledger.Time(10*time.Second), Commands: []ledger.Command{
			{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{{ID: "post-pa", Debit: "hold-a", Credit: "hold-b", PostPendingID: "pa", Amount: 40}}}}}),
		// No commands: only the passing of log time, which expires pb.
		entryLog(203, ledger.Entry{Time: at + ledger.Time(45*time.Second)}),
		entryLog(204, ledger.Entry{Time: at + ledger.Time(46*time.Second), Commands: []ledger.Command{
			{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{{ID: "post-pb", Debit: "hold-a", Credit: "hold-b", PostPendingID: "pb"}}}}}),
	}

	ref := open(t, t.TempDir())
	applyIn(ref, logs, 16)
	wantLater := applyIn(ref, later, 1)

	dir := t.TempDir()
	f := open(t, dir)
	applyIn(f, logs, 16)
	before := status(t, f)
	idx, seq := f.Applied()
	exp, hasExp := f.NextExpiry()
	nodes := f.Nodes()
	if before.Pending < 3 || !hasExp {
		t.Fatalf("before restart: %d open pending, next expiry %v; want at least 3 and an expiry", before.Pending, hasExp)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	f = open(t, dir)
	if s := status(t, f); s != before {
		t.Fatalf("after restart: status %+v, before %+v", s, before)
	}
	if i, s := f.Applied(); i != idx || s != seq {
		t.Fatalf("after restart: applied %d seq %d, before %d %d", i, s, idx, seq)
	}
	if e, ok := f.NextExpiry(); e != exp || ok != hasExp {
		t.Fatalf("after restart: next expiry %v %v, before %v %v", e, ok, exp, hasExp)
	}
	if got := f.Nodes(); fmt.Sprint(got) != fmt.Sprint(nodes) {
		t.Fatalf("after restart: nodes %v, before %v", got, nodes)
	}
	verify(t, f)

	got := applyIn(f, later, 1)
	sameResponses(t, got, wantLater)
	if r := results(t, got[0])[0][0]; r.Result != ledger.OK || r.Status != ledger.StatusPosted {
		t.Fatalf("post of a hold made before the restart: %+v", r)
	}
	if r := results(t, got[2])[0][0]; r.Result != ledger.PendingExpired {
		t.Fatalf("post of a hold expired after the restart: %+v, want %s", r, ledger.PendingExpired)
	}
	rec, _, err := f.Transfer("pb")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != ledger.StatusVoided || rec.ResolvedBy != "expired" {
		t.Fatalf("record of pb after its timeout: %+v", rec)
	}
	rec, _, err = f.Transfer("pc")
	if err != nil || rec.Status != ledger.StatusPending {
		t.Fatalf("record of pc (no timeout): %+v, %v", rec, err)
	}
	expired := 0
	evs, err := f.Events(before.AppliedSeq, MaxPage)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type == ledger.PendingExpiredEv && e.Data.PendingID == "pb" {
			expired++
			if e.RaftIndex != 203 {
				t.Fatalf("pb expired in entry %d, want 203", e.RaftIndex)
			}
		}
	}
	if expired != 1 {
		t.Fatalf("%d PendingExpired events for pb, want 1", expired)
	}
	if s, r := status(t, f), status(t, ref); s != r {
		t.Fatalf("restarted state %+v, reference %+v", s, r)
	}
	a, _, err := f.Account("hold-a")
	if err != nil {
		t.Fatal(err)
	}
	if a.DebitsPosted != 40 || a.DebitsPending != 300 || a.CreditsPosted != 1000 {
		t.Fatalf("hold-a: %+v; want 40 posted, 300 held, 1000 credited", a)
	}
	verify(t, f)
}

// oversizeLogs returns a setup entry, one entry whose effects cannot fit
// one Badger transaction, and an ordinary entry after it.
func oversizeLogs() []*raft.Log {
	setup := ledger.Entry{Time: t0, Commands: []ledger.Command{
		{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "big-a", Currency: "USD"}, {ID: "big-b", Currency: "USD"}}},
		{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{{ID: "fund", Debit: ledger.World, Credit: "big-a", Amount: 1 << 40}}},
	}}
	pad := strings.Repeat("x", ledger.MaxMetaBytes-1)
	big := ledger.Entry{Time: t0 + 1, Commands: []ledger.Command{{Kind: ledger.CmdTransfers}}}
	for i := range ledger.MaxBatch {
		big.Commands[0].Transfers = append(big.Commands[0].Transfers, ledger.Transfer{
			ID: fmt.Sprintf("big-%d", i), Debit: "big-a", Credit: "big-b", Amount: 1, Metadata: map[string]string{"m": pad}})
	}
	after := ledger.Entry{Time: t0 + 2, Commands: []ledger.Command{
		{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{{ID: "after", Debit: "big-b", Credit: "big-a", Amount: 5}, {ID: "big-7", Debit: "big-a", Credit: "big-b", Amount: 1, Metadata: map[string]string{"m": pad}}}},
	}}
	return []*raft.Log{entryLog(1, setup), entryLog(2, big), entryLog(3, after)}
}

// TestOversizeEntry applies one entry whose effects cannot fit one Badger
// transaction, between ordinary entries of the same batch.
func TestOversizeEntry(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	logs := oversizeLogs()
	resps := f.ApplyBatch(logs)

	for i, r := range results(t, resps[1])[0] {
		if r.Result != ledger.OK {
			t.Fatalf("transfer %d of the large entry: %+v", i, r)
		}
	}
	rs := results(t, resps[2])[0]
	if rs[0].Result != ledger.OK || rs[1].Result != ledger.Exists {
		t.Fatalf("entry after the large one: %+v", rs)
	}
	s := status(t, f)
	if s.AppliedIndex != 3 || s.AppliedSeq != 2+1+ledger.MaxBatch+1 {
		t.Fatalf("status %+v; want index 3 and seq %d", s, 2+1+ledger.MaxBatch+1)
	}
	b, _, err := f.Account("big-b")
	if err != nil {
		t.Fatal(err)
	}
	if b.CreditsPosted != ledger.MaxBatch || b.DebitsPosted != 5 {
		t.Fatalf("big-b: %+v", b)
	}
	// The entry really was larger than one transaction may be, and no
	// dirty marker is left behind.
	var stored int64
	err = f.db.View(func(txn *badger.Txn) error {
		if _, err := txn.Get(keyDirty); !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("dirty marker after a complete apply: %v", err)
		}
		return eachValue(txn, nil, func(k, v []byte) error {
			stored += int64(len(k) + len(v))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if limit := f.db.MaxBatchSize(); stored <= limit {
		t.Fatalf("the large entry wrote %d bytes, which fits one transaction (%d): the test proves nothing", stored, limit)
	}
	verify(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = open(t, dir)
	if got := status(t, f); got != s {
		t.Fatalf("after reopening: %+v, before %+v", got, s)
	}
}

// TestDirtyMarkerRollsBack stops a replica after each commit of an entry
// too large for one transaction: reopened, the state is the one before the
// entry (the pre-images roll the partial writes back), none is left, and
// applying the entry again gives the state of a replica that never
// stopped. A reset to an empty state would fall behind a snapshot marker.
func TestDirtyMarkerRollsBack(t *testing.T) {
	logs := oversizeLogs()
	ref := open(t, t.TempDir())
	ref.ApplyBatch(logs)
	want := status(t, ref)
	done := open(t, t.TempDir())
	done.ApplyBatch(logs[:1])
	total := 0
	done.afterCommit = func() { total++ }
	done.ApplyBatch(logs[1:2])
	after := status(t, done)
	if total < 4 {
		t.Fatalf("the oversize entry took %d commits", total)
	}
	// The first (pre-images only), one with the dirty marker and part of
	// the writes, and the last (the new applied index).
	for _, crashAt := range []int{1, total / 2, total} {
		dir := t.TempDir()
		f := open(t, dir)
		f.ApplyBatch(logs[:1])
		before := status(t, f)
		commits := 0
		f.afterCommit = func() {
			if commits++; commits == crashAt {
				panic("stop")
			}
		}
		stopped := func() (stopped bool) {
			defer func() { stopped = recover() != nil }()
			f.ApplyBatch(logs[1:2])
			return false
		}()
		if !stopped {
			t.Fatalf("no stop after commit %d of %d", crashAt, total)
		}
		f.txn.Discard()
		f.closed.Store(true)
		if err := f.db.Close(); err != nil {
			t.Fatal(err)
		}
		f = open(t, dir)
		// The last commit holds the new applied index: from there on the
		// entry is whole.
		if s := status(t, f); s != before && s != after {
			t.Fatalf("stopped after commit %d, reopened: %+v, want the state before the entry %+v or after it", crashAt, s, before)
		}
		verify(t, f)
		err := f.db.View(func(txn *badger.Txn) error {
			if _, err := txn.Get(keyDirty); !errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("dirty marker after the rollback: %v", err)
			}
			return eachValue(txn, preUndo, func(k, _ []byte) error { return fmt.Errorf("pre-image %q left", k) })
		})
		if err != nil {
			t.Fatal(err)
		}
		f.ApplyBatch(logs[1:])
		if s := status(t, f); s != want {
			t.Fatalf("stopped after commit %d, applied again: %+v, want %+v", crashAt, s, want)
		}
		verify(t, f)
	}
}

func firstAccount(t *testing.T, logs []*raft.Log) string {
	t.Helper()
	for _, l := range logs {
		e, err := ledger.DecodeEntry(l.Data)
		if err != nil {
			continue
		}
		for _, c := range e.Commands {
			if c.Kind == ledger.CmdOpenAccounts {
				return c.Accounts[0].ID
			}
		}
	}
	t.Fatal("no account opened")
	return ""
}

// TestUndecodableEntryPanics: an entry that cannot be decoded stops the
// replica with a panic that names it, and changes nothing first.
func TestUndecodableEntryPanics(t *testing.T) {
	f := open(t, t.TempDir())
	applyIn(f, logsOf(1, newGen(7).data(20)), 5)
	before := status(t, f)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "entry envelope: empty"},
		{"unknown header", []byte{9, 0, 0}, "entry envelope: unknown header 0x09"},
		{"envelope without kind", []byte{envelopeV1}, "entry envelope: no kind"},
		{"kind 0", []byte{envelopeV1, 0, 1}, "entry envelope: unknown kind 0"},
		{"unregistered kind", AppendHeader(nil, 5), "entry envelope: unknown kind 5"},
		{"restore without a payload", AppendHeader(nil, KindRestore), "restore entry: short"},
		{"unknown kind", AppendHeader([]byte(nil), 200), "entry envelope: unknown kind 200"},
		{"trailing", append(bareV1(ledger.Entry{Time: t0}), 0), "ledger: decode entry"},
		{"enveloped ledger version", AppendHeader(nil, KindLedger), "ledger: decode entry"},
		{"enveloped trailing", append(enveloped(&ledger.Entry{Time: t0}), 0), "ledger: decode entry"},
		{"bare ledger version 2", []byte{2, 0, 0}, "entry envelope: unknown header 0x02"},
		{"enveloped ledger version 3", append(AppendHeader(nil, KindLedger), 3, 0, 0), "ledger: decode entry: version 3"},
		{"bad node entry", []byte{bareNode, 5, 'a'}, "node: bad node entry"},
		{"node without id", EncodeNode("", "x"), "node: bad node entry"},
		{"bare node without id", bareNodeEntry("", "x"), "node: bad node entry"},
		{"enveloped node, trailing", append(EncodeNode("n", "x"), 0), "node: bad node entry"},
		{"consumer entry without payload", AppendHeader(nil, KindConsumers), "consumers: bad consumer entry"},
		{"consumer entry, unknown op", append(AppendHeader(nil, KindConsumers), 9, 1, 'a', 0), "consumers: bad consumer entry"},
		{"consumer entry, bad name", EncodeOffset(OffsetChange{Op: OffsetSet, Name: "a b"}), "consumers: bad consumer entry"},
		{"consumer entry, empty name", EncodeOffset(OffsetChange{Op: OffsetSet}), "consumers: bad consumer entry"},
		{"consumer entry, delete with a seq", EncodeOffset(OffsetChange{Op: OffsetDelete, Name: "a", Seq: 1}), "consumers: bad consumer entry"},
		{"consumer entry, trailing", append(EncodeOffset(OffsetChange{Op: OffsetSet, Name: "a"}), 0), "consumers: bad consumer entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := applyPanic(f, &raft.Log{Index: 21, Type: raft.LogCommand, Data: tc.data})
			prefix := "fsm: shard 0: entry 21: "
			if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.want) {
				t.Fatalf("panic %q, want %q...%q", msg, prefix, tc.want)
			}
			if s := status(t, f); s != before {
				t.Fatalf("status after the panic %+v, before %+v", s, before)
			}
			if idx, _ := f.Applied(); idx != 20 {
				t.Fatalf("applied index %d after the panic, want 20", idx)
			}
		})
	}
}

// applyPanic applies l and returns the panic message ("" if none).
func applyPanic(f *FSM, l *raft.Log) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			if s, ok := r.(string); ok {
				msg = s
			} else {
				msg = fmt.Sprintf("non-string panic %T: %v", r, r)
			}
		}
	}()
	f.ApplyBatch([]*raft.Log{l})
	return ""
}
