package ledger

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	seedFlag  = flag.Int64("ledger.seed", 0, "seed for TestRandomCommands (default: fixed seeds and one from the clock; env LEDGER_SEED)")
	stepsFlag = flag.Int("ledger.steps", 2000, "Raft entries per run of TestRandomCommands")
)

// TestRandomCommands runs seeded random command streams over a few
// accounts, checks the books and a model of the balances after every
// command, and at the end replays the log into a fresh state. A failure
// names its seed; rerun it with LEDGER_SEED=N or -ledger.seed=N.
func TestRandomCommands(t *testing.T) {
	seeds := []int64{1, 2, 3, time.Now().UnixNano()}
	if v := os.Getenv("LEDGER_SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("LEDGER_SEED=%q: %v", v, err)
		}
		seeds = []int64{s}
	}
	if *seedFlag != 0 {
		seeds = []int64{*seedFlag}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("rerun with LEDGER_SEED=%d or go test ./ledger -run TestRandomCommands -args -ledger.seed=%d", seed, seed)
				}
			})
			run := randomRun(t, seed, *stepsFlag, 37)
			run.checkReplay(t)
			if seed == seeds[0] {
				// The same commands give the same log and state, however
				// often the state is flushed to the store.
				for _, every := range []int{37, 1} {
					again := randomRun(t, seed, *stepsFlag, every)
					if again.h.st.Seq != run.h.st.Seq || again.h.st.Head != run.h.st.Head || again.h.st.StateHash() != run.h.st.StateHash() {
						t.Fatalf("flushing every %d entries: seq %d head %s, first run seq %d head %s",
							every, again.h.st.Seq, again.h.st.Head, run.h.st.Seq, run.h.st.Head)
					}
				}
			}
		})
	}
}

type acctInfo struct {
	id, cur string
	neg     bool
}

// rig generates commands and keeps a model of the balances that it
// updates from the results alone.
type rig struct {
	t     *testing.T
	r     *rand.Rand
	h     *harness
	accts []acctInfo
	other []string // ids never opened here: another shard's and an unknown one
	sent  []Transfer
	pends []Transfer
	nid   int
	step  int
	steps int
	stats map[Code]int

	model map[string]bal // by account key
	open  map[string]Transfer
}

func randomRun(t *testing.T, seed int64, steps, flushEvery int) *rig {
	t.Helper()
	g := &rig{t: t, r: rand.New(rand.NewSource(seed)), h: newHarness(t, 0, 2),
		steps: steps, stats: map[Code]int{}, model: map[string]bal{}, open: map[string]Transfer{}}
	for i, a := range []acctInfo{{"u", "USD", true}, {"u", "USD", false}, {"u", "USD", false}, {"u", "USD", false},
		{"e", "EUR", true}, {"e", "EUR", false}, {"p", "POINTS", false}} {
		a.id = idOnShard(t, a.id+strconv.Itoa(i)+"-", 0, 2)
		g.accts = append(g.accts, a)
	}
	g.other = []string{idOnShard(t, "far", 1, 2), idOnShard(t, "ghost", 0, 2)}
	var open []Account
	for _, a := range g.accts {
		open = append(open, Account{ID: a.id, Currency: a.cur, AllowNegative: a.neg})
		g.model[a.id] = bal{}
	}
	g.h.exec(&Command{Kind: CmdOpenAccounts, Accounts: open})

	for g.step = 0; g.step < steps; g.step++ {
		// The log spans an upgrade: entries of version 1 (JSON events),
		// then of version 2 (binary events).
		g.h.version = 1
		if g.step >= steps/2 {
			g.h.version = 2
		}
		at := g.h.now
		if g.r.Intn(3) == 0 {
			at += Time(g.r.Int63n(int64(6 * time.Second)))
		}
		for _, e := range g.h.begin(at) {
			g.expire(e)
		}
		g.checkModel("after Begin")
		for n := 1 + g.r.Intn(2); n > 0; n-- {
			g.command()
		}
		if g.step%flushEvery == flushEvery-1 {
			g.h.flush()
		}
	}
	g.h.flush()
	for _, c := range []Code{OK, Exists, ExistsWithDifferentFields, InsufficientFunds, LinkedEventFailed, PendingExpired,
		PendingAlreadyResolved, AmountInvalid, LimitExceeded, CurrencyMismatch, CrossShardNotSupported, WrongShard} {
		if steps >= 1000 && g.stats[c] == 0 {
			t.Errorf("the stream never produced %s: %v", c, g.stats)
		}
	}
	return g
}

