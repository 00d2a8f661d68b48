package main

import (
	"strings"
	"testing"

	"tally/bench"
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

func TestPickResult(t *testing.T) {
	lines := strings.Split(etcdLog+strings.Replace(resultLine, "tps=942", "tps=958", 1)+"\n"+
		`RESULT backend=etcd label="etcd rep1" accounts=10 tps=190 p50_ms=200 p99_ms=1500`+"\n", "\n")
	res, check := pickResult(lines, []string{"etcd"}, 1000)
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
	res, check = pickResult(pg, []string{"pg", "pgbench"}, 1000)
	if res == nil || res.Backend != "pg" || res.TPS != 5291 || check != "FAIL" {
		t.Errorf("got %+v check %q, want pg at 5291/s and FAIL", res, check)
	}
	if res, _ := pickResult(pg[:1], []string{"pg", "pgbench"}, 1000); res == nil || res.Backend != "pgbench" {
		t.Errorf("got %+v, want the pgbench line when there is no pg line", res)
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

func TestUniformVersusPeers(t *testing.T) {
	lines := strings.Split(etcdLog, "\n")
	etcd := &peer{Name: "etcd", Backends: []string{"etcd"}}
	etcd.Result, etcd.Check = pickResult(lines, etcd.Backends, 1000)
	pg := &peer{Name: "postgres", Result: &peerResult{Backend: "pg", TPS: 5000}}
	got := vsPeers(&bench.LatencyRow{TransfersPerSec: 11775}, etcd, pg)
	if want := "12.5x etcd (ok), 2.35x pg (ok)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got = vsPeers(&bench.LatencyRow{TransfersPerSec: 565.2}, etcd, &peer{Name: "postgres", NotRun: "no RESULT line"})
	if want := "0.60x etcd (missed by 94%), pg not run"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	hot := ratioVerdict(&bench.LatencyRow{TransfersPerSec: 700}, &bench.LatencyRow{TransfersPerSec: 1000}, "uniform", targetHotVsUnif)
	if want := "0.70x uniform: missed by 12%"; hot != want {
		t.Errorf("got %q, want %q", hot, want)
	}
}

func TestRowsOfFailedAndSkippedRuns(t *testing.T) {
	s := &summary{Profiles: []*profile{
		{Name: "uniform", Failed: "conservation check failed: sum of 1000 balances is 1, want 2"},
		{Name: "half-peak", Skipped: "no uniform rate to halve"},
	}, Peers: []*peer{{Name: "etcd", Label: "etcd (3 members)", NotRun: "etcd/run.sh: exited with status 1 (see etcd.log)"}}}
	rows := buildRows(s)
	cells := map[string]string{}
	for _, r := range rows {
		if len(r) != len(tableHeader) {
			t.Fatalf("row %q has %d cells, want %d", r, len(r), len(tableHeader))
		}
		cells[r[0]] = r[5]
	}
	for name, want := range map[string]string{
		"uniform, same shard (1/req)": "FAILED: conservation check failed",
		"random pairs (1/req)":        "not run",
		"half-peak":                   "skipped: no uniform rate to halve",
		"hot10 (1/req)":               "not run",
		"etcd (3 members)":            "not run: etcd/run.sh: exited with status 1",
	} {
		if !strings.HasPrefix(cells[name], want) {
			t.Errorf("%s: %q, want it to start with %q", name, cells[name], want)
		}
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
