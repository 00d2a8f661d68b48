// Package bench is the load generator behind `tally bench`: it creates
// and funds accounts, sends transfers between them from a closed or an
// open loop, measures throughput and latency (HDR histograms), and
// checks that no money was created or destroyed. Its Report is what
// `tally --json bench` prints and what the benchmark runner reads.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"tally/client"
	"tally/internal/table"
	"tally/ledger"
)

// setupBatch is the number of accounts (or funding deposits) per request
// while the benchmark sets up; setupWorkers is how many such requests run
// at once.
const (
	setupBatch   = 1000
	setupWorkers = 8
	// readBatch is the number of balances one reader fetches in turn
	// during the conservation check; readWorkers read at once. Each read
	// is a linearizable round trip, so many at once: 100,000 balances
	// took 20 s with 32 readers and 14 s with 128 on a 2-core machine.
	readBatch   = 50
	readWorkers = 128
	// conservationTries bounds how often the final balance check is
	// repeated while cross-shard sagas or unknown outcomes may still be
	// settling; one second apart.
	conservationTries = 10
)

// Account choice within the pool (Options.Dist).
const (
	DistUniform = "uniform" // every account alike
	DistZipf    = "zipf"    // the k-th account weighs (1+k)^-s
)

// Options say what to run. Run expects them checked (`tally bench`
// checks its flags): at least 2 accounts and 1 client, a batch within
// ledger.MaxBatch, a positive initial balance and maximum amount, a valid
// currency and prefix, fractions within 0..1, a Hot of 0 or 2..Accounts,
// a Count or a Duration, a Dist of DistUniform or DistZipf.
type Options struct {
	Accounts    int
	Duration    time.Duration // 0: until Count
	Count       int           // transfers; 0: for Duration
	Concurrency int           // closed loop: clients; open loop: most requests outstanding
	Batch       int           // transfers per request
	Initial     int64         // each account's initial balance, from @world
	MaxAmount   int64         // amounts are uniform in 1..MaxAmount
	Currency    string
	CrossShard  float64 // fraction of requests whose transfers cross shards
	// RandomPairs draws both accounts of a transfer from the whole pool,
	// wherever they live, so that most transfers cross shards (3 in 4 on
	// 4 shards): the workload users run. CrossShard is then unused; a
	// request with a cross-shard transfer counts as cross-shard.
	RandomPairs bool
	Hot         int    // draw transfers from only this many accounts; 0: all
	Prefix      string // of every account and transfer id
	Seed        uint64
	Rate        float64 // transfers per second, open loop; 0: closed loop
	Dist        string  // DistUniform or DistZipf
	ZipfS       float64 // Zipf exponent, above 1
	Plot        string  // SVG file for the timeline, or ""
	// Stream runs a consumer of the all-shards stream beside the load
	// (live lag), then reads the whole log again from seq 0 (catch-up).
	Stream bool
	// Readers opens this many more all-shards streams that follow the log
	// through the load and discard it: the cost of many consumers to the
	// write path.
	Readers int
	// ClientBatch sends every transfer (Batch is then 1) through one
	// client.Batcher shared by all the clients, which coalesces the
	// transfers submitted while a request is in flight into the next
	// request; ClientInFlight bounds its requests in flight (0: 1).
	// Latencies are then per transfer, from its call to its result.
	ClientBatch    bool
	ClientInFlight int
}

