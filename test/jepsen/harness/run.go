// Package harness runs the black-box fault run of docs/testing.md: three real
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
	"tally/test/jepsen/nemesis"
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
	Seed    uint64
	Verdict check.Verdict
	Partial bool // not root: the classes that need root did not run
	// Unavailable lists the registered fault classes this run could not
	// apply, with why.
	Unavailable map[string]string `json:",omitempty"`
	Results     []check.Result
	Windows     []*Window
	Dir         string
	Summary     string
	Problems    []string // reasons for an unknown verdict (coverage gates)
}

const lockPath = "/run/" + nsPrefix + "lock"

// Run runs one fault run and writes its store. It cleans up every
// namespace, mount and process it made, also when it fails or ctx is
// cancelled (Ctrl-C): processes run in their own process groups, so a
// Ctrl-C reaches the harness alone, which stops them in order.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	r := &runner{cfg: cfg, out: cfg.Out}
	if r.out == nil {
		r.out = os.Stdout
	}
	defer r.close()
	if err := r.prepare(); err != nil {
		return nil, err
	}
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	r.faults(ctx)
	if ctx.Err() != nil {
		return r.rep, ctx.Err()
	}
	final, err := r.finish(ctx)
	if err != nil {
		return r.rep, err
	}
	return r.rep, r.judge(final)
}

// runner holds one run's parts, phase by phase.
type runner struct {
	cfg     Config
	out     io.Writer
	root    bool
	env     nemesis.Env
	start0  time.Time
	dir     string
	work    string
	bin     string
	classes []string
	sched   []nemesis.Step
	rep     *Report
	undo    []func() // run in reverse by close

	c      *Cluster
	poll   *Poller
	rec    *history.Recorder
	follow *Follower
	w      *Workload
	nem    *nemesis.Runner

	warm, faultStart time.Time
	changes          []LeaderChange
	unexpected       []string
	ops              *check.Operations // the operations windows and restored backups (C10)
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.out, "jepsen: "+format+"\n", args...)
}

func (r *runner) close() {
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
	r.undo = nil
}

// prepare checks for root, takes the lock, sweeps what a killed run left,
// makes the store and work directories, builds the binary and plans the
// schedule.
func (r *runner) prepare() error {
	cfg := r.cfg
	r.root = os.Geteuid() == 0 && haveTools()
	r.env = nemesis.Env{Root: r.root, Failpoints: strings.Contains(cfg.Tags, "failpoints")}
	if !r.root {
		why := "not running as root"
		if os.Geteuid() == 0 {
			why = "ip, nft or mount missing"
		}
		fmt.Fprintf(r.out, "jepsen: %s: running %s only, on loopback; this run cannot pass in full\n", why,
			strings.Join(nemesis.Available(nil, r.env), ","))
	} else {
		unlock, err := lock()
		if err != nil {
			return err
		}
		r.undo = append(r.undo, unlock)
		Sweep(r.logf)
	}
	r.start0 = time.Now()
	r.dir = filepath.Join(cfg.Store, fmt.Sprintf("%s-%s-seed%d", r.start0.Format("20060102-150405"), cfg.Profile, cfg.Seed))
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	r.rep = &Report{Seed: cfg.Seed, Dir: r.dir, Partial: nemesis.Partial(r.env)}
	for name, err := range nemesis.Unavailable(r.env) {
		if r.rep.Unavailable == nil {
			r.rep.Unavailable = map[string]string{}
		}
		r.rep.Unavailable[name] = err.Error()
	}
	r.work = filepath.Join(os.TempDir(), nsPrefix+"run")
	_ = os.RemoveAll(r.work)
	if err := os.MkdirAll(r.work, 0o755); err != nil {
		return err
	}
	r.undo = append(r.undo, func() { _ = os.RemoveAll(r.work) })
	r.bin = cfg.Bin
	if r.bin == "" {
		// Rebuilt every run, into the work directory.
		r.bin = filepath.Join(r.work, "tally")
		if err := build(cfg.Repo, cfg.Tags, r.bin); err != nil {
			return err
		}
	}
	r.classes = nemesis.Available(cfg.Faults, r.env)
	fmt.Fprintf(r.out, "jepsen: seed %d profile %s faults %s root %v tags %q store %s\n", cfg.Seed, cfg.Profile,
		strings.Join(r.classes, ","), r.root, cfg.Tags, r.dir)
	r.sched = nemesis.Schedule(cfg.Seed, r.classes, cfg.Profile == "ci", cfg.Duration, cfg.Hold, cfg.Gap, cfg.Shards)
	writeJSON(filepath.Join(r.dir, "schedule.json"), r.sched)
	return nil
}

