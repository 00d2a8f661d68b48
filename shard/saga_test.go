package shard_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tally/api"
	"tally/client"
	"tally/ledger"
	"tally/node"
	"tally/shard/shardtest"
)

// The saga test's knobs. Clients and faults run for sagaLoad; setup,
// healing and the checks take the rest.
const (
	sagaNodes    = 3
	sagaShards   = 4
	sagaAccounts = 5 // client accounts per shard; the first may go negative
	sagaWriters  = 8
	sagaLoad     = 25 * time.Second
	// sagaCall bounds one client request, the wait for its saga included.
	sagaCall = 3 * time.Second
	// sagaGiveUp bounds a client's retries of one transfer; after it the
	// outcome stays unknown to the client (the log still decides it).
	sagaGiveUp = 30 * time.Second
	// sagaDrain bounds the wait, after healing, until no saga is open.
	sagaDrain = 45 * time.Second
	// sagaMaxErrors caps the errors reported, so that one broken
	// invariant does not bury the log.
	sagaMaxErrors = 25
)

// TestSagasUnderFaults runs a random mix of same-shard and cross-shard
// transfers, many of them overdrafts, from concurrent clients through the
// nodes' API, while shard leaders are killed and restarted and the
// network is partitioned: Raft links of all or some shards, and the
// HTTP calls that carry saga steps between nodes (refused, held, or
// served with the answer lost). An operator's resolve is thrown in now and
// then. After healing, every shard's event log, the balances, the answers
// the clients got and the audit are checked. A failure names its seed;
// rerun it with SAGA_SEED=N (the schedule of faults and transfers repeats,
// their timing does not).
func TestSagasUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a faulty cluster for about 30 s")
	}
	seed := sagaSeed(t)
	t.Logf("seed %d (rerun with SAGA_SEED=%d)", seed, seed)
	c := shardtest.New(t, sagaNodes, sagaShards, shardtest.WithHandler(
		func(svc *node.Service, log *slog.Logger) http.Handler { return api.New(svc, log) }))
	r := newSagaRun(t, c, seed)
	t.Cleanup(r.logFaults)
	r.setup()
	r.start()
	r.faults(time.Now().Add(sagaLoad))
	r.heal()
	r.drain()
	c.WaitConverged(t)
	c.VerifyAll(t)
	b := r.scan()
	r.checkSagas(b)
	r.checkBalances(b)
	r.checkAnswers(b)
	r.checkAudit()
	r.summary(b)
	if n := r.errs.Load(); n > sagaMaxErrors {
		t.Errorf("%d more errors not shown", n-sagaMaxErrors)
	}
}

func sagaSeed(t *testing.T) uint64 {
	v := os.Getenv("SAGA_SEED")
	if v == "" {
		return uint64(time.Now().UnixNano())
	}
	s, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("SAGA_SEED=%q: %v", v, err)
	}
	return s
}

// sagaRun is one run: the cluster, its accounts, what the clients sent and
// were answered, and counts for the summary.
type sagaRun struct {
	t       *testing.T
	c       *shardtest.Cluster
	seed    uint64
	rng     *rand.Rand // the fault loop's; the test goroutine only
	clients []*client.Client
	accts   [][]string      // per shard: open client accounts
	ghosts  []string        // per shard: an account never opened
	shut    []string        // per shard: a closed account
	allowed map[string]bool // client account -> allow_negative

	mu   sync.Mutex
	sent map[string]*sentTransfer

	stop    chan struct{}
	wg      sync.WaitGroup // writers
	helpers sync.WaitGroup // auditor and resolver
	errs    atomic.Int64
	audits  atomic.Int64
	// auditFails counts the audits during the load that found violations.
	auditFails atomic.Int64
	resolves   atomic.Int64
	faultLog   []string
	httpCuts   int // HTTP-only cuts so far: they take turns at each fault
}

// sentTransfer is a transfer a client sent and the definite answer it got
// (Status "" while it has none).
type sentTransfer struct {
	tr     ledger.Transfer
	cross  bool
	status ledger.Status
	code   ledger.Code
}

