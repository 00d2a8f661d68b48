package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tally/api/wire"
	"tally/client"
	"tally/ledger"
	"tally/test/proc"
)

// Shape of the membership scenario.
const (
	mbShards   = 4
	mbPerShard = 5                    // client accounts per shard
	mbInitial  = 1_000_000            // deposit into each client account
	mbWriters  = 4                    // goroutines sending transfers through the proxy
	mbPace     = 5 * time.Millisecond // each writer's pause between two transfers
	// mbMaxLag is how far behind the leader's commit index a replica may
	// be to count as caught up: the promotion rule's bound.
	mbMaxLag = 128
	// mbTermBound is how long a node may take to exit after SIGTERM
	// (docs/spec.md §9).
	mbTermBound = 30 * time.Second
	// mbSoak is how long the load runs between two steps, and mbDown how
	// long a node of the rolling restart stays stopped.
	mbSoak = 2 * time.Second
	mbDown = 2 * time.Second
	// mbMaxGap bounds the time without any acknowledged write: far more
	// than a leadership hand-off or an election should take.
	mbMaxGap = 15 * time.Second
)

// mbOutcome is what a writer finally learned about one transfer.
type mbOutcome int

const (
	mbOpen     mbOutcome = iota // still being sent
	mbPosted                    // answered posted (directly or by polling)
	mbRejected                  // answered rejected: a business rejection
	mbUnknown                   // the test ended before a definite answer
)

// mbSent is one transfer of the load and what its writer saw.
type mbSent struct {
	t     ledger.Transfer
	cross bool
	out   mbOutcome
	code  ledger.Code
}

// mbLoad sends transfers through the proxy between random pairs of client
// accounts, mostly across shards. Each transfer has a unique id; a 503, a
// 504 or a transport error is retried with the same id (and body) until a
// definite answer; in_flight is followed with GET /v1/transfers/{id}; any
// other error answer is recorded and fails the test.
type mbLoad struct {
	cl       *client.Client
	accounts []string
	shardOf  map[string]int
	giveUp   chan struct{} // closed: stop retrying, leave the rest unknown
	began    time.Time

	mu        sync.Mutex
	all       map[string]*mbSent
	order     []string
	errs      []string
	lastAck   time.Time
	maxGap    time.Duration
	maxGapEnd time.Time

	seq       atomic.Int64
	retries   atomic.Int64 // attempts repeated after a 503, 504 or transport error
	s503      atomic.Int64
	s504      atomic.Int64
	transport atomic.Int64
	inflight  atomic.Int64 // POST answers that said in_flight
}

func (l *mbLoad) next(rng *rand.Rand, prefix string) *mbSent {
	a := l.accounts[rng.IntN(len(l.accounts))]
	var b string
	cross := rng.IntN(100) < 85
	for {
		b = l.accounts[rng.IntN(len(l.accounts))]
		if b != a && (l.shardOf[a] != l.shardOf[b]) == cross {
			break
		}
	}
	id := fmt.Sprintf("%s-%d", prefix, l.seq.Add(1))
	return &mbSent{t: ledger.Transfer{ID: id, Debit: a, Credit: b, Amount: 1 + rng.Int64N(5000)}, cross: cross}
}

// retry counts a failed call and says whether it may be repeated as is.
func (l *mbLoad) retry(err error) bool {
	var e *client.Error
	switch {
	case errors.As(err, &e) && e.Status == http.StatusServiceUnavailable:
		l.s503.Add(1)
	case errors.As(err, &e) && e.Status == http.StatusGatewayTimeout:
		l.s504.Add(1)
	case errors.As(err, &e):
		return false // any other answer is definite and wrong
	case client.IsUnavailable(err) || client.IsOutcomeUnknown(err):
		l.transport.Add(1)
	default:
		return false
	}
	l.retries.Add(1)
	return true
}

func (l *mbLoad) fail(id string, format string, args ...any) {
	l.mu.Lock()
	l.errs = append(l.errs, fmt.Sprintf("%s at +%.2fs: %s", id, time.Since(l.began).Seconds(), fmt.Sprintf(format, args...)))
	l.mu.Unlock()
}

