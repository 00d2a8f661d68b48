package bench

import (
	"bytes"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"tally/ledger"
)

func TestWorkloadPairs(t *testing.T) {
	o := &Options{Accounts: 200, Prefix: "p-", CrossShard: 0.5}
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
	if _, err := newWorkload(&Options{Accounts: 2, Prefix: "p-", CrossShard: 0}, 64); err == nil {
		t.Error("two accounts on different shards cannot make same-shard pairs")
	}
}

// TestWorkloadZipfPairs draws many pairs with a Zipf law, mild to
// extreme, from pools whose shards hold many, few or single accounts.
func TestWorkloadZipfPairs(t *testing.T) {
	for _, tt := range []struct {
		accounts, hot, shards int
	}{{200, 0, 4}, {200, 7, 4}, {50, 0, 16}, {30, 0, 2}} {
		o := &Options{Accounts: tt.accounts, Hot: tt.hot, Prefix: "p-", CrossShard: 0.5}
		w, err := newWorkload(o, tt.shards)
		if err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		for _, s := range []float64{1.0001, 1.1, 3, 50} {
			d := newZipfDraw(rand.New(rand.NewPCG(1, 2)), s)
			debits := map[string]int{}
			for range 3000 {
				for _, cross := range []bool{false, true} {
					dr, cr := w.pair(d, cross)
					if dr == cr || (ledger.ShardOf(dr, tt.shards) != ledger.ShardOf(cr, tt.shards)) != cross {
						t.Fatalf("%+v, s %v: pair(cross=%v) = %s (shard %d), %s (shard %d)", tt, s, cross,
							dr, ledger.ShardOf(dr, tt.shards), cr, ledger.ShardOf(cr, tt.shards))
					}
					if !slices.Contains(w.pool, dr) || !slices.Contains(w.pool, cr) {
						t.Fatalf("%s or %s is not in the pool", dr, cr)
					}
					if cross {
						debits[dr]++
					}
				}
			}
			// The cross-shard debit is drawn from the whole pool: its
			// first account is the most frequent.
			for id, n := range debits {
				if n > debits[w.pool[0]] {
					t.Errorf("%+v, s %v: %s drawn %d times, more than %s (%d)", tt, s, id, n, w.pool[0], debits[w.pool[0]])
				}
			}
		}
	}
}

// With uniform draws every pool account must turn up as a credit, both
// across shards and within its own shard: a pairing that can never pick
// some account would still pass the checks above.
func TestWorkloadReachesEveryCredit(t *testing.T) {
	for _, tt := range []struct{ accounts, hot, shards int }{{200, 0, 4}, {200, 7, 4}, {30, 0, 2}} {
		o := &Options{Accounts: tt.accounts, Hot: tt.hot, Prefix: "p-", CrossShard: 0.5}
		w, err := newWorkload(o, tt.shards)
		if err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		d := rand.New(rand.NewPCG(3, 4))
		for _, cross := range []bool{false, true} {
			seen := map[string]bool{}
			for range 200 * len(w.pool) {
				_, cr := w.pair(d, cross)
				seen[cr] = true
			}
			for _, i := range w.same {
				if id := w.pool[i]; !cross && !seen[id] {
					t.Errorf("%+v: %s never credited by a same-shard transfer", tt, id)
				}
			}
			if cross && len(seen) != len(w.pool) {
				t.Errorf("%+v: %d of %d accounts credited by cross-shard transfers", tt, len(seen), len(w.pool))
			}
		}
	}
}

