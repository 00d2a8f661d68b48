package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tally/client"
	"tally/ledger"
)

// waitMembers waits until every node sees every shard with three voters
// whose addresses are known and a leader.
func (c *cluster) waitMembers() {
	c.t.Helper()
	waitFor(c.t, 60*time.Second, "three replicas of every shard with a leader", func() bool {
		for _, n := range c.nodes {
			st, err := client.New(n.http).Cluster(context.Background())
			if err != nil || len(st.Shards) == 0 {
				return false
			}
			for _, s := range st.Shards {
				if s.Leader == "" || len(s.Replicas) != 3 {
					return false
				}
				for _, r := range s.Replicas {
					if r.HTTP == "" {
						return false
					}
				}
			}
		}
		return true
	})
}

// writer sends transfers through the proxy, retrying each with the same id
// and body until it gets a definite answer or gives up.
type writer struct {
	cl       *client.Client
	accounts []string // all on one shard
	mu       sync.Mutex
	acked    map[string]ledger.Transfer // answered posted
	rejected map[string]bool            // answered rejected
	unknown  map[string]ledger.Transfer // gave up: may or may not have applied
	lastOK   atomic.Int64               // unix nanos of the last posted answer
	seq      atomic.Int64
}

func (w *writer) one(ctx context.Context, prefix string) {
	i := w.seq.Add(1)
	a, b := rand.IntN(len(w.accounts)), rand.IntN(len(w.accounts)-1)
	if b >= a {
		b++
	}
	t := ledger.Transfer{ID: fmt.Sprintf("%s-%d", prefix, i), Debit: w.accounts[a], Credit: w.accounts[b], Amount: int64(1 + rand.IntN(300))}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		res, err := w.cl.CreateTransfers(c, []ledger.Transfer{t})
		cancel()
		if err == nil && len(res) == 1 {
			w.mu.Lock()
			defer w.mu.Unlock()
			switch res[0].Status {
			case ledger.StatusPosted:
				w.acked[t.ID] = t
				w.lastOK.Store(time.Now().UnixNano())
			case ledger.StatusRejected:
				w.rejected[t.ID] = true
			default:
				w.unknown[t.ID] = t
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.mu.Lock()
	w.unknown[t.ID] = t
	w.mu.Unlock()
}

// TestKillShardLeader: kill -9 the leader of a shard under load through the
// proxy; writes succeed again within a few seconds; the killed node restarts
// and catches up; every acknowledged transfer is applied exactly once, no
// money is created or lost, and tally verify passes on every replica.
func TestKillShardLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test on real processes: skipped with -short")
	}
	c := startCluster(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cl := client.New(c.proxy, client.WithTimeout(5*time.Second))

	// Eight accounts co-located on one shard by their {tag}, funded from @world.
	const initial = 1_000_000
	var accounts []ledger.Account
	var deposits []ledger.Transfer
	for i := 0; i < 8; i++ {
		id := fmt.Sprintf("acct%d{e2e}", i)
		accounts = append(accounts, ledger.Account{ID: id, Currency: "USD"})
		deposits = append(deposits, ledger.Transfer{ID: "fund-" + id, Debit: ledger.World, Credit: id, Amount: initial})
	}
	res, err := cl.CreateAccounts(ctx, accounts)
	mustOK(t, res, err)
	res, err = cl.CreateTransfers(ctx, deposits)
	mustOK(t, res, err)
	sh := ledger.ShardOf("x{e2e}", 4)

	w := &writer{cl: cl, acked: map[string]ledger.Transfer{}, rejected: map[string]bool{}, unknown: map[string]ledger.Transfer{}}
	for _, a := range accounts {
		w.accounts = append(w.accounts, a.ID)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					w.one(ctx, fmt.Sprintf("w%d", g))
				}
			}
		}()
	}
	waitFor(t, 20*time.Second, "first acknowledged transfers", func() bool { return w.lastOK.Load() != 0 })
	time.Sleep(time.Second)

	leader := c.leaderOf(ctx, sh)
	t.Logf("killing %s, leader of shard %d", leader.id, sh)
	killed := time.Now()
	c.kill(leader)
	waitFor(t, 15*time.Second, "a transfer acknowledged after the kill", func() bool { return w.lastOK.Load() > killed.Add(300*time.Millisecond).UnixNano() })
	t.Logf("writes through the proxy succeed again %.1fs after the kill", time.Duration(w.lastOK.Load()-killed.UnixNano()).Seconds())
	if d := time.Duration(w.lastOK.Load() - killed.UnixNano()); d > 10*time.Second {
		t.Errorf("writes took %s to resume after the leader was killed", d)
	}
	time.Sleep(2 * time.Second)

	c.start(leader)
	c.waitHTTP(leader.http, "/healthz")
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	c.waitConverged(ctx)

	checkExactlyOnce(ctx, t, cl, w, accounts, initial)
	if out, err := c.run(ctx, "verify"); err != nil {
		t.Fatalf("tally verify failed: %v\n%s", err, out)
	} else {
		t.Logf("tally verify:\n%s", out)
	}
	t.Logf("acknowledged %d, rejected %d, unknown %d", len(w.acked), len(w.rejected), len(w.unknown))
}