func (l *mbLoad) acked() {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	from := l.lastAck
	if from.IsZero() {
		from = l.began
	}
	if g := now.Sub(from); g > l.maxGap {
		l.maxGap, l.maxGapEnd = g, now
	}
	l.lastAck = now
}

// send runs one transfer to a definite answer, or until giveUp.
func (l *mbLoad) send(ctx context.Context, s *mbSent) {
	l.mu.Lock()
	l.all[s.t.ID] = s
	l.order = append(l.order, s.t.ID)
	l.mu.Unlock()
	out, code := l.attempt(ctx, s.t)
	l.mu.Lock()
	s.out, s.code = out, code
	l.mu.Unlock()
	if out == mbPosted {
		l.acked()
	}
}

func (l *mbLoad) attempt(ctx context.Context, t ledger.Transfer) (mbOutcome, ledger.Code) {
	polling := false
	for {
		select {
		case <-l.giveUp:
			return mbUnknown, ""
		default:
		}
		if ctx.Err() != nil {
			return mbUnknown, ""
		}
		var st ledger.Status
		var code ledger.Code
		if !polling {
			res, err := l.cl.CreateTransfers(ctx, []ledger.Transfer{t})
			if err != nil {
				if !l.retry(err) {
					l.fail(t.ID, "POST /v1/transfers: %v", err)
					return mbUnknown, ""
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			r := res[0]
			st, code = r.Status, r.Result
			if r.Result == ledger.Exists {
				code = r.Original
			}
			if r.Result == ledger.ExistsWithDifferentFields {
				l.fail(t.ID, "a repeat with the same body answered %s", r.Result)
				return mbUnknown, ""
			}
			if st == ledger.StatusInFlight {
				l.inflight.Add(1)
			}
		} else {
			v, err := l.cl.Transfer(ctx, t.ID)
			if err != nil {
				if !l.retry(err) {
					l.fail(t.ID, "GET /v1/transfers/%s after in_flight: %v", t.ID, err)
					return mbUnknown, ""
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			st, code = v.Status, v.Result
		}
		switch st {
		case ledger.StatusPosted:
			return mbPosted, code
		case ledger.StatusRejected:
			if code != ledger.InsufficientFunds {
				l.fail(t.ID, "rejected with %s, not a business rejection this load can cause", code)
			}
			return mbRejected, code
		case ledger.StatusInFlight:
			polling = true
			time.Sleep(100 * time.Millisecond)
		default:
			l.fail(t.ID, "unexpected status %q (result %s)", st, code)
			return mbUnknown, ""
		}
	}
}

// mbPhases is a timeline of the scenario's steps, relative to the start
// of the load, to place the longest gap between acknowledged writes.
type mbPhases struct {
	mu    sync.Mutex
	began time.Time
	marks []string
	at    []time.Duration
}

func (p *mbPhases) mark(t *testing.T, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.mu.Lock()
	d := time.Since(p.began)
	p.marks, p.at = append(p.marks, msg), append(p.at, d)
	p.mu.Unlock()
	t.Logf("[+%5.2fs] %s", d.Seconds(), msg)
}

// during names the last step that began before at.
func (p *mbPhases) during(at time.Duration) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := "before any step"
	for i, d := range p.at {
		if d <= at {
			name, _, _ = strings.Cut(p.marks[i], "\n")
		}
	}
	return name
}

// mbReplicas is one shard's replicas by node, from GET /v1/cluster.
func mbReplicas(s client.ShardInfo) map[string]client.Replica {
	out := map[string]client.Replica{}
	for _, r := range s.Replicas {
		out[r.Node] = r
	}
	return out
}

// mbSettled says why the cluster status is not yet: every shard has a
// leader among want, and exactly the nodes of want as voters, each
// reachable and within mbMaxLag of the commit index ("" when it is).
func mbSettled(st *client.ClusterStatus, want []string) string {
	if len(st.Shards) != mbShards {
		return fmt.Sprintf("%d shards listed", len(st.Shards))
	}
	for _, s := range st.Shards {
		if !slices.Contains(want, s.Leader) {
			return fmt.Sprintf("shard %d: leader %q", s.Shard, s.Leader)
		}
		rs := mbReplicas(s)
		if len(rs) != len(want) {
			return fmt.Sprintf("shard %d: %d replicas, want %v", s.Shard, len(rs), want)
		}
		for _, id := range want {
			r, ok := rs[id]
			switch {
			case !ok:
				return fmt.Sprintf("shard %d: no replica on %s", s.Shard, id)
			case r.Suffrage != wire.Voter:
				return fmt.Sprintf("shard %d: %s is a %s", s.Shard, id, r.Suffrage)
			case r.State == "unreachable" || r.State == "unknown" || r.State == "":
				return fmt.Sprintf("shard %d: %s is %q", s.Shard, id, r.State)
			case r.Lag > mbMaxLag:
				return fmt.Sprintf("shard %d: %s lags %d", s.Shard, id, r.Lag)
			}
		}
	}
	return ""
}

// mbStatus prints a cluster status in one line per shard.
func mbStatus(st *client.ClusterStatus) string {
	var b strings.Builder
	for _, s := range st.Shards {
		fmt.Fprintf(&b, "\n  shard %d leader %-3s commit %-6d", s.Shard, s.Leader, s.CommitIndex)
		for _, r := range s.Replicas {
			fmt.Fprintf(&b, " %s=%s/%s/lag%d", r.Node, r.Suffrage, r.State, r.Lag)
		}
	}
	return b.String()
}

// TestMembershipUnderLoad: the membership operations an operator runs on a
// live cluster, on the real binary, under cross-shard write load through
// the proxy. A fourth node joins (non-voter, then voter of every shard); a
// node that leads shards is removed with `tally cluster leave` through
// another node and then stopped with SIGTERM; every remaining node is
// restarted in turn with SIGTERM (each exits 0 within 30 s and comes back
// as a caught-up voter with its data). Throughout, every write gets a
// definite answer or a 503/504 that a retry with the same id resolves;
// afterwards every acknowledged transfer is posted exactly once, the
// balances are the fold of the posted transfers, money is conserved, no
// saga stays open, and tally verify and tally audit pass on the final
// membership.
func TestMembershipUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test on real processes: skipped with -short")
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	dir := t.TempDir()
	ports, err := proc.FreePorts(9)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*proc.Node
	for i := range 4 {
		id := fmt.Sprintf("n%d", i+1)
		nodes = append(nodes, proc.NewNode(bin, id, fmt.Sprintf("127.0.0.1:%d", ports[4+i]),
			fmt.Sprintf("127.0.0.1:%d", ports[i]), filepath.Join(dir, id), filepath.Join(dir, id+".log")))
	}
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", ports[8])
	proxy := proc.NewProxy(bin, proxyAddr, filepath.Join(dir, "proxy.log"), nodes[:3])
	all := proc.Procs(nodes, proxy)
	t.Cleanup(func() {
		proc.StopAll(10*time.Second, all...)
		if t.Failed() {
			for _, p := range all {
				b, _ := os.ReadFile(p.LogPath)
				t.Logf("---- %s log (last 6 KiB) ----\n%s", p.Name, tail(b, 6144))
			}
		}
	})
	byID := map[string]*proc.Node{}
	for _, n := range nodes {
		byID[n.ID] = n
	}
	cl := client.New(proxyAddr, client.WithTimeout(5*time.Second))
	status := func(addr string) (*client.ClusterStatus, error) {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return client.New(addr, client.WithTimeout(3*time.Second)).Cluster(c)
	}
	var last *client.ClusterStatus
	var why string
	// settle waits until the status (through the proxy) meets mbSettled.
	settle := func(what string, want []string, d time.Duration) time.Duration {
		t.Helper()
		from := time.Now()
		deadline := from.Add(d)
		for {
			st, err := status(proxyAddr)
			if err == nil {
				last = st
				if why = mbSettled(st, want); why == "" {
					return time.Since(from)
				}
			} else {
				why = err.Error()
			}
			if time.Now().After(deadline) {
				s := ""
				if last != nil {
					s = mbStatus(last)
				}
				t.Fatalf("timed out after %s waiting for %s: %s; last status:%s", d, what, why, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// 1. Three nodes, four shards, the proxy; accounts on every shard.
	if err := proc.StartCluster(ctx, nodes[:3], proxy, mbShards, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := proxy.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	settle("three voters of every shard with a leader", []string{"n1", "n2", "n3"}, 60*time.Second)

	l := &mbLoad{cl: client.New(proxyAddr, client.WithTimeout(3*time.Second)), shardOf: map[string]int{},
		giveUp: make(chan struct{}), all: map[string]*mbSent{}}
	var accounts []ledger.Account
	var deposits []ledger.Transfer
	count := map[int]int{}
	for i := 0; len(accounts) < mbShards*mbPerShard; i++ {
		id := fmt.Sprintf("mb%d", i)
		sh := ledger.ShardOf(id, mbShards)
		if count[sh] == mbPerShard {
			continue
		}
		count[sh]++
		l.accounts = append(l.accounts, id)
		l.shardOf[id] = sh
		accounts = append(accounts, ledger.Account{ID: id, Currency: "USD"})
		deposits = append(deposits, ledger.Transfer{ID: "mbfund-" + id, Debit: ledger.World, Credit: id, Amount: mbInitial})
	}
	res, err := cl.CreateAccounts(ctx, accounts)
	mustOK(t, res, err)
	res, err = cl.CreateTransfers(ctx, deposits)
	mustOK(t, res, err)
	total := int64(mbInitial * len(accounts))
	t.Logf("cluster of n1 n2 n3 with %d shards up and %d accounts funded (%d total) in %.1fs",
		mbShards, len(accounts), total, time.Since(began).Seconds())

	// 2. The load.
	ph := &mbPhases{}
	l.began = time.Now()
	ph.began = l.began
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range mbWriters {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for {
				select {
				case <-stop:
					return
				default:
				}
				l.send(ctx, l.next(rng, fmt.Sprintf("mb%d", g)))
				time.Sleep(mbPace) // spare the CPU the nodes share with the test
			}
		})
	}
	ph.mark(t, "load started: %d writers through the proxy", mbWriters)
	waitFor(t, 20*time.Second, "first acknowledged transfers", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return !l.lastAck.IsZero()
	})
	// Each step is followed by a few seconds of load, so that the next
	// one acts on a busy cluster and a restarted node has entries to catch
	// up on.
	soak := func() { time.Sleep(mbSoak) }
	soak()

	// 3a. n4 joins: a non-voter of each shard, then a voter.
	n4 := nodes[3]
	ph.mark(t, "starting n4 with --join %s", nodes[0].HTTP)
	joinAt := time.Now()
	if err := n4.Start("--join", nodes[0].HTTP); err != nil {
		t.Fatal(err)
	}
	sawNonvoter := map[int]bool{}
	sawAbsent := map[int]bool{}
	var voterAt time.Duration
	for {
		if !n4.Running() {
			t.Fatalf("n4 exited while joining: %s", n4.Exit())
		}
		st, err := status(nodes[1].HTTP)
		if err == nil && len(st.Shards) == mbShards {
			last = st
			voters := 0
			for _, s := range st.Shards {
				r, ok := mbReplicas(s)["n4"]
				switch {
				case !ok:
					sawAbsent[s.Shard] = true
				case r.Suffrage == wire.Nonvoter:
					if !sawNonvoter[s.Shard] {
						t.Logf("[+%5.2fs] n4 seen as a non-voter of shard %d (state %s, applied_index %d, lag %d)",
							time.Since(l.began).Seconds(), s.Shard, r.State, r.AppliedIndex, r.Lag)
					}
					sawNonvoter[s.Shard] = true
				case r.Suffrage == wire.Voter:
					voters++
				default:
					t.Errorf("shard %d: n4 has suffrage %q", s.Shard, r.Suffrage)
				}
			}
			if voters == mbShards {
				voterAt = time.Since(joinAt)
				break
			}
		}
		if time.Since(joinAt) > 60*time.Second {
			t.Fatalf("n4 not a voter of every shard 60s after it started with --join; last status:%s", mbStatus(last))
		}
		time.Sleep(25 * time.Millisecond)
	}
	var nonvoterShards []int
	for sh := range mbShards {
		if sawNonvoter[sh] {
			nonvoterShards = append(nonvoterShards, sh)
		}
	}
	ph.mark(t, "n4 is a voter of every shard %.2fs after its start; seen as a non-voter first on shards %v (of %d); not yet a member seen on %d shards",
		voterAt.Seconds(), nonvoterShards, mbShards, len(sawAbsent))
	caught := settle("n4 a caught-up voter of every shard", []string{"n1", "n2", "n3", "n4"}, 30*time.Second)
	ph.mark(t, "four caught-up voters on every shard (%.2fs more)%s", caught.Seconds(), mbStatus(last))
	mbCheckPromotions(t, nodes[:3], "n4")
	soak()

	// 3b. Remove a node that leads at least one shard, through another,
	// as the cluster shows it now (leaders move on their own to spread
	// over the voters).
	settle("four caught-up voters on every shard", []string{"n1", "n2", "n3", "n4"}, 30*time.Second)
	leads := map[string][]int{}
	for _, s := range last.Shards {
		leads[s.Leader] = append(leads[s.Leader], s.Shard)
	}
	var victim *proc.Node
	for _, n := range nodes {
		if victim == nil || len(leads[n.ID]) > len(leads[victim.ID]) {
			victim = n
		}
	}
	if len(leads[victim.ID]) == 0 {
		t.Fatalf("no node leads a shard:%s", mbStatus(last))
	}
	var via *proc.Node
	for _, n := range nodes {
		if n != victim {
			via = n
			break
		}
	}
	ph.mark(t, "tally cluster leave %s (leader of shards %v) through %s", victim.ID, leads[victim.ID], via.ID)
	lctx, lcancel := context.WithTimeout(ctx, 60*time.Second)
	leaveFrom := time.Now()
	out, err := exec.CommandContext(lctx, bin, "--addr", via.HTTP, "--timeout", "30s", "cluster", "leave", victim.ID).CombinedOutput()
	lcancel()
	if err != nil {
		st, _ := status(via.HTTP)
		s := ""
		if st != nil {
			s = mbStatus(st)
		}
		t.Fatalf("tally cluster leave %s through %s: %v\n%s\nstatus:%s", victim.ID, via.ID, err, out, s)
	}
	ph.mark(t, "leave answered in %.2fs: %s", time.Since(leaveFrom).Seconds(), strings.TrimSpace(string(out)))
	var rest []string
	for _, n := range nodes {
		if n != victim {
			rest = append(rest, n.ID)
		}
	}
	settled := settle(fmt.Sprintf("shards without %s: a leader and 3 voters", victim.ID), rest, 30*time.Second)
	ph.mark(t, "every shard has a leader and voters %v, %s gone (%.2fs after leave answered)%s", rest, victim.ID, settled.Seconds(), mbStatus(last))

	term := func(n *proc.Node) {
		t.Helper()
		from := time.Now()
		if err := n.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM %s: %v", n.ID, err)
		}
		if !n.WaitExit(mbTermBound + 5*time.Second) {
			n.Kill()
			t.Fatalf("%s still running %s after SIGTERM", n.ID, mbTermBound+5*time.Second)
		}
		took := time.Since(from)
		ph.mark(t, "%s exited after SIGTERM in %.2fs: %s", n.ID, took.Seconds(), n.Exit())
		if took > mbTermBound {
			t.Errorf("%s took %s to exit after SIGTERM, more than %s", n.ID, took, mbTermBound)
		}
		if n.Exit() != "exited" {
			t.Errorf("%s ended with %q after SIGTERM, want exit status 0", n.ID, n.Exit())
		}
	}
	term(victim)
	settled = settle(fmt.Sprintf("shards led and replicated by %v after %s stopped", rest, victim.ID), rest, 30*time.Second)
	ph.mark(t, "after %s stopped: every shard has a leader and 3 caught-up voters (%.2fs)", victim.ID, settled.Seconds())
	soak()

	// 3c. Rolling restart of the remaining nodes, one at a time.
	for _, id := range rest {
		n := byID[id]
		ph.mark(t, "rolling restart: SIGTERM %s", id)
		term(n)
		// Down for a while under load, as an upgrade would keep it: the
		// shards carry on with the two other voters.
		time.Sleep(mbDown)
		ph.mark(t, "starting %s again with its data, without --bootstrap or --join", id)
		from := time.Now()
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		if err := n.WaitReady(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		// A node that restarts with its data is a voter as before: never
		// a non-voter, never missing from a shard.
		var demoted []string
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, err := status(proxyAddr)
			if err == nil && len(st.Shards) == mbShards {
				last = st
				for _, s := range st.Shards {
					if r, ok := mbReplicas(s)[id]; !ok || r.Suffrage != wire.Voter {
						demoted = append(demoted, fmt.Sprintf("shard %d: %+v (present %v)", s.Shard, r, ok))
					}
				}
				if why = mbSettled(st, rest); why == "" {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not a caught-up voter 60s after its restart: %s; last status:%s", id, why, mbStatus(last))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(demoted) > 0 {
			t.Errorf("%s after its restart was seen not as a voter: %v", id, demoted[:min(4, len(demoted))])
		}
		ph.mark(t, "%s back: a caught-up voter of every shard %.2fs after its start", id, time.Since(from).Seconds())
		soak()
	}

	// 4. Stop the load; let every transfer in flight get its answer.
	ph.mark(t, "stopping the load")
	loadEnd := time.Now()
	close(stop)
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(20 * time.Second):
		close(l.giveUp)
		<-drained
	}
	l.mu.Lock()
	gap, gapEnd := l.maxGap, l.maxGapEnd
	if g := loadEnd.Sub(l.lastAck); g > gap {
		gap, gapEnd = g, loadEnd
	}
	l.mu.Unlock()
	for _, e := range l.errs {
		t.Errorf("client error: %s", e)
	}

	waitFor(t, 30*time.Second, "every saga finished (GET /v1/sagas?state=in_flight empty)", func() bool {
		ss, err := cl.Sagas(ctx, "in_flight", -1)
		return err == nil && len(ss) == 0
	})
	sagasDone := time.Since(loadEnd)
	var final []string
	for _, id := range rest {
		final = append(final, byID[id].HTTP)
	}
	waitConverged(ctx, t, final, mbShards)

	posted, rejected, unknown, resolvedPosted, cross := mbCheckLedger(ctx, t, cl, l, accounts, deposits, total)
	mbCheckLog(ctx, t, cl, l)
	mbCheckVerify(ctx, t, proxyAddr, rest)
	checkAudit(ctx, t, proxyAddr)

	for _, p := range all {
		if u := p.Unexpected(); len(u) > 0 {
			t.Errorf("%s ended unexpectedly: %v", p.Name, u)
		}
	}
	gapAt := gapEnd.Add(-gap).Sub(l.began)
	if gap > mbMaxGap {
		t.Errorf("no write was acknowledged for %s (from +%.2fs, during: %s)", gap, gapAt.Seconds(), ph.during(gapAt))
	}
	if st, err := exec.CommandContext(ctx, bin, "--addr", proxyAddr, "cluster", "status").CombinedOutput(); err != nil {
		t.Errorf("tally cluster status: %v\n%s", err, st)
	} else {
		t.Logf("tally cluster status (final membership):\n%s", st)
	}
	t.Logf("transfers sent %d (%d cross-shard): %d acknowledged posted, %d rejected (insufficient funds), %d without a definite answer (%d of them found posted)",
		len(l.all), cross, posted, rejected, unknown, resolvedPosted)
	t.Logf("retries %d: 503 seen %d, 504 seen %d, transport errors %d; POST answers in_flight %d",
		l.retries.Load(), l.s503.Load(), l.s504.Load(), l.transport.Load(), l.inflight.Load())
	t.Logf("longest time without an acknowledged write: %.2fs, from +%.2fs (during: %s)", gap.Seconds(), gapAt.Seconds(), ph.during(gapAt))
	t.Logf("sagas all finished %.2fs after the load stopped; load ran %.1fs; whole test %.1fs",
		sagasDone.Seconds(), loadEnd.Sub(l.began).Seconds(), time.Since(began).Seconds())
	if posted == 0 {
		t.Error("no transfer was acknowledged")
	}
}

// mbTransfer reads a transfer back, retrying what the load would retry.
func mbTransfer(ctx context.Context, cl *client.Client, id string) (*client.TransferView, error) {
	for try := 0; ; try++ {
		v, err := cl.Transfer(ctx, id)
		if err == nil || client.IsNotFound(err) || try == 50 || !(client.IsUnavailable(err) || client.IsOutcomeUnknown(err)) {
			return v, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mbCheckLedger reads every transfer the load sent back and checks it
// against what its writer was told, then checks each account against the
// fold of the posted transfers and the sum against the deposits.
func mbCheckLedger(ctx context.Context, t *testing.T, cl *client.Client, l *mbLoad, accounts []ledger.Account, deposits []ledger.Transfer, total int64) (posted, rejected, unknown, resolvedPosted, cross int) {
	t.Helper()
	want := map[string]int64{}
	for _, d := range deposits {
		want[d.Credit] += d.Amount
	}
	for _, id := range l.order {
		s := l.all[id]
		if s.cross {
			cross++
		}
		switch s.out {
		case mbPosted:
			posted++
		case mbRejected:
			rejected++
		default:
			unknown++
		}
		v, err := mbTransfer(ctx, cl, id)
		if client.IsNotFound(err) {
			if s.out != mbUnknown {
				t.Errorf("transfer %s, answered %v, is missing", id, s.out)
			}
			continue
		}
		if err != nil {
			t.Fatalf("read transfer %s: %v", id, err)
		}
		if v.Debit != s.t.Debit || v.Credit != s.t.Credit || v.Amount != s.t.Amount {
			t.Errorf("transfer %s recorded with other fields: %s -> %s %d, sent %s -> %s %d",
				id, v.Debit, v.Credit, v.Amount, s.t.Debit, s.t.Credit, s.t.Amount)
		}
		switch {
		case v.Status == ledger.StatusInFlight:
			t.Errorf("transfer %s still in flight: saga %+v", id, v.Saga)
		case s.out == mbPosted && v.Status != ledger.StatusPosted:
			t.Errorf("acknowledged transfer %s is %s (%s)", id, v.Status, v.Result)
		case s.out == mbRejected && v.Status != ledger.StatusRejected:
			t.Errorf("rejected transfer %s is %s", id, v.Status)
		case v.Status == ledger.StatusPosted && v.CrossShard != s.cross:
			t.Errorf("transfer %s: cross_shard %v, want %v", id, v.CrossShard, s.cross)
		}
		if v.Status == ledger.StatusPosted {
			if s.out == mbUnknown {
				resolvedPosted++
			}
			want[s.t.Debit] -= s.t.Amount
			want[s.t.Credit] += s.t.Amount
		}
	}
	var sum int64
	for _, a := range accounts {
		v, err := cl.Account(ctx, a.ID, client.ReadOpts{})
		if err != nil {
			t.Fatalf("read account %s: %v", a.ID, err)
		}
		sum += v.Balance
		if v.Balance != want[a.ID] {
			t.Errorf("%s: balance %d, the posted transfers imply %d", a.ID, v.Balance, want[a.ID])
		}
		if v.DebitsPending != 0 || v.CreditsPending != 0 {
			t.Errorf("%s: pending debits %d, pending credits %d after every saga finished", a.ID, v.DebitsPending, v.CreditsPending)
		}
	}
	if sum != total {
		t.Errorf("money not conserved: the accounts hold %d, the deposits were %d", sum, total)
	}
	return
}

// mbCheckLog reads every shard's log and checks that no transfer of the
// load was applied twice: at most one posting, hold, credit and end per
// id, and exactly one posting (direct, or hold + credit + completion) for
// each one acknowledged posted.
func mbCheckLog(ctx context.Context, t *testing.T, cl *client.Client, l *mbLoad) {
	t.Helper()
	ev, events := countSagaEvents(ctx, t, cl, mbShards)
	bad := 0
	for id, s := range l.all {
		e := ev[id]
		if e == nil {
			if s.out != mbUnknown {
				t.Errorf("transfer %s (answered %v) has no event", id, s.out)
			}
			continue
		}
		once := e.posted == 1 && e.held+e.credited+e.completed == 0 ||
			e.posted == 0 && e.held == 1 && e.credited == 1 && e.completed == 1 && e.creditRejected+e.aborted == 0
		none := e.posted+e.credited+e.completed == 0
		if e.posted > 1 || e.held > 1 || e.credited+e.creditRejected > 1 || e.completed+e.aborted > 1 || e.rejected > 1 ||
			(s.out == mbPosted && !once) || (s.out == mbRejected && !none) || (!once && !none) {
			bad++
			if bad <= 10 {
				t.Errorf("transfer %s (answered %v): events %+v", id, s.out, *e)
			}
		}
	}
	t.Logf("shard logs: %d events read, %d transfer ids of the load found, %d with wrong events", events, len(ev), bad)
}

// mbCheckVerify runs tally verify through the proxy: it must exit 0, and
// check on every shard exactly the final members' replicas.
func mbCheckVerify(ctx context.Context, t *testing.T, addr string, members []string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(c, bin, "--addr", addr, "--timeout", "60s", "verify").CombinedOutput()
	if err != nil {
		t.Fatalf("tally verify failed: %v\n%s", err, out)
	}
	js, err := exec.CommandContext(c, bin, "--addr", addr, "--timeout", "60s", "--json", "verify").Output()
	if err != nil {
		t.Fatalf("tally --json verify failed: %v\n%s", err, js)
	}
	var rep struct {
		OK     bool `json:"ok"`
		Shards []struct {
			Shard    int  `json:"shard"`
			OK       bool `json:"ok"`
			Replicas []struct {
				Node string `json:"node"`
			} `json:"replicas"`
		} `json:"shards"`
	}
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatalf("tally --json verify: %v\n%s", err, js)
	}
	if !rep.OK || len(rep.Shards) != mbShards {
		t.Errorf("tally verify: ok %v, %d shards\n%s", rep.OK, len(rep.Shards), js)
	}
	for _, s := range rep.Shards {
		var got []string
		for _, r := range s.Replicas {
			got = append(got, r.Node)
		}
		sort.Strings(got)
		if !s.OK || !slices.Equal(got, members) {
			t.Errorf("tally verify of shard %d: ok %v, replicas %v, want %v", s.Shard, s.OK, got, members)
		}
	}
	t.Logf("tally verify (exit 0):\n%s", out)
}

func (o mbOutcome) String() string {
	return [...]string{"open", "posted", "rejected", "unknown"}[o]
}

// mbPromotion is a "promoted to voter" log line of a shard's leader.
var mbPromotion = regexp.MustCompile(`promoted to voter.*\bmember=(\S+).*\bapplied_index=(\d+).*\bcommit_index=(\d+)`)

// mbCheckPromotions finds the promotions of member in the logs of nodes
// (the shards' leaders while it joined): one per shard, each within the
// promotion rule's lag; and the nodes' tally_raft_promotions_total.
func mbCheckPromotions(t *testing.T, nodes []*proc.Node, member string) {
	t.Helper()
	var lines []string
	for _, n := range nodes {
		b, err := os.ReadFile(n.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			m := mbPromotion.FindStringSubmatch(line)
			if m == nil || m[1] != member {
				continue
			}
			lines = append(lines, n.ID+": "+line)
			applied, _ := strconv.ParseUint(m[2], 10, 64)
			commit, _ := strconv.ParseUint(m[3], 10, 64)
			if applied+mbMaxLag < commit {
				t.Errorf("%s promoted %d entries behind the commit index: %s", member, commit-applied, line)
			}
		}
	}
	t.Logf("promotions of %s in the leaders' logs:\n  %s", member, strings.Join(lines, "\n  "))
	if len(lines) != mbShards {
		t.Errorf("%d promotions of %s logged, want one per shard (%d)", len(lines), member, mbShards)
	}
	var sum float64
	for _, n := range nodes {
		resp, err := http.Get("http://" + n.HTTP + "/metrics")
		if err != nil {
			t.Errorf("metrics of %s: %v", n.ID, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "tally_raft_promotions_total" {
				v, _ := strconv.ParseFloat(f[1], 64)
				sum += v
			}
		}
	}
	// n2 and n3 joined the same way at the start: three promotions per shard.
	t.Logf("tally_raft_promotions_total summed over %d nodes: %v", len(nodes), sum)
	if want := float64(3 * mbShards); sum != want { // n2, n3 and the member
		t.Errorf("tally_raft_promotions_total sums to %v over the first nodes, want %v (n2, n3, %s on each of %d shards)", sum, want, member, mbShards)
	}
}
