package check

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"

	"tally/test/jepsen/history"
)

// synth builds a small run by hand: a history and the shard logs a
// correct cluster would hold for it, with real hash chains, so that each
// test can plant one anomaly and see its checker flag it.
type synth struct {
	t      *testing.T
	shards int
	logs   [][]Event
	bals   []map[string]*history.AccountBalance // per shard, by account key
	open   []map[string]int64                   // per shard: open saga holds by id
	ops    []history.Op
	clock  int64
	index  int
	// stream is what the stream follower received; nil means a correct
	// stream of the logs (streamOf).
	stream []history.StreamEntry
}

func newSynth(t *testing.T, shards int) *synth {
	s := &synth{t: t, shards: shards, logs: make([][]Event, shards)}
	for range shards {
		s.bals = append(s.bals, map[string]*history.AccountBalance{})
		s.open = append(s.open, map[string]int64{})
	}
	return s
}

func (s *synth) tick() int64 { s.clock += 10; return s.clock }

// wire is an event as the API encodes it.
type wire struct {
	Shard     int                      `json:"shard"`
	Seq       uint64                   `json:"seq"`
	RaftIndex uint64                   `json:"raft_index"`
	Time      string                   `json:"time"`
	Type      string                   `json:"type"`
	Data      EventData                `json:"data"`
	Balances  []history.AccountBalance `json:"balances"`
	PrevHash  string                   `json:"prev_hash"`
	Hash      string                   `json:"hash"`
}

func (s *synth) bal(shard int, id string) *history.AccountBalance {
	k := accountKey(id, "USD")
	b := s.bals[shard][k]
	if b == nil {
		b = &history.AccountBalance{Account: id, Currency: "USD"}
		s.bals[shard][k] = b
	}
	return b
}

// emit appends an event to shard's log, reporting the balances of the
// accounts named, and returns its seq.
func (s *synth) emit(shard int, typ string, d EventData, touched ...string) uint64 {
	log := s.logs[shard]
	prev := zeroHash
	if len(log) > 0 {
		prev = log[len(log)-1].Hash
	}
	w := wire{Shard: shard, Seq: uint64(len(log) + 1), RaftIndex: uint64(len(log) + 3), Time: "2026-01-01T00:00:00Z",
		Type: typ, Data: d, PrevHash: zeroHash, Hash: zeroHash, Balances: []history.AccountBalance{}}
	for _, id := range touched {
		w.Balances = append(w.Balances, *s.bal(shard, id))
	}
	canon, err := json.Marshal(w)
	if err != nil {
		s.t.Fatal(err)
	}
	p, _ := hex.DecodeString(prev)
	h := sha256.New()
	h.Write(p)
	h.Write(canon)
	w.PrevHash, w.Hash = prev, hex.EncodeToString(h.Sum(nil))
	raw, _ := json.Marshal(w)
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		s.t.Fatal(err)
	}
	e.Raw = raw
	s.logs[shard] = append(log, e)
	return e.Seq
}

func (s *synth) op(proc int, inv history.Op, done func(c *history.Op)) *history.Op {
	s.index++
	inv.Index, inv.Process, inv.Type, inv.Time = s.index, proc, history.Invoke, s.tick()
	s.ops = append(s.ops, inv)
	c := inv
	c.Time = s.tick()
	done(&c)
	s.ops = append(s.ops, c)
	return &s.ops[len(s.ops)-1]
}

func (s *synth) openAccount(shard int, id string) {
	seq := s.emit(shard, "AccountOpened", EventData{Account: &AccountData{ID: id, Currency: "USD"}}, id)
	s.op(0, history.Op{F: history.FOpen, Account: id, Currency: "USD", Shard: shard}, func(c *history.Op) {
		c.Type, c.Result, c.Seq = history.OK, "ok", seq
	})
}

// post applies a same-shard transfer to the balances and logs it.
func (s *synth) post(shard int, t history.Transfer) uint64 {
	s.bal(shard, t.Debit).DebitsPosted += t.Amount
	s.bal(shard, t.Credit).CreditsPosted += t.Amount
	td := TransferData{ID: t.ID, Debit: t.Debit, Credit: t.Credit, Amount: t.Amount}
	return s.emit(shard, "TransferPosted", EventData{Transfer: &td}, t.Debit, t.Credit)
}