func mustOK(t *testing.T, res []ledger.Result, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Result != ledger.OK && r.Result != ledger.Exists {
			t.Fatalf("%s: %s", r.ID, r.Result)
		}
	}
}

func (c *cluster) leaderOf(ctx context.Context, sh int) *node {
	c.t.Helper()
	var out *node
	waitFor(c.t, 10*time.Second, fmt.Sprintf("leader of shard %d", sh), func() bool {
		st, err := client.New(c.proxy).Cluster(ctx)
		if err != nil {
			return false
		}
		for _, n := range c.nodes {
			if n.id == st.Shards[sh].Leader && n.Running() {
				out = n
				return true
			}
		}
		return false
	})
	return out
}

// waitConverged waits until every replica of every shard reports the same
// applied seq and state hash.
func (c *cluster) waitConverged(ctx context.Context) {
	c.t.Helper()
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.http)
	}
	waitConverged(ctx, c.t, addrs, 4)
}

// waitConverged waits up to 60 s until the replicas at addrs agree on
// every shard's applied seq, state hash and head hash, and fails the test
// with the last difference otherwise.
func waitConverged(ctx context.Context, t *testing.T, addrs []string, shards int) {
	t.Helper()
	var why string
	deadline := time.Now().Add(60 * time.Second)
	for {
		why = ""
		for sh := 0; sh < shards && why == ""; sh++ {
			var first *client.ShardState
			for _, addr := range addrs {
				s, err := client.New(addr, client.WithTimeout(3*time.Second)).ShardState(ctx, sh)
				if err != nil {
					why = fmt.Sprintf("shard %d on %s: %v", sh, addr, err)
					break
				}
				if first == nil {
					first = s
				} else if s.AppliedSeq != first.AppliedSeq || s.StateHash != first.StateHash || s.HeadHash != first.HeadHash {
					why = fmt.Sprintf("shard %d: %s at seq %d, %s at seq %d", sh, first.Node, first.AppliedSeq, s.Node, s.AppliedSeq)
					break
				}
			}
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas did not converge in 60s: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkExactlyOnce resolves every transfer the writers sent against the
// cluster and checks that the balances are exactly what the applied
// transfers imply: nothing acknowledged was lost, nothing applied twice,
// no money created or destroyed.
func checkExactlyOnce(ctx context.Context, t *testing.T, cl *client.Client, w *writer, accounts []ledger.Account, initial int64) {
	t.Helper()
	want := map[string]int64{}
	for _, a := range accounts {
		want[a.ID] = initial
	}
	applied := 0
	check := func(id string, tr ledger.Transfer, mustExist bool) {
		v, err := cl.Transfer(ctx, id)
		if client.IsNotFound(err) {
			if mustExist {
				t.Errorf("acknowledged transfer %s is missing", id)
			}
			return
		}
		if err != nil {
			t.Fatalf("read transfer %s: %v", id, err)
		}
		if v.Debit != tr.Debit || v.Credit != tr.Credit || v.Amount != tr.Amount {
			t.Errorf("transfer %s applied with different fields: %+v", id, v)
		}
		if v.Status == ledger.StatusPosted {
			applied++
			want[tr.Debit] -= tr.Amount
			want[tr.Credit] += tr.Amount
		} else if mustExist {
			t.Errorf("acknowledged transfer %s has status %s", id, v.Status)
		}
	}
	for id, tr := range w.acked {
		check(id, tr, true)
	}
	for id, tr := range w.unknown {
		check(id, tr, false)
	}
	var total int64
	for _, a := range accounts {
		v, err := cl.Account(ctx, a.ID, client.ReadOpts{})
		if err != nil {
			t.Fatal(err)
		}
		total += v.Balance
		if v.Balance != want[a.ID] {
			t.Errorf("%s: balance %d, the applied transfers imply %d", a.ID, v.Balance, want[a.ID])
		}
		if v.Balance < 0 {
			t.Errorf("%s overdrawn: %d", a.ID, v.Balance)
		}
	}
	if total != initial*int64(len(accounts)) {
		t.Errorf("money not conserved: total %d, want %d", total, initial*int64(len(accounts)))
	}
	if applied < len(w.acked) {
		t.Errorf("%d posted transfers found, %d acknowledged", applied, len(w.acked))
	}
}