// start brings the cluster up, starts the leader poller and the history,
// and opens and funds the accounts.
func (r *runner) start(ctx context.Context) error {
	cfg := r.cfg
	c, err := StartCluster(ctx, ClusterConfig{Bin: r.bin, Shards: cfg.Shards, Root: r.root, Work: r.work, Store: r.dir,
		Fast: true, Logf: r.logf, Failpoints: r.env.Failpoints})
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	r.c = c
	r.undo = append(r.undo, c.Close)
	pctx, cancel := context.WithCancel(context.Background())
	r.undo = append(r.undo, cancel)
	r.poll = NewPoller(pctx, c, 250*time.Millisecond)
	if r.rec, err = history.NewRecorder(filepath.Join(r.dir, "history.jsonl")); err != nil {
		return err
	}
	r.undo = append(r.undo, func() { _ = r.rec.Close() })
	// The stream follower (C9) starts before the accounts are opened, so
	// that it sees every event from seq 1 on.
	if r.follow, err = StartFollower(c, filepath.Join(r.dir, streamFile), r.start0, cfg.Seed); err != nil {
		return err
	}
	r.undo = append(r.undo, func() { _, _, _ = r.follow.Stop(nil, false) })
	r.w = NewWorkload(c, r.rec, r.start0, WorkloadConfig{Workers: cfg.Workers, PerShard: 3, Initial: 1000, MaxAmount: 900,
		Think: 25 * time.Millisecond, Seed: cfg.Seed, WriteDeadline: 12 * time.Second, Currency: "USD"})
	if err := r.w.Setup(ctx); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if r.nem, err = nemesis.NewRunner(faultView{c, r.poll}, faultView{c, r.poll}, filepath.Join(r.dir, "nemesis.jsonl")); err != nil {
		return err
	}
	// The CI profile tests each class on its own; random runs let one
	// fault's aftermath meet the next.
	r.nem.CatchUp = cfg.Profile == "ci"
	r.undo = append(r.undo, func() { _ = r.nem.Close() })
	return nil
}

// faults runs the clients, a warm-up without faults, then the schedule,
// and heals everything and stops the clients.
func (r *runner) faults(ctx context.Context) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		r.w.Run(ctx, stop)
		close(done)
	}()
	r.warm = time.Now()
	sleepCtx(ctx, r.cfg.Warmup)
	r.faultStart = time.Now()
	phase := r.cfg.Duration
	if r.cfg.Profile == "ci" {
		phase = time.Duration(len(r.sched))*(r.cfg.Hold+r.cfg.Gap) + 10*time.Minute
	}
	r.rep.Windows = r.nem.Run(ctx, r.faultStart, r.faultStart.Add(phase), r.sched, func(win *Window) {
		fmt.Fprintln(r.out, win.Line(r.start0))
	})
	// Traffic goes on a little after the last heal, then stops.
	sleepCtx(ctx, 2*time.Second)
	r.nem.HealAll(ctx)
	close(stop)
	<-done
}

// finish restarts whatever is down, waits for the replicas to converge,
// reads every account once more, exports every replica and stops the
// cluster.
func (r *runner) finish(ctx context.Context) (*check.Final, error) {
	c := r.c
	for _, p := range c.Procs() {
		if !p.Running() {
			if err := c.Restart(ctx, p); err != nil {
				r.logf("restart %s after the run: %v", p.Name, err)
			}
		}
	}
	quiesced := quiesce(ctx, c, r.poll, 90*time.Second)
	if !quiesced {
		r.logf("the replicas did not converge within 90s")
	}
	r.w.FinalReads(ctx)
	r.stopFollower(ctx, quiesced)
	final, err := export(ctx, c, filepath.Join(r.dir, "final"), quiesced)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if shards := diverged(final); len(shards) > 0 {
		// Keep the Raft logs of shards whose replicas disagree: the events
		// say what each replica applied, the Raft logs say why.
		r.logf("replicas of shards %v disagree: keeping their Raft directories in the store", shards)
		saveRaft(c, shards, filepath.Join(r.dir, "raft"), r.logf)
	}
	r.changes = r.poll.Changes()
	// C10: every backup taken is restored into a cluster of its own, on
	// loopback, while the binary is still there (c.Close removes the
	// work directory); the run's cluster is idle by now.
	r.ops = Operations(r.rep.Windows, r.start0)
	RestoreBackups(ctx, r.bin, r.work, r.dir, r.ops, r.logf)
	for _, p := range c.Procs() {
		for _, u := range p.Unexpected() {
			r.unexpected = append(r.unexpected, p.Name+": "+u)
		}
	}
	c.Close()
	return final, r.rec.Close()
}