func (g *rig) fatalf(format string, args ...any) {
	g.t.Helper()
	g.t.Fatalf("seq %d: %s", g.h.st.Seq, fmt.Sprintf(format, args...))
}

func (g *rig) id() string {
	g.nid++
	return "t" + strconv.Itoa(g.nid)
}

func (g *rig) acct() acctInfo { return g.accts[g.r.Intn(len(g.accts))] }

// amount is mostly small, so that overdrafts are common, and now and
// then huge, so that the overflow checks run.
func (g *rig) amount() int64 {
	switch p := g.r.Intn(1000); {
	case p < 3:
		return math.MaxInt64
	case p < 10:
		return g.r.Int63n(math.MaxInt64) + 1
	case p < 300:
		return g.r.Int63n(3000) + 1
	default:
		return g.r.Int63n(500) + 1
	}
}

// drain withdraws all that an account without allow_negative has, or one
// more, so that balances stay near zero and overdrafts stay frequent.
func (g *rig) drain() Transfer {
	a := g.accts[1+g.r.Intn(3)]
	acc := g.h.acc(a.id, a.cur)
	amt := acc.Available() + int64(g.r.Intn(2))
	if amt <= 0 {
		amt = 1
	}
	return withdraw(g.id(), a.id, amt)
}

func (g *rig) command() {
	g.t.Helper()
	switch p := g.r.Intn(1000); {
	case p < 20:
		// Open again, the same or changed: exists or exists_with_different_fields.
		a := g.acct()
		acc := Account{ID: a.id, Currency: a.cur, AllowNegative: a.neg}
		if g.r.Intn(2) == 0 {
			acc.AllowNegative = !acc.AllowNegative
		}
		seq := g.h.st.Seq
		r := g.h.exec(&Command{Kind: CmdOpenAccounts, Accounts: []Account{acc}})[0]
		want := Exists
		if acc.AllowNegative != a.neg {
			want = ExistsWithDifferentFields
		}
		if r.Result != want || g.h.st.Seq != seq {
			g.fatalf("reopen %s: %s", a.id, r.Result)
		}
	case p < 25 && g.step > g.steps*3/4:
		// Close one of the last two accounts now and then; they keep
		// their holds, which voids and expiries release.
		a := g.accts[len(g.accts)-1-g.r.Intn(2)]
		r := g.h.close(a.id)
		if r.Result != OK && r.Result != AccountClosed {
			g.fatalf("close %s: %s", a.id, r.Result)
		}
	default:
		g.batch()
	}
}

