package ledger

import (
	"math/big"
	"testing"
)

// sagaPair is two shards of four and an account on each.
type sagaPair struct {
	s, d   *harness
	a, b   string // a on s, b on d
	si, di int
}

func newSagaPair(t *testing.T) *sagaPair {
	t.Helper()
	p := &sagaPair{si: 1, di: 2}
	p.s, p.d = newHarness(t, p.si, 4), newHarness(t, p.di, 4)
	p.a, p.b = idOnShard(t, "a", p.si, 4), idOnShard(t, "b", p.di, 4)
	p.s.open(p.a, "USD", false)
	p.d.open(p.b, "USD", false)
	p.s.must(deposit("fund", p.a, 100))
	return p
}

func (p *sagaPair) step(h *harness, k Kind, s SagaStep) Result {
	h.t.Helper()
	return h.exec(&Command{Kind: k, Saga: []SagaStep{s}})[0]
}

func (p *sagaPair) credit(t Transfer) Result {
	return p.step(p.d, CmdSagaCredit, SagaStep{Source: p.si, Transfer: t, Currency: "USD"})
}

func (p *sagaPair) fence(t Transfer) Result {
	return p.step(p.d, CmdSagaFence, SagaStep{Source: p.si, Transfer: t, Currency: "USD"})
}

func (p *sagaPair) resolve(id string, outcome Code) Result {
	return p.step(p.s, CmdSagaResolve, SagaStep{Transfer: Transfer{ID: id}, Outcome: outcome})
}

// clearingNet is the sum of both clearing accounts' balances.
func (p *sagaPair) clearingNet() int64 {
	var n int64
	if a := p.s.st.account(ClearingID(p.di), "USD"); a != nil {
		n += a.Balance()
	}
	if a := p.d.st.account(ClearingID(p.si), "USD"); a != nil {
		n += a.Balance()
	}
	return n
}

func TestSagaCompletes(t *testing.T) {
	p := newSagaPair(t)
	tr := xfer("x1", p.a, p.b, 30)
	if r := p.s.do(tr); r.Result != OK || r.Status != StatusInFlight {
		t.Fatalf("hold: %+v", r)
	}
	p.s.wantBal(p.a, "USD", bal{0, 100, 30, 0})
	p.s.wantBal(ClearingID(p.di), "USD", bal{0, 0, 0, 30})
	if got := len(p.s.st.OpenSagas()); got != 1 {
		t.Fatalf("%d open sagas", got)
	}
	// Funds are held: a second transfer cannot spend them.
	if r := p.s.do(xfer("x2", p.a, p.b, 71)); r.Result != InsufficientFunds {
		t.Fatalf("spend held funds: %+v", r)
	}
	if r := p.credit(tr); r.Result != OK || r.Status != StatusPosted {
		t.Fatalf("credit: %+v", r)
	}
	p.d.wantBal(p.b, "USD", bal{0, 30, 0, 0})
	p.d.wantBal(ClearingID(p.si), "USD", bal{30, 0, 0, 0})
	if n := p.clearingNet(); n != -30 {
		t.Fatalf("clearing nets to %d while the saga is in flight, want -30", n)
	}
	// A repeated credit answers the stored outcome and moves nothing.
	seq := p.d.st.Seq
	if r := p.credit(tr); r.Result != OK || r.Status != StatusPosted || p.d.st.Seq != seq {
		t.Fatalf("repeated credit: %+v (seq %d -> %d)", r, seq, p.d.st.Seq)
	}
	// A fence after the credit cannot undo it.
	if r := p.fence(tr); r.Result != OK {
		t.Fatalf("fence after credit: %+v", r)
	}
	if r := p.resolve("x1", OK); r.Result != OK || r.Status != StatusPosted {
		t.Fatalf("complete: %+v", r)
	}
	p.s.wantBal(p.a, "USD", bal{30, 100, 0, 0})
	p.s.wantBal(ClearingID(p.di), "USD", bal{0, 30, 0, 0})
	if n := p.clearingNet(); n != 0 {
		t.Fatalf("clearing nets to %d after completion", n)
	}
	// Resolving again, either way, is a no-op with the stored outcome.
	seq = p.s.st.Seq
	if r := p.resolve("x1", CreditAccountNotFound); r.Result != OK || r.Status != StatusPosted || p.s.st.Seq != seq {
		t.Fatalf("abort after completion: %+v", r)
	}
	// A retry of the client's request answers exists with the final status.
	if r := p.s.do(tr); r.Result != Exists || r.Status != StatusPosted {
		t.Fatalf("retry: %+v", r)
	}
	if len(p.s.st.OpenSagas()) != 0 {
		t.Fatal("saga still open")
	}
	replayBoth(t, p)
}

