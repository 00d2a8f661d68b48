package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tally/client"
	"tally/ledger"
)

// Transfer kinds of the cross-shard workload.
const (
	outOfSource  = iota // source shard -> another shard: a saga the source drives
	toGhost             // source shard -> a missing account on another shard: a saga that aborts
	intoSource          // another shard -> source shard: the source shard credits
	withinSource        // both accounts on the source shard
	nKinds
)

var sagaKindNames = [nKinds]string{"out-of-source", "to-ghost", "into-source", "within-source"}

// outcome is what a client finally learned about one transfer.
type outcome int

const (
	outPosted   outcome = iota + 1 // answered posted (directly or by polling)
	outRejected                    // answered rejected (at once, or a saga that aborted)
	outUnknown                     // gave up without a terminal answer
)

// sent is one transfer of the workload and what its client saw.
type sent struct {
	t     ledger.Transfer
	kind  int
	out   outcome
	code  ledger.Code // the rejection's reason
	first time.Time   // first attempt
}

// sagaWriter sends the cross-shard workload through the proxy. Each
// transfer is retried with the same id and body on 503, 504, connection
// errors and answers of 421/502, and followed with GET /v1/transfers/{id}
// while it is in_flight, until it is terminal.
type sagaWriter struct {
	cl      *client.Client
	src     int
	byShard map[int][]string // client accounts per shard
	ghosts  map[int]string   // per shard other than src: an account never created
	initial int64

	mu   sync.Mutex
	all  map[string]*sent
	errs []string // answers no retry can fix: the test fails on them

	seq       atomic.Int64
	inflight  atomic.Int64 // POST answers that said in_flight
	retries   atomic.Int64 // attempts repeated after an error answer or a broken connection
	lastSrcOK atomic.Int64 // unix nanos: a source-shard saga first sent after killedAt answered posted
	killedAt  atomic.Int64
}

func (w *sagaWriter) pick(rng *rand.Rand, shard int) string {
	ids := w.byShard[shard]
	return ids[rng.IntN(len(ids))]
}

// other returns a random shard that is not the source.
func (w *sagaWriter) other(rng *rand.Rand) int {
	s := rng.IntN(len(w.byShard) - 1)
	if s >= w.src {
		s++
	}
	return s
}

func (w *sagaWriter) next(rng *rand.Rand, prefix string) *sent {
	var kind int
	switch x := rng.Float64(); {
	case x < 0.55:
		kind = outOfSource
	case x < 0.65:
		kind = toGhost
	case x < 0.90:
		kind = intoSource
	default:
		kind = withinSource
	}
	var debit, credit string
	switch kind {
	case outOfSource:
		debit, credit = w.pick(rng, w.src), w.pick(rng, w.other(rng))
	case toGhost:
		debit, credit = w.pick(rng, w.src), w.ghosts[w.other(rng)]
	case intoSource:
		debit, credit = w.pick(rng, w.other(rng)), w.pick(rng, w.src)
	default:
		ids := w.byShard[w.src]
		i, j := rng.IntN(len(ids)), rng.IntN(len(ids)-1)
		if j >= i {
			j++
		}
		debit, credit = ids[i], ids[j]
	}
	// Mostly small amounts; one in eight is more than any account can
	// hold, an overdraft the source shard must refuse.
	amount := 1 + rng.Int64N(w.initial/20)
	if rng.IntN(8) == 0 {
		amount = w.initial*3 + rng.Int64N(w.initial)
	}
	id := fmt.Sprintf("%s-%d", prefix, w.seq.Add(1))
	return &sent{t: ledger.Transfer{ID: id, Debit: debit, Credit: credit, Amount: amount}, kind: kind}
}

// retryable says whether a failed call may be repeated as is: the
// transfer id makes a repeat of an applied write harmless.
func retryable(err error) bool {
	if client.IsUnavailable(err) || client.IsOutcomeUnknown(err) {
		return true
	}
	var e *client.Error
	if errors.As(err, &e) {
		return e.Status == http.StatusMisdirectedRequest || e.Status == http.StatusBadGateway
	}
	return false
}

// send runs one transfer to a terminal answer (or gives up after a bound
// far beyond any expected outage) and records the outcome.
func (w *sagaWriter) send(ctx context.Context, s *sent) {
	first := time.Now()
	w.mu.Lock()
	s.first = first
	w.all[s.t.ID] = s
	w.mu.Unlock()
	out, code := w.attempt(ctx, s.t, s.kind, first)
	w.mu.Lock()
	s.out, s.code = out, code
	w.mu.Unlock()
}

