package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"tally/bench"
	"tally/ledger"
	"tally/test/proc"
)

// benchGrace bounds a `tally bench` run beyond its duration: account
// setup, the conservation check and waiting for sagas.
const benchGrace = 5 * time.Minute

// profile is one `tally bench` run of the standard profile.
type profile struct {
	Name   string   `json:"name"`
	Args   []string `json:"args"`
	Prefix string   `json:"prefix"`
	// Rate is the offered rate of an open-loop run (half-peak).
	Rate    int           `json:"rate,omitempty"`
	Report  *bench.Report `json:"report,omitempty"`
	Skipped string        `json:"skipped,omitempty"`
	Failed  string        `json:"failed,omitempty"`
	// Duration, if set, replaces -duration (the fill runs until its count).
	Duration time.Duration `json:"duration,omitempty"`
}

// The Zipf profile: the contention test of published ledger comparisons,
// both accounts of each transfer drawn from Zipf(2) over 100,000 accounts.
const (
	zipfS        = 2
	zipfAccounts = 100_000
)

// runProfiles runs the standard profile in the table's order; later
// profiles run even when an earlier one failed, so that one bad run still
// shows the rest. Every run goes through the proxy.
func runProfiles(ctx context.Context, cfg *config, c *cluster) []*profile {
	// The first row is the workload users run: any two accounts, so most
	// transfers cross shards.
	runs := []*profile{c.runBench(ctx, newProfile("random-pairs", "p", false,
		"--accounts", "1000", "--concurrency", "64", "--batch", "1", "--random-pairs"), false)}
	if ctx.Err() != nil {
		return runs
	}
	// Same-shard pairs are the reference of the cross-shard, hot and
	// half-peak rows, and the run the CPU profile is taken in.
	same := c.runBench(ctx, newProfile("same-shard", "s", false,
		"--accounts", "1000", "--concurrency", "64", "--batch", "1"), cfg.profile)
	runs = append(runs, same)
	for _, p := range []*profile{
		newProfile("cross-shard", "x", false, "--accounts", "1000", "--concurrency", "64", "--batch", "1", "--cross-shard", "1"),
		// The placement tag in braces puts every account on one shard.
		newProfile("batched-1shard", "b", true, "--accounts", "1000", "--concurrency", "8", "--batch", "1000"),
		newProfile("hot10", "h", false, "--accounts", "1000", "--hot", "10", "--concurrency", "64", "--batch", "1"),
		newZipfProfile(cfg.shards),
	} {
		if ctx.Err() != nil {
			return runs
		}
		runs = append(runs, c.runBench(ctx, p, false))
	}
	if ctx.Err() != nil {
		return runs
	}
	return append(runs, c.halfPeak(ctx, same))
}

// newZipfProfile is the Zipf run. Its two most frequent accounts (the
// prefix then 0 and 1) are the pair of about 46% of the transfers, so
// whether they share a shard sets much of the rate, and a random prefix
// would make the row vary from run to run. The prefix is drawn until they
// live on two shards, as 3 random placements in 4 would put them: that
// pair is then a saga, the harder case.
func newZipfProfile(shards int) *profile {
	for {
		p := newProfile("zipf", "z", false, "--accounts", strconv.Itoa(zipfAccounts), "--concurrency", "64", "--batch", "1",
			"--zipf", strconv.Itoa(zipfS))
		if shards < 2 || ledger.ShardOf(p.Prefix+"0", shards) != ledger.ShardOf(p.Prefix+"1", shards) {
			return p
		}
	}
}

// fillHistory writes cfg.fill transfers, 1,000 per request to every
// shard, before the measured profiles.
func (c *cluster) fillHistory(ctx context.Context) *profile {
	p := newProfile("fill", "f", false, "--accounts", "1000", "--concurrency", "8", "--batch", "1000",
		"--count", strconv.FormatInt(c.cfg.fill, 10))
	p.Duration = 3 * time.Hour
	start := time.Now()
	c.runBench(ctx, p, false)
	logf("fill: %d transfers in %v", c.cfg.fill, time.Since(start).Round(time.Second))
	return p
}

// halfPeak runs open loop at half the same-shard run's rate.
func (c *cluster) halfPeak(ctx context.Context, same *profile) *profile {
	p := newProfile("half-peak", "r", false, "--accounts", "1000", "--concurrency", "256", "--batch", "1")
	switch u := same.Report.Row("total"); {
	case u == nil || u.TransfersPerSec < 2:
		p.Skipped = "no same-shard rate to halve"
	default:
		p.Rate = int(u.TransfersPerSec / 2)
		p.Args = append(p.Args, "--rate", strconv.Itoa(p.Rate))
		return c.runBench(ctx, p, false)
	}
	logf("half-peak: skipped (%s)", p.Skipped)
	return p
}