func newSagaRun(t *testing.T, c *shardtest.Cluster, seed uint64) *sagaRun {
	r := &sagaRun{t: t, c: c, seed: seed, rng: rand.New(rand.NewPCG(seed, 0)),
		allowed: map[string]bool{}, sent: map[string]*sentTransfer{}, stop: make(chan struct{})}
	for n := 1; n <= c.Nodes(); n++ {
		r.clients = append(r.clients, client.New(c.HTTPAddr(n), client.WithTimeout(sagaCall)))
	}
	return r
}

// errorf reports a broken invariant, up to sagaMaxErrors of them.
func (r *sagaRun) errorf(format string, args ...any) {
	r.t.Helper()
	if r.errs.Add(1) <= sagaMaxErrors {
		r.t.Errorf(format, args...)
	}
}

// setup opens sagaAccounts accounts per shard (the first allowed to go
// negative), a closed one and funds the others with small deposits, so
// that many transfers overdraw.
func (r *sagaRun) setup() {
	for s := 0; s < sagaShards; s++ {
		tg := tagOn(s, sagaShards)
		cmd := ledger.Command{Kind: ledger.CmdOpenAccounts}
		var ids []string
		for i := 0; i < sagaAccounts; i++ {
			id := acct(fmt.Sprintf("a%d", i), tg)
			ids = append(ids, id)
			r.allowed[id] = i == 0
			cmd.Accounts = append(cmd.Accounts, ledger.Account{ID: id, Currency: usd, AllowNegative: i == 0})
		}
		shut := acct("shut", tg)
		cmd.Accounts = append(cmd.Accounts, ledger.Account{ID: shut, Currency: usd})
		wantOK(r.t, submit(r.t, r.c, cmd))
		wantOK(r.t, submit(r.t, r.c, ledger.Command{Kind: ledger.CmdCloseAccount, AccountID: shut}))
		for _, id := range ids {
			wantOK(r.t, submit(r.t, r.c, transfers(xfer("fund-"+id, ledger.World, id, 10+r.rng.Int64N(50)))))
		}
		r.accts = append(r.accts, ids)
		r.ghosts = append(r.ghosts, acct("ghost", tg))
		r.shut = append(r.shut, shut)
	}
}

// start runs the writers, the auditor and the resolver until r.stop.
func (r *sagaRun) start() {
	for k := 0; k < sagaWriters; k++ {
		r.wg.Add(1)
		go r.writer(k)
	}
	r.helpers.Add(2)
	go r.auditor()
	go r.resolver()
}

// writer sends transfers one after the other, each until it has a
// definite answer, and records the answers.
func (r *sagaRun) writer(k int) {
	defer r.wg.Done()
	rng := rand.New(rand.NewPCG(r.seed, uint64(k)+1))
	for i := 0; ; i++ {
		select {
		case <-r.stop:
			return
		default:
		}
		tr, cross := r.pick(rng, fmt.Sprintf("t%d.%d", k, i))
		st := &sentTransfer{tr: tr, cross: cross}
		r.mu.Lock()
		r.sent[tr.ID] = st
		r.mu.Unlock()
		status, code, err := r.send(rng, tr)
		if err != nil {
			r.errorf("%v", err)
			return
		}
		r.mu.Lock()
		st.status, st.code = status, code
		r.mu.Unlock()
	}
}

// pick makes a transfer: half of them cross shards, one in ten credits an
// account that is missing or closed, and amounts are often larger than
// the balances.
func (r *sagaRun) pick(rng *rand.Rand, id string) (ledger.Transfer, bool) {
	src := rng.IntN(sagaShards)
	i := rng.IntN(sagaAccounts)
	dst := src
	if rng.IntN(2) == 0 {
		dst = (src + 1 + rng.IntN(sagaShards-1)) % sagaShards
	}
	var credit string
	switch x := rng.IntN(20); {
	case x == 0:
		credit = r.ghosts[dst]
	case x == 1:
		credit = r.shut[dst]
	case dst == src:
		credit = r.accts[dst][(i+1+rng.IntN(sagaAccounts-1))%sagaAccounts]
	default:
		credit = r.accts[dst][rng.IntN(sagaAccounts)]
	}
	amount := 1 + rng.Int64N(50)
	if rng.IntN(3) == 0 {
		amount = 1 + rng.Int64N(200)
	}
	return xfer(id, r.accts[src][i], credit, amount), dst != src
}

