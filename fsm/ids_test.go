package fsm

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

// The filter must never deny an id it holds, across its growth, and must
// deny most ids it does not hold (or it saves no reads).
func TestIDFilter(t *testing.T) {
	f := newIDFilter()
	const n = 3*bloomFirst + 17 // three parts
	for i := range n {
		f.add(fmt.Sprintf("t-%d", i))
	}
	if len(f.parts) != 3 {
		t.Fatalf("parts = %d, want 3", len(f.parts))
	}
	for i := range n {
		if !f.mayContain(fmt.Sprintf("t-%d", i)) {
			t.Fatalf("t-%d added but denied", i)
		}
	}
	fp := 0
	for i := range 100000 {
		if f.mayContain(fmt.Sprintf("absent-%d", i)) {
			fp++
		}
	}
	if fp > 5000 { // three parts at about 1% each, with a wide margin
		t.Fatalf("%d of 100000 absent ids passed the filter", fp)
	}
}

// The filter is rebuilt wherever the state is: a transfer id used before a
// restart, or before the snapshot a fresh replica restores, must still be
// answered as a duplicate.
func TestDuplicatesAfterReopenAndRestore(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	setup := ledger.Entry{Time: t0, Commands: []ledger.Command{
		{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "a", Currency: "USD"}, {ID: "b", Currency: "USD"}}},
		{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{xfer("fund", ledger.World, "a", 100), xfer("x", "a", "b", 5)}},
	}}
	f.ApplyBatch([]*raft.Log{entryLog(1, setup)})
	snap := snapshotOf(t, f)
	f.Close()

	again := ledger.Entry{Time: t0 + 1, Commands: []ledger.Command{
		{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{xfer("x", "a", "b", 5)}}}}
	f = open(t, dir)
	if r := results(t, f.ApplyBatch([]*raft.Log{entryLog(2, again)})[0])[0][0]; r.Result != ledger.Exists {
		t.Fatalf("after reopen: %+v, want exists", r)
	}

	g := open(t, t.TempDir())
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if r := results(t, g.ApplyBatch([]*raft.Log{entryLog(2, again)})[0])[0][0]; r.Result != ledger.Exists {
		t.Fatalf("after restore: %+v, want exists", r)
	}
}
