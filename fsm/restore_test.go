package fsm

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

// sourceLog is a shard's stored events: accounts, a deposit, a payment
// and an open pending transfer.
func sourceLog() [][]byte {
	st := ledger.NewState(0, 1, nil)
	var out [][]byte
	for i, cmds := range [][]ledger.Command{
		{{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "a", Currency: "USD"}, {ID: "b", Currency: "USD"}}}},
		{transfers(xfer("fund", ledger.World, "a", 100))},
		{transfers(xfer("pay", "a", "b", 30), ledger.Transfer{ID: "hold", Debit: "a", Credit: "b", Amount: 5, Pending: true})},
	} {
		st.Begin(uint64(i+1), t0+ledger.Time(i))
		for j := range cmds {
			st.Execute(&cmds[j])
		}
		for _, e := range st.Flush().Events {
			out = append(out, e.Raw)
		}
	}
	return out
}

// restoreEntries restores events to epoch in entries of per events,
// then finishes at the last one.
func restoreEntries(epoch uint64, events [][]byte, per int) [][]byte {
	var out [][]byte
	for i := 0; i < len(events); i += per {
		out = append(out, EncodeRestoreEvents(epoch, events[i:min(i+per, len(events))]))
	}
	var last ledger.Event
	if err := ledger.DecodeEvent(events[len(events)-1], &last); err != nil {
		panic(err)
	}
	return append(out, EncodeRestoreFinish(epoch, last.Seq, last.Hash))
}

// applyAt applies data as Raft entry index and returns its response.
func applyAt(f *FSM, index uint64, data []byte) any {
	return f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data})
}

func refusal(t *testing.T, resp any) string {
	t.Helper()
	rr, ok := resp.(*RestoreResponse)
	if !ok {
		t.Fatalf("restore entry answered %T", resp)
	}
	return rr.Err
}

func TestRestoreEntries(t *testing.T) {
	src := sourceLog()
	f := open(t, t.TempDir())
	entries := restoreEntries(2, src, 2)
	idx := uint64(0)
	next := func(data []byte) any { idx++; return applyAt(f, idx, data) }
	if e := refusal(t, next(entries[0])); e != "" {
		t.Fatalf("first events refused: %s", e)
	}
	// While restoring, a ledger entry (a write, an expiry tick) changes
	// nothing, and the open pending does not expire on the clock.
	before := status(t, f)
	resp := next(enveloped(&ledger.Entry{Time: t0 + 1e12, Commands: []ledger.Command{transfers(xfer("sneak", ledger.World, "a", 1))}}))
	if r, ok := resp.(*Response); !ok || len(r.Results) != 0 || status(t, f).AppliedSeq != before.AppliedSeq {
		t.Fatalf("ledger entry while restoring answered %+v", resp)
	}
	for name, bad := range map[string][]byte{
		"another epoch": EncodeRestoreEvents(3, src[before.AppliedSeq:]),
		"a gap":         EncodeRestoreEvents(2, src[before.AppliedSeq+1:]),
		"a replay":      EncodeRestoreEvents(2, src[:1]),
		"an early end":  EncodeRestoreFinish(2, before.AppliedSeq+1, ledger.Hash{}),
	} {
		if e := refusal(t, next(bad)); e == "" {
			t.Fatalf("%s: taken", name)
		}
		if s := status(t, f); s.AppliedSeq != before.AppliedSeq {
			t.Fatalf("%s: refused but the seq moved to %d", name, s.AppliedSeq)
		}
	}
	if f.Epoch() != 0 {
		t.Fatalf("epoch %d before the finish", f.Epoch())
	}
	for _, d := range entries[1:] {
		if e := refusal(t, next(d)); e != "" {
			t.Fatalf("refused: %s", e)
		}
	}
	if f.Epoch() != 2 {
		t.Fatalf("epoch %d after the finish, want 2", f.Epoch())
	}
	// Restored: the same events, hashes and state as the source.
	evs, err := f.Events(0, 100)
	if err != nil || len(evs) != len(src) {
		t.Fatalf("%d events back (%v), %d restored", len(evs), err, len(src))
	}
	raw, _ := f.storedEvents(0, 100)
	for i := range src {
		if string(raw[i].stored) != string(src[i]) {
			t.Fatalf("event %d stored otherwise than restored", i+1)
		}
	}
	verify(t, f)
	if e := refusal(t, next(EncodeRestoreEvents(3, src))); !strings.Contains(e, "restored already") {
		t.Fatalf("a second restore: %q", e)
	}
	// Writes go on after it, and a reopened or snapshot-restored replica
	// keeps the epoch.
	if r := next(enveloped(&ledger.Entry{Time: t0 + 10, Commands: []ledger.Command{transfers(xfer("after", "a", "b", 1))}})).(*Response); r.Results[0][0].Result != ledger.OK {
		t.Fatalf("a write after the restore: %+v", r.Results)
	}
	verify(t, f)
	g := open(t, t.TempDir())
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, f)))); err != nil {
		t.Fatal(err)
	}
	if g.Epoch() != 2 || g.rest.Restoring {
		t.Fatalf("snapshot-restored replica: epoch %d restoring %v", g.Epoch(), g.rest.Restoring)
	}
}

// TestRestoreRefusesShardWithState: a shard with events of its own
// takes no restore.
func TestRestoreRefusesShardWithState(t *testing.T) {
	f := open(t, t.TempDir())
	applyAt(f, 1, enveloped(&ledger.Entry{Time: t0, Commands: []ledger.Command{
		{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "z", Currency: "USD"}}}}}))
	if e := refusal(t, applyAt(f, 2, EncodeRestoreEvents(1, sourceLog()))); !strings.Contains(e, "needs an empty shard") {
		t.Fatalf("restore onto a shard with events: %q", e)
	}
	// A finish naming the shard's own head must not mark it restored.
	st := status(t, f)
	if e := refusal(t, applyAt(f, 3, EncodeRestoreFinish(1, st.AppliedSeq, st.Head))); !strings.Contains(e, "needs an empty shard") {
		t.Fatalf("finish on a shard with events of its own: %q", e)
	}
	if f.Epoch() != 0 {
		t.Fatalf("epoch %d after a refused finish", f.Epoch())
	}
}