// TestZipfRandomPairs is the published contention test (--zipf 2 over
// 100,000 accounts): both accounts from one Zipf law over the whole pool,
// never the same. With s=2 the first account weighs 1/zeta(2), about
// 0.61: it is the debit of about 61% of the transfers and takes part in
// about 85% (0.61 + 0.39 x 0.61).
func TestZipfRandomPairs(t *testing.T) {
	o := &Options{Accounts: 100_000, Prefix: "z-", RandomPairs: true, Dist: DistZipf, ZipfS: 2}
	w, err := newWorkload(o, 4)
	if err != nil {
		t.Fatal(err)
	}
	d := newZipfDraw(rand.New(rand.NewPCG(5, 6)), o.ZipfS)
	const n = 20_000
	debit0, with0, top2, cross := 0, 0, 0, 0
	distinct := map[string]bool{}
	for range n {
		dr, cr, x := w.anyPair(d)
		if dr == cr {
			t.Fatalf("%s pays itself", dr)
		}
		if x != (ledger.ShardOf(dr, 4) != ledger.ShardOf(cr, 4)) {
			t.Fatalf("%s, %s: cross %v is wrong", dr, cr, x)
		}
		if dr == "z-0" {
			debit0++
		}
		if dr == "z-0" || cr == "z-0" {
			with0++
		}
		if dr+cr == "z-0z-1" || dr+cr == "z-1z-0" {
			top2++
		}
		if x {
			cross++
		}
		distinct[dr], distinct[cr] = true, true
	}
	if f := float64(debit0) / n; math.Abs(f-0.61) > 0.03 {
		t.Errorf("z-0 is the debit of %.2f of the transfers, want about 0.61", f)
	}
	if f := float64(with0) / n; math.Abs(f-0.85) > 0.03 {
		t.Errorf("z-0 is in %.2f of the transfers, want about 0.85", f)
	}
	// The two first accounts are the pair of about 46% of the transfers
	// (0.61 x 0.61 + 0.15 x 0.61): where they live decides much of
	// a run's rate.
	if f := float64(top2) / n; math.Abs(f-0.46) > 0.03 {
		t.Errorf("z-0 and z-1 are the pair of %.2f of the transfers, want about 0.46", f)
	}
	// The tail is long: with P(k) about 1/k^2, n draws reach about
	// sqrt(n) accounts, not only the first few.
	if len(distinct) < 100 {
		t.Errorf("only %d distinct accounts in %d transfers", len(distinct), n)
	}
	t.Logf("z-0 debit %.3f, in %.3f of transfers; cross-shard %.3f; %d distinct accounts",
		float64(debit0)/n, float64(with0)/n, float64(cross)/n, len(distinct))
}

func TestNthOutside(t *testing.T) {
	g := []int{0, 3, 4, 9}
	var want []int
	for x := range 15 {
		if !slices.Contains(g, x) {
			want = append(want, x)
		}
	}
	for r, x := range want {
		if got := nthOutside(g, r); got != x {
			t.Errorf("nthOutside(%v, %d) = %d, want %d", g, r, got, x)
		}
	}
}

// hist is a latency histogram of the given milliseconds.
func hist(msecs ...int) *hdrhistogram.PackedHistogram {
	h := newHist()
	for _, m := range msecs {
		record(h, time.Duration(m)*time.Millisecond)
	}
	return h
}

// near reports whether got is want within the histograms' precision.
func near(got, want float64) bool { return math.Abs(got-want) <= want/1000 }

func TestTimeline(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	secs := []secondStats{
		{lat: hist(1, 2, 3, 100), transfers: 40, failed: 1},
		{lat: hist()},
		{lat: hist(5), transfers: 10},
		{lat: hist(7), transfers: 2, failed: 2},
	}
	// 3.2s: the last 0.2s joins the third second.
	rows := timeline(secs, ms(3200))
	if len(rows) != 3 {
		t.Fatalf("rows %+v", rows)
	}
	if r := rows[0]; r.Second != 0 || r.Seconds != 1 || r.Requests != 4 || r.Transfers != 40 || r.TransfersPerSec != 40 || r.Failed != 1 || !near(r.P50, 2) || !near(r.P99, 100) {
		t.Errorf("first second %+v", r)
	}
	if r := rows[1]; r.Requests != 0 || r.TransfersPerSec != 0 || r.P99 != 0 {
		t.Errorf("empty second %+v", r)
	}
	if r := rows[2]; r.Second != 2 || r.Seconds != 1.2 || r.Transfers != 12 || r.TransfersPerSec != 10 || r.Failed != 2 || !near(r.P50, 5) || !near(r.P99, 7) {
		t.Errorf("last second %+v", r)
	}
	// 3.7s: the last 0.7s stands alone.
	if rows := timeline(secs, ms(3700)); len(rows) != 4 || rows[3].Seconds != 0.7 || rows[3].TransfersPerSec != 2/0.7 {
		t.Errorf("rows %+v", rows)
	}
}

// polyline is one series of a plot: its id and its points.
var polyline = regexp.MustCompile(`<polyline id="([^"]*)"[^>]* points="([^"]*)"`)

// svgPolylines returns the points of each series of a plot by id. That
// the SVG is well-formed is package plot's to test.
func svgPolylines(t *testing.T, data []byte) map[string]string {
	t.Helper()
	if !bytes.HasPrefix(data, []byte("<?xml")) || !bytes.Contains(data, []byte(`<svg xmlns="http://www.w3.org/2000/svg"`)) {
		t.Fatalf("not an SVG document:\n%s", data)
	}
	lines := map[string]string{}
	for _, m := range polyline.FindAllSubmatch(data, -1) {
		lines[string(m[1])] = string(m[2])
	}
	return lines
}

