package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"tally/client"
	"tally/ledger"
)

// setupBatch is the number of accounts (or funding deposits) per request
// while the benchmark sets up; setupWorkers is how many such requests run
// at once.
const (
	setupBatch   = 1000
	setupWorkers = 8
	// readBatch is the number of balances one reader fetches in turn
	// during the conservation check; readWorkers read at once.
	readBatch   = 50
	readWorkers = 32
	// conservationTries bounds how often the final balance check is
	// repeated while cross-shard sagas or unknown outcomes may still be
	// settling; one second apart.
	conservationTries = 10
)

// Account choice within the pool (--dist).
const (
	distUniform = "uniform"
	distZipf    = "zipf"
)

type benchOptions struct {
	accounts    int
	duration    time.Duration
	count       int
	concurrency int
	batch       int
	initial     int64
	maxAmount   int64
	currency    string
	crossShard  float64
	hot         int
	prefix      string
	seed        uint64
	rate        float64 // transfers per second, open loop; 0: closed loop
	dist        string  // distUniform or distZipf
	zipfS       float64 // Zipf exponent, above 1
	plot        string  // SVG file for the timeline, or ""
}

func newBenchCmd(a *app) *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure transfers per second and latency against a cluster",
		Long: `Create --accounts accounts funded from @world with --initial each, then run
closed-loop random transfers between them from --concurrency clients, each
request carrying --batch transfers, for --duration (or until --count transfers).
Progress is printed on stderr every second. At the end it prints transfers/s,
latency percentiles per request, errors and rejections by kind, and checks
conservation: the bench accounts' balances must sum to accounts x initial, or
the command exits with status 1 (a fast wrong answer does not pass).

With --rate the loop is open instead: requests of --batch transfers are
scheduled at fixed intervals to make --rate transfers per second in all,
whether or not earlier ones were answered, and --concurrency caps the requests
outstanding at once. A request's latency runs from its scheduled time, so a
send that waits (for a free slot or a slow generator) counts against it; sends
more than max(10ms, one interval) behind schedule are reported as late, and
requests still unsent when the duration ends as missed.

--dist chooses the accounts of each transfer within the pool (--hot, or all):
uniform, or zipf, where the k-th account weighs (1+k)^-s (--zipf-s). Either
way a same-shard transfer has both accounts on one shard and a cross-shard one
on two, and an account never pays itself.

Every second of the run is reported in --json's timeline (transfers/s, p50 and
p99 of the requests answered in it, failed requests); --plot writes it as an
SVG chart.

Transfers stay within one shard unless --cross-shard says otherwise: that
fraction of requests carries transfers between accounts on different shards,
which run as sagas, and same-shard and cross-shard requests are reported
separately (rates and latencies). A cross-shard request answered in_flight
outlived its deadline; before the conservation check the bench waits for the
run's sagas to finish (GET /v1/sagas), then runs the cluster's audit (see
'tally audit') and fails on any violation. Account ids start with a random
prefix, so runs do not collide. Durability is never relaxed.`,
		Example: `  tally bench
  tally bench --accounts 1000 --concurrency 64 --duration 20s
  tally bench --batch 1000 --concurrency 8 --count 1000000
  tally bench --hot 10 --cross-shard 0.2 --json
  tally bench --rate 5000 --concurrency 256 --duration 20s --plot bench.svg
  tally bench --dist zipf --zipf-s 1.3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(cmd); err != nil {
				return err
			}
			return runBench(cmd, a, &o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.accounts, "accounts", 1000, "number of accounts")
	f.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run (a cap when --count is given)")
	f.IntVar(&o.count, "count", 0, "stop after this many transfers (default: run for --duration)")
	f.IntVar(&o.concurrency, "concurrency", 64, "closed loop: clients; open loop (--rate): most requests outstanding, a send waits for a free slot and the wait counts in its latency")
	f.IntVar(&o.batch, "batch", 1, "transfers per request")
	f.Int64Var(&o.initial, "initial", 1_000_000, "initial balance of each account, minor units")
	f.Int64Var(&o.maxAmount, "max-amount", 100, "transfer amounts are uniform in 1..max-amount")
	f.StringVar(&o.currency, "currency", "BENCH", "currency of the bench accounts")
	f.Float64Var(&o.crossShard, "cross-shard", 0, "fraction of requests whose transfers cross shards, 0 to 1")
	f.IntVar(&o.hot, "hot", 0, "draw transfers from only this many accounts (contention; 0: all)")
	f.StringVar(&o.prefix, "prefix", "", "account and transfer id prefix (default: bench-<random>-)")
	f.Uint64Var(&o.seed, "seed", 0, "random seed (default: random)")
	f.Float64Var(&o.rate, "rate", 0, "open loop: transfers per second in all, sent on schedule whatever the answers (0: closed loop)")
	f.StringVar(&o.dist, "dist", distUniform, "how accounts are chosen within the pool: uniform or zipf")
	f.Float64Var(&o.zipfS, "zipf-s", 1.1, "Zipf exponent s for --dist zipf, above 1 (larger: more skewed)")
	f.StringVar(&o.plot, "plot", "", "write the per-second timeline (throughput, p50 and p99) to this SVG file")
	return cmd
}

func (o *benchOptions) check(cmd *cobra.Command) error {
	switch {
	case o.accounts < 2:
		return errors.New("--accounts must be at least 2")
	case o.concurrency < 1:
		return errors.New("--concurrency must be at least 1")
	case o.batch < 1 || o.batch > ledger.MaxBatch:
		return fmt.Errorf("--batch must be 1 to %d", ledger.MaxBatch)
	case o.initial < 1 || o.initial > math.MaxInt64/int64(o.accounts):
		return fmt.Errorf("--initial must be 1 to %d for %d accounts", math.MaxInt64/int64(o.accounts), o.accounts)
	case o.maxAmount < 1:
		return errors.New("--max-amount must be at least 1")
	case !ledger.ValidCurrency(o.currency):
		return fmt.Errorf("--currency %q must be 1 to %d uppercase letters or digits", o.currency, ledger.MaxCurrencyLen)
	case o.crossShard < 0 || o.crossShard > 1:
		return errors.New("--cross-shard must be 0 to 1")
	case o.hot != 0 && (o.hot < 2 || o.hot > o.accounts):
		return errors.New("--hot must be 0, or 2 to --accounts")
	case o.count < 0:
		return errors.New("--count must be 0 or more")
	case o.count == 0 && o.duration <= 0:
		return errors.New("--duration must be positive (or give --count)")
	case o.rate < 0 || math.IsNaN(o.rate) || math.IsInf(o.rate, 0):
		return errors.New("--rate must be 0 (closed loop) or a positive number of transfers per second")
	case o.dist != distUniform && o.dist != distZipf:
		return fmt.Errorf("--dist %q: must be uniform or zipf", o.dist)
	case !(o.zipfS > 1) || math.IsInf(o.zipfS, 0):
		return fmt.Errorf("--zipf-s must be a number above 1, not %v", o.zipfS)
	case cmd.Flags().Changed("zipf-s") && o.dist != distZipf:
		return errors.New("--zipf-s applies to --dist zipf only")
	}
	if o.plot != "" {
		// Fail before the run, not after it, when the plot has nowhere to go.
		if fi, err := os.Stat(filepath.Dir(o.plot)); err != nil || !fi.IsDir() {
			return fmt.Errorf("--plot %s: no such directory", o.plot)
		}
	}
	if o.count > 0 && !cmd.Flags().Changed("duration") {
		o.duration = 0 // run until the count alone
	}
	if o.prefix == "" {
		o.prefix = "bench-" + newTransferID()[:8] + "-"
	}
	if !ledger.ValidID(fmt.Sprintf("%st%d-%d-%d", o.prefix, o.concurrency, 999999999, o.batch)) ||
		!ledger.ValidID(fmt.Sprintf("%s%d-fund", o.prefix, o.accounts)) {
		return fmt.Errorf("--prefix %q makes invalid or too long ids", o.prefix)
	}
	if o.seed == 0 {
		o.seed = rand.Uint64()
	}
	return nil
}

func runBench(cmd *cobra.Command, a *app, o *benchOptions) error {
	ctx := cmd.Context()
	c := a.client()
	errw := cmd.ErrOrStderr()
	shards := 1
	if st, err := c.Cluster(ctx); err != nil {
		fmt.Fprintf(errw, "bench: cannot read the cluster status (%v); assuming 1 shard\n", err)
	} else if len(st.Shards) > 0 {
		shards = len(st.Shards)
	}
	w, err := newWorkload(o, shards)
	if err != nil {
		return err
	}
	fmt.Fprintf(errw, "bench: creating and funding %d accounts (%s*) on %s\n", o.accounts, o.prefix, plural(shards, "shard"))
	if err := benchSetup(ctx, c, o, w.ids); err != nil {
		return err
	}
	if o.rate > 0 {
		fmt.Fprintf(errw, "bench: open loop at %s transfers/s, at most %d requests outstanding, batch %d, %s accounts, %s\n",
			rateString(o.rate), o.concurrency, o.batch, o.dist, runLength(o))
	} else {
		fmt.Fprintf(errw, "bench: running %d clients, batch %d, %s accounts, %s\n", o.concurrency, o.batch, o.dist, runLength(o))
	}
	st := runLoad(ctx, c, o, w, errw)
	rep := st.report(o, shards)
	var plotErr error
	if o.plot != "" {
		if plotErr = writePlot(o.plot, rep); plotErr == nil {
			rep.Plot = o.plot
			fmt.Fprintf(errw, "bench: wrote the plot to %s\n", o.plot)
		}
	}
	// Check conservation even after an interrupt: the run's result is
	// worthless without it. Sagas still in flight finish first.
	bg := context.WithoutCancel(ctx)
	if rep.settling() {
		rep.Sagas = waitSagas(bg, c, o.prefix, errw)
	}
	rep.Conservation = checkConservation(bg, c, o, w.ids, rep.unsettled())
	if rep.CrossSample != "" {
		var err error
		if rep.CrossChecked, err = confirmCross(bg, c, rep.CrossSample); err != nil {
			fmt.Fprintf(errw, "bench: cannot read back cross-shard transfer %s: %v\n", rep.CrossSample, err)
		}
	}
	if o.crossShard > 0 {
		rep.Audit = auditAfter(bg, c)
	}
	if a.json {
		if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
			return err
		}
	} else {
		rep.print(cmd.OutOrStdout())
	}
	switch {
	case !rep.Conservation.OK:
		return fmt.Errorf("bench: conservation check failed: %s", rep.Conservation.Detail)
	case rep.Audit != nil && !rep.Audit.OK && !rep.Audit.Skipped:
		return fmt.Errorf("bench: the audit failed: %s", rep.Audit.Detail)
	case rep.CrossChecked != nil && !*rep.CrossChecked:
		return fmt.Errorf("bench: transfer %s was placed as cross-shard but the cluster ran it on one shard: the bench and the cluster disagree on placement", rep.CrossSample)
	case plotErr != nil:
		return fmt.Errorf("bench: %w", plotErr)
	}
	return nil
}

func runLength(o *benchOptions) string {
	switch {
	case o.count > 0 && o.duration > 0:
		return fmt.Sprintf("%d transfers or %v", o.count, o.duration)
	case o.count > 0:
		return fmt.Sprintf("%d transfers", o.count)
	}
	return o.duration.String()
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

func newWorkload(o *benchOptions, shards int) (*workload, error) {
	w := &workload{ids: make([]string, o.accounts), byShard: map[int][]int{}, shards: shards}
	for i := range w.ids {
		w.ids[i] = fmt.Sprintf("%s%d", o.prefix, i)
	}
	w.pool = w.ids
	if o.hot > 0 {
		w.pool = w.ids[:o.hot]
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
	if o.crossShard < 1 && len(w.same) == 0 {
		return nil, errors.New("no shard holds two of the chosen accounts: raise --accounts or --hot, or use --cross-shard 1")
	}
	if o.crossShard > 0 && len(w.byShard) < 2 {
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

// benchSetup creates the accounts and funds each with o.initial from
// @world. Ids are fixed, so a retried setup is idempotent.
func benchSetup(ctx context.Context, c *client.Client, o *benchOptions, ids []string) error {
	err := inBatches(ctx, len(ids), setupBatch, setupWorkers, func(ctx context.Context, lo, hi int) error {
		accs := make([]ledger.Account, 0, hi-lo)
		for _, id := range ids[lo:hi] {
			accs = append(accs, ledger.Account{ID: id, Currency: o.currency})
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
		return nil
	})
	if err != nil {
		return err
	}
	return inBatches(ctx, len(ids), setupBatch, setupWorkers, func(ctx context.Context, lo, hi int) error {
		ts := make([]ledger.Transfer, 0, hi-lo)
		for _, id := range ids[lo:hi] {
			ts = append(ts, ledger.Transfer{ID: id + "-fund", Debit: ledger.World, Credit: id, Amount: o.initial})
		}
		res, err := c.CreateTransfers(ctx, ts)
		if err != nil {
			return fmt.Errorf("fund accounts: %w", err)
		}
		for _, r := range res {
			if err := transferFailure(r); err != nil {
				return fmt.Errorf("fund accounts: %w", err)
			}
		}
		return nil
	})
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
