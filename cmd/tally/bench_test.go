package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tally/bench"
	"tally/ledger"
)

func TestBenchCountJSON(t *testing.T) {
	f := newFakeLedger(t)
	out, stderr, err := run(t, f.addr(), "--json", "bench", "--accounts", "20", "--initial", "1000",
		"--count", "300", "--concurrency", "4", "--batch", "7", "--max-amount", "400", "--seed", "1")
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	var rejected int64
	for _, n := range rep.Rejected {
		rejected += n
	}
	total := rep.Latency[len(rep.Latency)-1]
	if total.Kind != "total" || total.Transfers != 300 || rep.Applied+rejected != 300 || rep.Applied == 0 {
		t.Errorf("want 300 transfers answered: %+v", rep)
	}
	if total.Requests != 43 { // 42 full batches of 7 and one of 6
		t.Errorf("requests %d, want 43", total.Requests)
	}
	if !rep.Conservation.OK || rep.Conservation.Sum != "20000" || len(rep.Errors) != 0 {
		t.Errorf("conservation %+v, errors %+v", rep.Conservation, rep.Errors)
	}
	if total.P50 <= 0 || total.P50 > total.P99 || total.P99 > total.Max {
		t.Errorf("latency %+v", total)
	}
}

// TestBenchClientBatch runs the closed loop through the client batcher:
// every transfer is answered, in fewer requests than transfers.
func TestBenchClientBatch(t *testing.T) {
	f := newFakeLedger(t)
	out, stderr, err := run(t, f.addr(), "--json", "bench", "--accounts", "20", "--initial", "1000",
		"--count", "400", "--concurrency", "16", "--client-batch", "--seed", "1")
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	total := rep.Latency[len(rep.Latency)-1]
	cb := rep.ClientBatch
	if total.Transfers != 400 || total.Requests != 400 || cb == nil || cb.Items != 400 || cb.InFlight != 1 {
		t.Fatalf("want 400 transfers in 400 calls through the batcher: %+v, %+v", total, cb)
	}
	if cb.Requests >= 400 || cb.Requests < 1 {
		t.Errorf("%d requests for 400 transfers: nothing was coalesced", cb.Requests)
	}
	if !rep.Conservation.OK || len(rep.Errors) != 0 {
		t.Errorf("conservation %+v, errors %+v", rep.Conservation, rep.Errors)
	}
	out, stderr, err = run(t, f.addr(), "bench", "--accounts", "20", "--count", "50", "--concurrency", "4",
		"--client-batch", "--client-inflight", "2")
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr)
	}
	if !strings.Contains(out, "client batching") || !strings.Contains(out, "at most 2 in flight") {
		t.Errorf("report without the batcher's line:\n%s", out)
	}
}

func TestBenchDurationTable(t *testing.T) {
	f := newFakeLedger(t)
	out, stderr, err := run(t, f.addr(), "bench", "--accounts", "10", "--hot", "3", "--duration", "1100ms", "--concurrency", "2")
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr)
	}
	if got := fields(t, out, "same-shard"); got[1] == "0" {
		t.Errorf("same-shard line %v", got)
	}
	fields(t, out, "total")
	if !strings.Contains(out, "conservation: ok: sum of 10 balances = 10000000 (10 x 1000000)") || !strings.Contains(out, "errors: none") {
		t.Errorf("report:\n%s", out)
	}
	if !strings.Contains(stderr, "1.0s") || !strings.Contains(stderr, "transfers") {
		t.Errorf("no progress line on stderr:\n%s", stderr)
	}
	// Only the hot accounts moved money.
	moved := map[string]bool{}
	for _, e := range f.events() {
		if e.Data.Transfer != nil && e.Data.Transfer.Debit != "@world" {
			moved[e.Data.Transfer.Debit], moved[e.Data.Transfer.Credit] = true, true
		}
	}
	if len(moved) == 0 || len(moved) > 3 {
		t.Errorf("accounts that moved money: %v, want at most the 3 hot ones", moved)
	}
}

func TestBenchCatchesCreatedMoney(t *testing.T) {
	f := newFakeLedger(t)
	f.mint = 1
	out, _, err := run(t, f.addr(), "bench", "--accounts", "5", "--count", "20", "--concurrency", "1")
	if err == nil || !strings.Contains(err.Error(), "conservation check failed: sum of 5 balances is 5000005, want 5000000") {
		t.Errorf("err = %v", err)
	}
	if !strings.Contains(out, "conservation: FAILED") {
		t.Errorf("report:\n%s", out)
	}
}