func (s *synth) reject(shard int, t history.Transfer, code string) uint64 {
	td := TransferData{ID: t.ID, Debit: t.Debit, Credit: t.Credit, Amount: t.Amount}
	return s.emit(shard, "TransferRejected", EventData{Transfer: &td, Result: code})
}

func (s *synth) deposit(shard int, id string, amt int64) {
	t := history.Transfer{ID: "dep-" + id, Debit: world, Credit: id, Amount: amt}
	seq := s.post(shard, t)
	s.op(0, history.Op{F: history.FDeposit, Transfer: &t, Shard: shard}, func(c *history.Op) {
		c.Type, c.Result, c.Status, c.Seq = history.OK, "ok", "posted", seq
	})
}

// transfer sends a same-shard transfer that the cluster decides by the
// balances (posted or insufficient_funds), answered truthfully.
func (s *synth) transfer(proc, shard int, id, from, to string, amt int64) *history.Op {
	t := history.Transfer{ID: id, Debit: from, Credit: to, Amount: amt}
	b := s.bal(shard, from)
	if b.CreditsPosted-b.DebitsPosted-b.DebitsPending >= amt {
		seq := s.post(shard, t)
		return s.op(proc, history.Op{F: history.FTransfer, Transfer: &t, Shard: shard}, func(c *history.Op) {
			c.Type, c.Result, c.Status, c.Seq = history.OK, "ok", "posted", seq
		})
	}
	seq := s.reject(shard, t, "insufficient_funds")
	return s.op(proc, history.Op{F: history.FTransfer, Transfer: &t, Shard: shard}, func(c *history.Op) {
		c.Type, c.Result, c.Status, c.Seq = history.Fail, "insufficient_funds", "rejected", seq
	})
}

func (s *synth) readNow(shard int, id string) *history.Balance {
	b := s.bal(shard, id)
	return &history.Balance{Currency: "USD", DebitsPosted: b.DebitsPosted, CreditsPosted: b.CreditsPosted,
		DebitsPending: b.DebitsPending, CreditsPending: b.CreditsPending, Balance: b.CreditsPosted - b.DebitsPosted,
		Available: b.CreditsPosted - b.DebitsPosted - b.DebitsPending}
}

// read records a read that answers rd (the current balance when nil).
func (s *synth) read(proc, shard int, id string, rd *history.Balance) *history.Op {
	if rd == nil {
		rd = s.readNow(shard, id)
	}
	seq := uint64(len(s.logs[shard]))
	return s.op(proc, history.Op{F: history.FRead, Account: id, Shard: shard}, func(c *history.Op) {
		c.Type, c.Seq, c.Read = history.OK, seq, rd
	})
}

// saga runs a cross-shard transfer to completion (or abort) in the logs.
func (s *synth) saga(proc int, id, from string, src int, to string, dst int, amt int64, complete bool) *history.Op {
	t := history.Transfer{ID: id, Debit: from, Credit: to, Amount: amt}
	td := TransferData{ID: id, Debit: from, Credit: to, Amount: amt}
	dp, sp := dst, src
	clD, clS := fmt.Sprintf("@clearing:%d", dst), fmt.Sprintf("@clearing:%d", src)
	s.bal(src, from).DebitsPending += amt
	s.bal(src, clD).CreditsPending += amt
	s.emit(src, "SagaDebitHeld", EventData{Transfer: &td, Currency: "USD", Peer: &dp}, from, clD)
	if complete {
		s.bal(dst, to).CreditsPosted += amt
		s.bal(dst, clS).DebitsPosted += amt
		s.emit(dst, "SagaCredited", EventData{Transfer: &td, Currency: "USD", Peer: &sp}, to, clS)
		s.bal(src, from).DebitsPending -= amt
		s.bal(src, from).DebitsPosted += amt
		s.bal(src, clD).CreditsPending -= amt
		s.bal(src, clD).CreditsPosted += amt
		seq := s.emit(src, "SagaCompleted", EventData{PendingID: id, Amount: amt, Currency: "USD", Peer: &dp}, from, clD)
		return s.op(proc, history.Op{F: history.FCross, Transfer: &t, Shard: src, Dest: dst}, func(c *history.Op) {
			c.Type, c.Result, c.Status, c.Seq = history.OK, "ok", "posted", seq
		})
	}
	s.emit(dst, "SagaCreditRejected", EventData{Transfer: &td, Currency: "USD", Peer: &sp, Result: "account_closed"})
	s.bal(src, from).DebitsPending -= amt
	s.bal(src, clD).CreditsPending -= amt
	seq := s.emit(src, "SagaAborted", EventData{PendingID: id, Amount: amt, Currency: "USD", Peer: &dp, Result: "account_closed"}, from, clD)
	return s.op(proc, history.Op{F: history.FCross, Transfer: &t, Shard: src, Dest: dst}, func(c *history.Op) {
		c.Type, c.Result, c.Status, c.Seq = history.Fail, "account_closed", "rejected", seq
	})
}

