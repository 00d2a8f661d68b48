package fsm

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"testing"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

// offsetLog is one Raft command entry carrying an offset change.
func offsetLog(index uint64, op OffsetOp, name string, seq uint64) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand,
		Data: EncodeOffset(OffsetChange{Op: op, Name: name, Seq: seq})}
}

// withEvents applies a ledger entry that leaves n events (n accounts
// opened) at index 1 and returns the next index.
func withEvents(t *testing.T, f *FSM, n int) uint64 {
	t.Helper()
	cmd := ledger.Command{Kind: ledger.CmdOpenAccounts}
	for i := range n {
		cmd.Accounts = append(cmd.Accounts, ledger.Account{ID: fmt.Sprintf("acct-%d", i), Currency: "USD"})
	}
	f.Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: enveloped(&ledger.Entry{Time: t0, Commands: []ledger.Command{cmd}})})
	if _, seq := f.Applied(); seq != uint64(n) {
		t.Fatalf("applied seq %d, want %d", seq, n)
	}
	return 2
}

// TestOffsetApply runs offset changes in order against a shard whose
// applied seq is 5, each with the response it must give and the offsets
// it must leave.
func TestOffsetApply(t *testing.T) {
	f := open(t, t.TempDir())
	idx := withEvents(t, f, 5)
	for _, tc := range []struct {
		name string
		op   OffsetOp
		who  string
		seq  uint64
		want OffsetResponse
		offs map[string]uint64
	}{
		{"set creates", OffsetSet, "sink", 2, OffsetResponse{OffsetOK, 2, 5}, map[string]uint64{"sink": 2}},
		{"set the same seq again", OffsetSet, "sink", 2, OffsetResponse{OffsetOK, 2, 5}, map[string]uint64{"sink": 2}},
		{"set forwards", OffsetSet, "sink", 4, OffsetResponse{OffsetOK, 4, 5}, map[string]uint64{"sink": 4}},
		{"set backwards", OffsetSet, "sink", 3, OffsetResponse{OffsetBackwards, 4, 5}, map[string]uint64{"sink": 4}},
		{"set beyond the applied seq", OffsetSet, "sink", 6, OffsetResponse{OffsetBeyond, 4, 5}, map[string]uint64{"sink": 4}},
		{"set to the applied seq", OffsetSet, "sink", 5, OffsetResponse{OffsetOK, 5, 5}, map[string]uint64{"sink": 5}},
		{"reset backwards", OffsetReset, "sink", 1, OffsetResponse{OffsetOK, 1, 5}, map[string]uint64{"sink": 1}},
		{"reset beyond", OffsetReset, "sink", 9, OffsetResponse{OffsetBeyond, 1, 5}, map[string]uint64{"sink": 1}},
		{"reset to the start creates", OffsetReset, "audit", 0, OffsetResponse{OffsetOK, 0, 5}, map[string]uint64{"sink": 1, "audit": 0}},
		{"reset to the end", OffsetResetEnd, "sink", 0, OffsetResponse{OffsetOK, 5, 5}, map[string]uint64{"sink": 5, "audit": 0}},
		{"delete", OffsetDelete, "audit", 0, OffsetResponse{OffsetOK, 0, 5}, map[string]uint64{"sink": 5}},
		{"delete an unknown consumer", OffsetDelete, "audit", 0, OffsetResponse{OffsetUnknown, 0, 5}, map[string]uint64{"sink": 5}},
		{"set beyond, new consumer", OffsetSet, "new", 6, OffsetResponse{OffsetBeyond, 0, 5}, map[string]uint64{"sink": 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := status(t, f)
			resp := f.Apply(offsetLog(idx, tc.op, tc.who, tc.seq))
			idx++
			r, ok := resp.(*OffsetResponse)
			if !ok || *r != tc.want {
				t.Fatalf("response %s, want %+v", show(resp), tc.want)
			}
			if got := f.Offsets(); !maps.Equal(got, tc.offs) {
				t.Fatalf("offsets %v, want %v", got, tc.offs)
			}
			after := status(t, f)
			if after.AppliedSeq != before.AppliedSeq || after.Head != before.Head || after.StateHash != before.StateHash {
				t.Fatalf("an offset entry moved the log: %+v -> %+v", before, after)
			}
			if i, _ := f.Applied(); i != idx-1 {
				t.Fatalf("applied index %d, want %d", i, idx-1)
			}
		})
	}
	verify(t, f)
}

