package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"tally/bench"
	"tally/ledger"
	"tally/test/proc"
)

// etcdLog is etcd.log of a `make bench` run (etcd/run.sh with
// DURATION=10s), from its first line after the package install.
const etcdLog = `# 2026-11-21T18:38:35Z nproc=2 mem=23GiB load=12.42 11.53 8.85 go=go1.26.8
# etcd Version: 3.4.23
[18:38:36] etcd cluster up (rep 1)
# cpu busy before run: 60% (load 12.25 11.66 9.06)
setup: 1000 accounts x 1000000 in 0.1s
RESULT backend=etcd label="etcd rep1" accounts=1000 concurrency=64 duration=10s committed=9419 tps=942 p50_ms=57.06 p99_ms=220.96 max_ms=523.28 rejected=0 conflicts_retried=1082 errors=0 wall=10.0s
CHECK PASS backend=etcd accounts=1000/1000 total=1000000000 expected=1000000000 min_balance=999106
# cpu during run: machine busy 89%, other processes 42% (of 2 cores)
`

// resultLine is the RESULT line of etcdLog.
var resultLine = strings.Split(etcdLog, "\n")[5]

func TestParseResultLine(t *testing.T) {
	f, err := parseResultLine(resultLine)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"backend": "etcd", "label": "etcd rep1", "accounts": "1000", "tps": "942",
		"p50_ms": "57.06", "p99_ms": "220.96", "wall": "10.0s", "conflicts_retried": "1082"}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s = %q, want %q", k, f[k], v)
		}
	}
	if len(f) != 14 {
		t.Errorf("got %d fields, want 14: %v", len(f), f)
	}
}

func TestParseResultLineErrors(t *testing.T) {
	for _, line := range []string{
		"CHECK PASS backend=etcd",
		`RESULT backend=etcd label="etcd rep1`,
		"RESULT backend=etcd stray",
	} {
		if f, err := parseResultLine(line); err == nil {
			t.Errorf("%q: parsed as %v, want an error", line, f)
		}
	}
	f, err := parseResultLine(`RESULT label="a \"b\" c" tps=1`)
	if err != nil || f["label"] != `a "b" c` || f["tps"] != "1" {
		t.Errorf("escaped quote: %v, %v", f, err)
	}
}

// syncLog is the measured part of postgres-sync/run.sh's output, in the
// shape loadgen prints it: backend=pg, as postgres/run.sh's, told apart by
// the label.
const syncLog = `# PostgreSQL 15.18, primary + 2 synchronous standbys (ANY 1)
setup: 1000 accounts x 1000000 in 0.2s
RESULT backend=pg label="postgres-sync rep1" accounts=1000 concurrency=64 duration=5s committed=15000 tps=3000 p50_ms=20.00 p99_ms=60.00 max_ms=90.00 rejected=0 conflicts_retried=0 errors=0 wall=5.0s
CHECK PASS backend=pg accounts=1000/1000 total=1000000000 expected=1000000000 min_balance=999000
`

func TestPickResult(t *testing.T) {
	lines := strings.Split(etcdLog+strings.Replace(resultLine, "tps=942", "tps=958", 1)+"\n"+
		`RESULT backend=etcd label="etcd rep1" accounts=10 tps=190 p50_ms=200 p99_ms=1500`+"\n", "\n")
	res, check := pickResult(lines, "etcd", []string{"etcd"}, 1000)
	if res == nil {
		t.Fatal("no result")
	}
	if res.TPS != 950 || res.Runs != 2 || res.P99 != 220.96 || check != "PASS" {
		t.Errorf("got %+v check %q, want the mean of the two 1000-account runs (950/s) and PASS", res, check)
	}
	// postgres/run.sh prints pg (loadgen) and pgbench lines; pg is preferred.
	pg := []string{
		`RESULT backend=pgbench label="postgres rep1" accounts=1000 concurrency=64 duration=20s committed=99000 tps=4950 p50_ms=9.40 p99_ms=26.60 max_ms=90.00`,
		`RESULT backend=pg label="postgres rep1" accounts=1000 tps=5291 p50_ms=10.90 p99_ms=32.30`,
		"CHECK FAIL backend=pg accounts=1000/1000 total=1 expected=2 min_balance=0",
	}
	res, check = pickResult(pg, "postgres", []string{"pg", "pgbench"}, 1000)
	if res == nil || res.Backend != "pg" || res.TPS != 5291 || check != "FAIL" {
		t.Errorf("got %+v check %q, want pg at 5291/s and FAIL", res, check)
	}
	if res, _ := pickResult(pg[:1], "postgres", []string{"pg", "pgbench"}, 1000); res == nil || res.Backend != "pgbench" {
		t.Errorf("got %+v, want the pgbench line when there is no pg line", res)
	}
	// Both PostgreSQL peers print backend=pg: the label's first word
	// keeps their figures and checks apart when logs are read together
	// (-peer-results).
	both := append(slices.Clone(pg), strings.Split(syncLog, "\n")...)
	res, check = pickResult(both, "postgres-sync", []string{"pg"}, 1000)
	if res == nil || res.TPS != 3000 || res.Runs != 1 || check != "PASS" {
		t.Errorf("postgres-sync: got %+v check %q, want its own line at 3000/s and PASS", res, check)
	}
	res, check = pickResult(both, "postgres", []string{"pg"}, 1000)
	if res == nil || res.TPS != 5291 || res.Runs != 1 || check != "FAIL" {
		t.Errorf("postgres: got %+v check %q, want its own line at 5291/s and FAIL", res, check)
	}
}

