// Command jepsen runs Tally's black-box fault suite (docs/testing.md): three
// real nodes and the proxy in network namespaces, a nemesis, closed-loop
// clients, a stream follower and the checkers C1-C10. Exit status: 0 valid, 1 invalid,
// 2 unknown (which fails too), 3 the run itself failed, 4 partial (not
// root: only kill and pause faults ran, which is never a pass).
//
//	go run ./test/jepsen/cmd/jepsen -profile ci
//	go run ./test/jepsen/cmd/jepsen -profile random -duration 10m -faults kill-leader,halves -seed 42
//	go run ./test/jepsen/cmd/jepsen -check test/store/latest
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"tally/test/jepsen/check"
	"tally/test/jepsen/harness"
	"tally/test/jepsen/history"
	"tally/test/jepsen/nemesis"
)

func main() {
	var (
		profile  = flag.String("profile", "ci", "ci: every fault class once; random: random faults for -duration; soak: random runs until -duration; selftest: one run per planted bug")
		seed     = flag.Uint64("seed", 0, "seed of the schedule and the clients (0: from the clock)")
		faults   = flag.String("faults", "", "comma-separated fault classes (default: all): "+strings.Join(nemesis.Names(), ","))
		duration = flag.Duration("duration", 5*time.Minute, "fault phase (random), or total time (soak)")
		runLen   = flag.Duration("run", 4*time.Minute, "soak: the fault phase of each run")
		hold     = flag.Duration("hold", 4*time.Second, "how long each fault stays")
		gap      = flag.Duration("gap", 2*time.Second, "pause between faults")
		warmup   = flag.Duration("warmup", 4*time.Second, "traffic before the first fault")
		workers  = flag.Int("workers", 10, "concurrent clients")
		shards   = flag.Int("shards", 4, "shards")
		sagas    = flag.Bool("sagas", true, "cross-shard transfers must complete (the product has sagas)")
		tags     = flag.String("tags", "failpoints", "build tags of the tally binary")
		bin      = flag.String("bin", "", "a prebuilt tally binary (its tags must match -tags)")
		store    = flag.String("store", "test/store", "store directory")
		expect   = flag.String("expect", "", "selftest: the checkers (comma-separated) that must flag the planted bug")
		recheck  = flag.String("check", "", "re-run the checkers on a stored run directory and exit")
		only     = flag.String("plants", "", "selftest: only these planted bugs (comma-separated tags, e.g. plant_streamskip; default: all)")
	)
	flag.Parse()
	if *recheck != "" {
		os.Exit(recheckRun(*recheck, *bin))
	}
	repo, err := os.Getwd()
	if err != nil {
		fail(err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	cfg := harness.Config{Profile: *profile, Seed: *seed, Duration: *duration, Hold: *hold, Gap: *gap,
		Warmup: *warmup, Workers: *workers, Shards: *shards, Sagas: *sagas, Tags: *tags, Bin: *bin,
		Repo: repo, Store: *store, Out: os.Stdout}
	if cfg.Faults, err = nemesis.Parse(*faults); err != nil {
		fail(err)
	}
	if *expect != "" {
		cfg.Expect = strings.Split(*expect, ",")
	}
	switch *profile {
	case "soak":
		os.Exit(soak(ctx, cfg, *runLen))
	case "selftest":
		os.Exit(selftest(ctx, cfg, *only))
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano() % 1_000_000_007)
	}
	os.Exit(one(ctx, cfg))
}

func one(ctx context.Context, cfg harness.Config) int {
	rep, err := harness.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "jepsen: seed %d: %v\n", cfg.Seed, err)
		return 3
	}
	return exitCode(cfg, rep)
}

func exitCode(cfg harness.Config, rep *harness.Report) int {
	if len(cfg.Expect) > 0 {
		// Selftest: the planted bug must make the run invalid through the
		// expected checker.
		for _, r := range rep.Results {
			if r.Verdict == check.Invalid && contains(cfg.Expect, r.Name) {
				fmt.Printf("selftest: planted bug caught by %s (seed %d)\n", r.Name, rep.Seed)
				return 0
			}
		}
		fmt.Printf("selftest: planted bug NOT caught by %s (seed %d, verdict %s)\n", strings.Join(cfg.Expect, "/"), rep.Seed, rep.Verdict)
		return 1
	}
	switch {
	case rep.Verdict == check.Invalid:
		return 1
	case rep.Partial:
		// Without root the network and disk faults did not run: never a pass.
		return 4
	case rep.Verdict == check.Valid:
		return 0
	}
	return 2
}

// soak runs random fault runs with fresh seeds until the time is up,
// keeping only the stores of failed runs.
func soak(ctx context.Context, cfg harness.Config, runLen time.Duration) int {
	end := time.Now().Add(cfg.Duration)
	cfg.Duration = runLen
	worst, runs, bad := 0, 0, 0
	for time.Now().Add(runLen/2).Before(end) && ctx.Err() == nil {
		if cfg.Seed == 0 || runs > 0 {
			cfg.Seed = uint64(time.Now().UnixNano() % 1_000_000_007)
		}
		if left := time.Until(end) - time.Minute; left < cfg.Duration {
			cfg.Duration = max(left, time.Minute)
		}
		runs++
		code := one(ctx, cfg)
		if code != 0 {
			bad++
			fmt.Printf("soak: run %d seed %d FAILED (exit %d): make jepsen SEED=%d DURATION=%s\n", runs, cfg.Seed, code, cfg.Seed, cfg.Duration)
		}
		worst = max(worst, code)
	}
	fmt.Printf("soak: %d runs, %d failed\n", runs, bad)
	return worst
}