func (g *rig) item() Transfer {
	a, b := g.acct(), g.acct()
	if g.r.Intn(8) > 0 {
		// Mostly another account in the same currency.
		var peers []acctInfo
		for _, c := range g.accts {
			if c.cur == a.cur && c.id != a.id {
				peers = append(peers, c)
			}
		}
		if len(peers) > 0 {
			b = peers[g.r.Intn(len(peers))]
		}
	}
	switch p := g.r.Intn(100); {
	case p < 6:
		return g.drain()
	case p < 15:
		return deposit(g.id(), a.id, 1+g.r.Int63n(1000))
	case p < 23:
		return withdraw(g.id(), a.id, g.amount())
	case p < 45:
		return xfer(g.id(), a.id, b.id, g.amount())
	case p < 60:
		var timeout int64
		if g.r.Intn(3) > 0 {
			timeout = 1 + g.r.Int63n(40)
		}
		debit, credit := a.id, b.id
		if g.r.Intn(5) == 0 {
			debit = World
		}
		return hold(g.id(), debit, credit, g.amount(), timeout)
	case p < 78 && len(g.pends) > 0:
		// Mostly recent ones, which are likelier to be open.
		n := len(g.pends)
		pt := g.pends[g.r.Intn(n)]
		if n > 20 && g.r.Intn(3) > 0 {
			pt = g.pends[n-1-g.r.Intn(20)]
		}
		debit, credit := pt.Debit, pt.Credit
		if g.r.Intn(20) == 0 {
			debit, credit = credit, debit
		}
		if g.r.Intn(3) == 0 {
			t := void(g.id(), pt.ID, debit, credit)
			if g.r.Intn(5) == 0 {
				t.Amount = pt.Amount
			}
			return t
		}
		var amt int64
		switch g.r.Intn(4) {
		case 1:
			amt = g.r.Int63n(pt.Amount) + 1
		case 2:
			amt = pt.Amount
		case 3:
			if pt.Amount < math.MaxInt64 {
				amt = pt.Amount + 1
			}
		}
		return post(g.id(), pt.ID, debit, credit, amt)
	case p < 92 && len(g.sent) > 0:
		t := g.sent[g.r.Intn(len(g.sent))]
		if g.r.Intn(10) < 3 {
			switch g.r.Intn(4) {
			case 0:
				t.Amount++
			case 1:
				t.Reference += "x"
			case 2:
				t.Metadata = map[string]string{"k": "v"}
			case 3:
				t.Debit, t.Credit = t.Credit, t.Debit
			}
		}
		return t
	default:
		t := xfer(g.id(), a.id, b.id, g.amount())
		switch g.r.Intn(7) {
		case 0:
			t.ID = "@" + t.ID
		case 1:
			t.Amount = -t.Amount
		case 2:
			t.Debit = g.other[g.r.Intn(2)]
		case 3:
			t.Credit = g.other[g.r.Intn(2)]
		case 4:
			t.Reference = strings.Repeat("r", MaxReferenceLen+1)
		case 5:
			t.TimeoutSeconds = 5
		case 6:
			t.Debit = t.Credit
		}
		return t
	}
}

func (g *rig) batch() {
	g.t.Helper()
	ts := make([]Transfer, 1+g.r.Intn(4))
	for i := range ts {
		ts[i] = g.item()
		ts[i].Linked = g.r.Intn(4) == 0
	}
	if g.r.Intn(5) > 0 {
		ts[len(ts)-1].Linked = false
	}

	// What a lone retry must answer, from the record alone.
	var rec Record
	var known bool
	if len(ts) == 1 && !ts[0].Linked {
		rec, known = g.h.st.Record(ts[0].ID)
	}
	hash, seq := g.h.st.StateHash(), g.h.st.Seq

	res, evs := g.h.transfers(ts...)
	for _, r := range res {
		g.stats[r.Result]++
	}
	if known {
		want := Result{ID: rec.Transfer.ID, Result: ExistsWithDifferentFields, Status: StatusRejected}
		if rec.Transfer.Same(&ts[0]) {
			want = Result{ID: rec.Transfer.ID, Result: Exists, Status: rec.Outcome(), Original: rec.Result, Seq: rec.Seq}
		}
		if res[0] != want || len(evs) != 0 || g.h.st.Seq != seq || g.h.st.StateHash() != hash {
			g.fatalf("retry of %+v: %+v, want %+v; %d events", ts[0], res[0], want, len(evs))
		}
	}
	g.checkChains(ts, res)
	for i, r := range res {
		if r.Result == OK {
			g.applyOK(&ts[i])
		}
		if CheckTransferID(&ts[i]) == nil && r.Result != Exists && r.Result != ExistsWithDifferentFields && r.Result != WrongShard {
			g.sent = append(g.sent, ts[i])
			if r.Result == OK && ts[i].Pending {
				g.pends = append(g.pends, ts[i])
			}
		}
	}
	g.checkModel(fmt.Sprintf("batch %+v -> %s", ts, codes(res)))
}