func (w *sagaWriter) attempt(ctx context.Context, t ledger.Transfer, kind int, first time.Time) (outcome, ledger.Code) {
	deadline := first.Add(45 * time.Second)
	fail := func(err error) (outcome, ledger.Code) {
		w.mu.Lock()
		w.errs = append(w.errs, fmt.Sprintf("%s: %v", t.ID, err))
		w.mu.Unlock()
		return outUnknown, ""
	}
	polling := false
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var st ledger.Status
		var code ledger.Code
		if !polling {
			res, err := w.cl.CreateTransfers(ctx, []ledger.Transfer{t})
			if err != nil {
				if !retryable(err) {
					return fail(err)
				}
				w.retries.Add(1)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			r := res[0]
			if r.Result == ledger.ExistsWithDifferentFields {
				return fail(fmt.Errorf("a repeat with the same body answered %s", r.Result))
			}
			st, code = r.Status, r.Result
			if r.Result == ledger.Exists {
				code = r.Original
			}
		} else {
			v, err := w.cl.Transfer(ctx, t.ID)
			if err != nil {
				if !retryable(err) {
					return fail(fmt.Errorf("poll: %w", err))
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			st, code = v.Status, v.Result
		}
		switch st {
		case ledger.StatusPosted:
			if k := w.killedAt.Load(); kind == outOfSource && k != 0 && first.UnixNano() > k {
				w.lastSrcOK.CompareAndSwap(0, time.Now().UnixNano())
			}
			return outPosted, code
		case ledger.StatusRejected:
			return outRejected, code
		case ledger.StatusInFlight:
			if !polling {
				w.inflight.Add(1)
			}
			polling = true
			time.Sleep(100 * time.Millisecond)
		default:
			return fail(fmt.Errorf("unexpected status %q", st))
		}
	}
	return outUnknown, ""
}

// TestCrossShardKillSourceLeader: cross-shard transfers through the proxy
// while the leader of their source shard is killed with SIGKILL and later
// restarted. Every acknowledged transfer is posted exactly once, every saga
// finishes, rejected and aborted transfers move no money, the balances are
// exactly what the posted transfers imply, tally audit proves the books
// with nothing in flight, tally verify passes and the replicas converge.
func TestCrossShardKillSourceLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test on real processes: skipped with -short")
	}
	began := time.Now()
	const shards = 4
	c := startCluster(t, shards)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := client.New(c.proxy, client.WithTimeout(5*time.Second))

	// Six accounts on each shard, plus one never-created account on each
	// shard but the source, funded from @world.
	const src, perShard, initial = 1, 6, 100_000
	// The writers' deadline is short, so that requests caught by the
	// failover answer in_flight or fail, and the clients must follow up.
	w := &sagaWriter{cl: client.New(c.proxy, client.WithTimeout(time.Second)), src: src, byShard: map[int][]string{}, ghosts: map[int]string{}, initial: initial, all: map[string]*sent{}}
	var accounts []ledger.Account
	var deposits []ledger.Transfer
	for i := 0; len(accounts) < shards*perShard || len(w.ghosts) < shards-1; i++ {
		id := fmt.Sprintf("xs%d", i)
		sh := ledger.ShardOf(id, shards)
		switch {
		case len(w.byShard[sh]) < perShard:
			w.byShard[sh] = append(w.byShard[sh], id)
			accounts = append(accounts, ledger.Account{ID: id, Currency: "USD"})
			deposits = append(deposits, ledger.Transfer{ID: "fund-" + id, Debit: ledger.World, Credit: id, Amount: initial})
		case sh != src && w.ghosts[sh] == "" && ledger.ShardOf(id+"-ghost", shards) == sh:
			w.ghosts[sh] = id + "-ghost"
		}
	}
	res, err := cl.CreateAccounts(ctx, accounts)
	mustOK(t, res, err)
	res, err = cl.CreateTransfers(ctx, deposits)
	mustOK(t, res, err)

	// Give the source shard a leader of its own, so that the kill takes
	// the source's leader and leaves the destinations' leaders running.
	victim := c.isolateLeader(ctx, src)
	t.Logf("shard %d (the source) is led by %s alone", src, victim.id)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for {
				select {
				case <-stop:
					return
				default:
				}
				w.send(ctx, w.next(rng, fmt.Sprintf("x%d", g)))
			}
		})
	}
	waitFor(t, 20*time.Second, "first acknowledged cross-shard transfers", func() bool { return w.count(outOfSource, outPosted) >= 20 })
	time.Sleep(2 * time.Second)

	open, _ := cl.Sagas(ctx, "in_flight", src)
	if l := c.leaderOf(ctx, src); l != victim {
		t.Logf("leadership of shard %d moved to %s on its own; killing that one", src, l.id)
		victim = l
	}
	t.Logf("killing %s, leader of source shard %d, with %d of its sagas open (%d posted so far)", victim.id, src, len(open), w.count(-1, outPosted))
	killed := time.Now()
	w.killedAt.Store(killed.UnixNano())
	c.kill(victim)
	waitFor(t, 20*time.Second, "a new cross-shard transfer from the source shard acknowledged after the kill", func() bool { return w.lastSrcOK.Load() != 0 })
	resumed := time.Duration(w.lastSrcOK.Load() - killed.UnixNano())
	if resumed > 10*time.Second {
		t.Errorf("cross-shard transfers took %s to resume after the source leader was killed", resumed)
	}
	time.Sleep(2 * time.Second)

	c.start(victim)
	c.waitHTTP(victim.http, "/healthz")
	restarted := time.Now()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	loadEnded := time.Now()

	// No saga stays open.
	waitFor(t, 30*time.Second, "every saga to finish (GET /v1/sagas empty)", func() bool {
		ss, err := cl.Sagas(ctx, "in_flight", -1)
		return err == nil && len(ss) == 0
	})
	drained := time.Since(loadEnded)
	c.waitConverged(ctx)

	// The writers are done: w's maps are no longer written.
	for _, e := range w.errs {
		t.Errorf("client error: %s", e)
	}
	checkSagaOutcomes(ctx, t, cl, w, accounts, deposits)
	checkSagaLog(ctx, t, cl, w, shards)
	c.checkAudit(ctx)
	if out, err := c.run(ctx, "verify"); err != nil {
		t.Fatalf("tally verify failed: %v\n%s", err, out)
	}

	var posted, rejected, aborted, unknown, cross int
	for _, s := range w.all {
		switch s.out {
		case outPosted:
			posted++
		case outRejected:
			rejected++
			if s.code == ledger.CreditAccountNotFound { // only sagas to a missing account end so
				aborted++
			}
		default:
			unknown++
		}
		if s.kind != withinSource {
			cross++
		}
	}
	t.Logf("sent %d transfers (%d cross-shard): %d acknowledged posted, %d rejected (%d sagas aborted, the rest overdrafts), %d without an answer",
		len(w.all), cross, posted, rejected, aborted, unknown)
	t.Logf("%d POST answers said in_flight (then polled to the end), %d attempts repeated after errors", w.inflight.Load(), w.retries.Load())
	t.Logf("new cross-shard transfers from shard %d acknowledged again %.2fs after the kill; node back %.1fs after the kill",
		src, resumed.Seconds(), restarted.Sub(killed).Seconds())
	t.Logf("every saga finished %.2fs after the load stopped; whole test %.1fs", drained.Seconds(), time.Since(began).Seconds())
	for k := range nKinds {
		t.Logf("  %-14s posted %4d  rejected %4d", sagaKindNames[k], w.count(k, outPosted), w.count(k, outRejected))
	}
	if unknown > 0 {
		t.Errorf("%d transfers never got a terminal answer", unknown)
	}
	if w.count(outOfSource, outPosted) == 0 || w.count(intoSource, outPosted) == 0 || w.count(toGhost, outRejected) == 0 {
		t.Error("the workload did not exercise completed and aborted sagas both ways")
	}
}