// send submits tr until it is answered posted or rejected, retrying with
// the same id after errors and while its saga is in flight, as a client
// must. It gives up after sagaGiveUp and returns no status.
func (r *sagaRun) send(rng *rand.Rand, tr ledger.Transfer) (ledger.Status, ledger.Code, error) {
	home := ledger.TransferShard(&tr, sagaShards)
	deadline := time.Now().Add(sagaGiveUp)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), sagaCall)
		res, err := r.clients[r.nodeFor(rng, home)-1].CreateTransfers(ctx, []ledger.Transfer{tr})
		cancel()
		if err == nil {
			status, code, err := answered(res[0])
			if err != nil || status != ledger.StatusInFlight {
				return status, code, err
			}
		} else if !retryable(err) {
			return "", "", fmt.Errorf("transfer %s: %w", tr.ID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", "", nil
}

// nodeFor returns the node to send a write for shard s to: mostly its
// leader, as the proxy would, sometimes any node, which forwards.
func (r *sagaRun) nodeFor(rng *rand.Rand, s int) int {
	if h := r.c.Leader(s); h != nil && rng.IntN(4) > 0 {
		return r.c.Num(h)
	}
	return 1 + rng.IntN(r.c.Nodes())
}

// retryable reports whether a failed request may be sent again: nothing
// applied, outcome unknown, or a server-side failure while nodes die.
func retryable(err error) bool {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status >= 500 || ce.Status == http.StatusMisdirectedRequest
	}
	return client.IsUnavailable(err) || client.IsOutcomeUnknown(err)
}

// answered reads one result: posted, rejected with its code, or in flight.
func answered(res ledger.Result) (ledger.Status, ledger.Code, error) {
	code := res.Result
	if code == ledger.Exists {
		code = res.Original
	}
	switch {
	case res.Status == ledger.StatusPosted && code == ledger.OK,
		res.Status == ledger.StatusRejected && code != ledger.OK && code != "" && code != ledger.ExistsWithDifferentFields,
		res.Status == ledger.StatusInFlight && code == ledger.OK:
		return res.Status, code, nil
	}
	return "", "", fmt.Errorf("transfer %s: unexpected answer %+v", res.ID, res)
}

// auditor checks the books while the clients and faults run: each shard
// read twice through its leader (ledger.CheckAudit's rounds) must pass,
// whatever is in flight. A round that cannot reach every shard is skipped.
func (r *sagaRun) auditor() {
	defer r.helpers.Done()
	for {
		select {
		case <-r.stop:
			return
		case <-time.After(300 * time.Millisecond):
		}
		var rounds [2][]ledger.ShardBooks
		ok := true
		for k := 0; k < 2 && ok; k++ {
			for s := 0; s < sagaShards && ok; s++ {
				b, err := r.auditShard(s)
				ok = err == nil
				rounds[k] = append(rounds[k], b)
			}
		}
		if !ok {
			continue
		}
		r.audits.Add(1)
		if rep := ledger.CheckAudit(rounds[0], rounds[1]); !rep.OK && r.auditFails.Add(1) == 1 {
			// The first failure says it all; the logs' checks say which
			// sagas broke the books.
			r.errorf("audit during the load: %s (seqs %v)", strings.Join(rep.Violations, "; "), rep.Seqs)
		}
	}
}

