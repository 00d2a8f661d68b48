package check

import (
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"tally/test/jepsen/history"
)

// Options tune the checkers.
type Options struct {
	// PorcupineTimeout bounds C6 as a whole; when it passes the verdict is
	// unknown.
	PorcupineTimeout time.Duration
	// HTMLDir receives a porcupine visualization for each account whose
	// history is not linearizable; none is written when empty.
	HTMLDir string
}

// All runs C1-C10 in order.
func All(a *Analysis, o Options) []Result {
	c3 := ExactlyOnce(a)
	return []Result{
		Conservation(a), Overdraft(a), c3, NothingTwice(a),
		Convergence(a), Linearizable(a, o), SagaAtomicity(a), MonotonicReads(a),
		StreamCompleteness(a), OperationsCheck(a, &c3),
	}
}

// Overall folds the checkers' verdicts.
func Overall(rs []Result) Verdict {
	v := Valid
	for _, r := range rs {
		v = worse(v, r.Verdict)
	}
	return v
}

// modelProblems adds the problems the replica folds attributed to
// checker name.
func modelProblems(a *Analysis, r *Result, name string) int {
	n := 0
	keys := make([]string, 0, len(a.Models))
	for k := range a.Models {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, p := range a.Models[k].Problems() {
			if p.Checker == name {
				n++
				r.fail("replica %s: %s", k, p.Msg)
			}
		}
	}
	return n
}

// Conservation is C1: per currency, balances sum to 0 after every event of
// every replica's log, in every consistent read of a shard (the event
// pages the shard readers were served, folded in order), and across
// shards once no saga is in flight; the client accounts together hold
// exactly what was deposited.
func Conservation(a *Analysis) Result {
	r := Result{Name: "C1", Title: "conservation", Verdict: Valid}
	modelProblems(a, &r, "C1")
	reads := conservedReads(a, &r)
	// Across shards, from the canonical logs.
	total := map[string]*big.Int{}
	clearing := map[string]*big.Int{}
	client := new(big.Int)
	inFlight := 0
	for s, log := range a.Logs {
		m := NewModel(s)
		m.VerifyHashes = false
		for i := range log {
			m.Apply(&log[i])
		}
		for _, h := range m.Open {
			if h.Saga {
				inFlight++
			}
		}
		for _, acc := range m.Accounts {
			bal := big.NewInt(acc.CP - acc.DP)
			addTo(total, acc.Currency, bal)
			if strings.HasPrefix(acc.ID, clearingPrefx) {
				addTo(clearing, acc.Currency, bal)
			}
			if !isSystem(acc.ID) {
				client.Add(client, bal)
			}
		}
	}
	for cur, s := range total {
		if s.Sign() != 0 {
			r.fail("%s sums to %s over all shards", cur, s)
		}
	}
	if inFlight == 0 {
		for cur, s := range clearing {
			if s.Sign() != 0 {
				r.fail("%s clearing accounts net to %s over all shards with no saga in flight", cur, s)
			}
		}
	} else {
		r.unknown("%d sagas still in flight at the end: clearing accounts not compared", inFlight)
	}
	deposited := depositedTotal(a)
	if client.Cmp(deposited) != 0 {
		r.fail("client accounts hold %s in the final logs, but %s was deposited", client, deposited)
	}
	finalReads := finalReadTotal(a)
	if finalReads != nil && finalReads.Cmp(deposited) != 0 {
		r.fail("the final reads of every client account sum to %s, but %s was deposited", finalReads, deposited)
	}
	r.Summary = fmt.Sprintf("%d events folded per replica, %d shard reads folded, deposited %s", len(flatten(a.Logs)), reads, deposited)
	return r
}

func addTo(m map[string]*big.Int, cur string, v *big.Int) {
	if m[cur] == nil {
		m[cur] = new(big.Int)
	}
	m[cur].Add(m[cur], v)
}

func flatten(logs [][]Event) []Event {
	var out []Event
	for _, l := range logs {
		out = append(out, l...)
	}
	return out
}