// Run creates and funds the accounts, runs the load, writes the plot if
// asked, waits for the run's sagas, checks conservation (and the audit
// after cross-shard transfers) and returns the report, whose Err says
// whether the run passed. Progress goes to progress, one line a second.
// After ctx ends the checks still run, so that an interrupted run is
// still judged. The error is for a run that could not start.
func Run(ctx context.Context, c *client.Client, o Options, progress io.Writer) (*Report, error) {
	shards := 1
	if st, err := c.Cluster(ctx); err != nil {
		fmt.Fprintf(progress, "bench: cannot read the cluster status (%v); assuming 1 shard\n", err)
	} else if len(st.Shards) > 0 {
		shards = len(st.Shards)
	}
	w, err := newWorkload(&o, shards)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "bench: creating and funding %d accounts (%s*) on %s\n", o.Accounts, o.Prefix, table.Plural(shards, "shard"))
	if err := setup(ctx, c, &o, w.ids, progress); err != nil {
		return nil, err
	}
	if o.ClientBatch {
		fmt.Fprintf(progress, "bench: one transfer per call, coalesced by a client batcher\n")
	}
	if o.Rate > 0 {
		fmt.Fprintf(progress, "bench: open loop at %s transfers/s, at most %d requests outstanding, batch %d, %s accounts, %s\n",
			rateString(o.Rate), o.Concurrency, o.Batch, o.Dist, runLength(&o))
	} else {
		fmt.Fprintf(progress, "bench: running %d clients, batch %d, %s accounts, %s\n", o.Concurrency, o.Batch, o.Dist, runLength(&o))
	}
	var lc *liveConsumer
	if o.Stream {
		if lc, err = startConsumer(ctx, c); err != nil {
			return nil, fmt.Errorf("bench: stream consumer: %w", err)
		}
	}
	var b *client.Batcher
	if o.ClientBatch {
		if b, err = client.NewBatcher(c, client.BatcherOptions{MaxInFlight: o.ClientInFlight}); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	stopReaders := startReaders(ctx, c, o.Readers)
	st := runLoad(ctx, c, b, &o, w, progress)
	readers := stopReaders()
	rep := st.report(&o, shards)
	rep.Readers = readers
	if b != nil {
		b.Close() // every call has returned: nothing is queued
		rep.ClientBatch = clientBatchStat(b.Stats(), o.ClientInFlight)
	}
	if lc != nil {
		rep.Stream = &StreamStat{}
		lc.stop(context.WithoutCancel(ctx), c, rep.Stream)
		fmt.Fprintf(progress, "bench: reading the whole log from seq 0 through the all-shards stream\n")
		catchUp(context.WithoutCancel(ctx), c, rep.Stream)
	}
	if o.Plot != "" {
		if rep.plotErr = writePlot(o.Plot, rep); rep.plotErr == nil {
			rep.Plot = o.Plot
			fmt.Fprintf(progress, "bench: wrote the plot to %s\n", o.Plot)
		}
	}
	// Check conservation even after an interrupt: the run's result is
	// worthless without it. Sagas still in flight finish first.
	bg := context.WithoutCancel(ctx)
	if rep.settling() {
		rep.Sagas = waitSagas(bg, c, o.Prefix, progress)
	}
	rep.Conservation = checkConservation(bg, c, &o, w.ids, rep.unsettled(), progress)
	if rep.CrossSample != "" {
		var err error
		if rep.CrossChecked, err = confirmCross(bg, c, rep.CrossSample); err != nil {
			fmt.Fprintf(progress, "bench: cannot read back cross-shard transfer %s: %v\n", rep.CrossSample, err)
		}
	}
	if o.CrossShard > 0 || o.RandomPairs {
		rep.Audit = auditAfter(bg, c)
	}
	return rep, nil
}

// Err says why the run failed: conservation, the audit, a cross-shard
// transfer the cluster ran on one shard, or the plot; nil if it passed.
func (rep *Report) Err() error {
	switch {
	case !rep.Conservation.OK:
		return fmt.Errorf("bench: conservation check failed: %s", rep.Conservation.Detail)
	case rep.Audit != nil && !rep.Audit.OK && !rep.Audit.Skipped:
		return fmt.Errorf("bench: the audit failed: %s", rep.Audit.Detail)
	case rep.CrossChecked != nil && !*rep.CrossChecked:
		return fmt.Errorf("bench: transfer %s was placed as cross-shard but the cluster ran it on one shard: the bench and the cluster disagree on placement", rep.CrossSample)
	case rep.plotErr != nil:
		return fmt.Errorf("bench: %w", rep.plotErr)
	}
	return nil
}

func runLength(o *Options) string {
	switch {
	case o.Count > 0 && o.Duration > 0:
		return fmt.Sprintf("%d transfers or %v", o.Count, o.Duration)
	case o.Count > 0:
		return fmt.Sprintf("%d transfers", o.Count)
	}
	return o.Duration.String()
}

// workload chooses the accounts of each transfer.
type workload struct {
	ids []string // every bench account
	// pool is the accounts transfers are drawn from (the hot ones, or all),
	// shardOf their shards, byShard each shard's pool indexes in increasing
	// order, and same the pool indexes whose shard holds another pool
	// account.
	pool    []string
	shardOf []int
	byShard map[int][]int
	same    []int
	shards  int
}

func newWorkload(o *Options, shards int) (*workload, error) {
	w := &workload{ids: make([]string, o.Accounts), byShard: map[int][]int{}, shards: shards}
	for i := range w.ids {
		w.ids[i] = fmt.Sprintf("%s%d", o.Prefix, i)
	}
	w.pool = w.ids
	if o.Hot > 0 {
		w.pool = w.ids[:o.Hot]
	}
	w.shardOf = make([]int, len(w.pool))
	for i, id := range w.pool {
		s := ledger.ShardOf(id, shards)
		w.shardOf[i] = s
		w.byShard[s] = append(w.byShard[s], i)
	}
	for i, s := range w.shardOf {
		if len(w.byShard[s]) >= 2 {
			w.same = append(w.same, i)
		}
	}
	if o.CrossShard < 1 && !o.RandomPairs && len(w.same) == 0 {
		return nil, errors.New("no shard holds two of the chosen accounts: raise --accounts or --hot, or use --cross-shard 1")
	}
	if (o.CrossShard > 0 || o.RandomPairs) && len(w.byShard) < 2 {
		return nil, errors.New("--cross-shard needs accounts on at least two shards")
	}
	return w, nil
}

// drawer draws an index in [0, n), n > 0: uniformly (a *rand.Rand) or
// skewed towards 0 (zipfDraw).
type drawer interface{ IntN(n int) int }

