package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"tally/client"
	"tally/ledger"
)

// Request kinds, indexes of per-kind stats.
const (
	sameShard = iota
	crossShard
	kinds
)

var kindNames = [kinds]string{"same-shard", "cross-shard"}

// workerStats is what one bench client measured; merged at the end.
type workerStats struct {
	lat       [kinds][]time.Duration // latency of each answered request
	requests  [kinds]int64           // answered requests
	transfers [kinds]int64           // transfers in answered requests
	applied   int64                  // transfers answered ok or exists
	inFlight  int64                  // cross-shard transfers answered in_flight: their saga outlived the request
	unknown   int64                  // transfers whose request had an unknown outcome
	rejected  map[string]int64       // by result code
	errs      map[string]*errorRow   // failed requests by kind
	// crossSample is a transfer sent as cross-shard and answered posted or
	// in_flight, read back at the end to confirm the cluster ran it as a
	// saga.
	crossSample string
	// seconds are the requests that ended in each second of the run.
	seconds []secondStats
	// Open loop only: the latest send (loadRun.late counts the late ones).
	maxLate time.Duration
}

// secondStats is what ended in one second of the run.
type secondStats struct {
	lat       []time.Duration // of answered requests
	transfers int64           // in answered requests
	failed    int64           // requests
}

func newWorkerStats() *workerStats {
	return &workerStats{rejected: map[string]int64{}, errs: map[string]*errorRow{}}
}

// record counts one request that ended at offset at of the run, lat
// after it was sent (or scheduled).
func (s *workerStats) record(kind int, at, lat time.Duration, size int, res []ledger.Result, err error) {
	sec := s.second(at)
	if err != nil {
		sec.failed++
		k := errKind(err)
		e := s.errs[k]
		if e == nil {
			e = &errorRow{Kind: k, Example: err.Error()}
			s.errs[k] = e
		}
		e.Count++
		if client.IsOutcomeUnknown(err) {
			s.unknown += int64(size)
		}
		return
	}
	sec.lat = append(sec.lat, lat)
	sec.transfers += int64(len(res))
	s.lat[kind] = append(s.lat[kind], lat)
	s.requests[kind]++
	s.transfers[kind] += int64(len(res))
	for _, r := range res {
		if kind == crossShard && s.crossSample == "" && (r.Status == ledger.StatusPosted || r.Status == ledger.StatusInFlight) {
			s.crossSample = r.ID
		}
		if r.Status == ledger.StatusInFlight {
			s.inFlight++
			continue
		}
		if transferFailure(r) == nil {
			s.applied++
			continue
		}
		code := string(r.Result)
		if r.Result == ledger.Exists {
			code = string(r.Original)
		}
		s.rejected[code]++
	}
}

// second returns the stats of the second holding offset at.
func (s *workerStats) second(at time.Duration) *secondStats {
	i := max(int(at/time.Second), 0)
	for len(s.seconds) <= i {
		s.seconds = append(s.seconds, secondStats{})
	}
	return &s.seconds[i]
}

func (s *workerStats) merge(o *workerStats) {
	for i, b := range o.seconds {
		m := s.second(time.Duration(i) * time.Second)
		m.lat = append(m.lat, b.lat...)
		m.transfers += b.transfers
		m.failed += b.failed
	}
	s.maxLate = max(s.maxLate, o.maxLate)
	for k := range kinds {
		s.lat[k] = append(s.lat[k], o.lat[k]...)
		s.requests[k] += o.requests[k]
		s.transfers[k] += o.transfers[k]
	}
	s.applied += o.applied
	s.inFlight += o.inFlight
	s.unknown += o.unknown
	if s.crossSample == "" {
		s.crossSample = o.crossSample
	}
	for c, n := range o.rejected {
		s.rejected[c] += n
	}
	for k, e := range o.errs {
		if m := s.errs[k]; m != nil {
			m.Count += e.Count
		} else {
			s.errs[k] = e
		}
	}
}

// errKind names the kind of a failed request for the error table.
func errKind(err error) string {
	if e, ok := errors.AsType[*client.Error](err); ok {
		return e.Code
	}
	switch {
	case client.IsOutcomeUnknown(err):
		return "outcome_unknown (transport)"
	case client.IsUnavailable(err):
		return "unavailable (transport)"
	}
	return "other"
}

