package main

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"tally/ledger"
)

func TestBenchCountJSON(t *testing.T) {
	f := newFakeLedger(t)
	out, stderr, err := run(t, f.addr(), "--json", "bench", "--accounts", "20", "--initial", "1000",
		"--count", "300", "--concurrency", "4", "--batch", "7", "--max-amount", "400", "--seed", "1")
	if err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out, stderr)
	}
	var rep benchReport
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
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Rejected["exists_with_different_fields"] == 0 {
		t.Errorf("rejections %v (%v)", rep.Rejected, err)
	}
}

func TestWorkloadPairs(t *testing.T) {
	o := &benchOptions{accounts: 200, prefix: "p-", crossShard: 0.5}
	w, err := newWorkload(o, 4)
	if err != nil {
		t.Fatal(err)
	}
	shard := map[string]int{}
	for i, id := range w.pool {
		shard[id] = w.shardOf[i]
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		for _, cross := range []bool{false, true} {
			d, c := w.pair(rng, cross)
			if d == c || (shard[d] != shard[c]) != cross {
				t.Fatalf("pair(cross=%v) = %s (shard %d), %s (shard %d)", cross, d, shard[d], c, shard[c])
			}
		}
	}
	if _, err := newWorkload(&benchOptions{accounts: 2, prefix: "p-", crossShard: 0}, 64); err == nil {
		t.Error("two accounts on different shards cannot make same-shard pairs")
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
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	rows := map[string]latencyRow{}
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
