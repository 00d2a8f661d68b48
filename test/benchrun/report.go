package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"tally/bench"
)

// The performance targets (docs/performance.md), all measured in the
// same run.
const (
	targetVsPostgres     = 1.0     // random pairs, one transfer per request: at least PostgreSQL on one node
	targetVsPostgresSync = 1.5     // 1.5x PostgreSQL with two synchronous standbys
	targetVsEtcd         = 5.0     // and 5x etcd with three members
	targetZipfVsSync     = 3.0     // Zipf s=2: 3x PostgreSQL with sync standbys on the same workload
	targetCrossVsSame    = 1.0 / 3 // cross-shard at least 1/3 of same-shard
	targetBatchedTPS     = 100_000 // batches of 1000 on one shard
	targetHotVsSame      = 0.8     // 10 hot accounts within 20% of same-shard
	targetHalfPeakP99    = 50.0    // ms, open loop at half the same-shard rate
)

// zipfNoPeer says why the Zipf row has no ratio: no peer ran its workload.
const zipfNoPeer = "no peer figure: the peers' load generator draws uniform pairs only (no Zipf mode)"

// summary is everything one run measured; -json writes it as is.
type summary struct {
	Started    time.Time     `json:"started"`
	Duration   string        `json:"duration"`
	ResultsDir string        `json:"results_dir"`
	Profiles   []*profile    `json:"profiles"`
	Peers      []*peer       `json:"peers"`
	RSS        []rss         `json:"peak_rss"`
	Fill       *profile      `json:"fill,omitempty"`
	Snapshots  []snapFigures `json:"snapshots,omitempty"`
	CPUTop     *cpuTop       `json:"cpu_top,omitempty"`
	Durability []string      `json:"durability"` // one line per system
	Rows       [][]string    `json:"table"`
	Failures   []string      `json:"failures,omitempty"`
}