func TestBenchCountsErrors(t *testing.T) {
	f := newFakeLedger(t)
	out, _, err := run(t, f.addr(), "bench", "--accounts", "4", "--count", "10", "--concurrency", "1", "--prefix", "b-")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	// A second run with the same prefix repeats the setup harmlessly; its
	// transfers with the same ids but other amounts are rejections.
	out, _, err = run(t, f.addr(), "--json", "bench", "--accounts", "4", "--count", "10", "--concurrency", "1", "--prefix", "b-", "--seed", "99")
	if err != nil {
		t.Fatalf("second bench: %v\n%s", err, out)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Rejected["exists_with_different_fields"] == 0 {
		t.Errorf("rejections %v (%v)", rep.Rejected, err)
	}
}

// TestBenchCrossShard runs a mix against a fake with four shards whose
// sagas stay in flight for a while after the answer: the cross-shard rows
// are reported apart, the bench waits for the run's sagas before it reads
// a balance, and conservation and the audit hold across shards.
func TestBenchCrossShard(t *testing.T) {
	f := newFakeCluster(t, 4)
	f.sagaDelay = 300 * time.Millisecond
	out, stderr, err := run(t, f.addr(), "--json", "bench", "--accounts", "40", "--initial", "100000", "--count", "400",
		"--concurrency", "4", "--batch", "5", "--cross-shard", "0.5", "--seed", "3", "--prefix", "xs-")
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	rows := map[string]bench.LatencyRow{}
	for _, l := range rep.Latency {
		rows[l.Kind] = l
	}
	same, cross, total := rows["same-shard"], rows["cross-shard"], rows["total"]
	if same.Transfers == 0 || cross.Transfers == 0 || same.Transfers+cross.Transfers != 400 || total.Transfers != 400 {
		t.Errorf("rows %+v", rep.Latency)
	}
	if cross.P50 <= 0 || cross.TransfersPerSec <= 0 || same.TransfersPerSec <= 0 {
		t.Errorf("cross-shard row %+v", cross)
	}
	if rep.Shards != 4 || rep.Rejected[string(ledger.CrossShardNotSupported)] != 0 {
		t.Errorf("shards %d, rejected %v", rep.Shards, rep.Rejected)
	}
	var rejected int64
	for _, n := range rep.Rejected {
		rejected += n
	}
	if rep.InFlight == 0 || rep.Applied+rep.InFlight+rejected != 400 {
		t.Errorf("applied %d, in flight %d, rejected %d: want some in flight, 400 in all", rep.Applied, rep.InFlight, rejected)
	}
	if s := rep.Sagas; s == nil || !s.Settled || s.Open == 0 {
		t.Errorf("sagas %+v: want some open at the end of the load, all finished", s)
	}
	if !rep.Conservation.OK || rep.Conservation.Sum != "4000000" {
		t.Errorf("conservation %+v", rep.Conservation)
	}
	if a := rep.Audit; a == nil || !a.OK || !a.Consistent || len(a.Currencies) != 1 || a.Currencies[0].InFlight != "0" || a.Currencies[0].Net != "0" {
		t.Errorf("audit %+v", rep.Audit)
	}
	if rep.CrossChecked == nil || !*rep.CrossChecked {
		t.Errorf("cross-shard sample %q not confirmed", rep.CrossSample)
	}
	if !strings.Contains(stderr, "waiting for") {
		t.Errorf("no word of the wait on stderr:\n%s", stderr)
	}

	// Every cross-shard transfer ran as a saga between two shards, and
	// each finished; no balance was read while one of them was open.
	held, ended := 0, 0
	for _, e := range f.events() {
		switch e.Type {
		case ledger.SagaDebitHeld:
			held++
			if *e.Data.Peer == e.Shard {
				t.Errorf("saga %s within shard %d", e.Data.Transfer.ID, e.Shard)
			}
		case ledger.SagaCompleted, ledger.SagaAborted:
			ended++
		}
	}
	if held == 0 || held != ended || int64(held) > cross.Transfers {
		t.Errorf("%d sagas held, %d ended, %d cross-shard transfers sent", held, ended, cross.Transfers)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	lastSagas, firstRead := -1, -1
	for i, r := range f.reqs {
		switch {
		case r.Method == "GET" && r.Path == "/v1/sagas":
			lastSagas = i
		case r.Method == "GET" && strings.HasPrefix(r.Path, "/v1/accounts/") && firstRead < 0:
			firstRead = i
		}
	}
	if lastSagas < 0 || firstRead < lastSagas {
		t.Errorf("balances read at request %d, sagas last listed at %d: the check did not wait for the sagas", firstRead, lastSagas)
	}
}

func TestBenchCrossShardTable(t *testing.T) {
	f := newFakeCluster(t, 4)
	out, stderr, err := run(t, f.addr(), "bench", "--accounts", "30", "--count", "200", "--concurrency", "3", "--cross-shard", "1")
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr)
	}
	if got := fields(t, out, "cross-shard"); got[2] != "200" {
		t.Errorf("cross-shard line %v", got)
	}
	if strings.Contains(out, "same-shard") || strings.Contains(out, "in flight at the answer") {
		t.Errorf("report:\n%s", out)
	}
	for _, want := range []string{"cross-shard: confirmed", "sagas: 0 sagas in flight when the load stopped",
		"conservation: ok: sum of 30 balances = 30000000", "audit: ok: consistent cut; BENCH clearing net 0, in flight 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the report:\n%s", want, out)
		}
	}
}