// depositedTotal is the money the history put into client accounts:
// every deposit that applied (ok, or info resolved as applied).
func depositedTotal(a *Analysis) *big.Int {
	sum := new(big.Int)
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if p.Invoke.F != history.FDeposit {
			continue
		}
		applied := p.Type() == history.OK && p.Complete.Status == "posted"
		if p.Type() == history.Info {
			applied = a.Resolved[p.Invoke.Index] == Applied
		}
		if applied {
			sum.Add(sum, big.NewInt(p.Invoke.Transfer.Amount))
		}
	}
	return sum
}

// finalReadTotal sums the final reads (process -1), or nil if there are
// none.
func finalReadTotal(a *Analysis) *big.Int {
	var sum *big.Int
	seen := map[string]bool{}
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if p.Invoke.Process != FinalProcess || p.Invoke.F != history.FRead || p.Type() != history.OK || p.Complete.Read == nil {
			continue
		}
		if seen[p.Invoke.Account] {
			continue
		}
		seen[p.Invoke.Account] = true
		if sum == nil {
			sum = new(big.Int)
		}
		sum.Add(sum, big.NewInt(p.Complete.Read.Balance))
	}
	return sum
}

// FinalProcess is the process number of the reads the harness makes after
// the run, once the cluster is quiet.
const FinalProcess = -1

// conservedReads folds, per process and shard, the event pages a shard
// reader was served (it pages from seq 1 on) and checks every currency
// sums to 0 after each event.
func conservedReads(a *Analysis, r *Result) int {
	type key struct{ proc, shard int }
	states := map[key]map[string]history.AccountBalance{}
	last := map[key]uint64{}
	n := 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if p.Invoke.F != history.FShardRead || p.Type() != history.OK {
			continue
		}
		n++
		k := key{p.Invoke.Process, p.Invoke.Shard}
		st := states[k]
		if st == nil {
			st = map[string]history.AccountBalance{}
			states[k] = st
		}
		for _, e := range p.Complete.Events {
			if e.Seq != last[k]+1 {
				// Pages are contiguous from seq 1; a gap is C5's to judge.
				break
			}
			last[k] = e.Seq
			for _, b := range e.Balances {
				st[accountKey(b.Account, b.Currency)] = b
			}
			sums := map[string]int64{}
			for _, b := range st {
				sums[b.Currency] += b.CreditsPosted - b.DebitsPosted
			}
			for cur, s := range sums {
				if s != 0 {
					r.fail("process %d read shard %d up to seq %d: %s sums to %d", k.proc, k.shard, e.Seq, cur, s)
				}
			}
		}
	}
	return n
}

// Overdraft is C2: no account without allow_negative ever shows
// debits_posted + debits_pending > credits_posted, in any read or any
// event of any replica's log; reads are internally consistent.
func Overdraft(a *Analysis) Result {
	r := Result{Name: "C2", Title: "no forbidden overdraft", Verdict: Valid}
	modelProblems(a, &r, "C2")
	reads := 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		b := p.Complete.Read
		if p.Type() != history.OK || b == nil {
			continue
		}
		reads++
		if !b.AllowNegative && b.DebitsPosted+b.DebitsPending > b.CreditsPosted {
			r.fail("op %d read %s overdrawn: debits %d + pending %d > credits %d (seq %d)", p.Invoke.Index,
				p.Invoke.Account, b.DebitsPosted, b.DebitsPending, b.CreditsPosted, p.Complete.Seq)
		}
		if b.Balance != b.CreditsPosted-b.DebitsPosted || b.Available != b.Balance-b.DebitsPending {
			r.fail("op %d read %s with balance %d and available %d that do not follow from its fields", p.Invoke.Index,
				p.Invoke.Account, b.Balance, b.Available)
		}
	}
	// The model judges every replica's log with the flags the log opened
	// accounts with; here the workload's own accounts (never
	// allow_negative) are judged by what the history asked.
	opened := map[string]bool{}
	for i := range a.Pairs {
		if p := &a.Pairs[i]; p.Invoke.F == history.FOpen {
			opened[p.Invoke.Account] = true
		}
	}
	for s := range a.Shards {
		for _, e := range a.Logs[s] {
			for _, b := range e.Balances {
				if opened[b.Account] && b.DebitsPosted+b.DebitsPending > b.CreditsPosted {
					r.fail("shard %d seq %d reports %s overdrawn", s, e.Seq, b.Account)
				}
			}
		}
	}
	r.Summary = fmt.Sprintf("%d reads and every replica's log checked", reads)
	return r
}