// checkChains checks that every chain in the batch took effect whole or
// not at all.
func (g *rig) checkChains(ts []Transfer, res []Result) {
	g.t.Helper()
	for i := 0; i < len(ts); {
		j := i
		for j < len(ts)-1 && ts[j].Linked {
			j++
		}
		if j > i || ts[i].Linked {
			failed, applied := false, false
			for k := i; k <= j; k++ {
				r := res[k]
				if r.Result == OK {
					applied = true
				} else if r.Result != Exists || r.Original != OK {
					failed = true
				}
			}
			if failed && applied {
				g.fatalf("chain %+v half applied: %s", ts[i:j+1], codes(res[i:j+1]))
			}
		}
		i = j + 1
	}
}

func (g *rig) key(id, cur string) string {
	k := AccountKey(id, cur)
	if _, ok := g.model[k]; !ok {
		if id != World {
			g.fatalf("ok for a transfer with unknown account %s", id)
		}
		g.model[k] = bal{}
	}
	return k
}

func (g *rig) currency(t *Transfer) string {
	id := t.Debit
	if id == World {
		id = t.Credit
	}
	for _, a := range g.accts {
		if a.id == id {
			return a.cur
		}
	}
	g.fatalf("ok for a transfer with unknown account %s", id)
	return ""
}

// applyOK moves the model's balances for a transfer answered ok.
func (g *rig) applyOK(t *Transfer) {
	g.t.Helper()
	cur := g.currency(t)
	shards := g.h.st.Shards
	if t.Resolves() == "" && t.Debit != World && t.Credit != World && ShardOf(t.Credit, shards) != ShardOf(t.Debit, shards) {
		// A saga: the debit is held against the peer shard's clearing account.
		dk, ck := g.key(t.Debit, cur), AccountKey(ClearingID(ShardOf(t.Credit, shards)), cur)
		d, c := g.model[dk], g.model[ck]
		d.dpend += t.Amount
		c.cpend += t.Amount
		g.model[dk], g.model[ck] = d, c
		return
	}
	dk, ck := g.key(t.Debit, cur), g.key(t.Credit, cur)
	d, c := g.model[dk], g.model[ck]
	switch {
	case t.Resolves() != "":
		p, ok := g.open[t.Resolves()]
		if !ok {
			g.fatalf("%s resolved %s, which is not open", t.ID, t.Resolves())
		}
		delete(g.open, p.ID)
		d.dpend -= p.Amount
		c.cpend -= p.Amount
		if t.PostPendingID != "" {
			amt := t.Amount
			if amt == 0 {
				amt = p.Amount
			}
			d.dp += amt
			c.cp += amt
		}
	case t.Pending:
		d.dpend += t.Amount
		c.cpend += t.Amount
		g.open[t.ID] = *t
	default:
		d.dp += t.Amount
		c.cp += t.Amount
	}
	g.model[dk], g.model[ck] = d, c
}

func (g *rig) expire(e Event) {
	g.t.Helper()
	if e.Type != PendingExpiredEv {
		g.fatalf("Begin emitted %s", e.Type)
	}
	p, ok := g.open[e.Data.PendingID]
	if !ok {
		g.fatalf("%s expired, but it is not open", e.Data.PendingID)
	}
	if p.TimeoutSeconds == 0 {
		g.fatalf("%s has no timeout but expired", p.ID)
	}
	delete(g.open, p.ID)
	cur := g.currency(&p)
	dk, ck := g.key(p.Debit, cur), g.key(p.Credit, cur)
	d, c := g.model[dk], g.model[ck]
	d.dpend -= p.Amount
	c.cpend -= p.Amount
	g.model[dk], g.model[ck] = d, c
}

