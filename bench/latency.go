package bench

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Request latencies are recorded in HDR histograms, in microseconds from
// 0 to maxLatency, to latencyDigits significant digits: every percentile
// is within 0.1% of the exact one, in memory that grows with the spread
// of the latencies rather than with the number of requests. A longer
// latency is recorded as maxLatency.
const (
	maxLatency    = 10 * time.Minute
	latencyDigits = 3
)

// newHist returns an empty latency histogram. It is sparse: a run keeps
// one for every second.
func newHist() *hdrhistogram.PackedHistogram {
	return hdrhistogram.NewPacked(1, maxLatency.Microseconds(), latencyDigits)
}

// record adds one latency to h.
func record(h *hdrhistogram.PackedHistogram, lat time.Duration) {
	// Clamped to the histogram's range, which is all RecordValue refuses.
	_ = h.RecordValue(min(max(lat, 0), maxLatency).Microseconds())
}

// pct is the p-th percentile (0 to 100) of h, in milliseconds; 0 when h
// is empty.
func pct(h *hdrhistogram.PackedHistogram, p float64) float64 {
	return float64(h.ValueAtPercentile(p)) / 1000
}

// secondStats is what ended in one second of the run.
type secondStats struct {
	lat       *hdrhistogram.PackedHistogram // of answered requests
	transfers int64                         // in answered requests
	failed    int64                         // requests
}

// recorder holds the run's answered requests by kind and by the second
// they ended in. Safe for concurrent use by the workers; read it once
// they are done.
type recorder struct {
	mu        sync.Mutex
	kind      [kinds]*hdrhistogram.PackedHistogram
	transfers [kinds]int64
	seconds   []secondStats
}

func newRecorder() *recorder {
	r := &recorder{}
	for k := range kinds {
		r.kind[k] = newHist()
	}
	return r
}

// answered records a request of kind that ended at offset at of the run,
// lat after it was sent (or due), carrying transfers transfers.
func (r *recorder) answered(kind int, at, lat time.Duration, transfers int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	record(r.kind[kind], lat)
	r.transfers[kind] += int64(transfers)
	sec := r.second(at)
	record(sec.lat, lat)
	sec.transfers += int64(transfers)
}

// failed records a request that ended at offset at without an answer.
func (r *recorder) failed(at time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.second(at).failed++
}

// second returns the stats of the second holding offset at; r.mu is held.
func (r *recorder) second(at time.Duration) *secondStats {
	i := max(int(at/time.Second), 0)
	for len(r.seconds) <= i {
		r.seconds = append(r.seconds, secondStats{lat: newHist()})
	}
	return &r.seconds[i]
}
