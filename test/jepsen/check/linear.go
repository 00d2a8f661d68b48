package check

import (
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"tally/test/jepsen/history"
)

// C6 checks each account's history for linearizability with porcupine,
// one partition per account. Reads are the reads' answers. Writes are the
// effects the final logs say each transfer had on the account (posted,
// rejected for lack of funds, saga hold, settle, credit), each within its
// operation's real-time window: from its invoke to its completion, or for
// an info operation to the first moment an operation showed that its
// shard had applied the event's seq (open-ended when none did). Money
// moved by a transfer whose answer disagrees with the log is C3's to
// judge; here the log's effects are placed in time against the reads.

// linIn is one operation on one account.
type linIn struct {
	Kind     byte // 'r' read, 'd' debit, 'c' credit, 'h' saga hold, 's' saga settle
	Outcome  byte // 'p' posted/held/completed, 'i' insufficient funds, 'a' aborted
	Amount   int64
	ID       string // the transfer id (holds and settles pair by it)
	AllowNeg bool
	Op       int // the history op, for the visualization
}

// linOut is a read's answer.
type linOut struct {
	Balance, Available int64
}

// linState is an account: its balance and its open saga holds.
type linState struct {
	Balance int64
	Held    int64
	Holds   string // "id=amount;" sorted by id
}

func (s linState) hold(id string) (int64, bool) {
	for _, h := range strings.Split(s.Holds, ";") {
		if k, v, ok := strings.Cut(h, "="); ok && k == id {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n, true
		}
	}
	return 0, false
}

func (s linState) withHold(id string, amt int64, add bool) linState {
	var parts []string
	for _, h := range strings.Split(s.Holds, ";") {
		if h != "" && !strings.HasPrefix(h, id+"=") {
			parts = append(parts, h)
		}
	}
	if add {
		parts = append(parts, fmt.Sprintf("%s=%d", id, amt))
		s.Held += amt
	} else {
		s.Held -= amt
	}
	sort.Strings(parts)
	s.Holds = strings.Join(parts, ";")
	return s
}

var accountModel = porcupine.Model{
	Init: func() interface{} { return linState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s, in := state.(linState), input.(linIn)
		avail := s.Balance - s.Held
		switch in.Kind {
		case 'r':
			out := output.(linOut)
			return out.Balance == s.Balance && out.Available == avail, s
		case 'd':
			if in.Outcome == 'i' {
				return !in.AllowNeg && avail < in.Amount, s
			}
			if !in.AllowNeg && avail < in.Amount {
				return false, s
			}
			s.Balance -= in.Amount
			return true, s
		case 'c':
			s.Balance += in.Amount
			return true, s
		case 'h':
			if in.Outcome == 'i' {
				return !in.AllowNeg && avail < in.Amount, s
			}
			if !in.AllowNeg && avail < in.Amount {
				return false, s
			}
			return true, s.withHold(in.ID, in.Amount, true)
		case 's':
			amt, ok := s.hold(in.ID)
			if !ok {
				return false, s
			}
			s = s.withHold(in.ID, amt, false)
			if in.Outcome == 'p' {
				s.Balance -= amt
			}
			return true, s
		}
		return false, s
	},
	Hash: func(state interface{}) uint64 {
		s := state.(linState)
		h := fnv.New64a()
		fmt.Fprintf(h, "%d|%d|%s", s.Balance, s.Held, s.Holds)
		return h.Sum64()
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(linIn)
		switch in.Kind {
		case 'r':
			out := output.(linOut)
			return fmt.Sprintf("read -> balance %d available %d", out.Balance, out.Available)
		case 'd':
			if in.Outcome == 'i' {
				return fmt.Sprintf("%s: debit %d rejected (insufficient)", in.ID, in.Amount)
			}
			return fmt.Sprintf("%s: debit %d", in.ID, in.Amount)
		case 'c':
			return fmt.Sprintf("%s: credit %d", in.ID, in.Amount)
		case 'h':
			if in.Outcome == 'i' {
				return fmt.Sprintf("%s: saga hold %d rejected (insufficient)", in.ID, in.Amount)
			}
			return fmt.Sprintf("%s: saga hold %d", in.ID, in.Amount)
		case 's':
			if in.Outcome == 'p' {
				return fmt.Sprintf("%s: saga completes", in.ID)
			}
			return fmt.Sprintf("%s: saga aborts", in.ID)
		}
		return "?"
	},
	DescribeState: func(state interface{}) string {
		s := state.(linState)
		if s.Holds == "" {
			return fmt.Sprintf("balance %d", s.Balance)
		}
		return fmt.Sprintf("balance %d, holds %s", s.Balance, s.Holds)
	},
}