// streamFile is the stream follower's record in the store.
const streamFile = "stream.jsonl"

// stopFollower lets the stream follower catch up with the seq every shard
// has applied once the run is quiet, then stops it. A follower that does
// not get there in 30 s is stopped anyway: C9 reports what it missed.
func (r *runner) stopFollower(ctx context.Context, quiesced bool) {
	target := make([]uint64, r.c.Shards)
	for _, v := range r.poll.States() {
		if v.Shard >= 0 && v.Shard < len(target) {
			target[v.Shard] = max(target[v.Shard], v.AppliedSeq)
		}
	}
	wait := 30 * time.Second
	if !quiesced {
		wait = 10 * time.Second
	}
	ok := r.follow.WaitCaughtUp(ctx, target, wait)
	events, conns, err := r.follow.Stop(target, ok)
	if err != nil {
		r.logf("stream record: %v", err)
	}
	if !ok {
		r.logf("the stream follower did not catch up within %s: at %v, the replicas at %v (%d events over %d connections)",
			wait, r.follow.Positions(), target, events, conns)
	}
}

// judge runs the checkers and the gates, prints the report and writes the
// store.
func (r *runner) judge(final *check.Final) error {
	rep, out := r.rep, r.out
	a, err := check.Analyze(r.rec.Ops(), final)
	if err != nil {
		return err
	}
	if r.follow != nil {
		a.Stream = history.StreamFile(filepath.Join(r.dir, streamFile))
	}
	a.Operations = r.ops
	rep.Results = check.All(a, check.Options{PorcupineTimeout: 2 * time.Minute, HTMLDir: r.dir})
	rep.Verdict = check.Overall(rep.Results)
	stats := a.Stats()
	gates(rep, r.cfg, a, stats, rep.Windows, r.warm, r.faultStart, r.start0, r.classes)
	if n, msg := r.w.Malformed(); n > 0 {
		// An answer that breaks the API contract is a product bug the
		// history cannot express: the run cannot pass.
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d answers broke the API contract, the first: %s", n, msg))
		if rep.Verdict == check.Valid {
			rep.Verdict = check.Unknown
		}
	}
	live := liveness(a, rep.Windows, r.start0, r.c.Shards)
	rep.Summary = fmt.Sprintf("summary: ops %d ok %d fail %d info %d (%d info writes, %d resolved) faults %d/%d verified leader-changes %d max-unavailable %s verdict %s",
		stats.Ops, stats.OK, stats.Fail, stats.Info, stats.InfoWrites, stats.InfoResolved, countVerified(rep.Windows),
		len(rep.Windows), len(r.changes), live.maxUnavailable(), verdictWord(rep))
	for _, u := range r.unexpected {
		fmt.Fprintf(out, "jepsen: unexpected exit of %s\n", u)
	}
	for _, l := range live.lines() {
		fmt.Fprintln(out, l)
	}
	fmt.Fprintln(out, rep.Summary)
	summary := rep.Summary + "\n"
	for _, res := range rep.Results {
		line := fmt.Sprintf("%-3s %-42s %-8s %s", res.Name, res.Title, res.Verdict, res.Summary)
		fmt.Fprintln(out, line)
		summary += line + "\n"
		for _, p := range res.Problems {
			fmt.Fprintf(out, "      %s\n", p)
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(out, "jepsen: unknown: %s\n", p)
	}
	if err := plotLatency(filepath.Join(r.dir, "latency.svg"), a, rep.Windows, r.start0); err != nil {
		r.logf("plot: %v", err)
	}
	writeJSON(filepath.Join(r.dir, "results.json"), rep)
	_ = os.WriteFile(filepath.Join(r.dir, "summary.txt"), []byte(summary), 0o644)
	keepStore(r.cfg, rep)
	return nil
}

// verdictWord is the verdict as printed: a run without root never reads
// as a pass.
func verdictWord(rep *Report) string {
	v := strings.ToUpper(string(rep.Verdict))
	if rep.Partial && rep.Verdict == check.Valid {
		return fmt.Sprintf("PARTIAL (not root: %d fault classes could not run; not a pass)", len(rep.Unavailable))
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

// waitFor polls ok every 20 ms until it holds or d has passed.
var waitFor = nemesis.WaitFor

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
