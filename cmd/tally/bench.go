package main

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"tally/bench"
	"tally/ledger"
)

func newBenchCmd(a *app) *cobra.Command {
	var o bench.Options
	var zipf float64
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

--zipf S is the contention test of published ledger comparisons: both the
debit and the credit are drawn from a Zipf(S) law (S above 1) over all
--accounts accounts, wherever they live, and never the same account; it is
short for --random-pairs --dist zipf --zipf-s S. With --zipf 2 the first
account is the debit of about 6 transfers in 10 and takes part in about 85%.
Accounts are created and funded 1,000 per request, 8 requests at a time, with
progress on stderr, so 100,000 accounts are quick to set up.

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
prefix, so runs do not collide. Durability is never relaxed.

With --client-batch every client submits one transfer at a time to one shared
client batcher (the Go client's Batcher), which sends the transfers submitted
while a request is in flight together in the next request, at most
--client-inflight requests at once: the many-goroutines pattern of an
application server. Latencies are then per transfer, and the report says how
many requests carried them.`,
		Example: `  tally bench
  tally bench --accounts 1000 --concurrency 64 --duration 20s
  tally bench --batch 1000 --concurrency 8 --count 1000000
  tally bench --hot 10 --cross-shard 0.2 --json
  tally bench --rate 5000 --concurrency 256 --duration 20s --plot bench.svg
  tally bench --dist zipf --zipf-s 1.3
  tally bench --accounts 100000 --zipf 2
  tally bench --random-pairs --client-batch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkBench(cmd, &o, zipf); err != nil {
				return err
			}
			return runBench(cmd, a, o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Accounts, "accounts", 1000, "number of accounts")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to run (a cap when --count is given)")
	f.IntVar(&o.Count, "count", 0, "stop after this many transfers (default: run for --duration)")
	f.IntVar(&o.Concurrency, "concurrency", 64, "closed loop: clients; open loop (--rate): most requests outstanding, a send waits for a free slot and the wait counts in its latency")
	f.IntVar(&o.Batch, "batch", 1, "transfers per request")
	f.Int64Var(&o.Initial, "initial", 1_000_000, "initial balance of each account, minor units")
	f.Int64Var(&o.MaxAmount, "max-amount", 100, "transfer amounts are uniform in 1..max-amount")
	f.StringVar(&o.Currency, "currency", "BENCH", "currency of the bench accounts")
	f.Float64Var(&o.CrossShard, "cross-shard", 0, "fraction of requests whose transfers cross shards, 0 to 1")
	f.BoolVar(&o.RandomPairs, "random-pairs", false, "draw both accounts from the whole pool, wherever they live (most transfers cross shards)")
	f.IntVar(&o.Hot, "hot", 0, "draw transfers from only this many accounts (contention; 0: all)")
	f.StringVar(&o.Prefix, "prefix", "", "account and transfer id prefix (default: bench-<random>-)")
	f.Uint64Var(&o.Seed, "seed", 0, "random seed (default: random)")
	f.Float64Var(&o.Rate, "rate", 0, "open loop: transfers per second in all, sent on schedule whatever the answers (0: closed loop)")
	f.StringVar(&o.Dist, "dist", bench.DistUniform, "how accounts are chosen within the pool: uniform or zipf")
	f.Float64Var(&o.ZipfS, "zipf-s", 1.1, "Zipf exponent s for --dist zipf, above 1 (larger: more skewed)")
	f.Float64Var(&zipf, "zipf", 0, "draw both accounts of every transfer from a Zipf law with this exponent (above 1) over all accounts, any shard: --random-pairs --dist zipf --zipf-s S")
	f.StringVar(&o.Plot, "plot", "", "write the per-second timeline (throughput, p50 and p99) to this SVG file")
	f.IntVar(&o.Readers, "readers", 0, "open this many all-shards event streams beside the load, to measure what many consumers cost the write path")
	f.BoolVar(&o.ClientBatch, "client-batch", false, "send each transfer through one shared client batcher, which coalesces concurrent transfers into batch requests (needs --batch 1)")
	f.IntVar(&o.ClientInFlight, "client-inflight", 1, "with --client-batch: most batch requests in flight at once")
	f.BoolVar(&o.Stream, "stream", false, "follow the all-shards event stream beside the load (lag p50/p99), then read the whole log from seq 0 (catch-up events/s)")
	return cmd
}

// checkBench checks the flags and fills in the defaults that depend on
// others; zipf is --zipf, which sets three options.
func checkBench(cmd *cobra.Command, o *bench.Options, zipf float64) error {
	if cmd.Flags().Changed("zipf") {
		switch {
		case !(zipf > 1) || math.IsInf(zipf, 0):
			return fmt.Errorf("--zipf must be a number above 1, not %v", zipf)
		case cmd.Flags().Changed("dist") || cmd.Flags().Changed("zipf-s"):
			return errors.New("--zipf sets --dist and --zipf-s: give one or the other")
		case cmd.Flags().Changed("cross-shard"):
			return errors.New("--zipf draws pairs from all accounts (--random-pairs): it excludes --cross-shard")
		}
		o.RandomPairs, o.Dist, o.ZipfS = true, bench.DistZipf, zipf
	}
	switch {
	case o.Accounts < 2:
		return errors.New("--accounts must be at least 2")
	case o.Concurrency < 1:
		return errors.New("--concurrency must be at least 1")
	case o.Batch < 1 || o.Batch > ledger.MaxBatch:
		return fmt.Errorf("--batch must be 1 to %d", ledger.MaxBatch)
	case o.Initial < 1 || o.Initial > math.MaxInt64/int64(o.Accounts):
		return fmt.Errorf("--initial must be 1 to %d for %d accounts", math.MaxInt64/int64(o.Accounts), o.Accounts)
	case o.MaxAmount < 1:
		return errors.New("--max-amount must be at least 1")
	case !ledger.ValidCurrency(o.Currency):
		return fmt.Errorf("--currency %q must be 1 to %d uppercase letters or digits", o.Currency, ledger.MaxCurrencyLen)
	case o.RandomPairs && cmd.Flags().Changed("cross-shard"):
		return errors.New("--random-pairs and --cross-shard exclude each other")
	case o.CrossShard < 0 || o.CrossShard > 1:
		return errors.New("--cross-shard must be 0 to 1")
	case o.Hot != 0 && (o.Hot < 2 || o.Hot > o.Accounts):
		return errors.New("--hot must be 0, or 2 to --accounts")
	case o.Count < 0:
		return errors.New("--count must be 0 or more")
	case o.Count == 0 && o.Duration <= 0:
		return errors.New("--duration must be positive (or give --count)")
	case o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0):
		return errors.New("--rate must be 0 (closed loop) or a positive number of transfers per second")
	case o.Dist != bench.DistUniform && o.Dist != bench.DistZipf:
		return fmt.Errorf("--dist %q: must be uniform or zipf", o.Dist)
	case !(o.ZipfS > 1) || math.IsInf(o.ZipfS, 0):
		return fmt.Errorf("--zipf-s must be a number above 1, not %v", o.ZipfS)
	case cmd.Flags().Changed("zipf-s") && o.Dist != bench.DistZipf:
		return errors.New("--zipf-s applies to --dist zipf only")
	case o.ClientBatch && o.Batch != 1:
		return errors.New("--client-batch sends one transfer per call: --batch must be 1")
	case o.ClientInFlight < 1:
		return errors.New("--client-inflight must be at least 1")
	case cmd.Flags().Changed("client-inflight") && !o.ClientBatch:
		return errors.New("--client-inflight applies to --client-batch only")
	}
	if o.Plot != "" {
		// Fail before the run, not after it, when the plot has nowhere to go.
		if fi, err := os.Stat(filepath.Dir(o.Plot)); err != nil || !fi.IsDir() {
			return fmt.Errorf("--plot %s: no such directory", o.Plot)
		}
	}
	if o.Count > 0 && !cmd.Flags().Changed("duration") {
		o.Duration = 0 // run until the count alone
	}
	if o.Prefix == "" {
		o.Prefix = "bench-" + newTransferID()[:8] + "-"
	}
	if !ledger.ValidID(fmt.Sprintf("%st%d-%d-%d", o.Prefix, o.Concurrency, 999999999, o.Batch)) ||
		!ledger.ValidID(fmt.Sprintf("%s%d-fund", o.Prefix, o.Accounts)) {
		return fmt.Errorf("--prefix %q makes invalid or too long ids", o.Prefix)
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64()
	}
	return nil
}

func runBench(cmd *cobra.Command, a *app, o bench.Options) error {
	rep, err := bench.Run(cmd.Context(), a.client(), o, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if !a.json {
		rep.Print(cmd.OutOrStdout())
		return rep.Err()
	}
	return errors.Join(writeJSON(cmd.OutOrStdout(), rep), rep.Err())
}