func (r *sagaRun) auditShard(s int) (ledger.ShardBooks, error) {
	h := r.c.Leader(s)
	if h == nil {
		return ledger.ShardBooks{}, errors.New("no leader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return h.Audit(ctx, s)
}

// resolver plays an operator who gives an in-flight saga up now and then
// (tally sagas resolve): the saga must abort, or complete if its credit
// won the race, never both.
func (r *sagaRun) resolver() {
	defer r.helpers.Done()
	rng := rand.New(rand.NewPCG(r.seed, 1000))
	for {
		select {
		case <-r.stop:
			return
		case <-time.After(time.Duration(200+rng.IntN(400)) * time.Millisecond):
		}
		cl := r.clients[rng.IntN(len(r.clients))]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		sagas, err := cl.Sagas(ctx, "in_flight", -1)
		if err == nil && len(sagas) > 0 {
			if cl.ResolveSaga(ctx, sagas[rng.IntN(len(sagas))].ID, "saga test gives it up") == nil {
				r.resolves.Add(1)
			}
		}
		cancel()
	}
}

// sagaFaultKinds is the number of kinds of fault that fault knows.
const sagaFaultKinds = 5

// faults kills shard leaders and cuts links until end, one fault at a
// time, with random holds, so that each shard keeps or regains a quorum.
// Each round runs every kind of fault once, in a random order.
func (r *sagaRun) faults(end time.Time) {
	var kinds []int
	for time.Now().Before(end) {
		if len(kinds) == 0 {
			kinds = r.rng.Perm(sagaFaultKinds)
		}
		r.fault(kinds[0])
		kinds = kinds[1:]
		r.hold(100, 400)
	}
}

func (r *sagaRun) fault(kind int) {
	c := r.c
	victim := 1 + r.rng.IntN(c.Nodes())
	if h := c.Leader(r.rng.IntN(sagaShards)); h != nil {
		victim = c.Num(h)
	}
	other := victim%c.Nodes() + 1
	note := func(f string, args ...any) { r.faultLog = append(r.faultLog, fmt.Sprintf(f, args...)) }
	switch kind {
	case 0:
		note("kill n%d", victim)
		c.Kill(victim)
		r.hold(200, 1200)
		c.Restart(victim)
	case 1:
		note("isolate n%d", victim)
		c.Partition(victim)
		r.hold(300, 1500)
	case 2:
		shards := r.rng.Perm(sagaShards)[:1+r.rng.IntN(sagaShards-1)]
		note("isolate n%d on shards %v", victim, shards)
		c.PartitionShards(shards, victim)
		r.hold(300, 1500)
	case 3:
		f := []shardtest.HTTPFault{shardtest.Refuse, shardtest.LoseReply, shardtest.Hang}[r.httpCuts%3]
		r.httpCuts++
		note("cut saga calls of n%d (%s)", victim, f)
		c.PartitionHTTP(f, victim)
		r.hold(300, 2000)
	case 4:
		note("kill n%d, lose replies to saga calls of n%d", victim, other)
		c.PartitionHTTP(shardtest.LoseReply, other)
		c.Kill(victim)
		r.hold(200, 1200)
		c.Restart(victim)
	}
	c.Heal()
}

// hold waits a random time between lo and hi milliseconds: how long a
// fault lasts, or the quiet between two.
func (r *sagaRun) hold(lo, hi int) {
	time.Sleep(time.Duration(lo+r.rng.IntN(hi-lo)) * time.Millisecond)
}

// heal stops the clients from starting new transfers, removes every cut,
// restarts the nodes that are down and waits for the clients' last
// transfers and for leaders.
func (r *sagaRun) heal() {
	close(r.stop)
	r.c.Heal()
	for n := 1; n <= r.c.Nodes(); n++ {
		if r.c.Host(n) == nil {
			r.c.Restart(n)
		}
	}
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		r.helpers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(sagaGiveUp + 2*sagaCall):
		r.t.Fatalf("clients still running %v after the heal", sagaGiveUp+2*sagaCall)
	}
	r.c.WaitLeaders(r.t)
}

// drain waits until no saga is open on any shard (GET /v1/sagas).
func (r *sagaRun) drain() {
	deadline := time.Now().Add(sagaDrain)
	var open []client.Saga
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		open, err = r.clients[0].Sagas(ctx, "in_flight", -1)
		cancel()
		if err == nil && len(open) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	var b strings.Builder
	for i, s := range open {
		if i == 10 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(open)-i)
			break
		}
		fmt.Fprintf(&b, "  %s shard %d -> %d step %s attempts %d last error %q\n",
			s.ID, s.Shard, s.PeerShard, s.Step, s.Attempts, s.LastError)
	}
	r.t.Fatalf("sagas still open %v after the heal (last error %v):\n%s%s", sagaDrain, err, b.String(), r.c.Describe())
}