func (g *rig) checkModel(what string) {
	g.t.Helper()
	if len(g.model) != len(g.h.st.Accounts) {
		g.fatalf("%s: the model has %d accounts, the state %d", what, len(g.model), len(g.h.st.Accounts))
	}
	for k, want := range g.model {
		a := g.h.st.Accounts[k]
		if a == nil || balOf(*a) != want {
			g.fatalf("%s: %s is %+v, the model says %v", what, k, a, want)
		}
	}
	if n := g.h.st.Pending() - len(g.h.st.OpenSagas()); len(g.open) != n {
		g.fatalf("%s: %d open pending transfers, the model has %d", what, n, len(g.open))
	}
}

// checkReplay folds the flushed log into fresh states, directly and after
// a JSON round trip as the fsm stores it, and compares them with the live
// state: seq, head, state hash, accounts and every transfer record.
func (g *rig) checkReplay(t *testing.T) {
	t.Helper()
	st := g.h.st
	if len(g.h.events) == 0 || g.h.events[len(g.h.events)-1].Seq != st.Seq {
		t.Fatalf("flushed %d events, state at seq %d", len(g.h.events), st.Seq)
	}
	fresh := NewState(st.Shard, st.Shards, nil)
	viaJSON := NewState(st.Shard, st.Shards, nil)
	stored := NewState(st.Shard, st.Shards, nil)
	var buf EventBuf
	for i, e := range g.h.events {
		// As verify folds the log: from the stored bytes, the hash checked
		// against them.
		if err := buf.Decode(e.Raw); err != nil {
			t.Fatalf("event %d: %v", e.Seq, err)
		}
		if !StoredHashOK(e.Raw, &buf.Event) {
			t.Fatalf("event %d: stored hash does not check", e.Seq)
		}
		if err := stored.ReplayHashed(&buf.Event); err != nil {
			t.Fatalf("replay from the stored form: %v", err)
		}
		if e.Seq != uint64(i)+1 {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
		if err := fresh.Replay(e); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		var back Event
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if err := viaJSON.Replay(back); err != nil {
			t.Fatalf("replay from JSON: %v", err)
		}
	}
	for _, r := range []*State{fresh, viaJSON, stored} {
		if r.Seq != st.Seq || r.Head != st.Head || r.StateHash() != st.StateHash() {
			t.Fatalf("replay ends at seq %d head %s, live state at seq %d head %s", r.Seq, r.Head, st.Seq, st.Head)
		}
		if err := checkBooks(r); err != nil {
			t.Fatalf("replayed state: %v", err)
		}
	}
	if !reflect.DeepEqual(fresh.Accounts, st.Accounts) || !reflect.DeepEqual(stored.Accounts, st.Accounts) {
		t.Fatal("replayed accounts differ")
	}
	for id, want := range g.h.store {
		got, ok := fresh.Record(id)
		if !ok || !reflect.DeepEqual(got, *want) {
			t.Fatalf("record %s: replayed %+v, stored %+v", id, got, *want)
		}
		if got, ok := stored.Record(id); !ok || !reflect.DeepEqual(normalRecord(got), normalRecord(*want)) {
			t.Fatalf("record %s: replayed from the stored form %+v, stored %+v", id, got, *want)
		}
	}
	// Every decided transfer id is in the store, so replay rebuilt all
	// the idempotency records, and nothing more.
	if n := len(fresh.records) + len(fresh.pending); n != len(g.h.store) {
		t.Fatalf("replay rebuilt %d records, the store holds %d", n, len(g.h.store))
	}
}

// normalRecord makes empty and nil metadata compare equal: the stored
// forms do not tell them apart.
func normalRecord(r Record) Record {
	if len(r.Transfer.Metadata) == 0 {
		r.Transfer.Metadata = nil
	}
	return r
}