// count returns how many transfers of kind (-1: any) ended with o.
func (w *sagaWriter) count(kind int, o outcome) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.all {
		if (kind < 0 || s.kind == kind) && s.out == o {
			n++
		}
	}
	return n
}

// isolateLeader moves the leadership of shard sh to a node that leads no
// other shard, and returns it.
func (c *cluster) isolateLeader(ctx context.Context, sh int) *node {
	c.t.Helper()
	cl := client.New(c.proxy, client.WithTimeout(5*time.Second))
	var target *node
	waitFor(c.t, 30*time.Second, fmt.Sprintf("shard %d led by a node that leads nothing else", sh), func() bool {
		st, err := cl.Cluster(ctx)
		if err != nil {
			return false
		}
		leads := map[string]int{}
		for _, s := range st.Shards {
			leads[s.Leader]++
		}
		cur := st.Shards[sh].Leader
		if cur != "" && leads[cur] == 1 {
			for _, n := range c.nodes {
				if n.id == cur {
					target = n
					return true
				}
			}
		}
		for _, n := range c.nodes {
			if leads[n.id] == 0 {
				cl.TransferLeader(ctx, sh, n.id)
				break
			}
		}
		return false
	})
	return target
}

// checkSagaOutcomes reads every transfer back and checks that it ended as
// its client was told, then that each client account holds exactly what
// the posted transfers imply, with no hold left and no money created.
func checkSagaOutcomes(ctx context.Context, t *testing.T, cl *client.Client, w *sagaWriter, accounts []ledger.Account, deposits []ledger.Transfer) {
	t.Helper()
	want := map[string]int64{}
	var total int64
	for _, d := range deposits {
		want[d.Credit] += d.Amount
		total += d.Amount
	}
	for id, s := range w.all {
		v, err := cl.Transfer(ctx, id)
		if client.IsNotFound(err) {
			if s.out == outPosted {
				t.Errorf("acknowledged transfer %s is missing", id)
			}
			continue // never reached a shard: moved nothing
		}
		if err != nil {
			t.Fatalf("read transfer %s: %v", id, err)
		}
		if v.Debit != s.t.Debit || v.Credit != s.t.Credit || v.Amount != s.t.Amount {
			t.Errorf("transfer %s recorded with other fields: %+v", id, v)
		}
		if cross := s.kind != withinSource; v.Status == ledger.StatusPosted && v.CrossShard != cross {
			t.Errorf("transfer %s: cross_shard %v, want %v", id, v.CrossShard, cross)
		}
		switch {
		case v.Status == ledger.StatusInFlight:
			t.Errorf("transfer %s still in flight (saga step %+v)", id, v.Saga)
		case s.out == outPosted && v.Status != ledger.StatusPosted:
			t.Errorf("acknowledged transfer %s ended %s (%s)", id, v.Status, v.Result)
		case s.out == outRejected && v.Status != ledger.StatusRejected:
			t.Errorf("rejected transfer %s ended %s", id, v.Status)
		case s.kind == toGhost && v.Status == ledger.StatusRejected && v.Result != ledger.InsufficientFunds &&
			(v.Saga == nil || v.Saga.Step != ledger.StepAborted || v.Result != ledger.CreditAccountNotFound):
			t.Errorf("transfer %s to a missing account: %s, saga %+v; want an aborted saga", id, v.Result, v.Saga)
		}
		if v.Status == ledger.StatusPosted {
			want[s.t.Debit] -= s.t.Amount
			want[s.t.Credit] += s.t.Amount
		}
	}
	var sum int64
	for _, a := range accounts {
		v, err := cl.Account(ctx, a.ID, client.ReadOpts{})
		if err != nil {
			t.Fatal(err)
		}
		sum += v.Balance
		if v.Balance != want[a.ID] {
			t.Errorf("%s: balance %d, the posted transfers imply %d", a.ID, v.Balance, want[a.ID])
		}
		if v.Balance < 0 || v.DebitsPending != 0 || v.CreditsPending != 0 {
			t.Errorf("%s: balance %d, pending debits %d, pending credits %d", a.ID, v.Balance, v.DebitsPending, v.CreditsPending)
		}
	}
	if sum != total {
		t.Errorf("money not conserved: client accounts hold %d, deposits were %d", sum, total)
	}
	for _, g := range w.ghosts {
		if _, err := cl.Account(ctx, g, client.ReadOpts{}); !client.IsNotFound(err) {
			t.Errorf("account %s, never created, answers %v", g, err)
		}
	}
}

