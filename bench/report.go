package bench

import (
	"context"
	"fmt"
	"io"
	"math/big"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"tally/client"
	"tally/internal/table"
	"tally/ledger"
)

// LatencyRow is one line of the result table. Latencies are of requests,
// in milliseconds.
type LatencyRow struct {
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

type ErrorRow struct {
	Kind    string `json:"kind"`
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

type Conservation struct {
	OK       bool   `json:"ok"`
	Accounts int    `json:"accounts"`
	Sum      string `json:"sum"`
	Want     string `json:"want"`
	Detail   string `json:"detail"`
}

// SagaSettle is how the run's cross-shard transfers finished after the
// load stopped: the sagas still in flight then, and how long they took.
type SagaSettle struct {
	Open    int     `json:"open"` // -1: the sagas could not be listed
	Settled bool    `json:"settled"`
	Seconds float64 `json:"wait_seconds"`
	Detail  string  `json:"detail"`
}

// AuditCheck is the cluster's audit (GET /v1/audit) after the run: every
// shard sums to 0, and the clearing accounts between shards agree.
type AuditCheck struct {
	OK         bool                   `json:"ok"`
	Skipped    bool                   `json:"skipped,omitempty"` // the audit could not run
	Consistent bool                   `json:"consistent"`
	Currencies []ledger.CurrencyAudit `json:"currencies,omitempty"`
	Violations []string               `json:"violations,omitempty"`
	Detail     string                 `json:"detail"`
}

// Report is the outcome of a run; `tally --json bench` prints it as is.
type Report struct {
	Accounts    int     `json:"accounts"`
	Shards      int     `json:"shards"`
	Concurrency int     `json:"concurrency"`
	Batch       int     `json:"batch"`
	CrossShard  float64 `json:"cross_shard"`
	RandomPairs bool    `json:"random_pairs,omitempty"`
	Hot         int     `json:"hot"`
	Seed        uint64  `json:"seed"`
	// Rate is the target in transfers per second of an open loop; 0 for
	// a closed loop. Dist is how accounts were chosen, ZipfS its exponent.
	Rate     float64       `json:"rate"`
	Dist     string        `json:"dist"`
	ZipfS    float64       `json:"zipf_s,omitempty"`
	OpenLoop *OpenLoopStat `json:"open_loop,omitempty"`
	Seconds  float64       `json:"seconds"`
	Latency  []LatencyRow  `json:"latency"`
	Timeline []TimelineRow `json:"timeline"`
	Plot     string        `json:"plot,omitempty"` // the SVG written
	Applied  int64         `json:"applied"`
	// InFlight counts cross-shard transfers answered in_flight: their
	// sagas finished after the request's deadline (see Sagas).
	InFlight     int64            `json:"in_flight_transfers"`
	Unknown      int64            `json:"outcome_unknown_transfers"`
	Rejected     map[string]int64 `json:"rejected"`
	Errors       []ErrorRow       `json:"errors"`
	CrossSample  string           `json:"cross_shard_sample,omitempty"`
	CrossChecked *bool            `json:"cross_shard_confirmed,omitempty"`
	Sagas        *SagaSettle      `json:"sagas,omitempty"`
	Conservation Conservation     `json:"conservation"`
	Audit        *AuditCheck      `json:"audit,omitempty"`
	Stream       *StreamStat      `json:"stream,omitempty"`
	Readers      *ReadersStat     `json:"readers,omitempty"`
	// ClientBatch is what the client batcher sent, in a run with
	// --client-batch: the rows above count calls, this the HTTP requests.
	ClientBatch *ClientBatchStat `json:"client_batch,omitempty"`

	plotErr error // why the plot could not be written
}

// ClientBatchStat is what a run's client batcher sent.
type ClientBatchStat struct {
	InFlight int     `json:"in_flight"` // most requests in flight
	Requests int64   `json:"requests"`
	Items    int64   `json:"transfers"`
	Mean     float64 `json:"mean_batch"` // transfers per request
}

func clientBatchStat(s client.BatcherStats, inFlight int) *ClientBatchStat {
	st := &ClientBatchStat{InFlight: max(inFlight, 1), Requests: s.Requests, Items: s.Items}
	if s.Requests > 0 {
		st.Mean = float64(s.Items) / float64(s.Requests)
	}
	return st
}

// Row returns the latency row of one kind (same-shard, cross-shard,
// total), or nil.
func (rep *Report) Row(kind string) *LatencyRow {
	if rep == nil {
		return nil
	}
	for i := range rep.Latency {
		if rep.Latency[i].Kind == kind {
			return &rep.Latency[i]
		}
	}
	return nil
}

// FailedRequests counts the requests that got no answer.
func (rep *Report) FailedRequests() int64 {
	var n int64
	for _, e := range rep.Errors {
		n += e.Count
	}
	return n
}

// settling reports whether money may still be moving after the run: a
// saga in flight or a request whose outcome is unknown.
func (rep *Report) settling() bool {
	return rep.CrossShard > 0 || rep.RandomPairs || rep.InFlight > 0 || rep.Unknown > 0 || len(rep.Errors) > 0
}

// unsettled reports whether the conservation check must allow for money
// still moving: a write whose outcome is unknown may yet apply, and sagas
// the run could not see finish may yet complete.
func (rep *Report) unsettled() bool {
	if rep.Unknown > 0 || len(rep.Errors) > 0 {
		return true
	}
	return rep.settling() && (rep.Sagas == nil || !rep.Sagas.Settled)
}

// latencyOf is the row of one kind of request: h holds their latencies.
func latencyOf(kind string, h *hdrhistogram.PackedHistogram, transfers int64, elapsed time.Duration) LatencyRow {
	row := LatencyRow{Kind: kind, Requests: h.TotalCount(), Transfers: transfers}
	if s := elapsed.Seconds(); s > 0 {
		row.TransfersPerSec = float64(transfers) / s
	}
	row.P50, row.P90, row.P99, row.P999 = pct(h, 50), pct(h, 90), pct(h, 99), pct(h, 99.9)
	if h.TotalCount() > 0 {
		row.Max = float64(h.Max()) / 1000
	}
	return row
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// setting describes the run's workload in a few words, for the header
// line and the plot's title.
func (rep *Report) setting() string {
	loop := "closed loop, " + table.Plural(rep.Concurrency, "client")
	if rep.Rate > 0 {
		loop = fmt.Sprintf("open loop at %s transfers/s (at most %d outstanding)", rateString(rep.Rate), rep.Concurrency)
	}
	dist := rep.Dist
	if rep.ZipfS > 0 {
		dist = fmt.Sprintf("zipf s=%g", rep.ZipfS)
	}
	if rep.RandomPairs {
		dist += ", random pairs"
	}
	if rep.ClientBatch != nil {
		dist += ", client batching"
	}
	return fmt.Sprintf("%d accounts on %s, %s, batch %d, %s", rep.Accounts, table.Plural(rep.Shards, "shard"), loop, rep.Batch, dist)
}

// Print writes the report as tables: what `tally bench` shows.
func (rep *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "%s, %.1fs, seed %d\n", rep.setting(), rep.Seconds, rep.Seed)
	t := table.New(w)
	table.Row(t, "KIND", "REQUESTS", "TRANSFERS", "TRANSFERS/S", "P50_MS", "P90_MS", "P99_MS", "P999_MS", "MAX_MS")
	for _, l := range rep.Latency {
		table.Row(t, l.Kind, l.Requests, l.Transfers, fmt.Sprintf("%.0f", l.TransfersPerSec),
			fmt.Sprintf("%.2f", l.P50), fmt.Sprintf("%.2f", l.P90), fmt.Sprintf("%.2f", l.P99),
			fmt.Sprintf("%.2f", l.P999), fmt.Sprintf("%.2f", l.Max))
	}
	t.Flush()
	if ol := rep.OpenLoop; ol != nil {
		fmt.Fprintf(w, "\nopen loop: target %s/s, achieved %.0f/s; %d of %d requests sent, %d late by more than %gms (latest %.2fms), %d missed\n",
			rateString(ol.TargetRate), ol.AchievedRate, ol.Sent, ol.Scheduled, ol.Late, ol.LateAfterMS, ol.MaxLateMS, ol.Missed)
	}
	if cb := rep.ClientBatch; cb != nil {
		fmt.Fprintf(w, "\nclient batching: %d transfers in %d requests (%.1f per request, at most %d in flight)\n",
			cb.Items, cb.Requests, cb.Mean, cb.InFlight)
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
		t = table.New(w)
		table.Row(t, "REJECTED", "COUNT")
		codes := make([]string, 0, len(rep.Rejected))
		for c := range rep.Rejected {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		for _, c := range codes {
			table.Row(t, c, rep.Rejected[c])
		}
		t.Flush()
	}
	if len(rep.Errors) == 0 {
		fmt.Fprintln(w, "errors: none")
	} else {
		t = table.New(w)
		table.Row(t, "ERROR", "REQUESTS", "EXAMPLE")
		for _, e := range rep.Errors {
			table.Row(t, e.Kind, e.Count, e.Example)
		}
		t.Flush()
	}
	if r := rep.Readers; r != nil {
		fmt.Fprintf(w, "readers: %d all-shards streams followed the load, %d events read in all, %d failed\n", r.Streams, r.Events, r.Failed)
	}
	if s := rep.Stream; s != nil {
		fmt.Fprintf(w, "stream: %d live events, lag p50 %.2fms p99 %.2fms max %.2fms; catch-up from seq 0: %d events in %.2fs, %.0f events/s\n",
			s.Events, s.LagP50MS, s.LagP99MS, s.LagMaxMS, s.CatchUpEvents, s.CatchUpSeconds, s.CatchUpPerSec)
		if s.Err != "" {
			fmt.Fprintf(w, "stream: error: %s\n", s.Err)
		}
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
// Reading 100,000 balances one by one takes a while: progress goes to
// progress once a second.
func checkConservation(ctx context.Context, c *client.Client, o *Options, ids []string, settling bool, progress io.Writer) Conservation {
	want := new(big.Int).Mul(big.NewInt(int64(len(ids))), big.NewInt(o.Initial))
	tries := 1
	if settling {
		tries = conservationTries
	}
	start := time.Now()
	var read atomic.Int64
	stop := everySecond(func() {
		fmt.Fprintf(progress, "bench: conservation check: %d of %d balances read\n", read.Load(), len(ids))
	})
	defer stop()
	var res Conservation
	for try := range tries {
		if try > 0 {
			select {
			case <-ctx.Done():
				return res
			case <-time.After(time.Second):
			}
		}
		read.Store(0)
		sum, negative, err := sumBalances(ctx, c, ids, &read)
		if try == 0 {
			stop()
			fmt.Fprintf(progress, "bench: conservation check: %d balances read in %.1fs\n", len(ids), time.Since(start).Seconds())
		}
		res = Conservation{Accounts: len(ids), Want: want.String()}
		switch {
		case err != nil:
			res.Detail = fmt.Sprintf("could not read the balances: %v", err)
		case negative != "":
			res.Sum, res.Detail = sum.String(), fmt.Sprintf("account %s is overdrawn", negative)
			return res // a negative balance does not heal by waiting
		case sum.Cmp(want) != 0:
			res.Sum = sum.String()
			res.Detail = fmt.Sprintf("sum of %d balances is %s, want %s (%d x %d)", len(ids), sum, want, len(ids), o.Initial)
		default:
			res.OK, res.Sum = true, sum.String()
			res.Detail = fmt.Sprintf("sum of %d balances = %s (%d x %d)", len(ids), sum, len(ids), o.Initial)
			return res
		}
	}
	return res
}

// sumBalances reads every account linearizably and adds up the balances,
// counting the accounts read in read; it also names an account with a
// negative balance, which the bench accounts (created without
// allow_negative) must never have.
func sumBalances(ctx context.Context, c *client.Client, ids []string, read *atomic.Int64) (*big.Int, string, error) {
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
		read.Add(int64(hi - lo))
		return nil
	})
	return sum, negative, err
}

// applied reports whether a transfer's result means it was applied: ok,
// or a repeat of one that was. A repeat of a rejected one is a rejection.
func applied(r ledger.Result) bool {
	return r.Result == ledger.OK || r.Result == ledger.Exists && r.Status != ledger.StatusRejected
}