// Code returns the result code an answer stands for: the original code
// when a retry was answered exists.
func Code(c *history.Op) string {
	if c.Result == "exists" && c.Original != "" {
		return c.Original
	}
	return c.Result
}

// transferMatches reports whether an event's transfer is the one asked.
func transferMatches(e *Event, t *history.Transfer) bool {
	d := e.Data.Transfer
	return d != nil && d.Debit == t.Debit && d.Credit == t.Credit && d.Amount == t.Amount && d.Reference == t.Reference
}

// ExactlyOnce is C3: every ok transfer appears exactly once in the final
// logs as asked (a cross-shard one held, credited and completed, never
// aborted); no transfer that definitely failed moved money; no event
// exists that no client asked for, or before it was asked.
func ExactlyOnce(a *Analysis) Result {
	r := Result{Name: "C3", Title: "acknowledged exactly once", Verdict: Valid}
	acked, failed := 0, 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if !isOriginal(p.Invoke.F) {
			continue
		}
		t := p.Invoke.Transfer
		o := a.ByID[t.ID]
		if o == nil {
			o = &Outcome{}
		}
		c := &p.Complete
		switch {
		case c.Type == history.OK && c.Status == "posted":
			acked++
			checkPosted(a, &r, p, o)
		case c.Type == history.Fail && c.Result == "":
			failed++
			if !o.None() {
				r.fail("op %d (%s) definitely failed (%s) but the log has %d events for it", p.Invoke.Index, t.ID, c.Error, len(o.Refs))
			}
		case c.Type == history.Fail:
			failed++
			if o.Moved {
				r.fail("op %d (%s) was rejected %s but moved money", p.Invoke.Index, t.ID, c.Result)
			}
			if p.Invoke.F != history.FCross && o.Rejected == 1 && o.Code != Code(c) {
				r.fail("op %d (%s) was answered %s but the log rejected it with %s", p.Invoke.Index, t.ID, Code(c), o.Code)
			}
		}
		// Nothing may happen before it was asked.
		for _, ref := range o.Refs {
			e := a.Event(ref)
			if seen, ok := a.SeenBy(ref.Shard, e.Seq); ok && seen < p.Start() {
				r.fail("transfer %s: shard %d seq %d was applied before op %d invoked it", t.ID, ref.Shard, e.Seq, p.Invoke.Index)
			}
		}
	}
	// Every event names an id some client sent.
	asked := map[string]bool{}
	for i := range a.Pairs {
		if t := a.Pairs[i].Invoke.Transfer; t != nil {
			asked[t.ID] = true
		}
		if a.Pairs[i].Invoke.F == history.FOpen {
			asked["account:"+a.Pairs[i].Invoke.Account] = true
		}
	}
	for s := range a.Shards {
		for _, e := range a.Logs[s] {
			switch {
			case e.Type == "AccountOpened" && e.Data.Account != nil:
				if !asked["account:"+e.Data.Account.ID] {
					r.fail("shard %d seq %d opens %s, which no client asked for", s, e.Seq, e.Data.Account.ID)
				}
			case e.TransferID() != "":
				if !asked[e.TransferID()] {
					r.fail("shard %d seq %d (%s) is about %s, which no client sent", s, e.Seq, e.Type, e.TransferID())
				}
			}
		}
	}
	r.Summary = fmt.Sprintf("%d acknowledged transfers found once, %d definite failures absent", acked, failed)
	return r
}

