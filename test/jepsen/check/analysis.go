package check

import (
	"fmt"
	"sort"

	"tally/test/jepsen/history"
)

// Verdict is a checker's judgement.
type Verdict string

const (
	Valid   Verdict = "valid"
	Invalid Verdict = "invalid"
	Unknown Verdict = "unknown"
)

// worse returns the worse of two verdicts: invalid beats unknown beats
// valid.
func worse(a, b Verdict) Verdict {
	rank := map[Verdict]int{Valid: 0, NotRun: 0, Unknown: 1, Invalid: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// Result is one checker's outcome.
type Result struct {
	Name     string   `json:"name"`
	Title    string   `json:"title"`
	Verdict  Verdict  `json:"verdict"`
	Summary  string   `json:"summary"`
	Problems []string `json:"problems,omitempty"`
}

// maxProblems bounds the problems a checker lists.
const maxProblems = 20

func (r *Result) fail(format string, args ...any) {
	r.Verdict = Invalid
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	} else if len(r.Problems) == maxProblems {
		r.Problems = append(r.Problems, "... more problems not shown")
	}
}

func (r *Result) unknown(format string, args ...any) {
	r.Verdict = worse(r.Verdict, Unknown)
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, "unknown: "+fmt.Sprintf(format, args...))
	}
}

// Ref points at one event of a shard's canonical log.
type Ref struct {
	Shard int
	I     int // index into Analysis.Logs[Shard]
}

// Outcome is what the final logs say became of one transfer id.
type Outcome struct {
	Posted                                             int    // TransferPosted events (any shard)
	Rejected                                           int    // TransferRejected events
	Code                                               string // the rejection's code
	Held, Credited, CreditRejected, Completed, Aborted int
	Moved                                              bool // money moved for this id (posted, credited or completed)
	Refs                                               []Ref
}

// None reports whether no event names the id.
func (o *Outcome) None() bool { return len(o.Refs) == 0 }

// Resolution is how an info operation was resolved against the final
// logs.
type Resolution string

const (
	NotApplied Resolution = "not_applied"
	Applied    Resolution = "applied"  // money moved or a saga ran
	RejectedR  Resolution = "rejected" // a TransferRejected event
)

// Analysis is the shared groundwork of every checker.
type Analysis struct {
	Ops      []history.Op
	Pairs    []history.Pair
	Final    *Final
	Shards   int
	Logs     [][]Event // the canonical (longest) log of each shard
	ByID     map[string]*Outcome
	Original map[string]*history.Pair // transfer id -> the op that first sent it
	Resolved map[int]Resolution       // op index -> resolution of an info write
	Models   map[string]*Model        // "node/shard" -> the fold of that replica's log
	// Stream is what the run's stream follower received (C9); nil when
	// no stream was followed.
	Stream history.StreamSource
	// Ops is what the operations faults (backup, membership,
	// rolling-restart) left for C10; nil when none ran.
	Operations *Operations
	// bounds[shard] lists, by seq, the earliest time some replica was
	// seen to have applied at least that seq.
	bounds [][]bound
}

type bound struct {
	seq  uint64
	time int64
}

// Analyze pairs the history, picks each shard's canonical log, folds
// every replica's log through the model and resolves the info writes.
func Analyze(ops []history.Op, final *Final) (*Analysis, error) {
	pairs, err := history.Pairs(ops)
	if err != nil {
		return nil, err
	}
	a := &Analysis{Ops: ops, Pairs: pairs, Final: final, Shards: final.Shards,
		ByID: map[string]*Outcome{}, Original: map[string]*history.Pair{},
		Resolved: map[int]Resolution{}, Models: map[string]*Model{}}
	a.Logs = make([][]Event, a.Shards)
	if err := a.pickLogs(); err != nil {
		return nil, err
	}
	for _, r := range final.Replicas {
		m := NewModel(r.Shard)
		for i := range r.Events {
			m.Apply(&r.Events[i])
		}
		a.Models[fmt.Sprintf("%s/%d", r.Node, r.Shard)] = m
	}
	for s, log := range a.Logs {
		for i := range log {
			e := &log[i]
			id := e.TransferID()
			if id == "" {
				continue
			}
			o := a.ByID[id]
			if o == nil {
				o = &Outcome{}
				a.ByID[id] = o
			}
			o.Refs = append(o.Refs, Ref{s, i})
			switch e.Type {
			case "TransferPosted", "TransferPending":
				o.Posted++
				o.Moved = true
			case "TransferRejected":
				o.Rejected++
				o.Code = e.Data.Result
			case "SagaDebitHeld":
				o.Held++
			case "SagaCredited":
				o.Credited++
				o.Moved = true
			case "SagaCreditRejected":
				o.CreditRejected++
			case "SagaCompleted":
				o.Completed++
				o.Moved = true
			case "SagaAborted":
				o.Aborted++
			}
		}
	}
	for i := range pairs {
		p := &pairs[i]
		if t := p.Invoke.Transfer; t != nil && isOriginal(p.Invoke.F) {
			if _, dup := a.Original[t.ID]; !dup {
				a.Original[t.ID] = p
			}
		}
	}
	for i := range pairs {
		p := &pairs[i]
		if p.Type() != history.Info || !isOriginal(p.Invoke.F) {
			continue
		}
		o := a.ByID[p.Invoke.Transfer.ID]
		switch {
		case o == nil || o.None():
			a.Resolved[p.Invoke.Index] = NotApplied
		case o.Moved:
			a.Resolved[p.Invoke.Index] = Applied
		default:
			a.Resolved[p.Invoke.Index] = RejectedR
		}
	}
	a.buildBounds()
	return a, nil
}