// benchJSON runs the bench with --json and decodes its report.
func benchJSON(t *testing.T, addr string, args ...string) (*bench.Report, string) {
	t.Helper()
	out, stderr, err := run(t, addr, append([]string{"--json", "bench"}, args...)...)
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	return &rep, stderr
}

// TestBenchOpenLoopRate runs the open loop against a fast fake: it sends
// about rate x duration transfers, paced over the whole duration rather
// than as fast as it can, and reports them second by second.
func TestBenchOpenLoopRate(t *testing.T) {
	f := newFakeLedger(t)
	rep, stderr := benchJSON(t, f.addr(), "--accounts", "20", "--rate", "400", "--duration", "1700ms",
		"--batch", "2", "--concurrency", "8", "--seed", "1")
	total := rep.Latency[len(rep.Latency)-1]
	ol := rep.OpenLoop
	if rep.Rate != 400 || rep.Dist != "uniform" || ol == nil || ol.TargetRate != 400 {
		t.Fatalf("rate %v, dist %q, open loop %+v", rep.Rate, rep.Dist, ol)
	}
	// 340 requests of 2 are due in 1.7s; a loaded machine may miss a few.
	if ol.Scheduled != 340 || ol.Sent+ol.Missed != 340 || total.Transfers > 680 || total.Transfers < 580 {
		t.Errorf("open loop %+v, %d transfers answered: want about 680", ol, total.Transfers)
	}
	if ol.IntervalMS != 5 || ol.LateAfterMS != 10 || ol.AchievedRate <= 0 {
		t.Errorf("open loop %+v", ol)
	}
	// A loop that did not wait for the schedule would finish at once.
	if rep.Seconds < 1.6 {
		t.Errorf("the run took %.2fs: the sends were not paced over 1.7s", rep.Seconds)
	}
	var tlTransfers int64
	for _, r := range rep.Timeline {
		tlTransfers += r.Transfers
	}
	if len(rep.Timeline) != 2 || tlTransfers != total.Transfers || rep.Timeline[0].Transfers == 0 || rep.Timeline[0].P99 <= 0 {
		t.Errorf("timeline %+v, want two seconds holding all %d transfers", rep.Timeline, total.Transfers)
	}
	if !rep.Conservation.OK {
		t.Errorf("conservation %+v", rep.Conservation)
	}
	if !strings.Contains(stderr, "open loop at 400 transfers/s") || !strings.Contains(stderr, "(target 400/s)") {
		t.Errorf("no target on stderr:\n%s", stderr)
	}
}

