// Package harness runs the black-box fault run of TESTING.md: three real
// tally nodes and the proxy, each in its own network namespace on a
// private bridge, closed-loop clients in another, a nemesis that kills,
// pauses, partitions, fills disks and trips failpoints, and the checkers
// of package check over the recorded history and the replicas' final
// logs.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"tally/test/jepsen/check"
	"tally/test/jepsen/history"
)

// Config is one run.
type Config struct {
	Profile  string        // "ci" (every class once) or "random"
	Seed     uint64        // the schedule's and the clients' seed
	Faults   []string      // classes to draw from; empty means all available
	Duration time.Duration // the fault phase (random profile)
	Hold     time.Duration // how long each fault stays
	Gap      time.Duration // the pause between faults
	Warmup   time.Duration // traffic before the first fault
	Workers  int
	Shards   int
	Sagas    bool   // cross-shard transfers are expected to complete (sagas exist)
	Tags     string // build tags of the tally binary (failpoints, plant_*)
	Bin      string // a prebuilt binary instead of building one
	Repo     string // the module root
	Store    string // the store directory (test/store)
	KeepPass bool   // keep the store of a valid run (the latest is always kept)
	Out      io.Writer
	// Expect names the checker a planted bug must trip (selftest): the
	// run passes only if that checker says invalid.
	Expect []string
}

// Report is a run's outcome.
type Report struct {
	Seed     uint64
	Verdict  check.Verdict
	Partial  bool // not root: network and disk faults did not run
	Results  []check.Result
	Windows  []*Window
	Dir      string
	Summary  string
	Problems []string // reasons for an unknown verdict (coverage gates)
}

const lockPath = "/run/" + nsPrefix + "lock"