// sagaBooks is what the event logs of all shards say.
type sagaBooks struct {
	events  int
	decided map[string][]decision     // transfer id -> deciding events on its shard
	holds   map[string]*held          // saga id (transfer id) -> its source side
	credits map[sagaKey][]decision    // (source, id) -> decisions on the destination
	last    map[string]ledger.Balance // client account -> its balances after its last event
	model   map[string]int64          // client account -> posted balance the events imply
	// clearing holds, per (shard, peer), the last balances of the shard's
	// clearing account for peer.
	clearing map[[2]int]ledger.Balance
}

type sagaKey struct {
	source int
	id     string
}

// decision is an event that decided a transfer or a saga step.
type decision struct {
	shard int
	seq   uint64
	typ   ledger.EventType
	code  ledger.Code
	tr    ledger.Transfer
}

// held is a saga's source side: its hold and the events that ended it.
type held struct {
	decision
	peer int
	ends []decision
}

// scan reads every shard's event log on node 1 (the replicas have
// converged) and checks each event as it goes: every shard sums to 0
// after every event, holds included, and no account without
// allow_negative is ever overdrawn.
func (r *sagaRun) scan() *sagaBooks {
	b := &sagaBooks{decided: map[string][]decision{}, holds: map[string]*held{},
		credits: map[sagaKey][]decision{}, last: map[string]ledger.Balance{}, model: map[string]int64{},
		clearing: map[[2]int]ledger.Balance{}}
	h := r.c.Host(1)
	for s := 0; s < sagaShards; s++ {
		bal := map[string]ledger.Balance{} // account key -> last balances on this shard
		var after uint64
		for {
			evs, err := h.Events(s, after, 1000)
			if err != nil {
				r.t.Fatalf("events of shard %d: %v", s, err)
			}
			if len(evs) == 0 {
				break
			}
			for i := range evs {
				e := &evs[i]
				if e.Seq != after+1 || e.Shard != s {
					r.t.Fatalf("shard %d: event %d (shard %d) follows seq %d", s, e.Seq, e.Shard, after)
				}
				after = e.Seq
				b.events++
				r.checkEvent(s, e, bal)
				b.add(s, e)
			}
		}
	}
	return b
}

// checkEvent checks one event's balances: no overdraft, and the shard's
// balances, updated by it, still sum to 0 in every currency.
func (r *sagaRun) checkEvent(s int, e *ledger.Event, bal map[string]ledger.Balance) {
	if e.Type == ledger.AccountOpened && e.Data.Account != nil {
		if want, ok := r.allowed[e.Data.Account.ID]; ok && want != e.Data.Account.AllowNegative {
			r.errorf("shard %d seq %d: %s opened with allow_negative %v", s, e.Seq, e.Data.Account.ID, e.Data.Account.AllowNegative)
		}
	}
	for _, x := range e.Balances {
		if !ledger.IsSystem(x.Account) && !r.allowed[x.Account] && x.DebitsPosted+x.DebitsPending > x.CreditsPosted {
			r.errorf("shard %d seq %d (%s): %s overdrawn: %+v", s, e.Seq, e.Type, x.Account, x)
		}
		bal[ledger.AccountKey(x.Account, x.Currency)] = x
	}
	if len(e.Balances) == 0 {
		return
	}
	posted, pending := map[string]int64{}, map[string]int64{}
	for _, x := range bal {
		posted[x.Currency] += x.CreditsPosted - x.DebitsPosted
		pending[x.Currency] += x.CreditsPending - x.DebitsPending
	}
	for cur := range posted {
		if posted[cur] != 0 || pending[cur] != 0 {
			r.errorf("shard %d seq %d (%s): %s sums to %d posted, %d pending, not 0", s, e.Seq, e.Type, cur, posted[cur], pending[cur])
		}
	}
}

