package check

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"tally/test/jepsen/history"
)

// C10: the operator's operations under load. A backup is one consistent
// cut (docs/spec.md 8.1), and a cluster restored from it holds the
// source's events up to the cut, byte for byte; membership changes and
// rolling restarts lose no acknowledged write.

// NotRun is the verdict of a checker with nothing to judge in this run
// (C10 when no operations fault ran). It counts as valid in the overall
// verdict: a run that did not ask for the opt-in faults is not made
// unknown by them.
const NotRun Verdict = "not run"

// Operations is what the run's operations faults left for C10.
type Operations struct {
	// Windows are the membership, rolling-restart and backup windows, in
	// order.
	Windows []OpWindow `json:"windows"`
	// Restored is one entry per backup that was taken, what the cluster
	// restored from it served.
	Restored []Restored `json:"restored"`
}

// OpWindow is one operations fault window.
type OpWindow struct {
	N        int    `json:"n"`
	Class    string `json:"class"`
	Start    int64  `json:"start"` // nanoseconds since the run started, as in the history
	End      int64  `json:"end"`   // healed
	Verified bool   `json:"verified"`
	// Backup is what a backup window wrote; nil for the other classes
	// and when the command failed.
	Backup *Backup `json:"backup,omitempty"`
}

// Backup is a backup file and the cut its header gives.
type Backup struct {
	N        int        `json:"n"`
	File     string     `json:"file"`
	Cut      []CutPoint `json:"cut"`
	InFlight int        `json:"in_flight"`
}

// CutPoint is one shard's last seq in a backup and the head at it.
type CutPoint struct {
	Shard int    `json:"shard"`
	Seq   uint64 `json:"seq"`
	Head  string `json:"head"`
}

// Classes of the operations faults C10 judges.
const (
	ClassBackup     = "backup"
	ClassMembership = "membership"
	ClassRolling    = "rolling-restart"
)

// IsOperation reports whether a fault class is one C10 judges.
func IsOperation(class string) bool {
	return class == ClassBackup || class == ClassMembership || class == ClassRolling
}

// Operations is C10. For every backup: the cut matches the source's
// final log (each shard's head at the cut is the header's), keeps every
// saga whole or counts it in flight as the header says, and the cluster
// restored from the file served exactly the source's events 1..cut
// (same seq, hash and payload), the header's head at the cut, and a
// verify that passes; every acknowledged write inside the cut is there.
// For membership and rolling-restart windows: every transfer
// acknowledged while one was in force is in the final logs exactly once
// (C3's rule, applied to those writes; c3 is C3's result, referenced in
// the summary). Not run when no such window ran.
func OperationsCheck(a *Analysis, c3 *Result) Result {
	r := Result{Name: "C10", Title: "operations (backup, membership)", Verdict: Valid}
	if a.Operations == nil || len(a.Operations.Windows) == 0 {
		r.Verdict = NotRun
		r.Summary = "no backup, membership or rolling-restart window ran"
		return r
	}
	var parts []string
	if s, ok := checkBackups(a, &r); ok {
		parts = append(parts, s)
	}
	if s, ok := checkMembership(a, &r, c3); ok {
		parts = append(parts, s)
	}
	r.Summary = strings.Join(parts, "; ")
	return r
}

// checkBackups judges every backup window and its restore.
func checkBackups(a *Analysis, r *Result) (string, bool) {
	restored := map[int]*Restored{}
	for i := range a.Operations.Restored {
		restored[a.Operations.Restored[i].N] = &a.Operations.Restored[i]
	}
	windows, equal, acked, events := 0, 0, 0, uint64(0)
	inflight := 0
	for _, w := range a.Operations.Windows {
		if w.Class != ClassBackup {
			continue
		}
		windows++
		if w.Backup == nil {
			// The command failed or its file did not check out: the window
			// is not verified, which the run's gates report too.
			r.unknown("backup %d: no verified backup file (see the window's line)", w.N)
			continue
		}
		b := w.Backup
		if len(b.Cut) != a.Shards {
			r.fail("backup %d: the cut has %d points for %d shards", w.N, len(b.Cut), a.Shards)
			continue
		}
		if !checkCut(a, r, b) {
			continue
		}
		inflight += b.InFlight
		for _, p := range b.Cut {
			events += p.Seq
		}
		rs := restored[w.N]
		if rs == nil {
			r.unknown("backup %d: not restored", w.N)
			continue
		}
		n, ok := checkRestored(a, r, b, rs)
		if ok {
			equal++
			acked += n
		}
	}
	if windows == 0 {
		return "", false
	}
	return fmt.Sprintf("%d/%d backups restored equal to the source up to their cuts (%d events in the cuts, %d sagas in flight), %d acknowledged writes inside the cuts present",
		equal, windows, events, inflight, acked), true
}