// TestBenchOpenLoopQueues stalls every transfer request of the fake: the
// open loop keeps its schedule, so the sends queue behind the one slot
// and their latency, counted from when they were due, grows far past the
// stall itself. Timed from the actual send it would stay near the stall
// (coordinated omission).
func TestBenchOpenLoopQueues(t *testing.T) {
	const stall = 20 * time.Millisecond
	f := newFakeLedger(t)
	f.fail = func(r *http.Request) (int, string) {
		if r.Method == "POST" && r.URL.Path == "/v1/transfers" {
			time.Sleep(stall)
		}
		return 0, ""
	}
	rep, _ := benchJSON(t, f.addr(), "--accounts", "10", "--rate", "200", "--duration", "600ms", "--concurrency", "1", "--seed", "2")
	total := rep.Latency[len(rep.Latency)-1]
	ol := rep.OpenLoop
	if total.Requests == 0 || ol == nil {
		t.Fatalf("report %+v", rep)
	}
	// One slot answers at most 30 requests in 600ms, of the 120 due: the
	// k-th is sent no sooner than k stalls in, though due at k x 5ms.
	if total.P99 < float64(5*stall.Milliseconds()) || total.P50 < float64(2*stall.Milliseconds()) {
		t.Errorf("p50 %.1fms, p99 %.1fms: the wait for the slot is not counted", total.P50, total.P99)
	}
	if ol.Late == 0 || ol.Missed == 0 || ol.MaxLateMS < float64(2*stall.Milliseconds()) || ol.Sent+ol.Missed != ol.Scheduled {
		t.Errorf("open loop %+v: want late sends and missed requests", ol)
	}
	if ol.AchievedRate >= ol.TargetRate/2 {
		t.Errorf("achieved %.0f/s of %.0f/s through a stalled slot", ol.AchievedRate, ol.TargetRate)
	}
	if !rep.Conservation.OK {
		t.Errorf("conservation %+v", rep.Conservation)
	}
}

// TestBenchZipfTable runs a Zipf choice and checks that the table's header
// names the loop and the choice, and that the first accounts of the pool
// carry most of the transfers.
func TestBenchZipfTable(t *testing.T) {
	f := newFakeLedger(t)
	out, stderr, err := run(t, f.addr(), "bench", "--accounts", "50", "--count", "400", "--rate", "4000",
		"--dist", "zipf", "--zipf-s", "1.5", "--prefix", "z-", "--seed", "7")
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr)
	}
	for _, want := range []string{"50 accounts on 1 shard, open loop at 4000 transfers/s (at most 64 outstanding), batch 1, zipf s=1.5,",
		"open loop: target 4000/s, achieved ", "conservation: ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the report:\n%s", want, out)
		}
	}
	if got := fields(t, out, "total"); got[2] != "400" {
		t.Errorf("total line %v", got)
	}
	// Weights (1+k)^-1.5 give the first 5 of 50 accounts about 3/4 of the
	// debits; a uniform choice would give them 1/10.
	top, all := 0, 0
	for _, e := range f.events() {
		if tr := e.Data.Transfer; tr != nil && tr.Debit != ledger.World {
			all++
			if slices.Contains([]string{"z-0", "z-1", "z-2", "z-3", "z-4"}, tr.Debit) {
				top++
			}
		}
	}
	if all != 400 || top < all*2/5 {
		t.Errorf("%d of %d debits from the first 5 accounts", top, all)
	}
}

// TestBenchZipfRandomPairs runs --zipf over four shards: both accounts
// come from the whole pool with a Zipf law, so the first account is in
// most transfers and most cross shards; setup reports its progress.
func TestBenchZipfRandomPairs(t *testing.T) {
	f := newFakeCluster(t, 4)
	rep, stderr := benchJSON(t, f.addr(), "--accounts", "3000", "--count", "300", "--concurrency", "4",
		"--zipf", "2", "--prefix", "zp-", "--seed", "9")
	if !rep.RandomPairs || rep.Dist != bench.DistZipf || rep.ZipfS != 2 || rep.Accounts != 3000 {
		t.Errorf("random pairs %v, dist %q, zipf_s %v, accounts %d", rep.RandomPairs, rep.Dist, rep.ZipfS, rep.Accounts)
	}
	if !rep.Conservation.OK || rep.Audit == nil || !rep.Audit.OK {
		t.Errorf("conservation %+v, audit %+v", rep.Conservation, rep.Audit)
	}
	with0, all := 0, 0
	for _, e := range f.events() {
		if e.Type == ledger.SagaCompleted || e.Type == ledger.SagaAborted {
			continue
		}
		if tr := e.Data.Transfer; tr != nil && tr.Debit != ledger.World && strings.Contains(tr.ID, "zp-t") {
			if tr.Debit == tr.Credit {
				t.Errorf("%s pays itself", tr.Debit)
			}
			all++
			if tr.Debit == "zp-0" || tr.Credit == "zp-0" {
				with0++
			}
		}
	}
	if all == 0 || with0 < all*2/3 {
		t.Errorf("zp-0 in %d of %d transfer events, want most", with0, all)
	}
	if !strings.Contains(stderr, "bench: 3000 accounts created and funded in ") {
		t.Errorf("no setup line on stderr:\n%s", stderr)
	}
}