func checkPosted(a *Analysis, r *Result, p *history.Pair, o *Outcome) {
	t := p.Invoke.Transfer
	if p.Invoke.F == history.FCross {
		if o.Held != 1 || o.Credited != 1 || o.Completed != 1 || o.Aborted != 0 {
			r.fail("op %d (%s) answered posted but the logs hold %d holds, %d credits, %d completions, %d aborts",
				p.Invoke.Index, t.ID, o.Held, o.Credited, o.Completed, o.Aborted)
		}
	} else if o.Posted != 1 {
		r.fail("op %d (%s) answered posted but the logs hold it %d times", p.Invoke.Index, t.ID, o.Posted)
	}
	for _, ref := range o.Refs {
		e := a.Event(ref)
		if e.Data.Transfer != nil && !transferMatches(e, t) {
			r.fail("op %d (%s): shard %d seq %d holds %s -> %s %d, the client asked %s -> %s %d", p.Invoke.Index, t.ID,
				ref.Shard, e.Seq, e.Data.Transfer.Debit, e.Data.Transfer.Credit, e.Data.Transfer.Amount, t.Debit, t.Credit, t.Amount)
		}
	}
}

// NothingTwice is C4: ids are unique in every replica's log; folding each
// log through the reference model gives the balances every event reports
// and the seq, head and state hash the replica reports; every definite
// answer for one id agrees.
func NothingTwice(a *Analysis) Result {
	r := Result{Name: "C4", Title: "nothing applied twice", Verdict: Valid}
	modelProblems(a, &r, "C4")
	for _, rep := range a.Final.Replicas {
		m := a.Models[fmt.Sprintf("%s/%d", rep.Node, rep.Shard)]
		if m == nil || rep.Err != "" {
			continue
		}
		for id, d := range m.Decided {
			dec := d["TransferPosted"] + d["TransferPending"] + d["TransferRejected"]
			if dec > 1 || d["SagaDebitHeld"] > 1 || d["SagaCredited"]+d["SagaCreditRejected"] > 1 ||
				d["SagaCompleted"]+d["SagaAborted"] > 1 || (dec > 0 && d["SagaDebitHeld"] > 0) {
				r.fail("replica %s/%d decides %s more than once: %v", rep.Node, rep.Shard, id, d)
			}
		}
		if st := rep.State; st != nil {
			if st.AppliedSeq != m.Seq || st.HeadHash != m.Head {
				r.fail("replica %s/%d reports seq %d head %.12s, its log folds to seq %d head %.12s", rep.Node, rep.Shard,
					st.AppliedSeq, st.HeadHash, m.Seq, m.Head)
			} else if h := m.StateHash(); st.StateHash != h {
				r.fail("replica %s/%d reports state hash %.12s, the reference model computes %.12s", rep.Node, rep.Shard, st.StateHash, h)
			}
		}
	}
	agreeing := answersAgree(a, &r)
	r.Summary = fmt.Sprintf("%d replicas folded, %d ids answered more than once", len(a.Final.Replicas), agreeing)
	return r
}

// answersAgree checks every definite answer for an id against the first
// one: a replay with the same body must answer exists with the original
// status and code; one with a changed body exists_with_different_fields.
func answersAgree(a *Analysis, r *Result) int {
	n := 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		f := p.Invoke.F
		if f != history.FReplay && f != history.FReplayChanged {
			continue
		}
		c := &p.Complete
		if c.Type == history.Info || (c.Type == history.Fail && c.Result == "") {
			continue
		}
		n++
		id := p.Invoke.Transfer.ID
		if f == history.FReplayChanged {
			if c.Result != "exists_with_different_fields" {
				r.fail("op %d replayed %s with a changed body and got %s/%s, not exists_with_different_fields", p.Invoke.Index, id, c.Result, c.Status)
			}
			continue
		}
		orig := a.Original[id]
		if orig == nil {
			continue
		}
		oc := &orig.Complete
		want, wantCode := oc.Status, oc.Result
		if oc.Type == history.Fail {
			want = "rejected"
		}
		if wantCode == "exists" {
			wantCode = oc.Original
		}
		if oc.Type == history.Info {
			continue
		}
		if c.Result != "exists" || c.Status != want || (c.Original != "" && c.Original != wantCode) {
			r.fail("op %d replayed %s and got %s/%s (original %s), the first answer was %s/%s", p.Invoke.Index, id,
				c.Result, c.Status, c.Original, wantCode, want)
		}
	}
	return n
}