func TestNewPeers(t *testing.T) {
	var names []string
	for _, p := range newPeers() {
		names = append(names, p.Name)
		if p.Label == "" || p.Short == "" || p.Durable == "" || len(p.Backends) == 0 || !strings.HasSuffix(p.Script, "/run.sh") {
			t.Errorf("peer %+v lacks a field", p)
		}
	}
	if got := strings.Join(names, ","); got != "postgres,postgres-sync,etcd" {
		t.Errorf("peers %s, want postgres, postgres-sync, etcd in that order", got)
	}
}

func TestVerdicts(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{atLeast(120_000, targetBatchedTPS), "ok"},
		{atLeast(60_000, targetBatchedTPS), "missed by 40%"},
		{atLeast(99_999.9, targetBatchedTPS), "missed by <1%"},
		{below(30, targetHalfPeakP99), "ok"},
		{below(75, targetHalfPeakP99), "missed by 50%"},
		{times(12.345), "12.3x"},
		{times(0.951), "0.95x"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

// peersAt returns the three peers with the given rates; 0: not run.
func peersAt(pg, pgSync, etcd float64) []*peer {
	ps := newPeers()
	for i, tps := range []float64{pg, pgSync, etcd} {
		if tps > 0 {
			ps[i].Result = &peerResult{Backend: ps[i].Backends[0], Accounts: 1000, TPS: tps, Runs: 1}
		} else {
			ps[i].NotRun = "no RESULT line"
		}
	}
	return ps
}

func TestVersusPeers(t *testing.T) {
	s := &summary{Peers: peersAt(5000, 2000, 1000)}
	pg, pgSync, etcd := s.peer("postgres"), s.peer("postgres-sync"), s.peer("etcd")
	goals := []goal{{pg, targetVsPostgres}, {pgSync, targetVsPostgresSync}, {etcd, targetVsEtcd}}
	got := vsPeers(&bench.LatencyRow{TransfersPerSec: 5500}, goals...)
	if want := "1.10x pg (ok), 2.75x pg-sync (ok), 5.50x etcd (ok)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got = vsPeers(&bench.LatencyRow{TransfersPerSec: 2800}, goals...)
	if want := "0.56x pg (missed by 44%), 1.40x pg-sync (missed by 6%), 2.80x etcd (missed by 44%)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// No goal: the ratio alone.
	got = vsPeers(&bench.LatencyRow{TransfersPerSec: 2500}, goal{p: pg}, goal{p: etcd})
	if want := "0.50x pg, 2.50x etcd"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	s = &summary{Peers: peersAt(5000, 0, 1000)}
	got = vsPeers(&bench.LatencyRow{TransfersPerSec: 5000}, goal{s.peer("postgres-sync"), targetVsPostgresSync})
	if want := "pg-sync not run"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	hot := ratioVerdict(&bench.LatencyRow{TransfersPerSec: 700}, &bench.LatencyRow{TransfersPerSec: 1000}, "same-shard", targetHotVsSame)
	if want := "0.70x same-shard: missed by 12%"; hot != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// report is a closed-loop report with one total row at tps.
func report(tps float64) *bench.Report {
	return &bench.Report{Latency: []bench.LatencyRow{{Kind: "total", Requests: 100, Transfers: 100, TransfersPerSec: tps, P50: 10, P99: 40}},
		Conservation: bench.Conservation{OK: true}}
}

// TestRows checks the table of a complete run: the rows in order, the
// targets of random pairs, and the verdicts.
func TestRows(t *testing.T) {
	s := &summary{Profiles: []*profile{
		{Name: "random-pairs", Report: report(2800)},
		{Name: "same-shard", Report: report(4000)},
		{Name: "cross-shard", Report: report(1000)},
		{Name: "batched-1shard", Report: report(120_000)},
		{Name: "hot10", Report: report(3600)},
		{Name: "zipf", Report: report(1400)},
		{Name: "half-peak", Rate: 2000, Report: report(1990)},
	}, Peers: peersAt(5000, 2000, 1000)}
	rows := buildRows(s)
	want := [][2]string{
		{"random pairs (1/req)", "0.56x pg (missed by 44%), 1.40x pg-sync (missed by 6%), 2.80x etcd (missed by 44%)"},
		{"same-shard pairs (1/req)", "0.80x pg, 2.00x pg-sync, 4.00x etcd"},
		{"cross-shard (1/req)", "0.25x same-shard: missed by 25%"},
		{"batched-1shard (8 clients, 1000/req)", "ok"},
		{"hot10 (1/req)", "0.90x same-shard: ok"},
		{"zipf s=2, 100k accounts (1/req)", zipfNoPeer + "; 0.50x random pairs"},
		{"half-peak (2000/s offered)", "ok"},
		{"postgres (1 node)", "baseline, pg client"},
		{"postgres (primary + 2 sync standbys)", "baseline, pg client"},
		{"etcd (3 members)", "baseline, etcd client"},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %q", len(rows), len(want), rows)
	}
	for i, w := range want {
		if rows[i][0] != w[0] || rows[i][5] != w[1] {
			t.Errorf("row %d: %q | %q, want %q | %q", i, rows[i][0], rows[i][5], w[0], w[1])
		}
	}
	if got, want := rows[0][4], ">= 1x pg, >= 1.5x pg-sync, >= 5x etcd"; got != want {
		t.Errorf("random pairs target %q, want %q", got, want)
	}
	if got, want := rows[5][4], ">= 3x pg-sync, same workload"; got != want {
		t.Errorf("zipf target %q, want %q", got, want)
	}
	var b strings.Builder
	s.Rows, s.Durability = rows, durability("/nonexistent", s.Peers)
	printSummary(&b, s)
	for _, w := range []string{"zipf: " + zipfNoPeer, "durability:",
		"  tally: every replica fsyncs its Raft log (raft-boltdb)",
		"  postgres (primary + 2 sync standbys): fsync=on on all three, synchronous_commit=on, synchronous_standby_names='ANY 1 (s1, s2)'",
		"  etcd (3 members): fsync on"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("no %q in the summary:\n%s", w, b.String())
		}
	}
}

func TestRowsOfFailedAndSkippedRuns(t *testing.T) {
	s := &summary{Profiles: []*profile{
		{Name: "same-shard", Failed: "conservation check failed: sum of 1000 balances is 1, want 2"},
		{Name: "half-peak", Skipped: "no same-shard rate to halve"},
	}, Peers: []*peer{{Name: "etcd", Label: "etcd (3 members)", Short: "etcd", NotRun: "etcd/run.sh: exited with status 1 (see etcd.log)"}}}
	rows := buildRows(s)
	cells := map[string]string{}
	for _, r := range rows {
		if len(r) != len(tableHeader) {
			t.Fatalf("row %q has %d cells, want %d", r, len(r), len(tableHeader))
		}
		cells[r[0]] = r[5]
	}
	for name, want := range map[string]string{
		"same-shard pairs (1/req)":        "FAILED: conservation check failed",
		"random pairs (1/req)":            "not run",
		"half-peak":                       "skipped: no same-shard rate to halve",
		"hot10 (1/req)":                   "not run",
		"zipf s=2, 100k accounts (1/req)": "not run",
		"etcd (3 members)":                "not run: etcd/run.sh: exited with status 1",
	} {
		if !strings.HasPrefix(cells[name], want) {
			t.Errorf("%s: %q, want it to start with %q", name, cells[name], want)
		}
	}
}

// TestTallyDurability reads the Badger option from this repository's
// fsm/fsm.go: the line must say one way or the other, not that it could
// not read it.
func TestTallyDurability(t *testing.T) {
	got := tallyDurability("../..")
	if !strings.Contains(got, "2 of 3 replicas") || strings.Contains(got, "could not be read") {
		t.Errorf("got %q", got)
	}
	if got := tallyDurability("/nonexistent"); !strings.Contains(got, "could not be read") {
		t.Errorf("got %q", got)
	}
}

// TestHalfPeakRow reads a report in the shape `tally --json bench --rate`
// prints (trimmed) and checks the row: p99 over the target, and the late
// sends that show the client itself fell behind.
func TestHalfPeakRow(t *testing.T) {
	out := `{"rate": 435, "open_loop": {"target_rate": 435, "achieved_rate": 434.3, "scheduled_requests": 4350,
		"sent_requests": 4350, "late_sends": 2081, "late_after_ms": 10, "missed_requests": 0},
		"latency": [{"kind": "total", "requests": 4350, "transfers": 4350, "transfers_per_sec": 434.27,
		"p50_ms": 256.96, "p99_ms": 3449.93}],
		"conservation": {"ok": true, "detail": "sum of 1000 balances = 1000000000 (1000 x 1000000)"}}`
	rep, failed := judgeBench([]byte(out), nil, "")
	if failed != "" {
		t.Fatal(failed)
	}
	s := &summary{Profiles: []*profile{{Name: "half-peak", Rate: 435, Report: rep}}}
	got := s.halfPeakRow()
	want := []string{"half-peak (435/s offered)", "434", "256.96", "3449.93", "p99 < 50 ms",
		"missed by 6799%; 48% of sends late by > 10 ms"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if _, failed := judgeBench([]byte(strings.Replace(out, `"ok": true`, `"ok": false`, 1)), nil, ""); !strings.HasPrefix(failed, "conservation check failed") {
		t.Errorf("conservation not ok: failed = %q", failed)
	}
}

// TestZipfPrefix: the Zipf run's two most frequent accounts always live on
// two shards, whatever prefix comes up.
func TestZipfPrefix(t *testing.T) {
	for range 50 {
		p := newZipfProfile(4)
		if ledger.ShardOf(p.Prefix+"0", 4) == ledger.ShardOf(p.Prefix+"1", 4) {
			t.Fatalf("prefix %s puts %s0 and %s1 on one shard", p.Prefix, p.Prefix, p.Prefix)
		}
		if !slices.Contains(p.Args, "--zipf") {
			t.Fatalf("args %q", p.Args)
		}
	}
	if p := newZipfProfile(1); p.Name != "zipf" {
		t.Errorf("one shard: %+v", p)
	}
}

// TestSnapLine: each node's snapshots as mean time and bytes, and the
// full streams it sent.
func TestSnapLine(t *testing.T) {
	got := snapLine([]snapFigures{{Node: "n1", Count: 4, Seconds: 0.008, Bytes: 268, Sent: 1, SentBytes: 3 << 20}, {Node: "n2"}})
	want := "n1 4 (mean 2.0 ms, 67 bytes; 1 full streams sent, 3 MiB), n2 none"
	if got != want {
		t.Fatalf("snapLine: %q, want %q", got, want)
	}
	if got := snapLine(nil); got != "not measured" {
		t.Fatalf("snapLine(nil): %q", got)
	}
}

// TestSnapshotFigures: a node's snapshot summaries, summed over shards,
// from its metrics page.
func TestSnapshotFigures(t *testing.T) {
	page := `# TYPE tally_snapshot_seconds summary
tally_snapshot_seconds_sum{shard="0"} 0.5
tally_snapshot_seconds_count{shard="0"} 2
tally_snapshot_seconds_sum{shard="1"} 0.25
tally_snapshot_seconds_count{shard="1"} 1
# TYPE tally_snapshot_bytes summary
tally_snapshot_bytes_sum{shard="0"} 134
tally_snapshot_bytes_count{shard="0"} 2
tally_snapshot_bytes_sum{shard="1"} 67
tally_snapshot_bytes_count{shard="1"} 1
# TYPE tally_snapshot_sent_bytes summary
tally_snapshot_sent_bytes_sum{shard="1"} 1024
tally_snapshot_sent_bytes_count{shard="1"} 1
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, page) }))
	defer srv.Close()
	c := &cluster{nodes: []*proc.Node{{ID: "n1", HTTP: strings.TrimPrefix(srv.URL, "http://")}}}
	got := c.snapshotFigures()
	want := []snapFigures{{Node: "n1", Count: 3, Seconds: 0.75, Bytes: 201, Sent: 1, SentBytes: 1024}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("figures %+v, want %+v", got, want)
	}
}