func TestSagaAbortsOnRejectedCredit(t *testing.T) {
	p := newSagaPair(t)
	ghost := idOnShard(t, "ghost", p.di, 4)
	tr := xfer("x1", p.a, ghost, 40)
	p.s.do(tr)
	r := p.credit(tr)
	if r.Result != CreditAccountNotFound || r.Status != StatusRejected {
		t.Fatalf("credit to a missing account: %+v", r)
	}
	if r := p.resolve("x1", r.Result); r.Result != CreditAccountNotFound || r.Status != StatusRejected {
		t.Fatalf("abort: %+v", r)
	}
	p.s.wantBal(p.a, "USD", bal{0, 100, 0, 0})
	if n := p.clearingNet(); n != 0 {
		t.Fatalf("clearing nets to %d", n)
	}
	// A rejected id stays rejected, with its reason.
	if r := p.s.do(tr); r.Result != Exists || r.Status != StatusRejected || r.Original != CreditAccountNotFound {
		t.Fatalf("retry: %+v", r)
	}
	replayBoth(t, p)
}

func TestSagaFenceWinsOverLateCredit(t *testing.T) {
	p := newSagaPair(t)
	tr := xfer("x1", p.a, p.b, 40)
	p.s.do(tr)
	if r := p.fence(tr); r.Result != SagaAbortedCode {
		t.Fatalf("fence: %+v", r)
	}
	// A credit that arrives after the fence (say, a retry from an old
	// leader) is refused: the saga cannot both abort and credit.
	if r := p.credit(tr); r.Result != SagaAbortedCode {
		t.Fatalf("credit after fence: %+v", r)
	}
	p.d.wantBal(p.b, "USD", bal{0, 0, 0, 0})
	p.resolve("x1", SagaAbortedCode)
	p.s.wantBal(p.a, "USD", bal{0, 100, 0, 0})
	replayBoth(t, p)
}

func TestSagaDestinationChecks(t *testing.T) {
	p := newSagaPair(t)
	eur := idOnShard(t, "eur", p.di, 4)
	p.d.open(eur, "EUR", false)
	closed := idOnShard(t, "closed", p.di, 4)
	p.d.open(closed, "USD", false)
	p.d.close(closed)
	for _, tc := range []struct {
		step SagaStep
		code Code
	}{
		{SagaStep{Source: p.si, Transfer: xfer("c1", p.a, eur, 1), Currency: "USD"}, CurrencyMismatch},
		{SagaStep{Source: p.si, Transfer: xfer("c2", p.a, closed, 1), Currency: "USD"}, AccountClosed},
		{SagaStep{Source: p.di, Transfer: xfer("c3", p.a, p.b, 1), Currency: "USD"}, InvalidRequest},
		{SagaStep{Source: 9, Transfer: xfer("c4", p.a, p.b, 1), Currency: "USD"}, InvalidRequest},
		{SagaStep{Source: p.si, Transfer: xfer("c5", p.a, p.a, 1), Currency: "USD"}, WrongShard},
		{SagaStep{Source: p.si, Transfer: xfer("c6", p.a, p.b, 0), Currency: "USD"}, InvalidRequest},
	} {
		if r := p.step(p.d, CmdSagaCredit, tc.step); r.Result != tc.code {
			t.Errorf("%+v: %s, want %s", tc.step, r.Result, tc.code)
		}
	}
	// Resolving something that is not an open saga changes nothing.
	seq := p.s.st.Seq
	if r := p.resolve("nope", OK); r.Result != InvalidRequest || p.s.st.Seq != seq {
		t.Fatalf("resolve of no saga: %+v", r)
	}
}

func TestSagaLimits(t *testing.T) {
	p := newSagaPair(t)
	// Pending and linked transfers do not cross shards.
	hold := xfer("h", p.a, p.b, 1)
	hold.Pending = true
	if r := p.s.do(hold); r.Result != CrossShardNotSupported {
		t.Fatalf("pending across shards: %+v", r)
	}
	local := idOnShard(t, "loc", p.si, 4)
	p.s.open(local, "USD", false)
	l1 := xfer("l1", p.a, local, 1)
	l1.Linked = true
	res, _ := p.s.transfers(l1, xfer("l2", p.a, p.b, 1))
	if codes(res) != "linked_event_failed cross_shard_not_supported" {
		t.Fatalf("chain across shards: %s", codes(res))
	}
}

// replayBoth folds each shard's log into a fresh state and checks it
// reaches the same head and state hash, and that each shard sums to 0.
func replayBoth(t *testing.T, p *sagaPair) {
	t.Helper()
	for _, h := range []*harness{p.s, p.d} {
		fresh := NewState(h.st.Shard, h.st.Shards, nil)
		for _, e := range h.st.events {
			if err := fresh.Replay(e); err != nil {
				t.Fatalf("shard %d replay: %v", h.st.Shard, err)
			}
		}
		if fresh.Head != h.st.Head || fresh.StateHash() != h.st.StateHash() {
			t.Fatalf("shard %d: replay differs", h.st.Shard)
		}
		for cur, s := range fresh.Sums() {
			if s.Cmp(big.NewInt(0)) != 0 {
				t.Fatalf("shard %d: %s sums to %s", h.st.Shard, cur, s)
			}
		}
	}
}