// TestOffsetLimit: a shard keeps at most MaxConsumers offsets; the
// consumers it has still move.
func TestOffsetLimit(t *testing.T) {
	f := open(t, t.TempDir())
	idx := withEvents(t, f, 1)
	logs := make([]*raft.Log, MaxConsumers)
	for i := range logs {
		logs[i] = offsetLog(idx, OffsetSet, fmt.Sprintf("c-%d", i), 0)
		idx++
	}
	applyIn(f, logs, 100)
	if n := len(f.Offsets()); n != MaxConsumers {
		t.Fatalf("%d offsets, want %d", n, MaxConsumers)
	}
	if r := f.Apply(offsetLog(idx, OffsetReset, "one-more", 0)).(*OffsetResponse); r.Result != OffsetTooMany {
		t.Fatalf("one consumer too many: %+v", r)
	}
	if r := f.Apply(offsetLog(idx+1, OffsetSet, "c-7", 1)).(*OffsetResponse); r.Result != OffsetOK || r.Seq != 1 {
		t.Fatalf("a known consumer at the limit: %+v", r)
	}
}

// TestOffsetsSurviveReopenAndRestore: offsets are read back at Open, and
// a snapshot carries them (in its own part) to a replica that restores
// it, replacing whatever offsets that replica had.
func TestOffsetsSurviveReopenAndRestore(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	idx := withEvents(t, f, 3)
	applyIn(f, []*raft.Log{
		offsetLog(idx, OffsetSet, "sink", 3),
		offsetLog(idx+1, OffsetSet, "audit", 1),
		offsetLog(idx+2, OffsetSet, "gone", 2),
		offsetLog(idx+3, OffsetDelete, "gone", 0),
	}, 2)
	want := map[string]uint64{"sink": 3, "audit": 1}
	st := status(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = open(t, dir)
	if got := f.Offsets(); !maps.Equal(got, want) {
		t.Fatalf("after reopen: offsets %v, want %v", got, want)
	}
	if s := status(t, f); s != st {
		t.Fatalf("after reopen: %+v, want %+v", s, st)
	}
	// A replay of entries at or below the applied index changes nothing.
	f.Apply(offsetLog(idx, OffsetReset, "sink", 0))
	if got := f.Offsets(); !maps.Equal(got, want) {
		t.Fatalf("a replayed entry changed the offsets: %v", got)
	}

	stream := snapshotOf(t, f)
	if keys := snapParts(t, stream)[KindConsumers]; len(keys) != 2 {
		t.Fatalf("consumers part %q, want the 2 offsets", keys)
	}
	gdir := t.TempDir()
	g := open(t, gdir)
	withEvents(t, g, 1)
	g.Apply(offsetLog(2, OffsetSet, "other", 1))
	if err := g.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if got := g.Offsets(); !maps.Equal(got, want) {
		t.Fatalf("after restore: offsets %v, want %v", got, want)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	g = open(t, gdir)
	if got := g.Offsets(); !maps.Equal(got, want) {
		t.Fatalf("after restore and reopen: offsets %v, want %v", got, want)
	}
	if r := g.Apply(offsetLog(idx+4, OffsetSet, "sink", 2)).(*OffsetResponse); r.Result != OffsetBackwards {
		t.Fatalf("set backwards after restore: %+v", r)
	}
}

// TestOffsetEncoding pins the payload: op, name, seq; and that every
// change EncodeOffset writes decodes to itself.
func TestOffsetEncoding(t *testing.T) {
	got := EncodeOffset(OffsetChange{Op: OffsetSet, Name: "sink", Seq: 300})
	want := mustHex(t, "e1 03 01 04 73696e6b ac02")
	if !bytes.Equal(got, want) {
		t.Fatalf("EncodeOffset = %x, want %x", got, want)
	}
	for _, c := range []OffsetChange{
		{Op: OffsetSet, Name: "a", Seq: 0},
		{Op: OffsetReset, Name: "x.y_z-1", Seq: 1<<64 - 1},
		{Op: OffsetResetEnd, Name: string(bytes.Repeat([]byte("n"), MaxConsumerName))},
		{Op: OffsetDelete, Name: "Sink"},
	} {
		k, p, err := decodeEnvelope(EncodeOffset(c))
		if err != nil || k.code != KindConsumers {
			t.Fatalf("%+v: kind %v, %v", c, k, err)
		}
		if d, err := decodeOffset(p); err != nil || d != c {
			t.Fatalf("%+v decodes to %+v, %v", c, d, err)
		}
	}
	for _, name := range []string{"", "a b", "a/b", "é", string(bytes.Repeat([]byte("n"), MaxConsumerName+1))} {
		if ValidConsumerName(name) {
			t.Errorf("ValidConsumerName(%q) = true", name)
		}
	}
}
