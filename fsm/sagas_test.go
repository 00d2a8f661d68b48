package fsm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"tally/ledger"

	"github.com/hashicorp/raft"
)

// openSagaIDs lists f's open sagas as the driver sees them.
func openSagaIDs(t *testing.T, f *FSM) []string {
	t.Helper()
	recs, err := f.OpenSagas(nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.Transfer.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestOpenSagasInMemory: the driver's in-memory list of open sagas follows
// applied batches (a saga opens with its hold and leaves when resolved),
// and is rebuilt on reopen and on restore from a snapshot.
func TestOpenSagasInMemory(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(Options{Dir: dir, Shard: 0, Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Accounts on shard 0 (the source) and ids that live on shard 1.
	var here, there []string
	for i := 0; len(here) < 1 || len(there) < 3; i++ {
		id := fmt.Sprintf("acct-%d", i)
		if ledger.ShardOf(id, 2) == 0 {
			here = append(here, id)
		} else {
			there = append(there, id)
		}
	}
	idx := uint64(1)
	apply := func(cmds ...ledger.Command) {
		t.Helper()
		f.ApplyBatch([]*raft.Log{entryLog(idx, ledger.Entry{Time: t0 + ledger.Time(idx), Commands: cmds})})
		idx++
	}
	apply(ledger.Command{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: here[0], Currency: "USD"}}},
		ledger.Command{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{{ID: "fund", Debit: ledger.World, Credit: here[0], Amount: 100}}})
	var ts []ledger.Transfer
	for i, to := range there {
		ts = append(ts, ledger.Transfer{ID: fmt.Sprintf("s-%d", i), Debit: here[0], Credit: to, Amount: 1})
	}
	apply(ledger.Command{Kind: ledger.CmdTransfers, Transfers: ts})
	if got := openSagaIDs(t, f); fmt.Sprint(got) != "[s-0 s-1 s-2]" {
		t.Fatalf("after the holds: open sagas %v, want [s-0 s-1 s-2]", got)
	}
	closed := make(chan error, 1)
	go func() { closed <- f.WaitSagaClosed(context.Background(), "s-1") }()
	select {
	case err := <-closed:
		t.Fatalf("WaitSagaClosed returned %v while s-1 was open", err)
	case <-time.After(50 * time.Millisecond):
	}
	apply(ledger.Command{Kind: ledger.CmdSagaResolve, Saga: []ledger.SagaStep{{Transfer: ledger.Transfer{ID: "s-1"}, Outcome: ledger.OK}}})
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("WaitSagaClosed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitSagaClosed did not return once s-1 was resolved")
	}
	if got := openSagaIDs(t, f); fmt.Sprint(got) != "[s-0 s-2]" {
		t.Fatalf("after resolving s-1: open sagas %v, want [s-0 s-2]", got)
	}
	snap := snapshotOf(t, f)
	apply(ledger.Command{Kind: ledger.CmdSagaResolve, Saga: []ledger.SagaStep{{Transfer: ledger.Transfer{ID: "s-0"}, Outcome: ledger.InsufficientFunds}}})
	if got := openSagaIDs(t, f); fmt.Sprint(got) != "[s-2]" {
		t.Fatalf("after aborting s-0: open sagas %v, want [s-2]", got)
	}
	f.Close()
	f = open2(t, dir)
	if got := openSagaIDs(t, f); fmt.Sprint(got) != "[s-2]" {
		t.Fatalf("after reopening: open sagas %v, want [s-2]", got)
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if got := openSagaIDs(t, f); fmt.Sprint(got) != "[s-0 s-2]" {
		t.Fatalf("after restoring the earlier snapshot: open sagas %v, want [s-0 s-2]", got)
	}
}

func open2(t *testing.T, dir string) *FSM {
	t.Helper()
	f, err := Open(Options{Dir: dir, Shard: 0, Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