// final exports three identical replicas per shard, with the states the
// reference model computes.
func (s *synth) final() *Final {
	f := &Final{Shards: s.shards, Quiesced: true}
	for sh := range s.shards {
		m := NewModel(sh)
		for i := range s.logs[sh] {
			m.Apply(&s.logs[sh][i])
		}
		for _, n := range []string{"n1", "n2", "n3"} {
			f.Replicas = append(f.Replicas, Replica{Node: n, Shard: sh, Events: s.logs[sh],
				State:  &StateView{Shard: sh, Node: n, AppliedSeq: m.Seq, HeadHash: m.Head, StateHash: m.StateHash()},
				Verify: &VerifyView{OK: true}})
		}
	}
	return f
}

func (s *synth) check() map[string]Result {
	s.t.Helper()
	a, err := Analyze(s.ops, s.final())
	if err != nil {
		s.t.Fatal(err)
	}
	st := s.stream
	if st == nil {
		st = s.streamOf()
	}
	a.Stream = history.StreamEntries(st)
	out := map[string]Result{}
	for _, r := range All(a, Options{HTMLDir: s.t.TempDir()}) {
		out[r.Name] = r
	}
	return out
}

// baseline is a small correct run: two shards, three accounts each,
// deposits, transfers that post and that overdraw, reads, replays, an
// info write that applied and one that did not, and a completed and an
// aborted saga.
func baseline(t *testing.T) *synth {
	s := newSynth(t, 2)
	for _, sh := range []int{0, 1} {
		for i := range 3 {
			id := fmt.Sprintf("a%d{s%d}", i, sh)
			s.openAccount(sh, id)
			s.deposit(sh, id, 100)
		}
	}
	first := s.transfer(1, 0, "t1", "a0{s0}", "a1{s0}", 60)
	s.read(1, 0, "a0{s0}", nil)
	s.transfer(2, 0, "t2", "a0{s0}", "a2{s0}", 50) // overdraws: rejected
	s.read(2, 0, "a0{s0}", nil)
	// A transfer whose first attempt timed out; the retry was answered
	// exists, with the original rejection.
	t6 := history.Transfer{ID: "t6", Debit: "a0{s0}", Credit: "a1{s0}", Amount: 1000}
	seq6 := s.reject(0, t6, "insufficient_funds")
	s.op(2, history.Op{F: history.FTransfer, Transfer: &t6, Shard: 0}, func(c *history.Op) {
		c.Type, c.Result, c.Status, c.Original, c.Seq, c.Attempts = history.Fail, "exists", "rejected", "insufficient_funds", seq6, 2
	})
	s.transfer(1, 1, "t3", "a1{s1}", "a0{s1}", 100)
	s.read(1, 1, "a0{s1}", nil)
	// Replays of t1: same body, then a changed body.
	t1 := *first.Transfer
	s.op(3, history.Op{F: history.FReplay, Transfer: &t1, Shard: 0, Of: first.Index}, func(c *history.Op) {
		c.Type, c.Result, c.Status, c.Original, c.Seq = history.OK, "exists", "posted", "ok", first.Seq
	})
	t1c := t1
	t1c.Amount++
	s.op(3, history.Op{F: history.FReplayChanged, Transfer: &t1c, Shard: 0, Of: first.Index}, func(c *history.Op) {
		c.Type, c.Result, c.Status = history.Fail, "exists_with_different_fields", "rejected"
	})
	// An info write that applied, and one that never did.
	t4 := history.Transfer{ID: "t4", Debit: "a1{s0}", Credit: "a2{s0}", Amount: 10}
	s.post(0, t4)
	s.op(2, history.Op{F: history.FTransfer, Transfer: &t4, Shard: 0}, func(c *history.Op) {
		c.Type, c.Error = history.Info, "504 outcome_unknown"
	})
	t5 := history.Transfer{ID: "t5", Debit: "a1{s0}", Credit: "a2{s0}", Amount: 10}
	s.op(2, history.Op{F: history.FTransfer, Transfer: &t5, Shard: 0}, func(c *history.Op) {
		c.Type, c.Error = history.Info, "timeout"
	})
	s.read(1, 0, "a2{s0}", nil)
	s.saga(1, "x1", "a2{s0}", 0, "a2{s1}", 1, 30, true)
	s.saga(2, "x2", "a0{s1}", 1, "a1{s0}", 0, 20, false)
	s.read(1, 0, "a2{s0}", nil)
	s.read(1, 1, "a0{s1}", nil)
	// A shard reader's page of shard 1 from the start.
	var refs []history.EventRef
	for _, e := range s.logs[1] {
		refs = append(refs, history.EventRef{Seq: e.Seq, Type: e.Type, PrevHash: e.PrevHash, Hash: e.Hash, Balances: e.Balances})
	}
	s.op(4, history.Op{F: history.FShardRead, Shard: 1}, func(c *history.Op) { c.Type, c.Events = history.OK, refs })
	// The final reads of every account.
	for _, sh := range []int{0, 1} {
		for i := range 3 {
			s.read(FinalProcess, sh, fmt.Sprintf("a%d{s%d}", i, sh), nil)
		}
	}
	return s
}