// pair returns the debit and credit of one transfer. Each is drawn by d
// from the accounts it may be, in pool order: a cross-shard credit from
// the accounts on other shards than the debit's, a same-shard one from the
// debit's shard less the debit. No draw is rejected and retried, so a
// skewed d cannot make the choice slow.
func (w *workload) pair(d drawer, cross bool) (string, string) {
	if cross {
		i := d.IntN(len(w.pool))
		g := w.byShard[w.shardOf[i]]
		return w.pool[i], w.pool[nthOutside(g, d.IntN(len(w.pool)-len(g)))]
	}
	i := w.same[d.IntN(len(w.same))]
	g := w.byShard[w.shardOf[i]]
	r := d.IntN(len(g) - 1)
	if g[r] >= i {
		r++ // g is increasing and holds i: skip i itself
	}
	return w.pool[i], w.pool[g[r]]
}

// anyPair draws two distinct accounts from the whole pool and says
// whether they live on different shards.
func (w *workload) anyPair(d drawer) (string, string, bool) {
	i := d.IntN(len(w.pool))
	j := d.IntN(len(w.pool) - 1)
	if j >= i {
		j++
	}
	return w.pool[i], w.pool[j], w.shardOf[i] != w.shardOf[j]
}

// nthOutside returns the r-th (from 0) non-negative integer that is not
// in g, which is sorted and distinct. Before g[m] there are g[m]-m such
// integers, so the answer is r plus the number of members it passes.
func nthOutside(g []int, r int) int {
	return r + sort.Search(len(g), func(m int) bool { return g[m]-m > r })
}

// zipfDraw draws indexes for one worker with a Zipf law: index k weighs
// (1+k)^-s, so 0 is the most frequent. rand.Zipf fixes its bound when
// made, so there is one generator per bound, made on first use; they share
// the worker's source. Not safe for concurrent use.
type zipfDraw struct {
	rng *rand.Rand
	s   float64
	byN map[int]*rand.Zipf
}

func newZipfDraw(rng *rand.Rand, s float64) *zipfDraw {
	return &zipfDraw{rng: rng, s: s, byN: map[int]*rand.Zipf{}}
}

func (z *zipfDraw) IntN(n int) int {
	if n <= 1 {
		return 0
	}
	g := z.byN[n]
	if g == nil {
		g = rand.NewZipf(z.rng, z.s, 1, uint64(n-1)) // s > 1 is checked with the flags
		z.byN[n] = g
	}
	return int(min(g.Uint64(), uint64(n-1)))
}

// setup creates the accounts and funds each with o.Initial from
// @world, setupBatch per request. Ids are fixed, so a retried setup is
// idempotent. Large pools take a while, so progress is printed once a
// second, and the total time at the end.
func setup(ctx context.Context, c *client.Client, o *Options, ids []string, progress io.Writer) error {
	start := time.Now()
	var created, funded atomic.Int64
	stop := everySecond(func() {
		fmt.Fprintf(progress, "bench: %d of %d accounts created, %d funded\n", created.Load(), len(ids), funded.Load())
	})
	defer stop()
	err := inBatches(ctx, len(ids), setupBatch, setupWorkers, func(ctx context.Context, lo, hi int) error {
		accs := make([]ledger.Account, 0, hi-lo)
		for _, id := range ids[lo:hi] {
			accs = append(accs, ledger.Account{ID: id, Currency: o.Currency})
		}
		res, err := c.CreateAccounts(ctx, accs)
		if err != nil {
			return fmt.Errorf("create accounts: %w", err)
		}
		for _, r := range res {
			if r.Result != ledger.OK && r.Result != ledger.Exists {
				return fmt.Errorf("create account %s: %s", r.ID, r.Result)
			}
		}
		created.Add(int64(hi - lo))
		return nil
	})
	if err != nil {
		return err
	}
	err = inBatches(ctx, len(ids), setupBatch, setupWorkers, func(ctx context.Context, lo, hi int) error {
		ts := make([]ledger.Transfer, 0, hi-lo)
		for _, id := range ids[lo:hi] {
			ts = append(ts, ledger.Transfer{ID: id + "-fund", Debit: ledger.World, Credit: id, Amount: o.Initial})
		}
		res, err := c.CreateTransfers(ctx, ts)
		if err != nil {
			return fmt.Errorf("fund accounts: %w", err)
		}
		for _, r := range res {
			if !applied(r) {
				return fmt.Errorf("fund accounts: transfer %s: %s", r.ID, r.Result)
			}
		}
		funded.Add(int64(hi - lo))
		return nil
	})
	if err != nil {
		return err
	}
	stop()
	fmt.Fprintf(progress, "bench: %d accounts created and funded in %.1fs\n", len(ids), time.Since(start).Seconds())
	return nil
}

// everySecond calls f once a second in a goroutine of its own until the
// returned stop is called; stop waits for a call under way and may be
// called more than once.
func everySecond(f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				f()
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

// inBatches runs f over [0, n) in ranges of size, workers at a time, and
// returns the first error.
func inBatches(ctx context.Context, n, size, workers int, f func(ctx context.Context, lo, hi int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for lo := 0; lo < n && ctx.Err() == nil; lo += size {
		hi := min(lo+size, n)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(ctx, lo, hi); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx) // the first failure, the parent's cancellation, or nil
}