// loadRun is one run of the load: the shared counters the progress line
// reads and the merged stats.
type loadRun struct {
	o        *benchOptions
	c        *client.Client
	w        *workload
	start    time.Time
	stop     atomic.Bool
	issued   atomic.Int64 // transfers handed to workers (for --count)
	answered atomic.Int64 // transfers in answered requests
	failed   atomic.Int64 // failed requests
	late     atomic.Int64 // open loop: requests sent late
	mu       sync.Mutex
	total    *workerStats
	elapsed  time.Duration
	sched    schedule // open loop: what was scheduled
}

// runLoad runs the load until the duration passes, the count is reached,
// or ctx ends, printing progress to errw once a second: a closed loop, or
// an open one when o.rate is set.
func runLoad(ctx context.Context, c *client.Client, o *benchOptions, w *workload, errw io.Writer) *loadRun {
	r := &loadRun{o: o, c: c, w: w, total: newWorkerStats(), start: time.Now()}
	done := make(chan struct{})
	var progress sync.WaitGroup
	progress.Go(func() { r.progress(errw, done) })
	if o.rate > 0 {
		r.openLoop(ctx)
	} else {
		r.closedLoop(ctx)
	}
	r.elapsed = time.Since(r.start)
	close(done)
	progress.Wait()
	return r
}

func (r *loadRun) closedLoop(ctx context.Context) {
	if r.o.duration > 0 {
		t := time.AfterFunc(r.o.duration, func() { r.stop.Store(true) })
		defer t.Stop()
	}
	var wg sync.WaitGroup
	for id := range r.o.concurrency {
		wg.Go(func() { r.worker(ctx, id) })
	}
	wg.Wait()
}

// benchWorker is one client's state. Only its own goroutine uses it.
type benchWorker struct {
	id   int
	rng  *rand.Rand
	draw drawer // the accounts, by o.dist, from rng
	s    *workerStats
	ts   []ledger.Transfer
	n    int // requests built, numbering transfer ids
}

func (r *loadRun) newWorker(id int) *benchWorker {
	rng := rand.New(rand.NewPCG(r.o.seed, uint64(id)))
	wk := &benchWorker{id: id, rng: rng, draw: rng, s: newWorkerStats(), ts: make([]ledger.Transfer, 0, r.o.batch)}
	if r.o.dist == distZipf {
		wk.draw = newZipfDraw(rng, r.o.zipfS)
	}
	return wk
}

// done merges a worker's stats into the run's.
func (r *loadRun) done(wk *benchWorker) {
	r.mu.Lock()
	r.total.merge(wk.s)
	r.mu.Unlock()
}

func (r *loadRun) worker(ctx context.Context, id int) {
	o := r.o
	wk := r.newWorker(id)
	defer r.done(wk)
	for !r.stop.Load() && ctx.Err() == nil {
		size := o.batch
		if o.count > 0 {
			end := r.issued.Add(int64(size))
			if end-int64(size) >= int64(o.count) {
				break
			}
			size -= int(max(end-int64(o.count), 0))
		}
		if !r.send(ctx, wk, size, time.Time{}) {
			break
		}
	}
}

// send builds a request of size transfers, sends it and records the
// answer. Its latency runs from since, or from the moment it is sent when
// since is zero. It reports false when ctx cut the request short: the cut
// request is not a measurement.
func (r *loadRun) send(ctx context.Context, wk *benchWorker, size int, since time.Time) bool {
	o := r.o
	kind := sameShard
	if o.crossShard > 0 && wk.rng.Float64() < o.crossShard {
		kind = crossShard
	}
	wk.ts = wk.ts[:0]
	for k := range size {
		d, cr := r.w.pair(wk.draw, kind == crossShard)
		wk.ts = append(wk.ts, ledger.Transfer{ID: fmt.Sprintf("%st%d-%d-%d", o.prefix, wk.id, wk.n, k),
			Debit: d, Credit: cr, Amount: 1 + wk.rng.Int64N(o.maxAmount)})
	}
	wk.n++
	if since.IsZero() {
		since = time.Now()
	}
	res, err := r.c.CreateTransfers(ctx, wk.ts)
	end := time.Now()
	if err != nil && ctx.Err() != nil {
		return false
	}
	wk.s.record(kind, end.Sub(r.start), end.Sub(since), size, res, err)
	if err != nil {
		r.failed.Add(1)
	} else {
		r.answered.Add(int64(len(res)))
	}
	return true
}

