package fsm

import (
	"bytes"
	"errors"
	"io"
	"math/bits"
	"testing"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

// timeFixture applies entries whose stamped times repeat and, once, go
// back (a new leader whose clock is behind): seq 1-2 open a and b at
// t0+10, seq 3 and 4 deposit into a at t0+20 in two entries, seq 5 moves
// 30 from a to b in an entry stamped t0+15, seq 6-7 open c and move 10
// from a to b at t0+30.
func timeFixture(t *testing.T, dir string) *FSM {
	t.Helper()
	f := open(t, dir)
	es := []ledger.Entry{
		{Time: t0 + 10, Commands: []ledger.Command{{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{
			{ID: "a", Currency: "USD"}, {ID: "b", Currency: "USD"}}}}},
		{Time: t0 + 20, Commands: []ledger.Command{transfers(xfer("d1", ledger.World, "a", 100))}},
		{Time: t0 + 20, Commands: []ledger.Command{transfers(xfer("d2", ledger.World, "a", 50))}},
		{Time: t0 + 15, Commands: []ledger.Command{transfers(xfer("x1", "a", "b", 30))}},
		{Time: t0 + 30, Commands: []ledger.Command{
			{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{{ID: "c", Currency: "USD"}}},
			transfers(xfer("x2", "a", "b", 10))}},
	}
	var logs []*raft.Log
	for i, e := range es {
		logs = append(logs, entryLog(uint64(i+1), e))
	}
	applyIn(f, logs, 2)
	return f
}

// An entry stamped earlier than the one before it (a new leader whose
// clock is behind) gets the earlier entry's time in its events, on every
// replica: one that applied the log throughout, one that restarted, and
// one that restored a snapshot. So a log's times never decrease, and
// verify accepts them.
func TestLogTimeNeverDecreases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state func(t *testing.T) *FSM // the fixture's state, reached in its own way
	}{
		{"applied", func(t *testing.T) *FSM { return timeFixture(t, t.TempDir()) }},
		{"reopened", func(t *testing.T) *FSM {
			dir := t.TempDir()
			if err := timeFixture(t, dir).Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, dir)
		}},
		{"restored", func(t *testing.T) *FSM {
			snap := snapshotOf(t, timeFixture(t, t.TempDir()))
			f := open(t, t.TempDir())
			if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
				t.Fatal(err)
			}
			return f
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.state(t)
			f.ApplyBatch([]*raft.Log{entryLog(6, ledger.Entry{Time: t0 + 25, Commands: []ledger.Command{
				transfers(xfer("x3", "b", "a", 1))}})})
			evs := allEvents(t, f)
			want := []ledger.Time{t0 + 10, t0 + 10, t0 + 20, t0 + 20, t0 + 20, t0 + 30, t0 + 30, t0 + 30}
			if len(evs) != len(want) {
				t.Fatalf("%d events, want %d", len(evs), len(want))
			}
			for i, e := range evs {
				if e.Time != want[i] {
					t.Fatalf("event %d at t0+%d, want t0+%d", e.Seq, e.Time-t0, want[i]-t0)
				}
			}
			verify(t, f)
		})
	}
}

func TestAccountAtTime(t *testing.T) {
	f := timeFixture(t, t.TempDir())
	for _, tc := range []struct {
		name    string
		at      ledger.Time
		account string
		seq     uint64 // 0: the account did not exist yet
		balance int64
	}{
		{"before the first event", t0, "a", 0, 0},
		{"just before the first event", t0 + 9, "a", 0, 0},
		{"at the first event's time: the last event of that time", t0 + 10, "a", 2, 0},
		{"between events", t0 + 19, "a", 2, 0},
		{"equal times across entries, one stamped earlier", t0 + 20, "a", 5, 120},
		{"equal times, the credited side", t0 + 20, "b", 5, 30},
		{"before the account was opened", t0 + 29, "c", 0, 0},
		{"at the last event", t0 + 30, "a", 7, 110},
		{"opened at the last event", t0 + 30, "c", 7, 0},
		{"after the last event: the latest", t0 + 1_000_000, "b", 7, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, seq, err := f.AccountAtTime(tc.account, tc.at)
			if tc.seq == 0 {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("%+v at seq %d, %v; want ErrNotFound", a, seq, err)
				}
				return
			}
			if err != nil || seq != tc.seq || a.ID != tc.account || a.Balance() != tc.balance {
				t.Fatalf("%s at seq %d balance %d, %v; want seq %d balance %d", a.ID, seq, a.Balance(), err, tc.seq, tc.balance)
			}
		})
	}
	if _, _, err := open(t, t.TempDir()).AccountAtTime("a", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty log: %v, want ErrNotFound", err)
	}
}

// The search answers what a scan of the whole log would, in at most
// log2(n)+1 reads of an event.
func TestSearchTime(t *testing.T) {
	for _, tc := range []struct {
		name  string
		times []ledger.Time // times[i] is seq i+1's
	}{
		{"empty", nil},
		{"one", []ledger.Time{5}},
		{"all equal", []ledger.Time{5, 5, 5, 5, 5, 5, 5}},
		{"distinct", []ledger.Time{1, 2, 3, 4, 5, 6, 7, 8}},
		{"runs of equal times", []ledger.Time{1, 1, 3, 3, 3, 4, 9, 9, 9, 9, 12}},
		{"long", longTimes(1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := uint64(len(tc.times))
			probes := []ledger.Time{0, 1 << 40}
			for _, at := range tc.times {
				probes = append(probes, at-1, at, at+1)
			}
			for _, at := range probes {
				var want uint64
				for i, x := range tc.times {
					if x <= at {
						want = uint64(i + 1)
					}
				}
				reads := 0
				got, err := searchTime(n, at, func(seq uint64) (ledger.Time, error) {
					reads++
					if seq < 1 || seq > n {
						t.Fatalf("read seq %d outside [1, %d]", seq, n)
					}
					return tc.times[seq-1], nil
				})
				if err != nil || got != want {
					t.Fatalf("time %d: seq %d, %v; want %d", at, got, err, want)
				}
				if limit := bits.Len64(n) + 1; reads > limit {
					t.Fatalf("time %d: %d reads of %d events, want at most %d", at, reads, n, limit)
				}
			}
		})
	}
}

// longTimes is n times that grow by 0, 1 or 2 in turn.
func longTimes(n int) []ledger.Time {
	out := make([]ledger.Time, n)
	for i := 1; i < n; i++ {
		out[i] = out[i-1] + ledger.Time(i%3)
	}
	return out
}