// Run runs one fault run and writes its store. It cleans up every
// namespace, mount and process it made, also when it fails or ctx is
// cancelled (Ctrl-C).
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	out := cfg.Out
	if out == nil {
		out = os.Stdout
	}
	logf := func(format string, args ...any) { fmt.Fprintf(out, "jepsen: "+format+"\n", args...) }
	root := os.Geteuid() == 0 && haveTools()
	if !root {
		why := "not running as root"
		if os.Geteuid() == 0 {
			why = "ip, nft or mount missing"
		}
		fmt.Fprintf(out, "jepsen: %s: running kill and pause faults only on loopback; this run cannot pass in full\n", why)
	} else {
		unlock, err := lock()
		if err != nil {
			return nil, err
		}
		defer unlock()
		Sweep(logf)
	}
	start := time.Now()
	dir := filepath.Join(cfg.Store, fmt.Sprintf("%s-%s-seed%d", start.Format("20060102-150405"), cfg.Profile, cfg.Seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rep = &Report{Seed: cfg.Seed, Dir: dir, Partial: !root}
	work := filepath.Join(os.TempDir(), nsPrefix+"run")
	_ = os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	bin := cfg.Bin
	if bin == "" {
		bin = filepath.Join(work, "tally")
		if err := build(cfg.Repo, cfg.Tags, bin); err != nil {
			return nil, err
		}
		// The binary must outlive the work directory's cleanup only for
		// the run itself; it is rebuilt every run.
	}
	failpoints := strings.Contains(cfg.Tags, "failpoints")
	classes := available(cfg.Faults, root, failpoints)
	fmt.Fprintf(out, "jepsen: seed %d profile %s faults %s root %v tags %q store %s\n", cfg.Seed, cfg.Profile,
		strings.Join(classes, ","), root, cfg.Tags, dir)
	once := cfg.Profile == "ci"
	sched := Schedule(cfg.Seed, classes, once, cfg.Duration, cfg.Hold, cfg.Gap, cfg.Shards)
	writeJSON(filepath.Join(dir, "schedule.json"), sched)

	c, err := StartCluster(ctx, ClusterConfig{Bin: bin, Shards: cfg.Shards, Root: root, Work: work, Store: dir,
		Fast: true, Logf: logf, Failpoints: failpoints})
	if err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	defer c.Close()
	// Ctrl-C: the deferred Close still runs because ctx only stops the
	// phases; processes are in their own process groups.
	pctx, cancelPoll := context.WithCancel(context.Background())
	defer cancelPoll()
	poll := NewPoller(pctx, c, 250*time.Millisecond)

	rec, err := history.NewRecorder(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return nil, err
	}
	defer rec.Close()
	w := NewWorkload(c, rec, start, WorkloadConfig{Workers: cfg.Workers, PerShard: 3, Initial: 1000, MaxAmount: 900,
		Think: 15 * time.Millisecond, Seed: cfg.Seed, WriteDeadline: 12 * time.Second, Currency: "USD"})
	if err := w.Setup(ctx); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	nem, err := NewNemesis(c, poll, filepath.Join(dir, "nemesis.jsonl"), logf)
	if err != nil {
		return nil, err
	}
	defer nem.Close()

	stop := make(chan struct{})
	wdone := make(chan struct{})
	go func() {
		w.Run(ctx, stop)
		close(wdone)
	}()
	warmStart := time.Now()
	sleepCtx(ctx, cfg.Warmup)
	faultStart := time.Now()
	phase := cfg.Duration
	if once {
		phase = time.Duration(len(sched))*(cfg.Hold+cfg.Gap) + 10*time.Minute
	}
	windows := nem.Run(ctx, faultStart, faultStart.Add(phase), sched, func(win *Window) {
		fmt.Fprintln(out, windowLine(win, start))
	})
	rep.Windows = windows
	// Traffic goes on a little after the last heal, then stops.
	sleepCtx(ctx, 2*time.Second)
	nem.HealAll()
	close(stop)
	<-wdone
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	for _, p := range c.Procs() {
		if !p.Running() {
			if err := c.Restart(ctx, p); err != nil {
				logf("restart %s after the run: %v", p.Name, err)
			}
		}
	}
	quiesced := quiesce(ctx, c, poll, 90*time.Second)
	if !quiesced {
		logf("the replicas did not converge within 90s")
	}
	w.FinalReads(ctx)
	final, err := export(ctx, c, filepath.Join(dir, "final"), quiesced)
	if err != nil {
		return rep, fmt.Errorf("export: %w", err)
	}
	changes := poll.Changes()
	cancelPoll()
	var unexpected []string
	for _, p := range c.Procs() {
		for _, u := range p.Unexpected() {
			unexpected = append(unexpected, p.Name+": "+u)
		}
	}
	c.Close()
	if err := rec.Close(); err != nil {
		return rep, err
	}
	ops := rec.Ops()
	a, err := check.Analyze(ops, final)
	if err != nil {
		return rep, err
	}
	rep.Results = check.All(a, check.Options{PorcupineTimeout: 2 * time.Minute, HTMLDir: dir})
	rep.Verdict = check.Overall(rep.Results)
	stats := a.Stats()
	gates(rep, cfg, a, stats, windows, warmStart, faultStart, start, classes)
	live := liveness(a, windows, start, c.Shards)
	maxUn := live.maxUnavailable()
	rep.Summary = fmt.Sprintf("summary: ops %d ok %d fail %d info %d (%d info writes, %d resolved) faults %d/%d verified leader-changes %d max-unavailable %s verdict %s",
		stats.Ops, stats.OK, stats.Fail, stats.Info, stats.InfoWrites, stats.InfoResolved, countVerified(windows), len(windows),
		len(changes), maxUn, verdictWord(rep))
	for _, u := range unexpected {
		fmt.Fprintf(out, "jepsen: unexpected exit of %s\n", u)
	}
	for _, l := range live.lines() {
		fmt.Fprintln(out, l)
	}
	fmt.Fprintln(out, rep.Summary)
	for _, r := range rep.Results {
		fmt.Fprintf(out, "%-3s %-42s %-8s %s\n", r.Name, r.Title, r.Verdict, r.Summary)
		for _, p := range r.Problems {
			fmt.Fprintf(out, "      %s\n", p)
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(out, "jepsen: unknown: %s\n", p)
	}
	if err := plotLatency(filepath.Join(dir, "latency.svg"), a, windows, start); err != nil {
		logf("plot: %v", err)
	}
	writeJSON(filepath.Join(dir, "results.json"), rep)
	summary := rep.Summary + "\n"
	for _, r := range rep.Results {
		summary += fmt.Sprintf("%s %s %s %s\n", r.Name, r.Title, r.Verdict, r.Summary)
	}
	_ = os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(summary), 0o644)
	keepStore(cfg, rep)
	return rep, nil
}

// verdictWord is the verdict as printed: a run without root never reads
// as a pass.
func verdictWord(rep *Report) string {
	v := strings.ToUpper(string(rep.Verdict))
	if rep.Partial && rep.Verdict == check.Valid {
		return "PARTIAL (not root: no network or disk faults; not a pass)"
	}
	return v
}

func countVerified(ws []*Window) int {
	n := 0
	for _, w := range ws {
		if w.Verified {
			n++
		}
	}
	return n
}

// available filters the classes this run can apply.
func available(want []string, root, failpoints bool) []string {
	if len(want) == 0 {
		want = Classes
	}
	var out []string
	for _, c := range want {
		if (!withoutRoot[c] && !root) || (needsFailpoints[c] && !failpoints) {
			continue
		}
		out = append(out, c)
	}
	return out
}

func haveTools() bool {
	for _, t := range []string{"ip", "nft", "mount", "mkfs.ext4"} {
		if _, err := exec.LookPath(t); err != nil {
			return false
		}
	}
	return true
}

// lock keeps two runs from sharing (and sweeping) the namespaces.
func lock() (func(), error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, errors.New("another fault run holds " + lockPath)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func build(repo, tags, bin string) error {
	args := []string{"build", "-o", bin}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "./cmd/tally")
	cmd := exec.Command("go", args...)
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build -tags %q: %v\n%s", tags, err, out)
	}
	return nil
}

// keepStore deletes the stores of older valid runs, so that the store
// keeps every failure and the latest pass.
func keepStore(cfg Config, rep *Report) {
	link := filepath.Join(cfg.Store, "latest")
	_ = os.Remove(link)
	_ = os.Symlink(filepath.Base(rep.Dir), link)
	if cfg.KeepPass {
		return
	}
	entries, _ := os.ReadDir(cfg.Store)
	for _, e := range entries {
		p := filepath.Join(cfg.Store, e.Name())
		if !e.IsDir() || p == rep.Dir {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(p, "summary.txt")); err == nil && strings.Contains(firstLine(b), "verdict VALID") {
			_ = os.RemoveAll(p)
		}
	}
	if strings.HasPrefix(cfg.Profile, "selftest") {
		// Keep only the latest run of each planted bug.
		for _, e := range entries {
			p := filepath.Join(cfg.Store, e.Name())
			if e.IsDir() && p != rep.Dir && strings.Contains(e.Name(), "-"+cfg.Profile+"-seed") {
				_ = os.RemoveAll(p)
			}
		}
	}
	if rep.Verdict == check.Valid && !rep.Partial && slices.Contains([]string{"soak"}, cfg.Profile) {
		_ = os.RemoveAll(rep.Dir)
	}
}

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