// Convergence is C5: after quiescence every replica of a shard reports
// the same applied seq, chain head and state hash, holds the same log,
// passes its own verify; every event a shard reader was served during the
// run is the event the final log holds at that seq.
func Convergence(a *Analysis) Result {
	r := Result{Name: "C5", Title: "convergence", Verdict: Valid}
	if !a.Final.Quiesced {
		r.unknown("the replicas did not catch up after the run")
	}
	by := map[int][]*Replica{}
	for i := range a.Final.Replicas {
		rep := &a.Final.Replicas[i]
		if rep.Err != "" {
			r.unknown("replica %s/%d could not be exported: %s", rep.Node, rep.Shard, rep.Err)
			continue
		}
		by[rep.Shard] = append(by[rep.Shard], rep)
		if rep.Verify != nil && !rep.Verify.OK {
			r.fail("replica %s/%d fails its own verify: %s", rep.Node, rep.Shard, rep.Verify.Error)
		}
	}
	for s := range a.Shards {
		reps := by[s]
		if len(reps) == 0 {
			r.unknown("shard %d: no replica exported", s)
			continue
		}
		first := reps[0]
		for _, rep := range reps[1:] {
			if first.State != nil && rep.State != nil && (first.State.AppliedSeq != rep.State.AppliedSeq ||
				first.State.HeadHash != rep.State.HeadHash || first.State.StateHash != rep.State.StateHash) {
				r.fail("shard %d: %s is at seq %d head %.12s state %.12s, %s at seq %d head %.12s state %.12s", s,
					first.Node, first.State.AppliedSeq, first.State.HeadHash, first.State.StateHash,
					rep.Node, rep.State.AppliedSeq, rep.State.HeadHash, rep.State.StateHash)
			}
			if d := firstDifference(first.Events, rep.Events); d != "" {
				r.fail("shard %d: logs of %s and %s differ: %s", s, first.Node, rep.Node, d)
			}
		}
	}
	served := 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if p.Invoke.F != history.FShardRead || p.Type() != history.OK {
			continue
		}
		log := a.Logs[p.Invoke.Shard]
		for _, e := range p.Complete.Events {
			served++
			switch {
			case e.Seq == 0 || e.Seq > uint64(len(log)):
				r.fail("op %d was served shard %d seq %d, which the final log (%d events) does not hold", p.Invoke.Index,
					p.Invoke.Shard, e.Seq, len(log))
			case log[e.Seq-1].Hash != e.Hash:
				r.fail("op %d was served shard %d seq %d with hash %.12s, the final log has %.12s", p.Invoke.Index,
					p.Invoke.Shard, e.Seq, e.Hash, log[e.Seq-1].Hash)
			}
		}
	}
	r.Summary = fmt.Sprintf("%d shards x %d replicas compared, %d served events matched", a.Shards, len(a.Final.Replicas)/max(a.Shards, 1), served)
	return r
}

func firstDifference(x, y []Event) string {
	for i := 0; i < min(len(x), len(y)); i++ {
		if x[i].Hash != y[i].Hash || x[i].Seq != y[i].Seq {
			return fmt.Sprintf("at seq %d (%.12s vs %.12s)", x[i].Seq, x[i].Hash, y[i].Hash)
		}
	}
	if len(x) != len(y) {
		return fmt.Sprintf("%d vs %d events", len(x), len(y))
	}
	return ""
}

