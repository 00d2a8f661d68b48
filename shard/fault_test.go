package shard_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"tally/cluster"
	"tally/ledger"
	"tally/shard"
	"tally/shard/shardtest"
)

// resumeBound is how long a shard may refuse writes after its leader
// dies: an election takes well under a second, the rest is slack for a
// loaded machine.
const resumeBound = 10 * time.Second

// workload runs closed-loop writers, each moving money from one shard's
// src account to its dst account with fresh transfer ids, and remembers
// every acknowledged transfer. A write that fails is retried with the
// same id, as a client must.
type workload struct {
	c    *shardtest.Cluster
	t    *testing.T
	tags []string // one per shard

	mu    sync.Mutex
	acked []map[string]int64 // per shard: id -> amount
	acks  [][]ack            // per shard
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newWorkload(t *testing.T, c *shardtest.Cluster) *workload {
	w := &workload{c: c, t: t, stop: make(chan struct{})}
	for s := 0; s < c.Shards(); s++ {
		tg := tagOn(s, c.Shards())
		w.tags = append(w.tags, tg)
		w.acked = append(w.acked, map[string]int64{})
		w.acks = append(w.acks, nil)
		setup(t, c, 1<<40, acct("src", tg))
		setup(t, c, 0, acct("dst", tg))
	}
	return w
}

func (w *workload) start(writers int) {
	for k := 0; k < writers; k++ {
		w.wg.Add(1)
		go w.writer(k)
	}
}

func (w *workload) writer(k int) {
	defer w.wg.Done()
	s := k % len(w.tags)
	tg := w.tags[s]
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		id := fmt.Sprintf("w%d.%d", k, i)
		amount := int64(i%9 + 1)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), submitBudget)
		res, err := w.c.Submit(ctx, transfers(xfer(id, acct("src", tg), acct("dst", tg), amount)))
		cancel()
		if err != nil {
			w.t.Errorf("transfer %s on shard %d not resolved within %v: %v", id, s, submitBudget, err)
			return
		}
		if !acked(res[0]) || res[0].Status != ledger.StatusPosted {
			w.t.Errorf("transfer %s: %+v, want ok posted", id, res[0])
			return
		}
		w.mu.Lock()
		w.acked[s][id] = amount
		w.acks[s] = append(w.acks[s], ack{start: start, done: time.Now()})
		w.mu.Unlock()
	}
}

func (w *workload) halt() {
	close(w.stop)
	w.wg.Wait()
}

// ack is when an acknowledged write was first sent and when it was
// acknowledged.
type ack struct{ start, done time.Time }