// AccountOps builds each account's porcupine history.
func AccountOps(a *Analysis) map[string][]porcupine.Operation {
	out := map[string][]porcupine.Operation{}
	var end int64
	for i := range a.Pairs {
		end = max(end, a.Pairs[i].End())
	}
	end++
	add := func(acct string, p *history.Pair, in linIn, out0 interface{}, ret int64) {
		if acct == "" || isSystem(acct) {
			return
		}
		in.Op = p.Invoke.Index
		call := p.Start()
		if ret <= call {
			ret = call + 1
		}
		out[acct] = append(out[acct], porcupine.Operation{ClientId: clientID(p.Invoke.Process), Input: in,
			Call: call, Output: out0, Return: ret})
	}
	for i := range a.Pairs {
		p := &a.Pairs[i]
		c := &p.Complete
		switch p.Invoke.F {
		case history.FRead, history.FNodeRead:
			if c.Type == history.OK && c.Read != nil {
				add(p.Invoke.Account, p, linIn{Kind: 'r'}, linOut{c.Read.Balance, c.Read.Available}, c.Time)
			}
			continue
		}
		if !isOriginal(p.Invoke.F) {
			continue
		}
		t := p.Invoke.Transfer
		o := a.ByID[t.ID]
		if o == nil {
			continue
		}
		for _, ref := range o.Refs {
			e := a.Event(ref)
			ret := end
			if c.Type != history.Info {
				ret = c.Time
			}
			if seen, ok := a.SeenBy(ref.Shard, e.Seq); ok && seen < ret {
				ret = seen
			}
			d := e.Data.Transfer
			switch e.Type {
			case "TransferPosted":
				add(d.Debit, p, linIn{Kind: 'd', Outcome: 'p', Amount: d.Amount, ID: d.ID}, nil, ret)
				add(d.Credit, p, linIn{Kind: 'c', Outcome: 'p', Amount: d.Amount, ID: d.ID}, nil, ret)
			case "TransferRejected":
				if e.Data.Result == "insufficient_funds" {
					add(d.Debit, p, linIn{Kind: 'd', Outcome: 'i', Amount: d.Amount, ID: d.ID}, nil, ret)
				}
			case "SagaDebitHeld":
				add(d.Debit, p, linIn{Kind: 'h', Outcome: 'p', Amount: d.Amount, ID: d.ID}, nil, ret)
			case "SagaCredited":
				add(d.Credit, p, linIn{Kind: 'c', Outcome: 'p', Amount: d.Amount, ID: d.ID}, nil, ret)
			case "SagaCompleted", "SagaAborted":
				outc := byte('p')
				if e.Type == "SagaAborted" {
					outc = 'a'
				}
				add(t.Debit, p, linIn{Kind: 's', Outcome: outc, ID: t.ID}, nil, ret)
			}
		}
	}
	return out
}

// clientID maps a process to porcupine's zero-based client id.
func clientID(proc int) int {
	if proc < 0 {
		return 0
	}
	return proc + 1
}

// Linearizable is C6.
func Linearizable(a *Analysis, o Options) Result {
	r := Result{Name: "C6", Title: "linearizability (porcupine, per account)", Verdict: Valid}
	missingReads(a, &r)
	accounts := AccountOps(a)
	names := make([]string, 0, len(accounts))
	for k := range accounts {
		names = append(names, k)
	}
	sort.Strings(names)
	timeout := o.PorcupineTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	deadline := time.Now().Add(timeout)
	n, bad := 0, 0
	for _, acct := range names {
		ops := accounts[acct]
		n += len(ops)
		left := time.Until(deadline)
		if left <= 0 {
			r.unknown("porcupine ran out of time before account %s", acct)
			continue
		}
		res, info := porcupine.CheckOperationsVerbose(accountModel, ops, left)
		switch res {
		case porcupine.Ok:
		case porcupine.Unknown:
			r.unknown("porcupine timed out on account %s (%d operations)", acct, len(ops))
		case porcupine.Illegal:
			bad++
			where := ""
			if o.HTMLDir != "" {
				path := filepath.Join(o.HTMLDir, "porcupine-"+safeName(acct)+".html")
				if err := os.MkdirAll(o.HTMLDir, 0o755); err == nil {
					if err := porcupine.VisualizePath(accountModel, info, path); err == nil {
						where = " (see " + path + ")"
					}
				}
			}
			r.fail("account %s: %d operations are not linearizable%s", acct, len(ops), where)
		}
	}
	r.Summary = fmt.Sprintf("%d accounts, %d operations, %d not linearizable", len(names), n, bad)
	return r
}

// missingReads flags reads that answered account_not_found for an
// account whose opening had been acknowledged before the read began.
func missingReads(a *Analysis, r *Result) {
	opened := map[string]int64{}
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if p.Invoke.F == history.FOpen && p.Type() == history.OK {
			opened[p.Invoke.Account] = p.End()
		}
	}
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if (p.Invoke.F != history.FRead && p.Invoke.F != history.FNodeRead) || p.Type() != history.OK || p.Complete.Read != nil {
			continue
		}
		if t, ok := opened[p.Invoke.Account]; ok && t < p.Start() {
			r.fail("op %d read %s and got %s, but the account was opened before the read began", p.Invoke.Index,
				p.Invoke.Account, p.Complete.Result)
		}
	}
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}