// pickLogs chooses each shard's canonical log: the one most replicas
// hold (same length, same last hash), the longest among equals. When
// replicas diverge (C5's to report), the majority's log is the one the
// cluster goes on with, so the other checkers judge that one.
func (a *Analysis) pickLogs() error {
	type cand struct {
		events []Event
		votes  int
	}
	cands := make([]map[string]*cand, a.Shards)
	for _, r := range a.Final.Replicas {
		if r.Shard < 0 || r.Shard >= a.Shards {
			return fmt.Errorf("replica %s: shard %d out of range", r.Node, r.Shard)
		}
		if r.Err != "" {
			continue
		}
		key := fmt.Sprint(len(r.Events))
		if n := len(r.Events); n > 0 {
			key += "/" + r.Events[n-1].Hash
		}
		if cands[r.Shard] == nil {
			cands[r.Shard] = map[string]*cand{}
		}
		c := cands[r.Shard][key]
		if c == nil {
			c = &cand{events: r.Events}
			cands[r.Shard][key] = c
		}
		c.votes++
	}
	for s, cs := range cands {
		var best *cand
		for _, c := range cs {
			if best == nil || c.votes > best.votes || (c.votes == best.votes && len(c.events) > len(best.events)) {
				best = c
			}
		}
		if best != nil {
			a.Logs[s] = best.events
		}
	}
	return nil
}

// isOriginal reports whether ops of kind f send a transfer id for the
// first time (replays send earlier ids again).
func isOriginal(f string) bool {
	return f == history.FDeposit || f == history.FTransfer || f == history.FCross
}

// Event returns the event r points at.
func (a *Analysis) Event(r Ref) *Event { return &a.Logs[r.Shard][r.I] }

// buildBounds collects, per shard, every time an operation showed that a
// replica had applied a seq: an ok write's own seq, a read's applied seq,
// a shard read's last event. Whatever a replica has applied has
// committed, so an event at or below that seq took effect before that
// operation returned.
func (a *Analysis) buildBounds() {
	raw := make([][]bound, a.Shards)
	add := func(shard int, seq uint64, t int64) {
		if shard >= 0 && shard < a.Shards && seq > 0 {
			raw[shard] = append(raw[shard], bound{seq, t})
		}
	}
	for i := range a.Pairs {
		p := &a.Pairs[i]
		c := &p.Complete
		if c.Type != history.OK && !(c.Type == history.Fail && c.Result != "") {
			continue
		}
		switch p.Invoke.F {
		case history.FRead, history.FNodeRead:
			add(p.Invoke.Shard, c.Seq, c.Time)
		case history.FShardRead:
			if n := len(c.Events); n > 0 {
				add(p.Invoke.Shard, c.Events[n-1].Seq, c.Time)
			}
		case history.FDeposit, history.FTransfer:
			add(p.Invoke.Shard, c.Seq, c.Time)
		}
	}
	a.bounds = make([][]bound, a.Shards)
	for s, bs := range raw {
		sort.Slice(bs, func(i, j int) bool { return bs[i].seq < bs[j].seq })
		// Suffix minimum of time: the earliest moment any seq >= bs[i].seq
		// was seen.
		for i := len(bs) - 2; i >= 0; i-- {
			bs[i].time = min(bs[i].time, bs[i+1].time)
		}
		a.bounds[s] = bs
	}
}

// SeenBy returns the earliest time some operation showed that shard had
// applied seq, or ok=false if none did.
func (a *Analysis) SeenBy(shard int, seq uint64) (int64, bool) {
	bs := a.bounds[shard]
	i := sort.Search(len(bs), func(i int) bool { return bs[i].seq >= seq })
	if i == len(bs) {
		return 0, false
	}
	return bs[i].time, true
}

// Stats counts what the history holds, for the summary and the coverage
// gates.
type Stats struct {
	Ops, OK, Fail, Info int
	ByKind              map[string]map[history.Type]int
	InfoWrites          int
	InfoResolved        int
	BusinessRejections  int
}

// Stats computes the counts.
func (a *Analysis) Stats() Stats {
	s := Stats{ByKind: map[string]map[history.Type]int{}}
	for i := range a.Pairs {
		p := &a.Pairs[i]
		s.Ops++
		t := p.Type()
		switch t {
		case history.OK:
			s.OK++
		case history.Fail:
			s.Fail++
			if p.Complete.Result != "" {
				s.BusinessRejections++
			}
		case history.Info:
			s.Info++
		}
		m := s.ByKind[p.Invoke.F]
		if m == nil {
			m = map[history.Type]int{}
			s.ByKind[p.Invoke.F] = m
		}
		m[t]++
		if t == history.Info && isOriginal(p.Invoke.F) {
			s.InfoWrites++
			if _, ok := a.Resolved[p.Invoke.Index]; ok {
				s.InfoResolved++
			}
		}
	}
	return s
}