// waitAcked waits until every shard acknowledged n writes sent after
// since, and returns how long the slowest shard took to acknowledge its
// first.
func (w *workload) waitAcked(t *testing.T, since time.Time, n int, bound time.Duration) time.Duration {
	t.Helper()
	deadline := since.Add(bound)
	for {
		w.mu.Lock()
		var worst time.Duration
		all := true
		for _, acks := range w.acks {
			count, first := 0, time.Time{}
			for _, a := range acks {
				if a.start.After(since) {
					count++
					if first.IsZero() {
						first = a.done
					}
				}
			}
			if count < n {
				all = false
				break
			}
			worst = max(worst, first.Sub(since))
		}
		w.mu.Unlock()
		if all {
			return worst
		}
		if time.Now().After(deadline) {
			t.Fatalf("some shard acknowledged fewer than %d writes within %v\n%s", n, bound, w.c.Describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// check verifies that every acknowledged transfer is in its shard's log
// exactly once, with its record on the leader, that no transfer appears
// that nobody acknowledged, and that the balances are the sum of the
// acknowledged transfers.
func (w *workload) check(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), submitBudget)
	defer cancel()
	total := 0
	for s, tg := range w.tags {
		h := w.c.WaitLeader(t, s)
		evs := transferEvents(t, h, s)
		var sum int64
		for id, amount := range w.acked[s] {
			sum += amount
			if got := evs[id]; len(got) != 1 || got[0] != ledger.TransferPosted {
				t.Errorf("acknowledged transfer %s on shard %d: events %v, want one %s", id, s, got, ledger.TransferPosted)
			}
			// The state is quiescent, so the leader's local state is the
			// linearizable answer; a quorum round per id would be slow.
			rec, _, err := h.Transfer(ctx, s, id, shard.ReadOpts{Stale: true})
			if err != nil || rec.Status != ledger.StatusPosted || rec.Transfer.Amount != amount {
				t.Errorf("record of %s on shard %d: %+v, %v", id, s, rec, err)
			}
		}
		written := 0
		for id := range evs {
			if id[0] == 'w' {
				written++
			}
		}
		if written != len(w.acked[s]) {
			t.Errorf("shard %d: %d workload transfers in the log, %d acknowledged", s, written, len(w.acked[s]))
		}
		src, dst := balance(t, w.c, acct("src", tg)), balance(t, w.c, acct("dst", tg))
		if dst.CreditsPosted != sum || src.DebitsPosted != sum {
			t.Errorf("shard %d: src debits %d, dst credits %d; acknowledged %d", s, src.DebitsPosted, dst.CreditsPosted, sum)
		}
		total += len(w.acked[s])
	}
	t.Logf("%d acknowledged transfers checked", total)
}

// TestLeaderLoss kills the leader of shard 0 (with every shard it leads)
// under continuous writes, and checks that writes resume within a bound,
// that the restarted node catches up, and that every acknowledged
// transfer is applied exactly once.
func TestLeaderLoss(t *testing.T) {
	c := shardtest.New(t, 3, 4)
	w := newWorkload(t, c)
	w.start(8)
	defer func() {
		select {
		case <-w.stop:
		default:
			w.halt()
		}
	}()
	w.waitAcked(t, time.Now(), 20, resumeBound)

	victim := c.Num(c.WaitLeader(t, 0))
	killed := time.Now()
	c.Kill(victim)
	took := w.waitAcked(t, killed, 1, resumeBound)
	t.Logf("killed n%d; every shard took writes again within %v", victim, took)

	restarted := time.Now()
	c.Restart(victim)
	w.waitAcked(t, restarted, 20, resumeBound)
	w.halt()

	c.WaitConverged(t)
	c.VerifyAll(t)
	w.check(t)
}

// TestPartitionedLeader cuts the leader of a shard off from the other two
// nodes. The deposed leader must neither acknowledge a write nor answer
// a linearizable read (the stale read Jepsen found in Consul); the
// majority elects a leader and takes writes; after healing, the writes
// whose outcome was unknown are retried with the same ids and apply
// exactly once.
func TestPartitionedLeader(t *testing.T) {
	c := shardtest.New(t, 3, 4)
	const s = 1
	tg := tagOn(s, c.Shards())
	a, b := acct("a", tg), acct("b", tg)
	setup(t, c, 1000, a)
	setup(t, c, 0, b)

	old := c.WaitLeader(t, s)
	var cut []ledger.Command
	for i := 0; i < 6; i++ {
		cut = append(cut, transfers(xfer(fmt.Sprintf("cut.%d", i), a, b, int64(i+1))))
	}
	c.Partition(c.Num(old))

	// Linearizable reads on the cut-off leader, for as long as the test
	// runs below. One that starts after the majority acknowledged a write
	// and still answers is a stale read.
	reads := startReader(old, s, a)
	// Writes racing the cut on the leader that is now alone.
	errs := make([]error, len(cut))
	var wg sync.WaitGroup
	for i, cmd := range cut {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			res, err := old.Submit(ctx, s, cmd)
			if err == nil {
				t.Errorf("cut-off leader acknowledged %s: %+v", cmd.Transfers[0].ID, res)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	unknown := 0
	for i, err := range errs {
		switch {
		case errors.Is(err, cluster.ErrOutcomeUnknown):
			unknown++
		case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrUnavailable):
		case err != nil:
			t.Errorf("write %d to the cut-off leader: %v, want not leader, unavailable or outcome unknown", i, err)
		}
	}
	t.Logf("writes to the cut-off leader: %d outcome unknown, %d refused", unknown, len(cut)-unknown)

	// The majority moves on.
	c.WaitLeader(t, s, old)
	res := submit(t, c, transfers(xfer("after-cut", a, b, 100)))
	if res[0].Result != ledger.OK {
		t.Fatalf("write to the majority: %+v", res[0])
	}
	written, seq := time.Now(), res[0].Seq

	// The trap: the old leader still has the balance from before the
	// write above; it must refuse rather than answer with it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, at, err := old.Account(ctx, s, a, shard.ReadOpts{}); err == nil {
		t.Errorf("deposed leader answered a linearizable read: balance %d at seq %d; the majority is at seq %d", got.Balance(), at, seq)
	} else if !shardtest.Retryable(err) {
		t.Errorf("deposed leader's read: %v, want not leader or unavailable", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, _, err := old.Account(short, s, a, shard.ReadOpts{MinSeq: seq}); err == nil {
		t.Errorf("deposed leader answered a min_seq=%d read it has not applied", seq)
	}
	cancelShort()
	// A stale read is allowed to be stale, and says so.
	if got, at, err := old.Account(ctx, s, a, shard.ReadOpts{Stale: true}); err != nil || at >= seq || got.Balance() != 1000 {
		t.Errorf("stale read on the deposed leader: balance %d at seq %d, err %v; want 1000 before seq %d", got.Balance(), at, err, seq)
	}
	if got := balance(t, c, a); got.Balance() != 900 {
		t.Errorf("linearizable read on the new leader: balance %d, want 900", got.Balance())
	}
	ok, stale := 0, 0
	for _, r := range reads.stop() {
		if r.err != nil {
			continue
		}
		ok++
		if r.start.After(written) {
			stale++
		}
	}
	if stale > 0 {
		t.Errorf("deposed leader answered %d linearizable reads begun after the majority's write at seq %d", stale, seq)
	}
	t.Logf("linearizable reads on the cut-off leader: %d answered before it was deposed, %d refused", ok, len(reads.got)-ok)

	c.Heal()
	c.WaitLeaders(t)
	ids := []string{"after-cut"}
	want := int64(1000 - 100)
	for _, cmd := range cut {
		res := submit(t, c, cmd)
		if !acked(res[0]) || res[0].Status != ledger.StatusPosted {
			t.Errorf("retry of %s: %+v, want ok or exists(ok)", cmd.Transfers[0].ID, res[0])
		}
		ids = append(ids, cmd.Transfers[0].ID)
		want -= cmd.Transfers[0].Amount
	}
	c.WaitConverged(t)
	wantPostedOnce(t, c.WaitLeader(t, s), s, ids)
	if got := balance(t, c, a); got.Balance() != want {
		t.Errorf("balance of %s: %d, want %d", a, got.Balance(), want)
	}
	c.VerifyAll(t)
}

// reader reads one account linearizably on one host in a loop.
type reader struct {
	done chan struct{}
	wg   sync.WaitGroup
	got  []readResult
}

type readResult struct {
	start   time.Time
	balance int64
	seq     uint64
	err     error
}

func startReader(h *shard.Host, s int, id string) *reader {
	r := &reader{done: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			select {
			case <-r.done:
				return
			default:
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			a, seq, err := h.Account(ctx, s, id, shard.ReadOpts{})
			cancel()
			r.got = append(r.got, readResult{start: start, balance: a.Balance(), seq: seq, err: err})
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return r
}

// stop ends the loop and returns what it read.
func (r *reader) stop() []readResult {
	close(r.done)
	r.wg.Wait()
	return r.got
}