// add files one event of shard s.
func (b *sagaBooks) add(s int, e *ledger.Event) {
	d := decision{shard: s, seq: e.Seq, typ: e.Type, code: e.Data.Result}
	if e.Data.Transfer != nil {
		d.tr = *e.Data.Transfer
	}
	for _, x := range e.Balances {
		switch {
		case !ledger.IsSystem(x.Account):
			b.last[x.Account] = x
		case strings.HasPrefix(x.Account, ledger.ClearingPrefix):
			peer, _ := strconv.Atoi(strings.TrimPrefix(x.Account, ledger.ClearingPrefix))
			b.clearing[[2]int{s, peer}] = x
		}
	}
	switch e.Type {
	case ledger.TransferPosted:
		b.decided[d.tr.ID] = append(b.decided[d.tr.ID], d)
		b.move(d.tr.Debit, -d.tr.Amount)
		b.move(d.tr.Credit, d.tr.Amount)
	case ledger.TransferRejected:
		b.decided[d.tr.ID] = append(b.decided[d.tr.ID], d)
	case ledger.SagaDebitHeld:
		b.decided[d.tr.ID] = append(b.decided[d.tr.ID], d)
		if b.holds[d.tr.ID] == nil {
			b.holds[d.tr.ID] = &held{decision: d, peer: *e.Data.Peer}
		}
	case ledger.SagaCompleted, ledger.SagaAborted:
		d.tr.ID, d.tr.Amount = e.Data.PendingID, e.Data.Amount
		hd := b.holds[d.tr.ID]
		if hd == nil {
			hd = &held{decision: decision{shard: -1}}
			b.holds[d.tr.ID] = hd
		}
		hd.ends = append(hd.ends, d)
		if e.Type == ledger.SagaCompleted {
			b.move(hd.tr.Debit, -d.tr.Amount)
		}
	case ledger.SagaCredited, ledger.SagaCreditRejected:
		k := sagaKey{source: *e.Data.Peer, id: d.tr.ID}
		b.credits[k] = append(b.credits[k], d)
		if e.Type == ledger.SagaCredited {
			b.move(d.tr.Credit, d.tr.Amount)
		}
	}
}

// move adds amount to a client account's posted balance in the model.
func (b *sagaBooks) move(id string, amount int64) {
	if id != "" && !ledger.IsSystem(id) {
		b.model[id] += amount
	}
}

// checkSagas checks every saga on both its shards: one hold, exactly one
// end, at most one credit decision, on the right shards and for the same
// transfer, and completed if and only if credited. Every transfer is
// decided once, on its own shard.
func (r *sagaRun) checkSagas(b *sagaBooks) {
	for id, ds := range b.decided {
		home := ledger.TransferShard(&ds[0].tr, sagaShards)
		if len(ds) != 1 || ds[0].shard != home {
			r.errorf("transfer %s (shard %d) decided by %s", id, home, describe(ds))
		}
	}
	for id, hd := range b.holds {
		k := sagaKey{source: hd.shard, id: id}
		cr := b.credits[k]
		switch {
		case hd.shard < 0:
			r.errorf("saga %s ended by %s without a hold", id, describe(hd.ends))
			continue
		case len(hd.ends) != 1:
			r.errorf("saga %s (shard %d -> %d): ends %s, want exactly one", id, hd.shard, hd.peer, describe(hd.ends))
			continue
		case len(cr) > 1:
			r.errorf("saga %s (shard %d -> %d): credit decided %d times: %s", id, hd.shard, hd.peer, len(cr), describe(cr))
			continue
		}
		end := hd.ends[0]
		credited := len(cr) == 1 && cr[0].typ == ledger.SagaCredited
		if (end.typ == ledger.SagaCompleted) != credited {
			r.errorf("saga %s (shard %d -> %d): %s, and the destination decided %s", id, hd.shard, hd.peer, end.typ, describe(cr))
		}
		if end.tr.Amount != hd.tr.Amount || len(cr) == 1 && (cr[0].shard != hd.peer || !cr[0].tr.Same(&hd.tr)) {
			r.errorf("saga %s: held %+v on shard %d, ended %+v, credit %s", id, hd.tr, hd.shard, end.tr, describe(cr))
		}
	}
	for k, cr := range b.credits {
		if hd := b.holds[k.id]; hd == nil || hd.shard != k.source {
			r.errorf("credit decision for saga %s of shard %d without its hold: %s", k.id, k.source, describe(cr))
		}
	}
}