func (s *summary) profile(name string) *profile {
	for _, p := range s.Profiles {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// peer is the named peer of this run, or the peer as newPeers makes it,
// marked not run, when the run has none of that name.
func (s *summary) peer(name string) *peer {
	for _, p := range s.Peers {
		if p.Name == name {
			return p
		}
	}
	for _, p := range newPeers() {
		if p.Name == name {
			p.NotRun = "not in this run"
			return p
		}
	}
	panic("benchrun: no peer " + name)
}

// tableHeader names the columns of the one table.
var tableHeader = []string{"PROFILE", "TRANSFERS/S", "P50_MS", "P99_MS", "TARGET", "RESULT"}

// buildRows turns the figures into the table's rows: the Tally profiles
// in the order they run, then the peers.
func buildRows(s *summary) [][]string {
	var rows [][]string
	add := func(name string, l *bench.LatencyRow, target, result string) {
		rows = append(rows, figures(name, l, target, result))
	}
	pg, pgSync, etcd := s.peer("postgres"), s.peer("postgres-sync"), s.peer("etcd")
	pairs := s.profile("random-pairs").total()
	add("random pairs (1/req)", pairs,
		fmt.Sprintf(">= %gx %s, >= %gx %s, >= %gx %s", targetVsPostgres, pg.Short, targetVsPostgresSync, pgSync.Short, targetVsEtcd, etcd.Short),
		s.profileResult("random-pairs", func() string {
			return vsPeers(pairs, goal{pg, targetVsPostgres}, goal{pgSync, targetVsPostgresSync}, goal{etcd, targetVsEtcd})
		}))
	same := s.profile("same-shard").total()
	add("same-shard pairs (1/req)", same, "none (the base of cross, hot, half-peak)",
		s.profileResult("same-shard", func() string { return vsPeers(same, goal{p: pg}, goal{p: pgSync}, goal{p: etcd}) }))
	rows = append(rows, s.crossRow())
	batched := s.profile("batched-1shard").total()
	add("batched-1shard (8 clients, 1000/req)", batched, fmt.Sprintf(">= %d/s", targetBatchedTPS),
		s.profileResult("batched-1shard", func() string { return atLeast(batched.TransfersPerSec, targetBatchedTPS) }))
	hot := s.profile("hot10").total()
	add("hot10 (1/req)", hot, "within 20% of same-shard",
		s.profileResult("hot10", func() string { return ratioVerdict(hot, same, "same-shard", targetHotVsSame) }))
	rows = append(rows, s.zipfRow())
	rows = append(rows, s.halfPeakRow())
	for _, p := range s.Peers {
		rows = append(rows, peerRow(p))
	}
	return rows
}

// zipfRow is the Zipf run. Its goal is a ratio to PostgreSQL with sync
// standbys on the same workload, which no peer script can run, so the
// row says so rather than compare with another workload; it shows the
// ratio to Tally's own random pairs, what the contention costs.
func (s *summary) zipfRow() []string {
	z := s.profile("zipf").total()
	pairs := s.profile("random-pairs").total()
	name := fmt.Sprintf("zipf s=%d, %dk accounts (1/req)", zipfS, zipfAccounts/1000)
	target := fmt.Sprintf(">= %gx %s, same workload", targetZipfVsSync, s.peer("postgres-sync").Short)
	return figures(name, z, target, s.profileResult("zipf", func() string {
		v := zipfNoPeer
		if pairs != nil && pairs.TransfersPerSec > 0 {
			v += fmt.Sprintf("; %s random pairs", times(z.TransfersPerSec/pairs.TransfersPerSec))
		}
		return v
	}))
}

// total is the run's all-kinds latency row, nil if it has none.
func (p *profile) total() *bench.LatencyRow {
	if p == nil {
		return nil
	}
	return p.Report.Row("total")
}

// profileResult is the RESULT cell of a Tally profile: why it did not
// run or failed, or the verdict, followed by failed requests if any.
func (s *summary) profileResult(name string, verdict func() string) string {
	p := s.profile(name)
	switch {
	case p == nil:
		return "not run"
	case p.Skipped != "":
		return "skipped: " + p.Skipped
	case p.Failed != "":
		return "FAILED: " + p.Failed
	case p.total() == nil:
		return "no figures in the report"
	}
	v := verdict()
	if n := p.Report.FailedRequests(); n > 0 {
		v += fmt.Sprintf("; %d failed requests", n)
	}
	return v
}

// crossRow is the cross-shard run, every request a saga, against the
// same-shard run: both closed loops of 64 clients with one transfer per
// request, so the ratio of their rates is what a saga costs.
func (s *summary) crossRow() []string {
	p := s.profile("cross-shard")
	cross := p.total()
	same := s.profile("same-shard").total()
	verdict := func() string {
		if same == nil || cross == nil || same.TransfersPerSec <= 0 || cross.Transfers == 0 {
			return "no cross-shard requests answered"
		}
		r := cross.TransfersPerSec / same.TransfersPerSec
		return fmt.Sprintf("%s same-shard: %s", times(r), atLeast(r, targetCrossVsSame))
	}
	return figures("cross-shard (1/req)", cross, ">= 1/3 of same-shard", s.profileResult("cross-shard", verdict))
}

func (s *summary) halfPeakRow() []string {
	p := s.profile("half-peak")
	name := "half-peak"
	if p != nil && p.Rate > 0 {
		name = fmt.Sprintf("half-peak (%d/s offered)", p.Rate)
	}
	l := p.total()
	return figures(name, l, fmt.Sprintf("p99 < %.0f ms", targetHalfPeakP99), s.profileResult("half-peak", func() string {
		v := below(l.P99, targetHalfPeakP99)
		if p.Rate > 0 && l.TransfersPerSec < 0.9*float64(p.Rate) {
			v += fmt.Sprintf("; reached %.0f%% of the offered rate", 100*l.TransfersPerSec/float64(p.Rate))
		}
		if o := p.Report.OpenLoop; o != nil && o.Scheduled > 0 && o.Late > 0 {
			v += fmt.Sprintf("; %.0f%% of sends late by > %.0f ms", 100*float64(o.Late)/float64(o.Scheduled), o.LateAfterMS)
		}
		return v
	}))
}

func peerRow(p *peer) []string {
	if p.NotRun != "" || p.Result == nil {
		return []string{p.Label, "-", "-", "-", "", "not run: " + p.NotRun}
	}
	r := p.Result
	result := "baseline, " + r.Backend + " client"
	if p.Reused {
		result = "baseline from an earlier run (-peer-results), " + r.Backend + " client"
	}
	if r.Runs > 1 {
		result += fmt.Sprintf(", mean of %d runs", r.Runs)
	}
	if p.Check != "" {
		result += ", check " + p.Check
	}
	return []string{p.Label, fmt.Sprintf("%.0f", r.TPS), fmt.Sprintf("%.2f", r.P50), fmt.Sprintf("%.2f", r.P99), "", result}
}

// figures is a row's first four cells; dashes when there is no figure.
func figures(name string, l *bench.LatencyRow, target, result string) []string {
	if l == nil {
		return []string{name, "-", "-", "-", target, result}
	}
	return []string{name, fmt.Sprintf("%.0f", l.TransfersPerSec), fmt.Sprintf("%.2f", l.P50),
		fmt.Sprintf("%.2f", l.P99), target, result}
}

// goal is a peer and the least ratio to it a run should reach; 0: the
// ratio is shown with no verdict.
type goal struct {
	p    *peer
	want float64
}

// vsPeers is a run's ratio to each peer, with a verdict where there is a
// goal.
func vsPeers(l *bench.LatencyRow, goals ...goal) string {
	parts := make([]string, 0, len(goals))
	for _, g := range goals {
		name := g.p.Short
		switch {
		case g.p.Result == nil || g.p.Result.TPS <= 0:
			parts = append(parts, name+" not run")
		case g.want > 0:
			r := l.TransfersPerSec / g.p.Result.TPS
			parts = append(parts, fmt.Sprintf("%s %s (%s)", times(r), name, atLeast(r, g.want)))
		default:
			parts = append(parts, fmt.Sprintf("%s %s", times(l.TransfersPerSec/g.p.Result.TPS), name))
		}
	}
	return strings.Join(parts, ", ")
}

// ratioVerdict is l's rate relative to base's, against a minimum ratio.
func ratioVerdict(l, base *bench.LatencyRow, baseName string, want float64) string {
	if base == nil || base.TransfersPerSec <= 0 {
		return "no " + baseName + " rate to compare with"
	}
	r := l.TransfersPerSec / base.TransfersPerSec
	return fmt.Sprintf("%s %s: %s", times(r), baseName, atLeast(r, want))
}

// atLeast is "ok" when got reaches want, else by how much it fell short,
// in percent of want.
func atLeast(got, want float64) string {
	if got >= want {
		return "ok"
	}
	return fmt.Sprintf("missed by %s%%", pctString(100*(want-got)/want))
}

// below is "ok" when got is under limit, else by how much it went over,
// in percent of limit.
func below(got, limit float64) string {
	if got < limit {
		return "ok"
	}
	return fmt.Sprintf("missed by %s%%", pctString(100*(got-limit)/limit))
}

// pctString rounds a percentage, but never down to 0: a miss is a miss.
func pctString(p float64) string {
	if p < 1 {
		return "<1"
	}
	return fmt.Sprintf("%.0f", math.Floor(p+1e-9)) // 43.99999 from float division is 44
}

// times formats a ratio: 12.3x, 2.10x, 0.95x.
func times(r float64) string {
	if r >= 10 {
		return fmt.Sprintf("%.1fx", r)
	}
	return fmt.Sprintf("%.2fx", r)
}

// syncWrites finds the Badger option in fsm/fsm.go.
var syncWrites = regexp.MustCompile(`WithSyncWrites\((true|false)\)`)

// durability is one line per system saying what is on disk, and where,
// before a transfer is acknowledged: Tally's, then each peer's.
func durability(root string, peers []*peer) []string {
	lines := []string{tallyDurability(root)}
	for _, p := range peers {
		lines = append(lines, p.Label+": "+p.Durable)
	}
	return lines
}

// tallyDurability states what Tally fsyncs. The Raft log (raft-boltdb) is
// fsynced on every replica for every batch; whether the state store is
// too is read from the source the binary was built from (make bench
// builds it first), so the line cannot go stale.
func tallyDurability(root string) string {
	const raft = "tally: every replica fsyncs its Raft log (raft-boltdb) for every batch; a transfer is acknowledged " +
		"once a Raft quorum, 2 of 3 replicas, has fsynced it and the leader has applied it; "
	src, err := os.ReadFile(filepath.Join(root, "fsm", "fsm.go"))
	m := syncWrites.FindSubmatch(src)
	switch {
	case err != nil || m == nil:
		return raft + "whether the state store (Badger) is fsynced per batch could not be read from fsm/fsm.go"
	case string(m[1]) == "true":
		return raft + "the state store (Badger) is fsynced per batch too"
	}
	return raft + "the state store (Badger) is not fsynced per batch: it is rebuilt from the fsynced Raft log after a power loss"
}

// printSummary prints the table, the nodes' peak memory, the durability
// line and the top of the leader's CPU profile.
func printSummary(w io.Writer, s *summary) {
	fmt.Fprintf(w, "Tally vs peers, %s per run, 3 replicas, fsync on, through the proxy, 64 closed-loop clients "+
		"and one transfer per request unless stated (same machine, same run)\n", s.Duration)
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, strings.Join(tableHeader, "\t"))
	for _, r := range s.Rows {
		fmt.Fprintln(t, strings.Join(r, "\t"))
	}
	t.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "zipf: %s.\n", zipfNoPeer)
	if s.Fill != nil {
		fmt.Fprintln(w, "history written before the profiles: "+fillLine(s.Fill))
	}
	fmt.Fprintln(w, "peak RSS: "+rssLine(s.RSS))
	fmt.Fprintln(w, "snapshots: "+snapLine(s.Snapshots))
	fmt.Fprintln(w, "durability:")
	for _, d := range s.Durability {
		fmt.Fprintln(w, "  "+d)
	}
	if c := s.CPUTop; c != nil {
		fmt.Fprintf(w, "\nCPU profile of %s (leads shards %v) during same-shard, top 10 (%s):\n%s\n", c.Node, c.Shards, c.File, c.Top)
	}
	fmt.Fprintf(w, "\nraw results: %s\n", s.ResultsDir)
	for _, f := range s.Failures {
		fmt.Fprintln(w, "FAILED:", f)
	}
}