func newProfile(name, short string, oneShard bool, args ...string) *profile {
	r := randomHex(4)
	prefix := fmt.Sprintf("bench-%s-%s-", short, r)
	if oneShard {
		prefix = fmt.Sprintf("bench-%s-%s-{%s}-", short, r, r)
	}
	return &profile{Name: name, Args: args, Prefix: prefix}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// runBench runs one profile with `tally --json bench`, keeps its JSON
// report and stderr in the results directory, and records why it failed,
// if it did. With cpu set it profiles every node while the load runs.
func (c *cluster) runBench(ctx context.Context, p *profile, cpu bool) *profile {
	cfg := c.cfg
	d := cfg.duration
	if p.Duration > 0 {
		d = p.Duration
	}
	args := append([]string{"--addr", c.proxy, "--json", "bench", "--duration", d.String(),
		"--prefix", p.Prefix}, p.Args...)
	logf("%s: tally %s", p.Name, strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(ctx, d+benchGrace)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.bin, args...)
	// Interrupted, bench still checks conservation; give it time.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = time.Minute
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		p.Failed = fmt.Sprintf("stderr pipe: %v", err)
		return p
	}
	if err := cmd.Start(); err != nil {
		p.Failed = fmt.Sprintf("start tally bench: %v", err)
		return p
	}
	var profiling sync.WaitGroup
	onRunning := func() {
		if cpu {
			profiling.Go(func() { c.profileNodes(ctx) })
		}
	}
	errLine := c.relayStderr(p.Name, stderr, onRunning)
	runErr := cmd.Wait()
	profiling.Wait()
	if err := os.WriteFile(filepath.Join(cfg.out, p.Name+".json"), stdout.Bytes(), 0o644); err != nil {
		logf("%s: save the report: %v", p.Name, err)
	}
	if runErr != nil && ctx.Err() != nil {
		runErr = fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	p.Report, p.Failed = judgeBench(stdout.Bytes(), runErr, errLine)
	if p.Failed != "" {
		logf("%s: FAILED: %s", p.Name, p.Failed)
	}
	return p
}

// relayStderr copies bench's progress to our stderr (indented) and to
// <name>.stderr.log, calls onRunning once when the load starts (after
// account setup) and returns the error tally printed last, if any.
func (c *cluster) relayStderr(name string, r io.Reader, onRunning func()) string {
	f, err := os.Create(filepath.Join(c.cfg.out, name+".stderr.log"))
	if err != nil {
		logf("%s: stderr log: %v", name, err)
		f = nil
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var errLine string
	started := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "tally: ") {
			errLine = line
		}
		fmt.Fprintf(os.Stderr, "    %-14s %s\n", name, line)
		if f != nil {
			fmt.Fprintln(f, line)
		}
		if !started && loadStarted(line) {
			started = true
			onRunning()
		}
	}
	return errLine
}

// loadStarted reports whether a line of bench's stderr says that the load
// has begun: the "running" (closed loop) or "open loop" line that
// package bench prints after the account setup.
func loadStarted(line string) bool {
	return strings.HasPrefix(line, "bench: running") || strings.HasPrefix(line, "bench: open loop")
}

// judgeBench parses the report and says why the run failed ("" if it
// did not). The report decides first: it explains a non-zero exit.
func judgeBench(out []byte, runErr error, errLine string) (*bench.Report, string) {
	var rep bench.Report
	if err := json.Unmarshal(out, &rep); err != nil || len(rep.Latency) == 0 {
		if runErr != nil {
			return nil, benchError(runErr, errLine)
		}
		return nil, fmt.Sprintf("no JSON report from tally bench (%v)", err)
	}
	switch {
	case !rep.Conservation.OK:
		return &rep, "conservation check failed: " + rep.Conservation.Detail
	case rep.Audit != nil && !rep.Audit.OK && !rep.Audit.Skipped:
		return &rep, "audit failed: " + rep.Audit.Detail
	case runErr != nil:
		return &rep, benchError(runErr, errLine)
	}
	return &rep, ""
}

func benchError(runErr error, errLine string) string {
	if errLine == "" {
		return fmt.Sprintf("tally bench: %v", runErr)
	}
	return fmt.Sprintf("tally bench: %v (%s)", runErr, errLine)
}

// cpuTop is the top of one node's CPU profile.
type cpuTop struct {
	Node   string `json:"node"`
	Shards []int  `json:"leads_shards"`
	File   string `json:"file"`
	Top    string `json:"top"`
}

// profileNodes takes a CPU profile of every node at once, for a bit less
// than the run lasts, then keeps the top of the busiest leader's.
func (c *cluster) profileNodes(ctx context.Context) {
	secs := max(1, int((c.cfg.duration - 2*time.Second).Seconds()))
	leaders, err := c.leaders(ctx)
	if err != nil {
		logf("cpu profile: who leads: %v", err)
	}
	logf("same-shard: CPU profile of every node for %ds", secs)
	var wg sync.WaitGroup
	files := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		wg.Go(func() {
			files[i] = filepath.Join(c.cfg.out, "cpu-same-shard-"+n.ID+".pprof")
			if err := fetchProfile(ctx, n.HTTP, secs, files[i]); err != nil {
				logf("cpu profile of %s: %v", n.ID, err)
				files[i] = ""
			}
		})
	}
	wg.Wait()
	lead := busiestLeader(leaders, c.nodes)
	for i, n := range c.nodes {
		if n.ID == lead && files[i] != "" {
			c.cpuTop = &cpuTop{Node: n.ID, Shards: leaders[n.ID], File: files[i], Top: pprofTop(ctx, c.cfg.bin, files[i])}
		}
	}
}

// busiestLeader is the node that leads the most shards (the first node
// on a tie), where most of the load's work happens.
func busiestLeader(leaders map[string][]int, nodes []*proc.Node) string {
	best := nodes[0].ID
	for _, n := range nodes {
		if len(leaders[n.ID]) > len(leaders[best]) {
			best = n.ID
		}
	}
	return best
}

func fetchProfile(ctx context.Context, addr string, secs int, file string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /debug/pprof/profile: %s", resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("read profile: %w", err)
	}
	return f.Close()
}

// pprofTop is `go tool pprof -top -nodecount 10`, or why it failed.
func pprofTop(ctx context.Context, bin, file string) string {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount", "10", bin, file).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof failed: %v\n%s", err, out)
	}
	// Keep the table, drop pprof's notes about the binary's build id.
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	lines = slices.DeleteFunc(lines, func(l string) bool { return strings.HasPrefix(l, "Main binary filename") })
	return strings.Join(lines, "\n")
}
