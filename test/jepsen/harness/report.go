package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"tally/test/jepsen/check"
	"tally/test/jepsen/history"
)

func writeJSON(path string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err == nil {
		_ = os.WriteFile(path, b, 0o644)
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Coverage gates (docs/testing.md "Verdicts"): a run that did not exercise
// what it claims is unknown, and unknown fails.
const (
	minWarmupRate = 5.0 // ok operations per second before the first fault
	minOK         = 20  // ok results per operation kind
	minOKRare     = 5   // for the rarer kinds
)

func gates(rep *Report, cfg Config, a *check.Analysis, st check.Stats, ws []*Window, warm, faults, start time.Time, classes []string) {
	add := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }
	// Throughput before the first fault.
	okWarm := 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		t := start.Add(time.Duration(p.End()))
		if p.Type() == history.OK && !t.Before(warm) && t.Before(faults) {
			okWarm++
		}
	}
	if d := faults.Sub(warm).Seconds(); d > 0 && float64(okWarm)/d < minWarmupRate {
		add("only %.1f ok operations/s before the first fault", float64(okWarm)/d)
	}
	kinds := []struct {
		f    string
		min  int
		what string
	}{
		{history.FTransfer, minOK, "posted transfers"},
		{history.FRead, minOK, "reads through the proxy"},
		{history.FNodeRead, minOKRare, "reads from nodes"},
		{history.FShardRead, minOKRare, "shard reads"},
		{history.FReplay, minOKRare, "replays answered exists"},
	}
	for _, k := range kinds {
		if n := st.ByKind[k.f][history.OK]; n < k.min {
			add("%d %s (want %d)", n, k.what, k.min)
		}
	}
	if n := countResult(a, history.FReplayChanged, "exists_with_different_fields"); n < minOKRare {
		add("%d changed replays answered exists_with_different_fields (want %d)", n, minOKRare)
	}
	if n := countResult(a, history.FTransfer, "insufficient_funds"); n < minOKRare {
		add("%d transfers rejected for insufficient funds (want %d): the amounts do not overdraw", n, minOKRare)
	}
	cross := st.ByKind[history.FCross]
	if cfg.Sagas {
		if cross[history.OK] < minOKRare {
			add("%d cross-shard transfers completed (want %d)", cross[history.OK], minOKRare)
		}
	} else if cross[history.OK]+cross[history.Fail] < minOKRare {
		add("%d cross-shard transfers answered (want %d)", cross[history.OK]+cross[history.Fail], minOKRare)
	}
	// Faults.
	for _, w := range ws {
		switch {
		case w.Err != "":
			add("fault %d (%s) failed: %s", w.N, w.Fault.Class, w.Err)
		case !w.Verified:
			add("fault %d (%s) could not be verified: %s", w.N, w.Fault.Class, w.Verify)
		case !w.HealVerified:
			add("fault %d (%s) could not be verified healed: %s", w.N, w.Fault.Class, w.HealMsg)
		}
		if w.LeaderChanged != nil && !*w.LeaderChanged {
			add("fault %d (%s) aimed at shard %d's leader %s changed no leader", w.N, w.Fault.Class, w.Fault.Shard, orNone(w.LeaderBefore))
		}
	}
	if cfg.Profile == "ci" {
		ran := map[string]bool{}
		for _, w := range ws {
			ran[w.Fault.Class] = true
		}
		for _, c := range classes {
			if !ran[c] {
				add("fault class %s did not run", c)
			}
		}
	}
	if st.InfoResolved == 0 {
		add("no info operation was resolved (%d info writes)", st.InfoWrites)
	}
	if len(rep.Problems) > 0 && rep.Verdict == check.Valid {
		rep.Verdict = check.Unknown
	}
	if len(cfg.Expect) > 0 {
		// A selftest run: the planted bug must be caught by its checker.
		caught := false
		for _, r := range rep.Results {
			if r.Verdict == check.Invalid && slices.Contains(cfg.Expect, r.Name) {
				caught = true
			}
		}
		if !caught {
			add("the planted bug was not caught by %s", strings.Join(cfg.Expect, " or "))
		}
	}
}

func countResult(a *check.Analysis, f, result string) int {
	n := 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if p.Invoke.F == f && p.Complete.Result == result {
			n++
		}
	}
	return n
}

// Liveness thresholds: beyond them a line says SLOW. They never change
// the verdict.
const (
	slowRecovery    = 10 * time.Second
	slowUnavailable = 20 * time.Second
)

// live is the liveness report: thresholds only, never part of the
// verdict.
type live struct {
	afterHeal []string
	longest   map[int]time.Duration
	longestAt map[int]time.Duration
}

// liveness measures, after each heal, the time to the first ok write and,
// per shard, the longest time without a definite write answer.
func liveness(a *check.Analysis, ws []*Window, start time.Time, shards int) live {
	l := live{longest: map[int]time.Duration{}, longestAt: map[int]time.Duration{}}
	type wr struct {
		invoke, end int64
		shard       int
	}
	var writes []wr
	firstWorker := int64(-1)
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if p.Invoke.F != history.FTransfer || p.Type() == history.Info || (p.Type() == history.Fail && p.Complete.Result == "") {
			continue
		}
		writes = append(writes, wr{p.Start(), p.End(), p.Invoke.Shard})
		if firstWorker < 0 || p.Start() < firstWorker {
			firstWorker = p.Start()
		}
	}
	sort.Slice(writes, func(i, j int) bool { return writes[i].end < writes[j].end })
	for _, w := range ws {
		healed := w.Healed.Sub(start).Nanoseconds()
		first := int64(-1)
		for _, x := range writes {
			if x.invoke >= healed {
				first = x.end - healed
				break
			}
		}
		msg := "none"
		if first >= 0 {
			msg = secs(time.Duration(first))
			if time.Duration(first) > slowRecovery {
				msg += " (SLOW)"
			}
		}
		l.afterHeal = append(l.afterHeal, fmt.Sprintf("fault %d %s: first ok write %s after the heal", w.N, w.Fault.Class, msg))
	}
	for s := 0; s < shards; s++ {
		last := firstWorker
		var end int64
		for _, x := range writes {
			end = max(end, x.end)
			if x.shard != s {
				continue
			}
			if gap := time.Duration(x.end - last); last >= 0 && gap > l.longest[s] {
				l.longest[s], l.longestAt[s] = gap, time.Duration(last)
			}
			last = x.end
		}
	}
	return l
}

func (l live) maxUnavailable() string {
	var best time.Duration
	shard := -1
	for s, d := range l.longest {
		if d > best {
			best, shard = d, s
		}
	}
	if shard < 0 {
		return "0s"
	}
	return fmt.Sprintf("%s (shard %d at %s)", secs(best), shard, secs(l.longestAt[shard]))
}

func (l live) lines() []string {
	out := []string{"liveness: " + strings.Join(l.afterHeal, ", ")}
	var per []string
	for s := 0; s < len(l.longest); s++ {
		p := fmt.Sprintf("shard %d %s", s, secs(l.longest[s]))
		if l.longest[s] > slowUnavailable {
			p += " (SLOW)"
		}
		per = append(per, p)
	}
	out = append(out, "liveness: longest time without a definite write answer: "+strings.Join(per, ", "))
	return out
}