func fillLine(p *profile) string {
	switch {
	case p.Failed != "":
		return "failed: " + p.Failed
	case p.Report == nil || p.Report.Row("total") == nil:
		return "no report"
	}
	t := p.Report.Row("total")
	return fmt.Sprintf("%d transfers at %.0f/s", t.Transfers, t.TransfersPerSec)
}

func snapLine(fs []snapFigures) string {
	if len(fs) == 0 {
		return "not measured"
	}
	parts := make([]string, len(fs))
	for i, f := range fs {
		if f.Count == 0 {
			parts[i] = f.Node + " none"
			continue
		}
		parts[i] = fmt.Sprintf("%s %d (mean %.1f ms, %.0f bytes; %d full streams sent, %.0f MiB)", f.Node, f.Count,
			1000*f.Seconds/float64(f.Count), f.Bytes/float64(f.Count), f.Sent, f.SentBytes/(1<<20))
	}
	return strings.Join(parts, ", ")
}

func rssLine(rs []rss) string {
	if len(rs) == 0 {
		return "not measured"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s %.0f MiB", r.Process, r.PeakMiB)
	}
	return strings.Join(parts, ", ")
}

func writeSummaryJSON(path string, s *summary) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode figures: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write figures: %w", err)
	}
	return nil
}