// TestRenderPlotEdges renders a timeline with failures, and an empty one:
// both are well-formed, with a line per series.
func TestRenderPlotEdges(t *testing.T) {
	for _, tl := range [][]TimelineRow{
		{{Second: 0, Seconds: 1, Transfers: 10, TransfersPerSec: 10, Failed: 3, P50: 1.5, P99: 9}, {Second: 1, Seconds: 0.6, Failed: 1}},
		{},
	} {
		lines := svgPolylines(t, renderPlot(&Report{Accounts: 3, Shards: 1, Concurrency: 1, Batch: 1, Dist: "zipf", ZipfS: 1.1,
			Seconds: 1.6, Timeline: tl}).Bytes())
		want := []string{"throughput", "p50", "p99"}
		if len(tl) > 0 {
			want = append(want, "failed")
		}
		if len(lines) != len(want) {
			t.Errorf("series %v, want %v", lines, want)
		}
		for _, id := range want {
			if _, ok := lines[id]; !ok {
				t.Errorf("no series %s in %v", id, lines)
			}
		}
	}
}

// TestRenderPlot renders an open loop's timeline: one point per second in
// each series, the target as a line, no failed series without failures.
func TestRenderPlot(t *testing.T) {
	tl := []TimelineRow{{Second: 0, Seconds: 1, Transfers: 300, TransfersPerSec: 300, P50: 1.5, P99: 9},
		{Second: 1, Seconds: 0.2, Transfers: 60, TransfersPerSec: 300, P50: 1.2, P99: 4}}
	data := renderPlot(&Report{Accounts: 10, Shards: 1, Concurrency: 64, Batch: 1, Dist: DistUniform, Rate: 300,
		Seconds: 1.2, Timeline: tl}).Bytes()
	lines := svgPolylines(t, data)
	for _, id := range []string{"throughput", "target", "p50", "p99"} {
		if n := len(strings.Fields(lines[id])); n == 0 || (id != "target" && n != len(tl)) {
			t.Errorf("series %s has %d points, want one per second (%d): %v", id, n, len(tl), lines)
		}
	}
	if _, ok := lines["failed"]; ok {
		t.Error("a failed series with no failures")
	}
	for _, label := range []string{">transfers/s<", ">request latency (ms)<", ">time since the load began (s)<", ">p99<"} {
		if !bytes.Contains(data, []byte(label)) {
			t.Errorf("no label %s in the SVG", label)
		}
	}
}

// TestLatencyPercentiles records many latencies, spread over six orders
// of magnitude, from many goroutines: each percentile is the exact one
// (nearest rank) within the histograms' 0.1%, and one beyond the range is
// kept as the range's top.
func TestLatencyPercentiles(t *testing.T) {
	rec := newRecorder()
	rng := rand.New(rand.NewPCG(5, 6))
	lats := make([]time.Duration, 20000)
	for i := range lats {
		lats[i] = time.Duration(math.Exp(rng.Float64()*14)) * time.Microsecond // 1µs to 1.2s
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(lats); i += 8 {
				rec.answered(sameShard, time.Duration(i)*time.Millisecond/4, lats[i], 2)
			}
		})
	}
	wg.Wait()
	slices.Sort(lats)
	row := latencyOf("same-shard", rec.kind[sameShard], rec.transfers[sameShard], 5*time.Second)
	if row.Requests != 20000 || row.Transfers != 40000 || row.TransfersPerSec != 8000 {
		t.Errorf("row %+v", row)
	}
	for _, c := range []struct {
		p   float64
		got float64
	}{{50, row.P50}, {90, row.P90}, {99, row.P99}, {99.9, row.P999}, {100, row.Max}} {
		exact := float64(lats[int(math.Ceil(c.p/100*float64(len(lats))))-1].Microseconds()) / 1000
		if math.Abs(c.got-exact) > exact/1000+0.001 {
			t.Errorf("p%v = %vms, exact %vms", c.p, c.got, exact)
		}
	}
	if len(rec.seconds) != 5 || rec.seconds[4].lat.TotalCount() != 4000 {
		t.Errorf("%d seconds, the last with %d requests", len(rec.seconds), rec.seconds[len(rec.seconds)-1].lat.TotalCount())
	}
	h := hist()
	record(h, time.Hour)
	if got := pct(h, 100); !near(got, float64(maxLatency.Milliseconds())) {
		t.Errorf("an hour recorded as %vms, want the range's top %v", got, maxLatency)
	}
}
