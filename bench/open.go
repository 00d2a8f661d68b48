package bench

import (
	"context"
	"math"
	"strconv"
	"sync"
	"time"
)

// lateAfterMin is how far behind its schedule a send of the open loop
// may leave before it counts as late (or one interval, if that is longer):
// below it is timer noise on a busy machine.
const lateAfterMin = 10 * time.Millisecond

// openJob is one request of the open loop: when it was due and how many
// transfers it carries.
type openJob struct {
	at   time.Time
	size int
}

// schedule is what the open loop planned and did. The dispatcher alone
// writes it; the workers read lateAfter, set before they start.
type schedule struct {
	per       float64 // seconds between requests
	lateAfter time.Duration
	planned   int64 // requests due within the duration and the count
	sent      int64 // requests handed to a worker
	missed    int64 // due before the duration ended, never sent
}

// due is when request k is due, from the start of the run.
func (s *schedule) due(k int64) time.Duration {
	d := float64(k) * s.per * float64(time.Second)
	if d >= math.MaxInt64 {
		return math.MaxInt64 // a rate so low that the request is never due
	}
	return time.Duration(d)
}

// openLoop sends requests on a fixed schedule from o.Concurrency workers,
// whether or not earlier requests were answered.
func (r *loadRun) openLoop(ctx context.Context) {
	o := r.o
	r.sched.per = float64(o.Batch) / o.Rate
	r.sched.lateAfter = max(lateAfterMin, r.sched.due(1))
	r.sched.planned = plannedRequests(o, &r.sched)
	jobs := make(chan openJob) // unbuffered: a send leaves only when a worker is free
	var wg sync.WaitGroup
	for id := range o.Concurrency {
		wg.Go(func() { r.openWorker(ctx, id, jobs) })
	}
	r.dispatch(ctx, jobs)
	close(jobs)
	wg.Wait()
}

// plannedRequests counts the requests due: those due before the duration
// ends, and no more than the count needs.
func plannedRequests(o *Options, s *schedule) int64 {
	n := int64(math.MaxInt64)
	if o.Count > 0 {
		n = int64((o.Count + o.Batch - 1) / o.Batch)
	}
	if o.Duration > 0 {
		// The first request is due at 0, so ceil(duration/interval) of
		// them are due before the end; float rounding is settled by due.
		k := int64(math.Ceil(o.Duration.Seconds() / s.per))
		for k > 0 && s.due(k-1) >= o.Duration {
			k--
		}
		for s.due(k) < o.Duration {
			k++
		}
		n = min(n, k)
	}
	return n
}

// dispatch hands request k to a free worker k intervals after the start.
// When every worker is busy the send waits, and its latency, which runs
// from when it was due, grows. When the duration ends first, the requests
// still due are missed; when ctx ends, the run is over.
func (r *loadRun) dispatch(ctx context.Context, jobs chan<- openJob) {
	o := r.o
	var end <-chan time.Time
	if o.Duration > 0 {
		t := time.NewTimer(time.Until(r.start.Add(o.Duration)))
		defer t.Stop()
		end = t.C
	}
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	defer wait.Stop()
	left := int64(o.Count) // transfers still to send, with --count
	for k := int64(0); k < r.sched.planned; k++ {
		job := openJob{at: r.start.Add(r.sched.due(k)), size: o.Batch}
		if o.Count > 0 {
			job.size = int(min(int64(o.Batch), left))
		}
		if d := time.Until(job.at); d > 0 {
			wait.Reset(d)
			select {
			case <-wait.C:
			case <-ctx.Done():
				return
			case <-end:
				r.sched.missed = r.sched.planned - k
				return
			}
		}
		select {
		case jobs <- job:
		case <-ctx.Done():
			return
		case <-end:
			r.sched.missed = r.sched.planned - k
			return
		}
		r.sched.sent++
		left -= int64(job.size)
	}
}

// openWorker sends the requests it is handed, each timed from when it
// was due, until jobs closes or ctx ends.
func (r *loadRun) openWorker(ctx context.Context, id int, jobs <-chan openJob) {
	wk := r.newWorker(id)
	defer r.done(wk)
	for j := range jobs {
		late := time.Since(j.at)
		wk.s.maxLate = max(wk.s.maxLate, late)
		if late > r.sched.lateAfter {
			r.late.Add(1)
		}
		if !r.send(ctx, wk, j.size, j.at) {
			return
		}
	}
}

// OpenLoopStat is how the open loop kept to its schedule.
type OpenLoopStat struct {
	TargetRate   float64 `json:"target_rate"`   // transfers per second
	AchievedRate float64 `json:"achieved_rate"` // transfers answered per second of the run
	IntervalMS   float64 `json:"interval_ms"`   // between requests
	Scheduled    int64   `json:"scheduled_requests"`
	Sent         int64   `json:"sent_requests"`
	// Late counts sends that left more than LateAfterMS after they were
	// due: the generator or the --concurrency cap fell behind.
	Late        int64   `json:"late_sends"`
	LateAfterMS float64 `json:"late_after_ms"`
	MaxLateMS   float64 `json:"max_late_ms"`
	// Missed counts requests due before the duration ended that were
	// never sent, because no worker was free in time.
	Missed int64 `json:"missed_requests"`
}

func (r *loadRun) openLoopStat(answered int64) *OpenLoopStat {
	s := &OpenLoopStat{TargetRate: r.o.Rate, IntervalMS: r.sched.per * 1000, Scheduled: r.sched.planned,
		Sent: r.sched.sent, Late: r.late.Load(), LateAfterMS: ms(r.sched.lateAfter),
		MaxLateMS: ms(r.total.maxLate), Missed: r.sched.missed}
	if r.elapsed > 0 {
		s.AchievedRate = float64(answered) / r.elapsed.Seconds()
	}
	return s
}

// rateString formats a rate without trailing zeros: 500, 0.5.
func rateString(rate float64) string { return strconv.FormatFloat(rate, 'f', -1, 64) }
