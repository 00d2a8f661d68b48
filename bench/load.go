package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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

// workerStats is what one bench client counted; merged at the end. The
// latencies go straight to the run's recorder.
type workerStats struct {
	rec      *recorder
	applied  int64                // transfers answered ok or exists
	inFlight int64                // cross-shard transfers answered in_flight: their saga outlived the request
	unknown  int64                // transfers whose request had an unknown outcome
	rejected map[string]int64     // by result code
	errs     map[string]*ErrorRow // failed requests by kind
	// crossSample is a transfer sent as cross-shard and answered posted or
	// in_flight, read back at the end to confirm the cluster ran it as a
	// saga.
	crossSample string
	// Open loop only: the latest send (loadRun.late counts the late ones).
	maxLate time.Duration
}

func newWorkerStats(rec *recorder) *workerStats {
	return &workerStats{rec: rec, rejected: map[string]int64{}, errs: map[string]*ErrorRow{}}
}

// record counts one request that ended at offset at of the run, lat
// after it was sent (or scheduled).
func (s *workerStats) record(kind int, at, lat time.Duration, size int, res []ledger.Result, err error) {
	if err != nil {
		s.rec.failed(at)
		k := errKind(err)
		e := s.errs[k]
		if e == nil {
			e = &ErrorRow{Kind: k, Example: err.Error()}
			s.errs[k] = e
		}
		e.Count++
		if client.IsOutcomeUnknown(err) {
			s.unknown += int64(size)
		}
		return
	}
	s.rec.answered(kind, at, lat, len(res))
	for _, r := range res {
		if kind == crossShard && s.crossSample == "" && (r.Status == ledger.StatusPosted || r.Status == ledger.StatusInFlight) {
			s.crossSample = r.ID
		}
		if r.Status == ledger.StatusInFlight {
			s.inFlight++
			continue
		}
		if applied(r) {
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

func (s *workerStats) merge(o *workerStats) {
	s.maxLate = max(s.maxLate, o.maxLate)
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
	o        *Options
	c        *client.Client
	b        *client.Batcher // nil: each request straight through c
	w        *workload
	start    time.Time
	stop     atomic.Bool
	issued   atomic.Int64 // transfers handed to workers (for --count)
	answered atomic.Int64 // transfers in answered requests
	failed   atomic.Int64 // failed requests
	late     atomic.Int64 // open loop: requests sent late
	mu       sync.Mutex
	total    *workerStats
	rec      *recorder // every request's latency
	elapsed  time.Duration
	sched    schedule // open loop: what was scheduled
}

// runLoad runs the load until the duration passes, the count is reached,
// or ctx ends, printing progress to errw once a second: a closed loop, or
// an open one when o.Rate is set. With b, each transfer is a call of b.
func runLoad(ctx context.Context, c *client.Client, b *client.Batcher, o *Options, w *workload, errw io.Writer) *loadRun {
	r := &loadRun{o: o, c: c, b: b, w: w, rec: newRecorder(), start: time.Now()}
	r.total = newWorkerStats(r.rec)
	done := make(chan struct{})
	var progress sync.WaitGroup
	progress.Go(func() { r.progress(errw, done) })
	if o.Rate > 0 {
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
	if r.o.Duration > 0 {
		t := time.AfterFunc(r.o.Duration, func() { r.stop.Store(true) })
		defer t.Stop()
	}
	var wg sync.WaitGroup
	for id := range r.o.Concurrency {
		wg.Go(func() { r.worker(ctx, id) })
	}
	wg.Wait()
}

// benchWorker is one client's state. Only its own goroutine uses it.
type benchWorker struct {
	id   int
	rng  *rand.Rand
	draw drawer // the accounts, by o.Dist, from rng
	s    *workerStats
	ts   []ledger.Transfer
	n    int // requests built, numbering transfer ids
}

func (r *loadRun) newWorker(id int) *benchWorker {
	rng := rand.New(rand.NewPCG(r.o.Seed, uint64(id)))
	wk := &benchWorker{id: id, rng: rng, draw: rng, s: newWorkerStats(r.rec), ts: make([]ledger.Transfer, 0, r.o.Batch)}
	if r.o.Dist == DistZipf {
		wk.draw = newZipfDraw(rng, r.o.ZipfS)
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
		size := o.Batch
		if o.Count > 0 {
			end := r.issued.Add(int64(size))
			if end-int64(size) >= int64(o.Count) {
				break
			}
			size -= int(max(end-int64(o.Count), 0))
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
	if o.CrossShard > 0 && wk.rng.Float64() < o.CrossShard {
		kind = crossShard
	}
	wk.ts = wk.ts[:0]
	for k := range size {
		var d, cr string
		if o.RandomPairs {
			// Any two accounts: most pairs cross shards, as users' do.
			var cross bool
			d, cr, cross = r.w.anyPair(wk.draw)
			if cross {
				kind = crossShard
			}
		} else {
			d, cr = r.w.pair(wk.draw, kind == crossShard)
		}
		wk.ts = append(wk.ts, ledger.Transfer{ID: fmt.Sprintf("%st%d-%d-%d", o.Prefix, wk.id, wk.n, k),
			Debit: d, Credit: cr, Amount: 1 + wk.rng.Int64N(o.MaxAmount)})
	}
	wk.n++
	if since.IsZero() {
		since = time.Now()
	}
	res, err := r.create(ctx, wk.ts)
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

// create sends one request's transfers: straight through the client, or
// as one call of the batcher (the options keep a batched run at one
// transfer per request).
func (r *loadRun) create(ctx context.Context, ts []ledger.Transfer) ([]ledger.Result, error) {
	if r.b == nil || len(ts) != 1 {
		return r.c.CreateTransfers(ctx, ts)
	}
	res, err := r.b.Transfer(ctx, ts[0])
	if err != nil {
		return nil, err
	}
	return []ledger.Result{res}, nil
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
			if r.o.Rate > 0 {
				fmt.Fprintf(w, "%6.1fs  %10d transfers  %9d/s (target %s/s)  %d late sends  %d failed requests\n",
					time.Since(r.start).Seconds(), n, n-last, rateString(r.o.Rate), r.late.Load(), r.failed.Load())
			} else {
				fmt.Fprintf(w, "%6.1fs  %10d transfers  %9d/s  %d failed requests\n",
					time.Since(r.start).Seconds(), n, n-last, r.failed.Load())
			}
			last = n
		}
	}
}

func (r *loadRun) report(o *Options, shards int) *Report {
	t := r.total
	rep := &Report{Accounts: o.Accounts, Shards: shards, Concurrency: o.Concurrency, Batch: o.Batch,
		CrossShard: o.CrossShard, RandomPairs: o.RandomPairs, Hot: o.Hot, Seed: o.Seed, Rate: o.Rate, Dist: o.Dist, Seconds: r.elapsed.Seconds(),
		Applied: t.applied, InFlight: t.inFlight, Unknown: t.unknown, Rejected: t.rejected, Errors: []ErrorRow{},
		CrossSample: t.crossSample, Timeline: timeline(r.rec.seconds, r.elapsed)}
	if o.Dist == DistZipf {
		rep.ZipfS = o.ZipfS
	}
	all := newHist()
	var allTr int64
	for k := range kinds {
		if r.rec.kind[k].TotalCount() == 0 {
			continue
		}
		rep.Latency = append(rep.Latency, latencyOf(kindNames[k], r.rec.kind[k], r.rec.transfers[k], r.elapsed))
		all.Merge(r.rec.kind[k])
		allTr += r.rec.transfers[k]
	}
	rep.Latency = append(rep.Latency, latencyOf("total", all, allTr, r.elapsed))
	if o.Rate > 0 {
		rep.OpenLoop = r.openLoopStat(allTr)
	}
	for _, e := range t.errs {
		rep.Errors = append(rep.Errors, *e)
	}
	sort.Slice(rep.Errors, func(i, j int) bool { return rep.Errors[i].Count > rep.Errors[j].Count })
	return rep
}