func TestBenchClosedLoopHeader(t *testing.T) {
	f := newFakeLedger(t)
	out := mustRun(t, f.addr(), "bench", "--accounts", "10", "--count", "30", "--concurrency", "3")
	if !strings.Contains(out, "10 accounts on 1 shard, closed loop, 3 clients, batch 1, uniform,") || strings.Contains(out, "open loop") {
		t.Errorf("report:\n%s", out)
	}
	rep, _ := benchJSON(t, f.addr(), "--accounts", "10", "--count", "30", "--concurrency", "3")
	if rep.Rate != 0 || rep.Dist != "uniform" || rep.ZipfS != 0 || rep.OpenLoop != nil || len(rep.Timeline) == 0 {
		t.Errorf("rate %v, dist %q, zipf_s %v, open loop %+v, timeline %+v", rep.Rate, rep.Dist, rep.ZipfS, rep.OpenLoop, rep.Timeline)
	}
}

func TestBenchPlot(t *testing.T) {
	f := newFakeLedger(t)
	path := filepath.Join(t.TempDir(), "bench.svg")
	rep, stderr := benchJSON(t, f.addr(), "--accounts", "10", "--rate", "300", "--duration", "1200ms", "--plot", path)
	if rep.Plot != path || !strings.Contains(stderr, "wrote the plot to "+path) {
		t.Errorf("plot %q; stderr:\n%s", rep.Plot, stderr)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The plot's shape is tested in package bench; here, that the run's
	// timeline reached the file.
	for _, want := range []string{"<svg ", `id="throughput"`, `id="target"`, `id="p99"`, ">request latency (ms)<"} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("no %s in the SVG", want)
		}
	}
	if len(rep.Timeline) == 0 {
		t.Error("no timeline")
	}
}

func TestBenchFlagErrors(t *testing.T) {
	f := newFakeLedger(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--rate", "-1"}, "--rate must be 0 (closed loop) or a positive number of transfers per second"},
		{[]string{"--rate", "NaN"}, "--rate must be 0"},
		{[]string{"--dist", "pareto"}, `--dist "pareto": must be uniform or zipf`},
		{[]string{"--dist", "zipf", "--zipf-s", "1"}, "--zipf-s must be a number above 1, not 1"},
		{[]string{"--dist", "zipf", "--zipf-s", "0.5"}, "--zipf-s must be a number above 1"},
		{[]string{"--zipf-s", "2"}, "--zipf-s applies to --dist zipf only"},
		{[]string{"--zipf", "1"}, "--zipf must be a number above 1, not 1"},
		{[]string{"--zipf", "2", "--dist", "zipf"}, "--zipf sets --dist and --zipf-s"},
		{[]string{"--zipf", "2", "--zipf-s", "3"}, "--zipf sets --dist and --zipf-s"},
		{[]string{"--zipf", "2", "--cross-shard", "0.5"}, "--zipf draws pairs from all accounts (--random-pairs): it excludes --cross-shard"},
		{[]string{"--plot", "/no/such/dir/b.svg"}, "--plot /no/such/dir/b.svg: no such directory"},
		{[]string{"--client-batch", "--batch", "2"}, "--client-batch sends one transfer per call: --batch must be 1"},
		{[]string{"--client-batch", "--client-inflight", "0"}, "--client-inflight must be at least 1"},
		{[]string{"--client-inflight", "2"}, "--client-inflight applies to --client-batch only"},
	} {
		_, _, err := run(t, f.addr(), append([]string{"bench", "--accounts", "4", "--count", "4"}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
	if n := f.requests(); n != 0 {
		t.Errorf("%d requests reached the fake: bad flags must fail before the run", n)
	}
}
