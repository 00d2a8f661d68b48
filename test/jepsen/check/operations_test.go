package check

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"tally/test/jepsen/history"
)

// C10 on synthetic runs: the baseline's logs as the source, backups cut
// from them, and restored clusters that serve them back, each with one
// planted difference.

// seqOf returns the seq of the first event of typ about id on shard.
func seqOf(t *testing.T, s *synth, shard int, typ, id string) uint64 {
	t.Helper()
	for _, e := range s.logs[shard] {
		if e.Type == typ && e.TransferID() == id {
			return e.Seq
		}
	}
	t.Fatalf("no %s of %s on shard %d", typ, id, shard)
	return 0
}

// backupAt is backup n of the baseline cut at the given seqs, with the
// heads the logs have there.
func backupAt(s *synth, n int, inFlight int, cut ...uint64) *Backup {
	b := &Backup{N: n, File: "backup.bak", InFlight: inFlight}
	for sh, seq := range cut {
		b.Cut = append(b.Cut, CutPoint{Shard: sh, Seq: seq, Head: hashAt(s.logs[sh], seq)})
	}
	return b
}

// heads is the cut at every shard's last event.
func heads(s *synth) []uint64 {
	var out []uint64
	for _, l := range s.logs {
		out = append(out, uint64(len(l)))
	}
	return out
}

// restoredFrom is what a correct restore of b serves: copies of the
// source's events up to the cut.
func restoredFrom(s *synth, b *Backup) Restored {
	rs := Restored{N: b.N, File: b.File, Started: true}
	for sh, p := range b.Cut {
		var evs []Event
		for _, e := range s.logs[sh][:p.Seq] {
			e.Raw = append([]byte(nil), e.Raw...)
			evs = append(evs, e)
		}
		rs.Events = append(rs.Events, evs)
		rs.Hash = append(rs.Hash, p.Head)
		rs.Verify = append(rs.Verify, VerifyView{OK: true, AppliedSeq: p.Seq, HeadHash: p.Head})
		rs.Applied = append(rs.Applied, p.Seq)
	}
	return rs
}

// c10 runs C10 (after C3, which it references) on s with ops.
func c10(t *testing.T, s *synth, ops *Operations) Result {
	t.Helper()
	a, err := Analyze(s.ops, s.final())
	if err != nil {
		t.Fatal(err)
	}
	a.Operations = ops
	c3 := ExactlyOnce(a)
	r := OperationsCheck(a, &c3)
	t.Logf("C10 %s: %s %v", r.Verdict, r.Summary, r.Problems)
	return r
}

// oneBackup is a run with one backup window and its restore.
func oneBackup(s *synth, b *Backup, rs Restored) *Operations {
	return &Operations{Windows: []OpWindow{{N: b.N, Class: ClassBackup, Start: 0, End: s.clock, Verified: true, Backup: b}},
		Restored: []Restored{rs}}
}

func expectC10(t *testing.T, r Result, v Verdict, problem string) {
	t.Helper()
	if r.Verdict != v {
		t.Fatalf("C10 %s, want %s: %s %v", r.Verdict, v, r.Summary, r.Problems)
	}
	if problem != "" && (len(r.Problems) == 0 || !strings.Contains(r.Problems[0], problem)) {
		t.Fatalf("C10's first problem %v, want one saying %q", r.Problems, problem)
	}
}

func TestOperationsNotRun(t *testing.T) {
	s := baseline(t)
	for _, ops := range []*Operations{nil, {}} {
		r := c10(t, s, ops)
		expectC10(t, r, NotRun, "")
		if Overall([]Result{{Verdict: Valid}, r}) != Valid {
			t.Fatal("a checker that did not run changed the overall verdict")
		}
	}
	if Overall([]Result{{Verdict: NotRun}, {Verdict: Unknown}}) != Unknown || Overall([]Result{{Verdict: NotRun}, {Verdict: Invalid}}) != Invalid {
		t.Fatal("not run hides a worse verdict")
	}
}

func TestBackupRestoredEqual(t *testing.T) {
	s := baseline(t)
	b := backupAt(s, 1, 0, heads(s)...)
	r := c10(t, s, oneBackup(s, b, restoredFrom(s, b)))
	expectC10(t, r, Valid, "")
	if !strings.Contains(r.Summary, "1/1 backups restored equal") || strings.Contains(r.Summary, " 0 acknowledged writes") {
		t.Fatalf("summary %q", r.Summary)
	}
}

// A cut with a saga held inside and not yet decided: in flight, as the
// header must count it.
func TestBackupWithASagaInFlight(t *testing.T) {
	s := baseline(t)
	cut := []uint64{seqOf(t, s, 0, "SagaDebitHeld", "x1"), seqOf(t, s, 1, "SagaCredited", "x1") - 1}
	b := backupAt(s, 1, 1, cut...)
	expectC10(t, c10(t, s, oneBackup(s, b, restoredFrom(s, b))), Valid, "")
	b = backupAt(s, 1, 0, cut...)
	expectC10(t, c10(t, s, oneBackup(s, b, restoredFrom(s, b))), Invalid, "sagas in flight")
}