// checkCut compares a backup's cut with the source's final logs: each
// shard's head at the cut seq is the header's, no saga is half inside
// but as in flight, and the header counts those in flight.
func checkCut(a *Analysis, r *Result, b *Backup) bool {
	for s, p := range b.Cut {
		if p.Shard != s {
			r.fail("backup %d: cut point %d names shard %d", b.N, s, p.Shard)
			return false
		}
		log := a.Logs[s]
		if p.Seq > uint64(len(log)) {
			if !a.Final.Quiesced {
				r.unknown("backup %d: shard %d's cut %d is beyond the final log (%d events), and the replicas did not converge", b.N, s, p.Seq, len(log))
			} else {
				r.fail("backup %d: shard %d's cut %d is beyond the source's final log head %d", b.N, s, p.Seq, len(log))
			}
			return false
		}
		if head := hashAt(log, p.Seq); head != p.Head {
			r.fail("backup %d: shard %d's head at the cut %d is %s in the header, %s in the source's final log", b.N, s, p.Seq, short(p.Head), short(head))
			return false
		}
	}
	inside := func(ref Ref) bool { return a.Logs[ref.Shard][ref.I].Seq <= b.Cut[ref.Shard].Seq }
	inFlight := 0
	ids := make([]string, 0, len(a.ByID))
	for id, o := range a.ByID {
		if o.Held > 0 {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	ok := true
	for _, id := range ids {
		var held, decided, ended []Ref
		for _, ref := range a.ByID[id].Refs {
			switch a.Event(ref).Type {
			case "SagaDebitHeld":
				held = append(held, ref)
			case "SagaCredited", "SagaCreditRejected":
				decided = append(decided, ref)
			case "SagaCompleted", "SagaAborted":
				ended = append(ended, ref)
			}
		}
		in := func(refs []Ref) bool { return len(refs) > 0 && inside(refs[0]) }
		switch {
		case in(decided) && !in(held):
			r.fail("backup %d: saga %s's credit decision (shard %d seq %d) is inside the cut, its hold is not", b.N, id,
				decided[0].Shard, a.Event(decided[0]).Seq)
			ok = false
		case in(ended) && !in(decided):
			r.fail("backup %d: saga %s's end (shard %d seq %d) is inside the cut, its credit decision is not", b.N, id,
				ended[0].Shard, a.Event(ended[0]).Seq)
			ok = false
		case in(held) && !in(ended):
			inFlight++
		}
	}
	if inFlight != b.InFlight {
		r.fail("backup %d: the header counts %d sagas in flight at the cut, the source's logs %d", b.N, b.InFlight, inFlight)
		ok = false
	}
	return ok
}

// checkRestored compares what the restored cluster served with the
// source's final logs up to the cut, and counts the acknowledged writes
// inside the cut that it holds.
func checkRestored(a *Analysis, r *Result, b *Backup, rs *Restored) (int, bool) {
	if !rs.Started {
		r.fail("backup %d: the cluster restored from %s did not come up: %s (see %s)", b.N, b.File, rs.Err, rs.Log)
		return 0, false
	}
	if rs.Err != "" {
		r.unknown("backup %d: reading the restored cluster: %s", b.N, rs.Err)
		return 0, false
	}
	for s, p := range b.Cut {
		got, want := rs.Events[s], a.Logs[s][:p.Seq]
		if d := restoredDifference(want, got); d != "" {
			r.fail("backup %d: shard %d: the restored log differs from the source's: %s", b.N, s, d)
			return 0, false
		}
		if rs.Hash[s] != p.Head {
			r.fail("backup %d: shard %d: the restored hash at the cut %d is %s, the header's head %s", b.N, s, p.Seq, short(rs.Hash[s]), short(p.Head))
			return 0, false
		}
		if v := rs.Verify[s]; !v.OK {
			r.fail("backup %d: shard %d: the restored replica's verify fails: %s", b.N, s, v.Error)
			return 0, false
		}
		if rs.Applied[s] < p.Seq {
			r.fail("backup %d: shard %d: the restored replica applied seq %d, below the cut %d", b.N, s, rs.Applied[s], p.Seq)
			return 0, false
		}
	}
	// Count the acknowledged writes whose events all lie inside the cut:
	// restoredDifference has shown the restored log equal to the source's
	// up to the cut, so each of them is in it.
	n := 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if !isOriginal(p.Invoke.F) || p.Type() != history.OK || p.Complete.Status != "posted" {
			continue
		}
		o := a.ByID[p.Invoke.Transfer.ID]
		if o == nil || o.None() {
			continue // C3's to report
		}
		all := true
		for _, ref := range o.Refs {
			all = all && a.Event(ref).Seq <= b.Cut[ref.Shard].Seq
		}
		if all {
			n++
		}
	}
	return n, true
}

// restoredDifference returns the first difference between the source's
// events 1..cut and what the restored cluster served, or "".
func restoredDifference(want, got []Event) string {
	for i := range want {
		if i >= len(got) {
			return fmt.Sprintf("it served %d events, the cut is %d", len(got), len(want))
		}
		w, g := &want[i], &got[i]
		switch {
		case g.Seq != w.Seq:
			return fmt.Sprintf("event %d has seq %d, the source's %d", i+1, g.Seq, w.Seq)
		case g.Hash != w.Hash || g.PrevHash != w.PrevHash:
			return fmt.Sprintf("seq %d: hash %s (prev %s), the source's %s (prev %s)", w.Seq, short(g.Hash), short(g.PrevHash), short(w.Hash), short(w.PrevHash))
		case !samePayload(w.Raw, g.Raw):
			return fmt.Sprintf("seq %d (%s): the payload differs from the source's", w.Seq, w.Type)
		}
	}
	if len(got) > len(want) {
		return fmt.Sprintf("it served %d events up to the cut %d", len(got), len(want))
	}
	return ""
}

// samePayload compares two events as JSON values (not as bytes: key order
// and spacing are the server's to choose). Events without raw bytes
// (synthetic ones) compare equal here; their hashes were compared.
func samePayload(x, y json.RawMessage) bool {
	if len(x) == 0 || len(y) == 0 {
		return len(x) == len(y)
	}
	if bytes.Equal(x, y) {
		return true
	}
	var a, b any
	if json.Unmarshal(x, &a) != nil || json.Unmarshal(y, &b) != nil {
		return false
	}
	ca, _ := json.Marshal(a)
	cb, _ := json.Marshal(b)
	return bytes.Equal(ca, cb)
}

// hashAt is the hash-chain value of log right after seq (zero at 0).
func hashAt(log []Event, seq uint64) string {
	if seq == 0 {
		return zeroHash
	}
	return log[seq-1].Hash
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	if h == "" {
		return "(none)"
	}
	return h
}

// checkMembership checks that every transfer acknowledged while a
// membership or rolling-restart window was in force is in the final logs
// exactly once, as asked.
func checkMembership(a *Analysis, r *Result, c3 *Result) (string, bool) {
	var ws []OpWindow
	for _, w := range a.Operations.Windows {
		if w.Class == ClassMembership || w.Class == ClassRolling {
			ws = append(ws, w)
		}
	}
	if len(ws) == 0 {
		return "", false
	}
	acked, lost := 0, 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if !isOriginal(p.Invoke.F) || p.Type() != history.OK || p.Complete.Status != "posted" {
			continue
		}
		var in *OpWindow
		for j := range ws {
			if p.Start() <= ws[j].End && p.End() >= ws[j].Start {
				in = &ws[j]
				break
			}
		}
		if in == nil {
			continue
		}
		acked++
		t := p.Invoke.Transfer
		o := a.ByID[t.ID]
		if o == nil {
			o = &Outcome{}
		}
		if p.Invoke.F == history.FCross {
			if o.Held != 1 || o.Credited != 1 || o.Completed != 1 || o.Aborted != 0 {
				lost++
				r.fail("op %d (%s), acknowledged during %s window %d: the final logs hold %d holds, %d credits, %d completions, %d aborts",
					p.Invoke.Index, t.ID, in.Class, in.N, o.Held, o.Credited, o.Completed, o.Aborted)
			}
		} else if o.Posted != 1 {
			lost++
			r.fail("op %d (%s), acknowledged during %s window %d: the final logs hold it %d times", p.Invoke.Index, t.ID, in.Class, in.N, o.Posted)
		}
	}
	c3v := "not run"
	if c3 != nil {
		c3v = string(c3.Verdict)
	}
	return fmt.Sprintf("%d membership/rolling-restart windows: %d transfers acknowledged during them, %d not in the final logs exactly once (C3 over the whole run: %s)",
		len(ws), acked, lost, c3v), true
}
