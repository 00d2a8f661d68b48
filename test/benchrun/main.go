// Command benchrun is `make bench`: it starts a fresh local Tally cluster
// (three nodes and the proxy on loopback), runs the standard benchmark
// profile (docs/performance.md) against it with `tally bench`, then runs the
// same one-transfer-per-request workload against the peers with their own
// baseline scripts (-peers): PostgreSQL on one node, PostgreSQL with two
// synchronous standbys and etcd with three members; and prints one table of
// the figures and their ratios. Machines here are shared and noisy, so only ratios
// measured in the same run mean much.
//
//	go run ./test/benchrun -bin ./tally [-duration 20s] [-no-peers] [-json FILE]
//
// Progress goes to stderr, the table to stdout, raw figures (bench JSON,
// CPU profiles, node and peer logs) to the results directory. The exit
// status is 0 when every Tally run completed and passed its conservation
// check; a missed target is reported, not failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config is the command line.
type config struct {
	bin         string
	duration    time.Duration
	shards      int
	profile     bool
	peers       string
	noPeers     bool
	peerResults []string
	jsonOut     string
	out         string
	keep        bool
	fill        int64  // transfers written before the profiles (-fill)
	root        string // the repository root (holds go.mod)
}

func main() {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(2)
	}
	// Ctrl-C and SIGTERM cancel the context; every process we started is
	// then stopped by the deferred cleanups before we exit.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun: FAILED:", err)
		stop()
		os.Exit(1)
	}
}

func parseFlags() (*config, error) {
	cfg := &config{}
	flag.StringVar(&cfg.bin, "bin", "./tally", "the tally binary")
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "length of each measured run (Tally profiles and peers)")
	flag.IntVar(&cfg.shards, "shards", 4, "shards of the fresh cluster")
	flag.BoolVar(&cfg.profile, "profile", true, "capture a CPU profile of every node during the uniform run")
	flag.StringVar(&cfg.peers, "peers", "", "the peer scripts' folder (default: ../shared/peers from the repository root; empty after -peers= skips)")
	flag.BoolVar(&cfg.noPeers, "no-peers", false, "do not run etcd and PostgreSQL")
	flag.Func("peer-results", "reuse RESULT lines from this peer log instead of running the peers (repeatable, or comma-separated)", func(s string) error {
		for _, f := range strings.Split(s, ",") {
			if f != "" {
				cfg.peerResults = append(cfg.peerResults, f)
			}
		}
		return nil
	})
	flag.StringVar(&cfg.jsonOut, "json", "", "also write every figure as JSON to this file")
	flag.StringVar(&cfg.out, "out", "", "results directory (default test/store/bench-<time>)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the cluster's data directory (test/store/bench-data-*)")
	flag.Int64Var(&cfg.fill, "fill", 0, "transfers to write (1,000 per request, every shard; one event each) before the profiles, so that memory and snapshot figures are taken with that much history")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if cfg.duration < 2*time.Second {
		return nil, errors.New("-duration must be at least 2s")
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	cfg.root = root
	if cfg.bin, err = filepath.Abs(cfg.bin); err != nil {
		return nil, fmt.Errorf("resolve -bin: %w", err)
	}
	peersSet := false
	flag.Visit(func(f *flag.Flag) { peersSet = peersSet || f.Name == "peers" })
	if !peersSet {
		cfg.peers = filepath.Join(root, "..", "shared", "peers")
	}
	if cfg.noPeers {
		cfg.peers = ""
	}
	if cfg.out == "" {
		cfg.out = filepath.Join(root, "test", "store", "bench-"+time.Now().Format("20060102-150405"))
	}
	return cfg, nil
}

// repoRoot walks up from the working directory to the folder holding
// go.mod, so relative defaults work from anywhere in the repository.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s: run from the repository", dir)
		}
	}
}

// run does the whole benchmark and prints the table. It returns an error
// when the cluster did not start, or a Tally run did not complete or
// failed its conservation check, after printing everything it has. A
// peer that cannot run is only a line in the table.
func run(ctx context.Context, cfg *config) error {
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	logf("results in %s", cfg.out)
	sum := &summary{Started: time.Now().UTC(), Duration: cfg.duration.String(), ResultsDir: cfg.out}

	if err := runTally(ctx, cfg, sum); err != nil {
		sum.Failures = append(sum.Failures, "tally cluster: "+err.Error())
	}
	sum.Peers = runPeers(ctx, cfg)
	sum.Durability = durability(cfg.root, sum.Peers)

	sum.Rows = buildRows(sum)
	fmt.Println()
	printSummary(os.Stdout, sum)
	if cfg.jsonOut != "" {
		if err := writeSummaryJSON(cfg.jsonOut, sum); err != nil {
			return err
		}
		logf("figures written to %s", cfg.jsonOut)
	}
	if err := writeSummaryJSON(filepath.Join(cfg.out, "summary.json"), sum); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	if len(sum.Failures) > 0 {
		return errors.New(strings.Join(sum.Failures, "; "))
	}
	return nil
}

// runTally starts the cluster, runs every profile, reads the nodes' peak
// memory and stops the cluster again, whatever happened.
func runTally(ctx context.Context, cfg *config, sum *summary) (err error) {
	c, err := startCluster(ctx, cfg)
	if c != nil {
		defer func() {
			if stopErr := c.stop(); stopErr != nil && err == nil {
				err = stopErr
			}
		}()
	}
	if err != nil {
		return fmt.Errorf("start the cluster: %w", err)
	}
	if cfg.fill > 0 {
		sum.Fill = c.fillHistory(ctx)
		if sum.Fill.Failed != "" {
			sum.Failures = append(sum.Failures, "fill: "+sum.Fill.Failed)
		}
	}
	sum.Profiles = runProfiles(ctx, cfg, c)
	for _, p := range sum.Profiles {
		if p.Failed != "" {
			sum.Failures = append(sum.Failures, p.Name+": "+p.Failed)
		}
	}
	sum.RSS = c.peakRSS()
	sum.Snapshots = c.snapshotFigures()
	sum.CPUTop = c.cpuTop
	return nil
}

// logf prints one progress line on stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] benchrun: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