func TestBaselineIsValid(t *testing.T) {
	s := baseline(t)
	for name, r := range s.check() {
		if r.Verdict != Valid && !(name == "C10" && r.Verdict == NotRun) {
			t.Errorf("%s %s: %s %v", name, r.Title, r.Verdict, r.Problems)
		}
	}
}

func TestHashMatchesRaw(t *testing.T) {
	s := baseline(t)
	for _, log := range s.logs {
		for _, e := range log {
			if got := e.ComputeHash(); got != e.Hash {
				t.Fatalf("seq %d: computed %s, want %s", e.Seq, got, e.Hash)
			}
		}
	}
}

// expectFlag checks that checker name (and only those listed) flags.
func expectFlag(t *testing.T, rs map[string]Result, names ...string) {
	t.Helper()
	for _, n := range names {
		if rs[n].Verdict != Invalid {
			t.Errorf("%s did not flag the anomaly: %s %s", n, rs[n].Verdict, rs[n].Summary)
		} else {
			t.Logf("%s: %v", n, rs[n].Problems[0])
		}
	}
}

func TestLostAck(t *testing.T) {
	s := baseline(t)
	// The client was told posted, but no replica holds the transfer.
	tr := history.Transfer{ID: "lost", Debit: "a0{s0}", Credit: "a1{s0}", Amount: 1}
	s.op(1, history.Op{F: history.FTransfer, Transfer: &tr, Shard: 0}, func(c *history.Op) {
		c.Type, c.Result, c.Status, c.Seq = history.OK, "ok", "posted", 99
	})
	expectFlag(t, s.check(), "C3")
}

func TestDuplicateApply(t *testing.T) {
	s := baseline(t)
	tr := history.Transfer{ID: "dup", Debit: "a1{s0}", Credit: "a0{s0}", Amount: 5}
	seq := s.post(0, tr)
	s.op(1, history.Op{F: history.FTransfer, Transfer: &tr, Shard: 0}, func(c *history.Op) {
		c.Type, c.Result, c.Status, c.Seq = history.OK, "ok", "posted", seq
	})
	// A retry applied it again and answered ok instead of exists.
	s.post(0, tr)
	expectFlag(t, s.check(), "C3", "C4")
}

func TestStaleRead(t *testing.T) {
	s := baseline(t)
	before := s.readNow(0, "a1{s0}")
	s.transfer(1, 0, "w", "a1{s0}", "a0{s0}", 7)
	// A later read, invoked after the write's ack, still shows the old
	// balance: a deposed leader answered it.
	s.read(2, 0, "a1{s0}", before)
	expectFlag(t, s.check(), "C6")
}