func describe(ds []decision) string {
	if len(ds) == 0 {
		return "nothing"
	}
	var parts []string
	for _, d := range ds {
		s := fmt.Sprintf("%s at shard %d seq %d", d.typ, d.shard, d.seq)
		if d.code != "" {
			s += " (" + string(d.code) + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// checkBalances checks that every client account's last balances match
// the moves its events imply, with no hold left, and that the clearing
// accounts match the sagas between each pair of shards and net to 0.
func (r *sagaRun) checkBalances(b *sagaBooks) {
	for _, ids := range r.accts {
		for _, id := range ids {
			x := b.last[id]
			if got := x.CreditsPosted - x.DebitsPosted; got != b.model[id] || x.DebitsPending != 0 || x.CreditsPending != 0 {
				r.errorf("%s: balances %+v, the events imply a posted balance of %d and no hold", id, x, b.model[id])
			}
		}
	}
	completed, credited := map[[2]int]int64{}, map[[2]int]int64{}
	for id, hd := range b.holds {
		if len(hd.ends) == 1 && hd.ends[0].typ == ledger.SagaCompleted {
			completed[[2]int{hd.shard, hd.peer}] += hd.tr.Amount
		}
		for _, d := range b.credits[sagaKey{hd.shard, id}] {
			if d.typ == ledger.SagaCredited {
				credited[[2]int{d.shard, hd.shard}] += d.tr.Amount
			}
		}
	}
	var net int64
	for s := 0; s < sagaShards; s++ {
		for p := 0; p < sagaShards; p++ {
			k := [2]int{s, p}
			x := b.clearing[k]
			net += x.CreditsPosted - x.DebitsPosted
			if x.CreditsPosted != completed[k] || x.DebitsPosted != credited[k] || x.CreditsPending != 0 || x.DebitsPending != 0 {
				r.errorf("shard %d %s: %+v; sagas completed towards it %d, credited from it %d, none in flight",
					s, ledger.ClearingID(p), x, completed[k], credited[k])
			}
		}
	}
	if net != 0 {
		r.errorf("clearing accounts net to %d across shards, not 0", net)
	}
}

// checkAnswers checks every definite answer a client got against the
// logs: a transfer answered posted was applied exactly once (for a saga:
// held, credited once and completed), one answered rejected moved no
// money (rejected, or a saga aborted without a credit), with the same
// code. Every transfer in the logs was sent by a client or the setup.
func (r *sagaRun) checkAnswers(b *sagaBooks) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, st := range r.sent {
		ds := b.decided[id]
		if st.status == "" || len(ds) != 1 {
			if st.status != "" {
				r.errorf("transfer %s answered %s %s, logs: %s", id, st.status, st.code, describe(ds))
			}
			continue
		}
		status, code := b.outcome(ds[0])
		if status != st.status || code != st.code || !ds[0].tr.Same(&st.tr) {
			r.errorf("transfer %s (%+v) answered %s %s, logs say %s %s: %s", id, st.tr, st.status, st.code, status, code, describe(ds))
		}
		// A cross-shard transfer runs as a saga unless its source refused
		// the hold; a same-shard one never does.
		if hold := ds[0].typ == ledger.SagaDebitHeld; hold && !st.cross || !hold && st.cross && code != ledger.InsufficientFunds {
			r.errorf("transfer %s (cross-shard %v) decided by %s", id, st.cross, describe(ds))
		}
	}
	for id := range b.decided {
		if _, ok := r.sent[id]; !ok && !strings.HasPrefix(id, "fund-") {
			r.errorf("transfer %s in the logs was never sent", id)
		}
	}
}

// outcome is what the logs say a deciding event led to.
func (b *sagaBooks) outcome(d decision) (ledger.Status, ledger.Code) {
	switch d.typ {
	case ledger.TransferPosted:
		return ledger.StatusPosted, ledger.OK
	case ledger.TransferRejected:
		return ledger.StatusRejected, d.code
	}
	hd := b.holds[d.tr.ID]
	if len(hd.ends) != 1 {
		return ledger.StatusInFlight, ledger.OK
	}
	if hd.ends[0].typ == ledger.SagaCompleted {
		return ledger.StatusPosted, ledger.OK
	}
	return ledger.StatusRejected, hd.ends[0].code
}

// checkAudit runs the audit as `tally audit` does (GET /v1/audit): it must
// pass at a consistent cut with nothing in flight and clearing netting
// to 0.
func (r *sagaRun) checkAudit() {
	var rep *ledger.AuditReport
	var err error
	for try := 0; try < 5; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rep, err = r.clients[try%len(r.clients)].Audit(ctx)
		cancel()
		if err == nil && rep.Consistent {
			break
		}
	}
	switch {
	case err != nil:
		r.errorf("audit: %v", err)
		return
	case !rep.OK || !rep.Consistent:
		r.errorf("audit: ok %v, consistent %v, violations %v, seqs %v", rep.OK, rep.Consistent, rep.Violations, rep.Seqs)
	}
	for _, cur := range rep.Currencies {
		if cur.Net != "0" || cur.InFlight != "0" {
			r.errorf("audit: %s clearing net %s, in flight %s; want 0 and 0", cur.Currency, cur.Net, cur.InFlight)
		}
	}
	if len(rep.Currencies) == 0 {
		r.errorf("audit saw no clearing account: no saga ran")
	}
}

// logFaults logs the faults the run injected (shown with -v or on
// failure), however the test ended.
func (r *sagaRun) logFaults() {
	r.t.Logf("faults (%d): %s; saga calls hit by cuts: %v", len(r.faultLog), strings.Join(r.faultLog, "; "), r.c.HTTPFaults())
}

// summary logs what the run did (shown with -v or on failure).
func (r *sagaRun) summary(b *sagaBooks) {
	r.mu.Lock()
	defer r.mu.Unlock()
	count := map[string]int{}
	for _, st := range r.sent {
		kind := "same-shard"
		if st.cross {
			kind = "cross-shard"
		}
		answer := string(st.status)
		switch {
		case answer == "":
			answer = "unanswered"
		case st.code != ledger.OK:
			answer += " " + string(st.code)
		}
		count[kind+" "+answer]++
	}
	ends := map[ledger.EventType]int{}
	for _, hd := range b.holds {
		for _, d := range hd.ends {
			ends[d.typ]++
		}
	}
	var keys []string
	for k := range count {
		keys = append(keys, fmt.Sprintf("%s %d", k, count[k]))
	}
	sort.Strings(keys)
	r.t.Logf("seed %d: %d transfers sent (%s); %d events; sagas %d completed, %d aborted; %d resolves accepted; %d audits during the load, %d failed",
		r.seed, len(r.sent), strings.Join(keys, ", "), b.events, ends[ledger.SagaCompleted], ends[ledger.SagaAborted],
		r.resolves.Load(), r.audits.Load(), r.auditFails.Load())
	if ends[ledger.SagaCompleted] == 0 || ends[ledger.SagaAborted] == 0 {
		r.errorf("sagas: %d completed, %d aborted; the run should see both", ends[ledger.SagaCompleted], ends[ledger.SagaAborted])
	}
}