// progress prints one line a second until done closes.
func (r *loadRun) progress(w io.Writer, done <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last int64
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			n := r.answered.Load()
			if r.o.rate > 0 {
				fmt.Fprintf(w, "%6.1fs  %10d transfers  %9d/s (target %s/s)  %d late sends  %d failed requests\n",
					time.Since(r.start).Seconds(), n, n-last, rateString(r.o.rate), r.late.Load(), r.failed.Load())
			} else {
				fmt.Fprintf(w, "%6.1fs  %10d transfers  %9d/s  %d failed requests\n",
					time.Since(r.start).Seconds(), n, n-last, r.failed.Load())
			}
			last = n
		}
	}
}

// latencyRow is one line of the result table. Latencies are of requests,
// in milliseconds.
type latencyRow struct {
	Kind            string  `json:"kind"`
	Requests        int64   `json:"requests"`
	Transfers       int64   `json:"transfers"`
	TransfersPerSec float64 `json:"transfers_per_sec"`
	P50             float64 `json:"p50_ms"`
	P90             float64 `json:"p90_ms"`
	P99             float64 `json:"p99_ms"`
	P999            float64 `json:"p999_ms"`
	Max             float64 `json:"max_ms"`
}

type errorRow struct {
	Kind    string `json:"kind"`
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

type conservation struct {
	OK       bool   `json:"ok"`
	Accounts int    `json:"accounts"`
	Sum      string `json:"sum"`
	Want     string `json:"want"`
	Detail   string `json:"detail"`
}

// sagaSettle is how the run's cross-shard transfers finished after the
// load stopped: the sagas still in flight then, and how long they took.
type sagaSettle struct {
	Open    int     `json:"open"` // -1: the sagas could not be listed
	Settled bool    `json:"settled"`
	Seconds float64 `json:"wait_seconds"`
	Detail  string  `json:"detail"`
}

// auditCheck is the cluster's audit (GET /v1/audit) after the run: every
// shard sums to 0, and the clearing accounts between shards agree.
type auditCheck struct {
	OK         bool                   `json:"ok"`
	Skipped    bool                   `json:"skipped,omitempty"` // the audit could not run
	Consistent bool                   `json:"consistent"`
	Currencies []ledger.CurrencyAudit `json:"currencies,omitempty"`
	Violations []string               `json:"violations,omitempty"`
	Detail     string                 `json:"detail"`
}

// benchReport is the outcome of a run; --json prints it as is.
type benchReport struct {
	Accounts    int     `json:"accounts"`
	Shards      int     `json:"shards"`
	Concurrency int     `json:"concurrency"`
	Batch       int     `json:"batch"`
	CrossShard  float64 `json:"cross_shard"`
	Hot         int     `json:"hot"`
	Seed        uint64  `json:"seed"`
	// Rate is the target in transfers per second of an open loop; 0 for
	// a closed loop. Dist is how accounts were chosen, ZipfS its exponent.
	Rate     float64       `json:"rate"`
	Dist     string        `json:"dist"`
	ZipfS    float64       `json:"zipf_s,omitempty"`
	OpenLoop *openLoopStat `json:"open_loop,omitempty"`
	Seconds  float64       `json:"seconds"`
	Latency  []latencyRow  `json:"latency"`
	Timeline []timelineRow `json:"timeline"`
	Plot     string        `json:"plot,omitempty"` // the SVG written
	Applied  int64         `json:"applied"`
	// InFlight counts cross-shard transfers answered in_flight: their
	// sagas finished after the request's deadline (see Sagas).
	InFlight     int64            `json:"in_flight_transfers"`
	Unknown      int64            `json:"outcome_unknown_transfers"`
	Rejected     map[string]int64 `json:"rejected"`
	Errors       []errorRow       `json:"errors"`
	CrossSample  string           `json:"cross_shard_sample,omitempty"`
	CrossChecked *bool            `json:"cross_shard_confirmed,omitempty"`
	Sagas        *sagaSettle      `json:"sagas,omitempty"`
	Conservation conservation     `json:"conservation"`
	Audit        *auditCheck      `json:"audit,omitempty"`
}

func (r *loadRun) report(o *benchOptions, shards int) *benchReport {
	t := r.total
	rep := &benchReport{Accounts: o.accounts, Shards: shards, Concurrency: o.concurrency, Batch: o.batch,
		CrossShard: o.crossShard, Hot: o.hot, Seed: o.seed, Rate: o.rate, Dist: o.dist, Seconds: r.elapsed.Seconds(),
		Applied: t.applied, InFlight: t.inFlight, Unknown: t.unknown, Rejected: t.rejected, Errors: []errorRow{},
		CrossSample: t.crossSample, Timeline: timeline(t.seconds, r.elapsed)}
	if o.dist == distZipf {
		rep.ZipfS = o.zipfS
	}
	var all []time.Duration
	var allReq, allTr int64
	for k := range kinds {
		if t.requests[k] == 0 {
			continue
		}
		rep.Latency = append(rep.Latency, latencyOf(kindNames[k], t.lat[k], t.requests[k], t.transfers[k], r.elapsed))
		all = append(all, t.lat[k]...)
		allReq += t.requests[k]
		allTr += t.transfers[k]
	}
	rep.Latency = append(rep.Latency, latencyOf("total", all, allReq, allTr, r.elapsed))
	if o.rate > 0 {
		rep.OpenLoop = r.openLoopStat(allTr)
	}
	for _, e := range t.errs {
		rep.Errors = append(rep.Errors, *e)
	}
	sort.Slice(rep.Errors, func(i, j int) bool { return rep.Errors[i].Count > rep.Errors[j].Count })
	return rep
}

// settling reports whether money may still be moving after the run: a
// saga in flight or a request whose outcome is unknown.
func (rep *benchReport) settling() bool {
	return rep.CrossShard > 0 || rep.InFlight > 0 || rep.Unknown > 0 || len(rep.Errors) > 0
}

// unsettled reports whether the conservation check must allow for money
// still moving: a write whose outcome is unknown may yet apply, and sagas
// the run could not see finish may yet complete.
func (rep *benchReport) unsettled() bool {
	if rep.Unknown > 0 || len(rep.Errors) > 0 {
		return true
	}
	return rep.settling() && (rep.Sagas == nil || !rep.Sagas.Settled)
}

func latencyOf(kind string, lat []time.Duration, requests, transfers int64, elapsed time.Duration) latencyRow {
	slices.Sort(lat)
	row := latencyRow{Kind: kind, Requests: requests, Transfers: transfers}
	if s := elapsed.Seconds(); s > 0 {
		row.TransfersPerSec = float64(transfers) / s
	}
	row.P50, row.P90, row.P99, row.P999 = pct(lat, 0.50), pct(lat, 0.90), pct(lat, 0.99), pct(lat, 0.999)
	if len(lat) > 0 {
		row.Max = ms(lat[len(lat)-1])
	}
	return row
}

// pct is the p-quantile (nearest rank) of sorted latencies, in ms.
func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return ms(sorted[min(max(i, 0), len(sorted)-1)])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// setting describes the run's workload in a few words, for the header
// line and the plot's title.
func (rep *benchReport) setting() string {
	loop := "closed loop, " + plural(rep.Concurrency, "client")
	if rep.Rate > 0 {
		loop = fmt.Sprintf("open loop at %s transfers/s (at most %d outstanding)", rateString(rep.Rate), rep.Concurrency)
	}
	dist := rep.Dist
	if rep.ZipfS > 0 {
		dist = fmt.Sprintf("zipf s=%g", rep.ZipfS)
	}
	return fmt.Sprintf("%d accounts on %s, %s, batch %d, %s", rep.Accounts, plural(rep.Shards, "shard"), loop, rep.Batch, dist)
}

func (rep *benchReport) print(w io.Writer) {
	fmt.Fprintf(w, "%s, %.1fs, seed %d\n", rep.setting(), rep.Seconds, rep.Seed)
	t := newTable(w)
	row(t, "KIND", "REQUESTS", "TRANSFERS", "TRANSFERS/S", "P50_MS", "P90_MS", "P99_MS", "P999_MS", "MAX_MS")
	for _, l := range rep.Latency {
		row(t, l.Kind, l.Requests, l.Transfers, fmt.Sprintf("%.0f", l.TransfersPerSec),
			fmt.Sprintf("%.2f", l.P50), fmt.Sprintf("%.2f", l.P90), fmt.Sprintf("%.2f", l.P99),
			fmt.Sprintf("%.2f", l.P999), fmt.Sprintf("%.2f", l.Max))
	}
	t.Flush()
	if ol := rep.OpenLoop; ol != nil {
		fmt.Fprintf(w, "\nopen loop: target %s/s, achieved %.0f/s; %d of %d requests sent, %d late by more than %gms (latest %.2fms), %d missed\n",
			rateString(ol.TargetRate), ol.AchievedRate, ol.Sent, ol.Scheduled, ol.Late, ol.LateAfterMS, ol.MaxLateMS, ol.Missed)
	}
	fmt.Fprintf(w, "\napplied: %d transfers", rep.Applied)
	if rep.InFlight > 0 {
		fmt.Fprintf(w, ", in flight at the answer: %d", rep.InFlight)
	}
	if rep.Unknown > 0 {
		fmt.Fprintf(w, ", outcome unknown: %d", rep.Unknown)
	}
	fmt.Fprintln(w)
	if len(rep.Rejected) > 0 {
		t = newTable(w)
		row(t, "REJECTED", "COUNT")
		codes := make([]string, 0, len(rep.Rejected))
		for c := range rep.Rejected {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		for _, c := range codes {
			row(t, c, rep.Rejected[c])
		}
		t.Flush()
	}
	if len(rep.Errors) == 0 {
		fmt.Fprintln(w, "errors: none")
	} else {
		t = newTable(w)
		row(t, "ERROR", "REQUESTS", "EXAMPLE")
		for _, e := range rep.Errors {
			row(t, e.Kind, e.Count, e.Example)
		}
		t.Flush()
	}
	if rep.CrossChecked != nil {
		verdict := "confirmed"
		if !*rep.CrossChecked {
			verdict = "NOT confirmed"
		}
		fmt.Fprintf(w, "cross-shard: %s (transfer %s read back with cross_shard %v)\n", verdict, rep.CrossSample, *rep.CrossChecked)
	}
	if rep.Sagas != nil {
		fmt.Fprintf(w, "sagas: %s\n", rep.Sagas.Detail)
	}
	fmt.Fprintf(w, "conservation: %s: %s\n", okOr(rep.Conservation.OK, "FAILED"), rep.Conservation.Detail)
	if a := rep.Audit; a != nil {
		verdict := okOr(a.OK, "FAILED")
		if a.Skipped {
			verdict = "not run"
		}
		fmt.Fprintf(w, "audit: %s: %s\n", verdict, a.Detail)
		for _, v := range rep.Audit.Violations {
			fmt.Fprintln(w, "  VIOLATION:", v)
		}
	}
}

func okOr(ok bool, bad string) string {
	if ok {
		return "ok"
	}
	return bad
}

// checkConservation sums the bench accounts' balances, which must equal
// accounts x initial: transfers between them move money but never create
// or destroy it. While money may still be settling the check is repeated.
func checkConservation(ctx context.Context, c *client.Client, o *benchOptions, ids []string, settling bool) conservation {
	want := new(big.Int).Mul(big.NewInt(int64(len(ids))), big.NewInt(o.initial))
	tries := 1
	if settling {
		tries = conservationTries
	}
	var res conservation
	for try := range tries {
		if try > 0 {
			select {
			case <-ctx.Done():
				return res
			case <-time.After(time.Second):
			}
		}
		sum, negative, err := sumBalances(ctx, c, o, ids)
		res = conservation{Accounts: len(ids), Want: want.String()}
		switch {
		case err != nil:
			res.Detail = fmt.Sprintf("could not read the balances: %v", err)
		case negative != "":
			res.Sum, res.Detail = sum.String(), fmt.Sprintf("account %s is overdrawn", negative)
			return res // a negative balance does not heal by waiting
		case sum.Cmp(want) != 0:
			res.Sum = sum.String()
			res.Detail = fmt.Sprintf("sum of %d balances is %s, want %s (%d x %d)", len(ids), sum, want, len(ids), o.initial)
		default:
			res.OK, res.Sum = true, sum.String()
			res.Detail = fmt.Sprintf("sum of %d balances = %s (%d x %d)", len(ids), sum, len(ids), o.initial)
			return res
		}
	}
	return res
}

// sumBalances reads every account linearizably and adds up the balances;
// it also names an account with a negative balance, which the bench
// accounts (created without allow_negative) must never have.
func sumBalances(ctx context.Context, c *client.Client, o *benchOptions, ids []string) (*big.Int, string, error) {
	var mu sync.Mutex
	sum, negative := new(big.Int), ""
	err := inBatches(ctx, len(ids), readBatch, readWorkers, func(ctx context.Context, lo, hi int) error {
		part := new(big.Int)
		for _, id := range ids[lo:hi] {
			v, err := c.Account(ctx, id, client.ReadOpts{})
			if err != nil {
				return fmt.Errorf("read %s: %w", id, err)
			}
			part.Add(part, big.NewInt(v.Balance))
			if v.Balance < 0 {
				mu.Lock()
				negative = id
				mu.Unlock()
			}
		}
		mu.Lock()
		sum.Add(sum, part)
		mu.Unlock()
		return nil
	})
	return sum, negative, err
}