func TestTornSaga(t *testing.T) {
	s := baseline(t)
	op := s.saga(1, "torn", "a1{s1}", 1, "a1{s0}", 0, 5, true)
	// The source aborted although the destination credited: money was
	// created on shard 0 and the hold released on shard 1.
	log := s.logs[1]
	last := log[len(log)-1]
	s.logs[1] = log[:len(log)-1]
	b := s.bal(1, "a1{s1}")
	b.DebitsPosted -= 5
	cl := s.bal(1, "@clearing:0")
	cl.CreditsPosted -= 5
	dp := 0
	s.emit(1, "SagaAborted", EventData{PendingID: "torn", Amount: 5, Currency: "USD", Peer: &dp, Result: "timeout"}, "a1{s1}", "@clearing:0")
	_ = last
	op.Type, op.Result, op.Status = history.Fail, "timeout", "rejected"
	expectFlag(t, s.check(), "C7")
}

func TestNegativeBalance(t *testing.T) {
	s := baseline(t)
	// The cluster posted a transfer the debit account could not cover.
	tr := history.Transfer{ID: "neg", Debit: "a1{s1}", Credit: "a2{s1}", Amount: 10_000}
	seq := s.post(1, tr)
	s.op(1, history.Op{F: history.FTransfer, Transfer: &tr, Shard: 1}, func(c *history.Op) {
		c.Type, c.Result, c.Status, c.Seq = history.OK, "ok", "posted", seq
	})
	s.read(1, 1, "a1{s1}", nil)
	expectFlag(t, s.check(), "C2")
}

func TestWrongTotal(t *testing.T) {
	s := baseline(t)
	// A final read reports one account 100 richer than the log says.
	for i := len(s.ops) - 1; i >= 0; i-- {
		op := &s.ops[i]
		if op.Process == FinalProcess && op.Type == history.OK && op.Read != nil {
			r := *op.Read
			r.CreditsPosted += 100
			r.Balance += 100
			r.Available += 100
			op.Read = &r
			break
		}
	}
	expectFlag(t, s.check(), "C1")
}

func TestPhantomFailedWrite(t *testing.T) {
	s := baseline(t)
	// The client was told 503 unavailable (not applied), yet it applied.
	tr := history.Transfer{ID: "phantom", Debit: "a2{s1}", Credit: "a1{s1}", Amount: 3}
	s.post(1, tr)
	s.op(1, history.Op{F: history.FTransfer, Transfer: &tr, Shard: 1}, func(c *history.Op) {
		c.Type, c.Error, c.HTTP = history.Fail, "503 unavailable", 503
	})
	expectFlag(t, s.check(), "C3")
}

func TestReplicaDivergence(t *testing.T) {
	s := baseline(t)
	f := s.final()
	// One replica lost its last event.
	rep := &f.Replicas[1]
	rep.Events = rep.Events[:len(rep.Events)-1]
	a, err := Analyze(s.ops, f)
	if err != nil {
		t.Fatal(err)
	}
	if r := Convergence(a); r.Verdict != Invalid {
		t.Fatalf("C5: %s", r.Verdict)
	}
}

func TestNonMonotonicRead(t *testing.T) {
	s := baseline(t)
	s.read(5, 0, "a0{s0}", nil)
	s.transfer(6, 0, "m1", "a2{s0}", "a0{s0}", 1)
	later := s.read(5, 0, "a0{s0}", nil)
	// Rewrite the later read as if served at an older seq.
	later.Seq = 1
	expectFlag(t, s.check(), "C8")
}

func TestReadOfOpenedAccountNotFound(t *testing.T) {
	s := baseline(t)
	s.op(1, history.Op{F: history.FNodeRead, Account: "a0{s1}", Shard: 1, Node: "n2"}, func(c *history.Op) {
		c.Type, c.Result = history.OK, "account_not_found"
	})
	expectFlag(t, s.check(), "C6")
}

func TestTamperedHash(t *testing.T) {
	s := baseline(t)
	e := &s.logs[0][2]
	e.Raw = []byte(string(e.Raw[:len(e.Raw)-1]) + `,"x":1}`)
	expectFlag(t, s.check(), "C4")
}
