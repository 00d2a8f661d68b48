package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// peerAccounts is the account count of the workload the peers run, the
// same as the Tally profiles' random-pairs and same-shard runs. The
// peers' load generator draws uniform pairs only: it has no Zipf mode, so
// the Zipf row has no peer figure.
const peerAccounts = 1000

// peerGrace bounds a peer script beyond its measured run: installing the
// package on first use, building loadgen, waiting for a quiet machine,
// starting and copying standbys.
const peerGrace = 20 * time.Minute

// peer is one peer system and what came of running it.
type peer struct {
	Name     string      `json:"name"`     // etcd, postgres, postgres-sync; also the first word of its RESULT labels
	Label    string      `json:"label"`    // the table's row name
	Short    string      `json:"short"`    // its name in ratios
	Script   string      `json:"script"`   // relative to the peers folder
	Backends []string    `json:"backends"` // RESULT backend= values that count, preferred first
	Durable  string      `json:"durability"`
	Result   *peerResult `json:"result,omitempty"`
	Check    string      `json:"check,omitempty"` // PASS or FAIL, from the CHECK line
	NotRun   string      `json:"not_run,omitempty"`
	Log      string      `json:"log,omitempty"`
	// Reused is set when the figures come from -peer-results, an earlier
	// run, not this one.
	Reused bool `json:"reused,omitempty"`
}

// newPeers lists the peers in the table's order. Durable says what each
// script configures (read from the scripts; nothing there is relaxed).
func newPeers() []*peer {
	return []*peer{
		// loadgen's pg client first: it is the same Go client as etcd's;
		// pgbench (PGBENCH=1) is used only when it is all there is.
		{Name: "postgres", Label: "postgres (1 node)", Short: "pg", Script: "postgres/run.sh", Backends: []string{"pg", "pgbench"},
			Durable: "fsync=on, synchronous_commit=on: a commit returns once its WAL is flushed on the one server; one copy"},
		{Name: "postgres-sync", Label: "postgres (primary + 2 sync standbys)", Short: "pg-sync", Script: "postgres-sync/run.sh", Backends: []string{"pg"},
			Durable: "fsync=on on all three, synchronous_commit=on, synchronous_standby_names='ANY 1 (s1, s2)': " +
				"a commit returns once the primary and 1 of the 2 standbys have flushed its WAL"},
		{Name: "etcd", Label: "etcd (3 members)", Short: "etcd", Script: "etcd/run.sh", Backends: []string{"etcd"},
			Durable: "fsync on (etcd's default): a write returns once a Raft quorum, 2 of 3 members, has fsynced it to the WAL"},
	}
}

// runPeers runs each peer script, or reads -peer-results instead, and
// never fails: a peer that cannot run is a line in the table.
func runPeers(ctx context.Context, cfg *config) []*peer {
	peers := newPeers()
	switch {
	case ctx.Err() != nil:
		for _, p := range peers {
			p.NotRun = "interrupted"
		}
	case len(cfg.peerResults) > 0:
		for _, p := range peers {
			p.fromFiles(cfg.peerResults)
			p.Reused = true
		}
	case cfg.peers == "":
		for _, p := range peers {
			p.NotRun = "peers skipped (-no-peers)"
		}
	default:
		if _, err := os.Stat(cfg.peers); err != nil {
			for _, p := range peers {
				p.NotRun = fmt.Sprintf("no peer scripts (%v)", err)
			}
			return peers
		}
		for _, p := range peers {
			if ctx.Err() != nil {
				p.NotRun = "interrupted"
				continue
			}
			p.run(ctx, cfg)
		}
	}
	return peers
}

// run runs the peer's script with the workload of the random-pairs and
// same-shard profiles and reads its RESULT line from the captured output.
func (p *peer) run(ctx context.Context, cfg *config) {
	script := filepath.Join(cfg.peers, p.Script)
	if _, err := os.Stat(script); err != nil {
		p.NotRun = fmt.Sprintf("%s missing", p.Script)
		logf("%s: not run: %v", p.Name, err)
		return
	}
	p.Log = filepath.Join(cfg.out, p.Name+".log")
	logf("%s: running %s (%v, may install the package on first use); output in %s", p.Name, script, cfg.duration, p.Log)
	if err := runScript(ctx, script, peerEnv(cfg.duration), p.Log, p.Name); err != nil {
		p.NotRun = fmt.Sprintf("%s: %v (see %s)", p.Script, err, filepath.Base(p.Log))
		logf("%s: %s", p.Name, p.NotRun)
		return
	}
	p.fromFiles([]string{p.Log})
	if p.NotRun == "" {
		logf("%s: %.0f transfers/s, p50 %.1f ms, p99 %.1f ms, check %s", p.Name, p.Result.TPS, p.Result.P50, p.Result.P99, p.Check)
	}
}

// peerEnv is the environment of a peer script: one repetition of the
// 1000-account workload with 64 clients for the same duration as Tally.
func peerEnv(d time.Duration) []string {
	return append(os.Environ(),
		"ACCOUNTS_LIST="+strconv.Itoa(peerAccounts),
		"REPS=1",
		fmt.Sprintf("DURATION=%ds", int(d.Seconds())),
		"CONC=64",
		"PGBENCH=0",
	)
}