// sagaEvents counts the events of one transfer id across the shards' logs.
type sagaEvents struct {
	posted, rejected, held, credited, creditRejected, completed, aborted int
}

// countSagaEvents reads every shard's whole log and counts, per transfer
// id, the events that decided it; it also returns how many events it read.
func countSagaEvents(ctx context.Context, t *testing.T, cl *client.Client, shards int) (map[string]*sagaEvents, int) {
	t.Helper()
	ev := map[string]*sagaEvents{}
	get := func(id string) *sagaEvents {
		if ev[id] == nil {
			ev[id] = &sagaEvents{}
		}
		return ev[id]
	}
	events := 0
	for sh := range shards {
		var after uint64
		for {
			p, err := cl.Events(ctx, sh, after, 1000)
			if err != nil {
				t.Fatalf("events of shard %d after %d: %v", sh, after, err)
			}
			for _, e := range p.Events {
				after = e.Seq
				events++
				d := e.Data
				switch e.Type {
				case ledger.TransferPosted:
					get(d.Transfer.ID).posted++
				case ledger.TransferRejected:
					get(d.Transfer.ID).rejected++
				case ledger.SagaDebitHeld:
					get(d.Transfer.ID).held++
				case ledger.SagaCredited:
					get(d.Transfer.ID).credited++
				case ledger.SagaCreditRejected:
					get(d.Transfer.ID).creditRejected++
				case ledger.SagaCompleted:
					get(d.PendingID).completed++
				case ledger.SagaAborted:
					get(d.PendingID).aborted++
				}
			}
			if len(p.Events) == 0 {
				break
			}
		}
	}
	return ev, events
}