// plants are the bugs the selftest builds into the product (package
// internal/plant), the faults that expose each, and the checkers that
// must flag it.
var plants = []struct {
	tag, faults, expect, why string
}{
	{"plant_staleread", "deposed-leader,isolate-leader,pause-leader", "C6,C8",
		"linearizable reads skip the leadership check"},
	{"plant_noidem", "kill-leader,proxy-pause", "C3,C4",
		"the state machine forgets earlier transfer ids"},
	{"plant_noapplied", "kill-leader,kill-follower,crash-point", "C4,C5",
		"the applied index is not written with the state"},
	{"plant_nocompensation", "kill-follower,pause-follower", "C7",
		"an aborted saga never releases its hold"},
	{"plant_streamskip", "kill-follower,kill-leader,proxy-kill", "C9",
		"a resumed event stream skips the first event after its position"},
}

// selftest builds the product with each planted bug (or those named in
// only) and runs a short fault run against it; each must end invalid
// through its checker.
func selftest(ctx context.Context, base harness.Config, only string) int {
	missed, want := 0, len(plants)
	var lines []string
	var pick []string
	if only != "" {
		pick = strings.Split(only, ",")
		want = 0
		for _, tag := range pick {
			found := false
			for _, p := range plants {
				found = found || p.tag == tag
			}
			if !found {
				fail(fmt.Errorf("-plants: no planted bug %q", tag))
			}
			want++
		}
	}
	for i, p := range plants {
		if pick != nil && !contains(pick, p.tag) {
			continue
		}
		cfg := base
		cfg.Profile = "selftest-" + strings.TrimPrefix(p.tag, "plant_")
		cfg.Tags = strings.Trim(base.Tags+","+p.tag, ",")
		faults, err := nemesis.Parse(p.faults)
		if err != nil {
			fail(fmt.Errorf("selftest %s: %w", p.tag, err))
		}
		cfg.Faults = faults
		cfg.Expect = strings.Split(p.expect, ",")
		if base.Duration > 2*time.Minute {
			cfg.Duration = 45 * time.Second
		}
		if cfg.Seed == 0 {
			cfg.Seed = uint64(1000 + i)
		}
		fmt.Printf("selftest: %s (%s), faults %s, must be caught by %s\n", p.tag, p.why, p.faults, p.expect)
		code := one(ctx, cfg)
		status := "caught"
		if code != 0 {
			status = "NOT CAUGHT"
			missed++
		}
		lines = append(lines, fmt.Sprintf("selftest: %-22s %-10s (expected %s; seed %d)", p.tag, status, p.expect, cfg.Seed))
		if ctx.Err() != nil {
			break
		}
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	fmt.Printf("selftest: %d of %d planted bugs caught\n", len(lines)-missed, want)
	if missed > 0 || len(lines) < want {
		return 1
	}
	return 0
}

// recheckRun runs the checkers again on a stored run. Backups the run
// took (C10) are restored again, with bin or a binary built from the
// working tree.
func recheckRun(dir, bin string) int {
	f, err := os.Open(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		fail(err)
	}
	ops, err := history.Read(f)
	f.Close()
	if err != nil {
		fail(err)
	}
	final, err := harness.LoadFinal(filepath.Join(dir, "final"))
	if err != nil {
		fail(err)
	}
	a, err := check.Analyze(ops, final)
	if err != nil {
		fail(err)
	}
	if st := filepath.Join(dir, "stream.jsonl"); fileExists(st) {
		a.Stream = history.StreamFile(st)
	}
	if a.Operations, err = harness.LoadOperations(dir); err != nil {
		fail(err)
	}
	restoreAgain(dir, bin, a.Operations)
	rs := check.All(a, check.Options{PorcupineTimeout: 5 * time.Minute, HTMLDir: dir})
	for _, r := range rs {
		fmt.Printf("%-3s %-42s %-8s %s\n", r.Name, r.Title, r.Verdict, r.Summary)
		for _, p := range r.Problems {
			fmt.Printf("      %s\n", p)
		}
	}
	switch check.Overall(rs) {
	case check.Valid:
		return 0
	case check.Invalid:
		return 1
	}
	return 2
}

// restoreAgain restores the backups of a stored run for C10.
func restoreAgain(dir, bin string, ops *check.Operations) {
	if ops == nil || !slices.ContainsFunc(ops.Windows, func(w check.OpWindow) bool { return w.Backup != nil }) {
		return
	}
	work, err := os.MkdirTemp("", "tallyj-recheck-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(work)
	if bin == "" {
		bin = filepath.Join(work, "tally")
		repo, err := os.Getwd()
		if err != nil {
			fail(err)
		}
		if err := harness.Build(repo, "", bin); err != nil {
			fail(err)
		}
	}
	harness.RestoreBackups(context.Background(), bin, work, dir, ops, func(format string, args ...any) {
		fmt.Printf("jepsen: "+format+"\n", args...)
	})
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "jepsen:", err)
	os.Exit(3)
}