// A cut that holds a saga's credit but not its hold is not consistent.
func TestBackupCutTearsASaga(t *testing.T) {
	s := baseline(t)
	b := backupAt(s, 1, 0, seqOf(t, s, 0, "SagaDebitHeld", "x1")-1, seqOf(t, s, 1, "SagaCredited", "x1"))
	expectC10(t, c10(t, s, oneBackup(s, b, restoredFrom(s, b))), Invalid, "its hold is not")
}

func TestBackupHeadDiffersFromTheSource(t *testing.T) {
	s := baseline(t)
	b := backupAt(s, 1, 0, heads(s)...)
	b.Cut[1].Head = strings.Repeat("ab", 32)
	expectC10(t, c10(t, s, oneBackup(s, b, restoredFrom(s, b))), Invalid, "head at the cut")
}

// The planted differences in what the restored cluster served.
func TestRestoredClusterDiffers(t *testing.T) {
	s := baseline(t)
	b := backupAt(s, 1, 0, heads(s)...)
	t1 := seqOf(t, s, 0, "TransferPosted", "t1")
	for _, c := range []struct {
		name, want string
		plant      func(rs *Restored)
	}{
		{"payload", "payload differs", func(rs *Restored) {
			// Same seq and hashes, another amount.
			e := &rs.Events[0][t1-1]
			e.Raw = bytes.Replace(e.Raw, []byte(`"amount":60`), []byte(`"amount":61`), 1)
		}},
		{"hash", "hash", func(rs *Restored) { rs.Events[1][2].Hash = strings.Repeat("cd", 32) }},
		{"missing tail", "served", func(rs *Restored) { rs.Events[0] = rs.Events[0][:len(rs.Events[0])-1] }},
		{"hash at the cut", "restored hash at the cut", func(rs *Restored) { rs.Hash[0] = strings.Repeat("0f", 32) }},
		{"verify", "verify fails", func(rs *Restored) { rs.Verify[1] = VerifyView{Error: "state hash differs"} }},
		{"behind", "below the cut", func(rs *Restored) { rs.Applied[0]-- }},
		{"did not start", "did not come up", func(rs *Restored) { *rs = Restored{N: 1, Err: "r1 exited (exit status 1)"} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			rs := restoredFrom(s, b)
			c.plant(&rs)
			expectC10(t, c10(t, s, oneBackup(s, b, rs)), Invalid, c.want)
		})
	}
	// A read that failed is not a verdict on the product.
	rs := restoredFrom(s, b)
	rs.Err = "shard 1: connection reset"
	expectC10(t, c10(t, s, oneBackup(s, b, rs)), Unknown, "reading the restored cluster")
}

func TestBackupWindowWithoutFile(t *testing.T) {
	s := baseline(t)
	ops := &Operations{Windows: []OpWindow{{N: 3, Class: ClassBackup, End: s.clock}}}
	expectC10(t, c10(t, s, ops), Unknown, "no verified backup file")
}

// A transfer acknowledged during a membership window that the final logs
// do not hold.
func TestAckLostAcrossMembership(t *testing.T) {
	s := baseline(t)
	ops := func() *Operations {
		return &Operations{Windows: []OpWindow{{N: 1, Class: ClassMembership, Start: 0, End: s.clock + 100, Verified: true},
			{N: 2, Class: ClassRolling, Start: s.clock + 200, End: s.clock + 300, Verified: true}}}
	}
	r := c10(t, s, ops())
	expectC10(t, r, Valid, "")
	if !strings.Contains(r.Summary, "2 membership/rolling-restart windows") || !strings.Contains(r.Summary, "C3 over the whole run: valid") {
		t.Fatalf("summary %q", r.Summary)
	}
	tr := history.Transfer{ID: "lost", Debit: "a0{s0}", Credit: "a1{s0}", Amount: 1}
	s.op(1, history.Op{F: history.FTransfer, Transfer: &tr, Shard: 0}, func(c *history.Op) {
		c.Type, c.Result, c.Status, c.Seq = history.OK, "ok", "posted", 99
	})
	expectC10(t, c10(t, s, ops()), Invalid, "acknowledged during membership window 1")
}

// The record round-trips through operations.json without the events.
func TestOperationsRecord(t *testing.T) {
	s := baseline(t)
	b := backupAt(s, 1, 0, heads(s)...)
	ops := oneBackup(s, b, restoredFrom(s, b))
	raw, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	var back Operations
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.Windows[0].Backup.Cut[1] != b.Cut[1] || back.Restored[0].Events != nil || bytes.Contains(raw, []byte(`TransferPosted`)) {
		t.Fatalf("record %s", raw)
	}
}