// SagaAtomicity is C7: every cross-shard transfer ends exactly one of
// completed (held, credited, completed), never started (no hold, no
// credit) or aborted (held, no credit, aborted); an ok answer means
// completed, a rejection means not completed.
func SagaAtomicity(a *Analysis) Result {
	r := Result{Name: "C7", Title: "saga atomicity", Verdict: Valid}
	modelProblems(a, &r, "C7")
	counts := map[string]int{}
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if p.Invoke.F != history.FCross {
			continue
		}
		t := p.Invoke.Transfer
		o := a.ByID[t.ID]
		if o == nil {
			o = &Outcome{}
		}
		state := sagaState(o)
		counts[state]++
		c := &p.Complete
		switch {
		case state == "torn":
			r.fail("op %d (%s) is torn: %d holds, %d credits, %d credit rejections, %d completions, %d aborts, %d posts",
				p.Invoke.Index, t.ID, o.Held, o.Credited, o.CreditRejected, o.Completed, o.Aborted, o.Posted)
		case state == "in_flight":
			r.fail("op %d (%s) is still in flight after the run: held, never completed nor aborted", p.Invoke.Index, t.ID)
		case c.Type == history.OK && c.Status == "posted" && state != "completed":
			r.fail("op %d (%s) answered posted but the saga is %s", p.Invoke.Index, t.ID, state)
		case c.Type == history.Fail && c.Result != "" && state == "completed":
			r.fail("op %d (%s) answered %s but the saga completed", p.Invoke.Index, t.ID, c.Result)
		case c.Type == history.Fail && c.Result == "" && state != "never_started":
			r.fail("op %d (%s) definitely failed (%s) but the saga %s", p.Invoke.Index, t.ID, c.Error, state)
		}
	}
	r.Summary = fmt.Sprintf("cross-shard transfers: %d completed, %d aborted, %d never started, %d in flight, %d torn",
		counts["completed"], counts["aborted"], counts["never_started"], counts["in_flight"], counts["torn"])
	return r
}

// sagaState names where a cross-shard transfer's events leave it.
func sagaState(o *Outcome) string {
	switch {
	case o.Posted > 0:
		return "torn" // a cross-shard transfer never posts in one event
	case o.Held == 0 && o.Credited == 0 && o.Completed == 0 && o.Aborted == 0 && o.CreditRejected == 0:
		return "never_started"
	case o.Held == 1 && o.Credited == 1 && o.Completed == 1 && o.Aborted == 0 && o.CreditRejected == 0:
		return "completed"
	case o.Held == 1 && o.Credited == 0 && o.Aborted == 1 && o.Completed == 0 && o.CreditRejected <= 1:
		return "aborted"
	case o.Held == 1 && o.Completed == 0 && o.Aborted == 0 && o.Credited <= 1 && o.CreditRejected <= 1 && o.Credited+o.CreditRejected <= 1:
		return "in_flight"
	}
	return "torn"
}

// MonotonicReads is C8: per client and shard, the applied seq a read
// through the proxy answers never goes back, and never falls below the
// seq of a write that client saw acknowledged.
func MonotonicReads(a *Analysis) Result {
	r := Result{Name: "C8", Title: "monotonic reads", Verdict: Valid}
	type key struct{ proc, shard int }
	floor := map[key]uint64{}
	from := map[key]int{}
	reads := 0
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if p.Invoke.Process == FinalProcess {
			continue
		}
		c := &p.Complete
		if c.Type != history.OK {
			continue
		}
		k := key{p.Invoke.Process, p.Invoke.Shard}
		switch p.Invoke.F {
		case history.FRead:
			reads++
			if c.Seq < floor[k] {
				r.fail("process %d read shard %d at seq %d (op %d) after seeing seq %d (op %d)", k.proc, k.shard, c.Seq,
					p.Invoke.Index, floor[k], from[k])
			}
			if c.Seq > floor[k] {
				floor[k], from[k] = c.Seq, p.Invoke.Index
			}
		case history.FTransfer, history.FDeposit:
			if c.Result == "ok" && c.Seq > floor[k] {
				floor[k], from[k] = c.Seq, p.Invoke.Index
			}
		}
	}
	r.Summary = fmt.Sprintf("%d reads through the proxy checked", reads)
	return r
}