// runScript runs a peer script in its own process group with output in
// logPath and relayed to our stderr. On cancel the whole group gets
// SIGTERM (the script then stops its servers itself), and whatever of the
// group is left after the script has ended gets SIGKILL.
func runScript(ctx context.Context, script string, env []string, logPath, name string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("log: %w", err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, peerGrace)
	defer cancel()
	cmd := exec.CommandContext(ctx, script)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(f, sc.Text())
			fmt.Fprintf(os.Stderr, "    %-14s %s\n", name, sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr) // a line too long for the scanner: drain
	}()
	runErr := cmd.Wait()
	pw.Close()
	<-relayed
	if ctx.Err() != nil {
		// ESRCH (nothing left) is the usual answer.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	var exit *exec.ExitError
	if errors.As(runErr, &exit) {
		return fmt.Errorf("exited with status %d", exit.ExitCode())
	}
	return runErr
}

// fromFiles reads the peer's RESULT and CHECK lines from peer logs.
func (p *peer) fromFiles(files []string) {
	var lines []string
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			p.NotRun = fmt.Sprintf("read %s: %v", file, err)
			return
		}
		lines = append(lines, strings.Split(string(b), "\n")...)
	}
	res, check := pickResult(lines, p.Name, p.Backends, peerAccounts)
	if res == nil {
		p.NotRun = fmt.Sprintf("no RESULT line for %s (%s) with accounts=%d", p.Name, strings.Join(p.Backends, "/"), peerAccounts)
		return
	}
	p.Result, p.Check = res, check
}

// peerResult is a peer's throughput and latency; with several matching
// RESULT lines (repetitions), the mean of each figure.
type peerResult struct {
	Backend  string  `json:"backend"`
	Accounts int     `json:"accounts"`
	TPS      float64 `json:"tps"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Runs     int     `json:"runs"`
}

// pickResult finds the RESULT lines of peer name (the first word of the
// label: both PostgreSQL scripts print backend=pg) for the first backend
// in backends that has any for the given account count, and averages
// them. check is FAIL if any CHECK line of that backend failed, PASS if
// one passed, else "".
func pickResult(lines []string, name string, backends []string, accounts int) (*peerResult, string) {
	for _, b := range backends {
		var res *peerResult
		for _, l := range lines {
			f, err := parseResultLine(l)
			if err != nil || f["backend"] != b || f["accounts"] != strconv.Itoa(accounts) || firstWord(f["label"]) != name {
				continue
			}
			if res == nil {
				res = &peerResult{Backend: b, Accounts: accounts}
			}
			res.TPS += atof(f["tps"])
			res.P50 += atof(f["p50_ms"])
			res.P99 += atof(f["p99_ms"])
			res.Runs++
		}
		if res != nil {
			n := float64(res.Runs)
			res.TPS, res.P50, res.P99 = res.TPS/n, res.P50/n, res.P99/n
			return res, checkOf(lines, name, b)
		}
	}
	return nil, ""
}

// checkOf reads loadgen's "CHECK PASS|FAIL backend=... ..." lines of
// peer name: those after one of its RESULT lines (a CHECK line has no
// label; each follows its run's RESULT line).
func checkOf(lines []string, name, backend string) string {
	// pgbench's runs are checked by loadgen with backend=pg.
	if backend == "pgbench" {
		backend = "pg"
	}
	check, current := "", ""
	for _, l := range lines {
		if f, err := parseResultLine(l); err == nil {
			current = firstWord(f["label"])
			continue
		}
		fs := strings.Fields(l)
		if len(fs) < 3 || fs[0] != "CHECK" || fs[2] != "backend="+backend || current != name {
			continue
		}
		if fs[1] != "PASS" {
			return "FAIL"
		}
		check = "PASS"
	}
	return check
}

func atof(s string) float64 {
	v, _ := strconv.ParseFloat(strings.TrimSuffix(s, "s"), 64) // a bad figure reads as 0
	return v
}

// parseResultLine parses a line `RESULT key=value key="quoted value" ...`
// as loadgen (and the pgbench awk in postgres/run.sh) print it.
func parseResultLine(line string) (map[string]string, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "RESULT ")
	if !ok {
		return nil, errors.New("not a RESULT line")
	}
	fields := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		key, after, ok := strings.Cut(rest, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf("field %q: want key=value", firstWord(rest))
		}
		value, tail, err := cutValue(after)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", key, err)
		}
		fields[key], rest = value, tail
	}
	return fields, nil
}

// cutValue splits off one value: a Go-quoted string (loadgen prints the
// label with %q) or everything up to the next space.
func cutValue(s string) (value, rest string, err error) {
	if !strings.HasPrefix(s, `"`) {
		v, r, _ := strings.Cut(s, " ")
		return v, r, nil
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped character
		case '"':
			v, err := strconv.Unquote(s[:i+1])
			return v, s[i+1:], err
		}
	}
	return "", "", errors.New("unterminated quote")
}

func firstWord(s string) string {
	w, _, _ := strings.Cut(s, " ")
	return w
}