// checkSagaLog reads every shard's whole log and checks the saga protocol
// per transfer: a posted transfer has exactly one posting (one
// TransferPosted, or one hold, one credit and one completion); a rejected
// one has no posting, no credit and no completion; no saga has both a
// credit and an abort, and every hold ended.
func checkSagaLog(ctx context.Context, t *testing.T, cl *client.Client, w *sagaWriter, shards int) {
	t.Helper()
	ev, _ := countSagaEvents(ctx, t, cl, shards)
	for id, e := range ev {
		s := w.all[id]
		if s == nil {
			if !strings.HasPrefix(id, "fund-") {
				t.Errorf("the logs hold transfer %s that no client sent: %+v", id, *e)
			}
			continue
		}
		once := e.posted == 1 && e.held+e.credited+e.completed == 0 ||
			e.posted == 0 && e.held == 1 && e.credited == 1 && e.completed == 1 && e.creditRejected+e.aborted == 0
		none := e.posted+e.credited+e.completed == 0
		switch {
		case e.held > 1 || e.credited+e.creditRejected > 1 || e.completed+e.aborted > 1:
			t.Errorf("transfer %s decided more than once: %+v", id, *e)
		case e.credited > 0 && e.aborted > 0:
			t.Errorf("saga %s both credited and aborted: %+v", id, *e)
		case e.held == 1 && e.completed+e.aborted != 1:
			t.Errorf("saga %s never finished: %+v", id, *e)
		case s.out == outPosted && !once:
			t.Errorf("acknowledged transfer %s not posted exactly once: %+v", id, *e)
		case s.out == outRejected && !none:
			t.Errorf("rejected transfer %s moved money: %+v", id, *e)
		case !once && !none:
			t.Errorf("transfer %s half done: %+v", id, *e)
		}
	}
	for id, s := range w.all {
		if s.out == outPosted && ev[id] == nil {
			t.Errorf("acknowledged transfer %s has no event", id)
		}
	}
}

// checkAudit runs tally audit on the real binary against the proxy: it
// must exit 0 and report a consistent cut with nothing in flight and the
// clearing accounts netting to 0.
func (c *cluster) checkAudit(ctx context.Context) { checkAudit(ctx, c.t, c.proxy) }

// checkAudit runs tally audit against addr: exit 0, a consistent cut, no
// violation, and every clearing account at net 0 with nothing in flight.
func checkAudit(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	var out []byte
	var rep ledger.AuditReport
	for try := 0; try < 5; try++ {
		var err error
		out, err = exec.CommandContext(ctx, bin, "--addr", addr, "audit").CombinedOutput()
		if err != nil {
			t.Fatalf("tally audit failed: %v\n%s", err, out)
		}
		js, err := exec.CommandContext(ctx, bin, "--addr", addr, "--json", "audit").Output()
		if err != nil {
			t.Fatalf("tally --json audit failed: %v\n%s", err, js)
		}
		if err := json.Unmarshal(js, &rep); err != nil {
			t.Fatalf("tally --json audit: %v\n%s", err, js)
		}
		if rep.Consistent && strings.Contains(string(out), "audit: ok (consistent cut)") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !rep.OK || !rep.Consistent || len(rep.Violations) != 0 || !strings.Contains(string(out), "audit: ok (consistent cut)") {
		t.Fatalf("tally audit: %+v\n%s", rep, out)
	}
	for _, x := range rep.Currencies {
		if x.InFlight != "0" || x.Net != "0" {
			t.Errorf("audit of %s: clearing net %s, in flight %s; want 0 and 0", x.Currency, x.Net, x.InFlight)
		}
	}
	if len(rep.Currencies) == 0 {
		t.Error("tally audit saw no clearing accounts: no saga ran")
	}
	t.Logf("tally audit (exit 0):\n%s", out)
}
