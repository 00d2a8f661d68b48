package ledger

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestScenarios runs the statements in testdata/*.txt. Each line is one
// step, optionally followed by "-> expected answer":
//
//	shards 4 shard 2                       the shard this file runs (first line only)
//	at 1000s [-> expired p1 p2]            start a Raft entry at this log time; lists the expiries (none if omitted)
//	open alice USD [allow_negative] [k=v] -> ok
//	close alice -> ok
//	transfer t1 alice bob 100 [pending] [timeout=30] [linked] [ref=x] [meta.k=v] [post=p] [void=p] -> ok posted
//	deposit t1 alice 100 [opts] -> ok posted        (@world to alice)
//	withdraw t1 alice 100 [opts] -> ok posted       (alice to @world)
//	post x1 p1 alice bob [amount] [opts] -> ok posted
//	void v1 p1 alice bob [opts] -> ok voided
//	batch ... end                          the transfer lines between run as one command
//	balance alice [USD] -> posted 0/100 pending 0/0 [closed]   (debits/credits)
//	record p1 -> ok posted [by=x1 amount=60]
//	events -> TransferPosted:t1 ...|none   the events of the previous step
//	seq -> 7        pending -> 2        shardof alice -> 3        flush
//
// A transfer's answer is "code status [original=code] [seq=N]"; seq is
// compared only when given. Amounts may be "max" or "max-N". After every
// step the books must balance.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %d scenario files, want at least 4", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			runScenario(t, f, string(b))
		})
	}
}

type scenario struct {
	t     *testing.T
	name  string
	line  int
	h     *harness
	last  []Event // events of the previous step
	batch []scenarioItem
	inBat bool
}

type scenarioItem struct {
	line int
	tr   Transfer
	want string
}

func runScenario(t *testing.T, name, text string) {
	s := &scenario{t: t, name: name}
	steps := 0
	for i, raw := range strings.Split(text, "\n") {
		s.line = i + 1
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, want, hasWant := strings.Cut(line, "->")
		cmd, want = strings.TrimSpace(cmd), strings.TrimSpace(want)
		f := strings.Fields(cmd)
		if f[0] == "shards" {
			if s.h != nil {
				s.fail("shards must come first")
			}
			if len(f) != 4 || f[2] != "shard" {
				s.fail("usage: shards N shard S")
			}
			s.h = newHarness(t, s.atoi(f[3]), s.atoi(f[1]))
			continue
		}
		if s.h == nil {
			s.h = newHarness(t, 0, 1)
		}
		steps++
		s.step(f, want, hasWant)
		if err := checkBooks(s.h.st); err != nil {
			s.fail("%v", err)
		}
	}
	if s.inBat {
		s.fail("batch without end")
	}
	if steps == 0 {
		t.Fatal("empty scenario")
	}
	// Whatever the scenario did, the log replays to the same state.
	s.h.flush()
	replayed := NewState(s.h.st.Shard, s.h.st.Shards, nil)
	for _, e := range s.h.events {
		if err := replayed.Replay(e); err != nil {
			t.Fatalf("replay: %v", err)
		}
	}
	if replayed.StateHash() != s.h.st.StateHash() {
		t.Fatal("replayed state differs")
	}
}

func (s *scenario) fail(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("%s:%d: %s", s.name, s.line, fmt.Sprintf(format, args...))
}

func (s *scenario) expect(got, want string) {
	s.t.Helper()
	if got != want {
		s.fail("got  %q\n\twant %q", got, want)
	}
}

func (s *scenario) atoi(v string) int {
	s.t.Helper()
	n, err := strconv.Atoi(v)
	if err != nil {
		s.fail("bad number %q", v)
	}
	return n
}

func (s *scenario) amount(v string) int64 {
	s.t.Helper()
	if v == "max" {
		return math.MaxInt64
	}
	if rest, ok := strings.CutPrefix(v, "max-"); ok {
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			s.fail("bad amount %q", v)
		}
		return math.MaxInt64 - n
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		s.fail("bad amount %q", v)
	}
	return n
}

func (s *scenario) step(f []string, want string, hasWant bool) {
	s.t.Helper()
	if s.inBat {
		if f[0] == "end" {
			s.runBatch()
			return
		}
		tr := s.transfer(f)
		if !hasWant {
			s.fail("a batch item needs an expected answer")
		}
		s.batch = append(s.batch, scenarioItem{line: s.line, tr: tr, want: want})
		return
	}
	needWant := map[string]bool{"open": true, "close": true, "transfer": true, "deposit": true, "withdraw": true,
		"post": true, "void": true, "balance": true, "record": true, "events": true, "seq": true, "pending": true, "shardof": true}
	if needWant[f[0]] && !hasWant {
		s.fail("%s needs an expected answer", f[0])
	}
	// Only steps that run commands replace what "events" shows.
	mutating := map[string]bool{"at": true, "open": true, "close": true, "transfer": true, "deposit": true,
		"withdraw": true, "post": true, "void": true}
	n := len(s.h.st.events)
	switch f[0] {
	case "at":
		if len(f) != 2 {
			s.fail("usage: at DURATION")
		}
		d, err := time.ParseDuration(f[1])
		if err != nil {
			s.fail("%v", err)
		}
		evs := s.h.begin(Time(d))
		var ids []string
		for _, e := range evs {
			if e.Type != PendingExpiredEv {
				s.fail("Begin emitted %s", e.Type)
			}
			ids = append(ids, e.Data.PendingID)
		}
		if hasWant {
			s.expect("expired "+strings.Join(ids, " "), want)
		} else if len(ids) != 0 {
			s.fail("unexpected expiries %v", ids)
		}
	case "open":
		if len(f) < 3 {
			s.fail("usage: open ID CUR [allow_negative] [k=v]")
		}
		a := Account{ID: f[1], Currency: f[2]}
		for _, o := range f[3:] {
			if o == "allow_negative" {
				a.AllowNegative = true
			} else if k, v, ok := strings.Cut(o, "="); ok {
				if a.Metadata == nil {
					a.Metadata = map[string]string{}
				}
				a.Metadata[k] = v
			} else {
				s.fail("unknown option %q", o)
			}
		}
		r := s.h.exec(&Command{Kind: CmdOpenAccounts, Accounts: []Account{a}})[0]
		s.expect(string(r.Result), want)
	case "close":
		r := s.h.close(f[1])
		s.expect(string(r.Result), want)
	case "transfer", "deposit", "withdraw", "post", "void":
		tr := s.transfer(f)
		r := s.h.exec(&Command{Kind: CmdTransfers, Transfers: []Transfer{tr}})[0]
		s.expect(formatResult(r, want), want)
	case "batch":
		s.inBat, s.batch = true, nil
		return
	case "balance":
		cur := ""
		if len(f) > 2 {
			cur = f[2]
		}
		a := s.h.st.account(f[1], cur)
		if a == nil {
			s.fail("no account %s", AccountKey(f[1], cur))
		}
		got := balOf(*a).String()
		if a.Closed {
			got += " closed"
		}
		s.expect(got, want)
	case "record":
		r, ok := s.h.st.Record(f[1])
		if !ok {
			s.expect("none", want)
			break
		}
		got := fmt.Sprintf("%s %s", r.Result, r.Status)
		if r.ResolvedBy != "" {
			got += fmt.Sprintf(" by=%s amount=%d", r.ResolvedBy, r.ResolvedAmount)
		}
		s.expect(got, want)
	case "events":
		var got []string
		for _, e := range s.last {
			got = append(got, string(e.Type)+":"+eventSubject(&e))
		}
		if len(got) == 0 {
			got = []string{"none"}
		}
		s.expect(strings.Join(got, " "), want)
	case "seq":
		s.expect(strconv.FormatUint(s.h.st.Seq, 10), want)
	case "pending":
		s.expect(strconv.Itoa(s.h.st.Pending()), want)
	case "shardof":
		s.expect(strconv.Itoa(ShardOf(f[1], s.h.st.Shards)), want)
	case "flush":
		s.h.flush()
	default:
		s.fail("unknown step %q", f[0])
	}
	if mutating[f[0]] {
		s.last = append([]Event(nil), s.h.st.events[n:]...)
	}
}

func (s *scenario) runBatch() {
	s.t.Helper()
	s.inBat = false
	n := len(s.h.st.events)
	ts := make([]Transfer, len(s.batch))
	for i, it := range s.batch {
		ts[i] = it.tr
	}
	res := s.h.exec(&Command{Kind: CmdTransfers, Transfers: ts})
	end := s.line
	for i, it := range s.batch {
		s.line = it.line
		s.expect(formatResult(res[i], it.want), it.want)
	}
	s.line = end
	s.last = append([]Event(nil), s.h.st.events[n:]...)
}

// transfer parses a transfer step.
func (s *scenario) transfer(f []string) Transfer {
	s.t.Helper()
	var tr Transfer
	var opts []string
	need := func(n int, usage string) {
		if len(f) < n {
			s.fail("usage: %s", usage)
		}
	}
	switch f[0] {
	case "transfer":
		need(5, "transfer ID DEBIT CREDIT AMOUNT [opts]")
		tr = xfer(f[1], f[2], f[3], s.amount(f[4]))
		opts = f[5:]
	case "deposit":
		need(4, "deposit ID ACCOUNT AMOUNT [opts]")
		tr = deposit(f[1], f[2], s.amount(f[3]))
		opts = f[4:]
	case "withdraw":
		need(4, "withdraw ID ACCOUNT AMOUNT [opts]")
		tr = withdraw(f[1], f[2], s.amount(f[3]))
		opts = f[4:]
	case "post":
		need(5, "post ID PENDING DEBIT CREDIT [AMOUNT] [opts]")
		tr = post(f[1], f[2], f[3], f[4], 0)
		opts = f[5:]
		if len(opts) > 0 && !strings.ContainsAny(opts[0], "=") && opts[0] != "linked" {
			tr.Amount, opts = s.amount(opts[0]), opts[1:]
		}
	case "void":
		need(5, "void ID PENDING DEBIT CREDIT [opts]")
		tr = void(f[1], f[2], f[3], f[4])
		opts = f[5:]
	default:
		s.fail("%q is not a transfer", f[0])
	}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case o == "pending":
			tr.Pending = true
		case o == "linked":
			tr.Linked = true
		case k == "timeout":
			tr.TimeoutSeconds = int64(s.atoi(v))
		case k == "post":
			tr.PostPendingID = v
		case k == "void":
			tr.VoidPendingID = v
		case k == "amount":
			tr.Amount = s.amount(v)
		case k == "ref":
			tr.Reference = v
		case strings.HasPrefix(k, "meta."):
			if tr.Metadata == nil {
				tr.Metadata = map[string]string{}
			}
			tr.Metadata[strings.TrimPrefix(k, "meta.")] = v
		default:
			s.fail("unknown option %q", o)
		}
	}
	return tr
}

// formatResult writes r the way scenarios spell answers, with the seq
// only when want names one.
func formatResult(r Result, want string) string {
	got := string(r.Result) + " " + string(r.Status)
	if r.Original != "" {
		got += " original=" + string(r.Original)
	}
	if strings.Contains(want, "seq=") {
		got += " seq=" + strconv.FormatUint(r.Seq, 10)
	}
	return got
}

// eventSubject names what an event is about: the account or the transfer.
func eventSubject(e *Event) string {
	switch {
	case e.Type == AccountOpened:
		return e.Data.Account.ID
	case e.Type == AccountClosedEv:
		return e.Data.AccountID
	case e.Type == PendingExpiredEv:
		return e.Data.PendingID
	case e.Data.Transfer != nil:
		s := e.Data.Transfer.ID
		if e.Type == TransferRejected {
			s += "(" + string(e.Data.Result) + ")"
		}
		return s
	}
	return "?"
}
