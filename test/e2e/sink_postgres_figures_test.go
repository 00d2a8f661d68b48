package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"tally/client"
	"tally/sink/postgres/pgtest"
)

// TestSinkPostgresFigures measures the PostgreSQL sink for
// docs/performance.md: the lag while the cluster runs at half its peak,
// the throughput of catching up a backlog of about a million events, and
// the time to rebuild the view of them. It runs only when asked
// (`make bench-sink`, TALLY_SINK_FIGURES=1): it takes a few minutes.
func TestSinkPostgresFigures(t *testing.T) {
	if os.Getenv("TALLY_SINK_FIGURES") == "" {
		t.Skip("figures for docs/performance.md: run with TALLY_SINK_FIGURES=1 (make bench-sink)")
	}
	srv := pgtest.Start(t, pgtest.Options{Durable: true})
	c := startCluster(t, streamShards)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	peak := benchRate(ctx, t, c, "--duration", "10s")
	t.Logf("peak: %.0f transfers/s (closed loop, 64 clients, 1 transfer a request)", peak)

	s := newPGSink(t, c, srv.DSN, "sink-postgres")
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	cl := client.New(c.proxy, client.WithTimeout(5*time.Second))
	waitFor(t, 60*time.Second, "the sink to catch up", func() bool { return lagOf(ctx, cl, s) == 0 })
	lagAtHalfPeak(ctx, t, c, peak, func() int64 { return lagOf(ctx, cl, s) })

	// A backlog: the sink stops, about a million events arrive, and it
	// catches up from its offsets.
	s.Stop(10 * time.Second)
	have := s.applied(ctx)
	benchRate(ctx, t, c, "--batch", "1000", "--concurrency", "8", "--count", fmt.Sprint(1_000_000-have), "--duration", "10m")
	seqs, _ := c.finalLogs(ctx)
	backlog := int64(sumOf(seqs)) - s.applied(ctx)
	start := time.Now()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Minute, "the sink to catch up the backlog", func() bool { return s.applied(ctx) == int64(sumOf(seqs)) })
	el := time.Since(start)
	t.Logf("catch-up: %d events in %s: %.0f events/s", backlog, el.Round(time.Millisecond), float64(backlog)/el.Seconds())
	s.Stop(10 * time.Second)

	rb := newPGSink(t, c, srv.DSN, "sink-postgres-rebuild", "--rebuild")
	start = time.Now()
	if err := rb.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Minute, "the rebuild to switch", func() bool {
		return strings.Contains(logSince(t, rb.LogPath, 0), "rebuilt: readers of tally see the new version")
	})
	el = time.Since(start)
	t.Logf("rebuild: %d events in %s: %.0f events/s", sumOf(seqs), el.Round(time.Millisecond), float64(sumOf(seqs))/el.Seconds())
}

// lagOf is the events the cluster has applied and the sink does not hold
// (for JetStream: has not had acknowledged), or -1 while either cannot
// be read.
func lagOf(ctx context.Context, cl *client.Client, s appliedSink) int64 {
	st, err := cl.Cluster(ctx)
	if err != nil {
		return -1
	}
	var n int64
	for _, sh := range st.Shards {
		n += int64(sh.AppliedSeq)
	}
	a := s.applied(ctx)
	if a < 0 {
		return -1
	}
	return max(0, n-a)
}

// lagAtHalfPeak runs an open loop at half of peak for 20 s and samples a
// sink's lag (lag; negative: no sample) every 100 ms, then logs its
// percentiles.
func lagAtHalfPeak(ctx context.Context, t *testing.T, c *cluster, peak float64, lag func() int64) {
	t.Helper()
	var lags []int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := runBench(ctx, c, "--rate", fmt.Sprint(int(peak/2)), "--concurrency", "256", "--duration", "20s"); err != nil {
			t.Error(err) // Fatal belongs to the test's goroutine
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-tick.C:
			if l := lag(); l >= 0 {
				lags = append(lags, l)
			}
		case <-done:
			running = false
		}
	}
	if len(lags) == 0 {
		t.Fatal("no lag sample")
	}
	slices.Sort(lags)
	pct := func(p float64) int64 { return lags[min(len(lags)-1, int(p*float64(len(lags))))] }
	t.Logf("lag at %d transfers/s: p50 %d, p99 %d, max %d events (%d samples)", int(peak/2), pct(0.5), pct(0.99),
		lags[len(lags)-1], len(lags))
}

// benchRate runs tally bench through the proxy and returns its
// transfers/s.
func benchRate(ctx context.Context, t *testing.T, c *cluster, args ...string) float64 {
	t.Helper()
	rate, err := runBench(ctx, c, args...)
	if err != nil {
		t.Fatal(err)
	}
	return rate
}

func runBench(ctx context.Context, c *cluster, args ...string) (float64, error) {
	out, err := exec.CommandContext(ctx, bin, append([]string{"--addr", c.proxy, "--json", "bench"}, args...)...).Output()
	if err != nil {
		return 0, fmt.Errorf("tally bench %v: %v\n%s", args, err, out)
	}
	var rep struct {
		Latency []struct {
			Kind            string  `json:"kind"`
			TransfersPerSec float64 `json:"transfers_per_sec"`
		} `json:"latency"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || len(rep.Latency) == 0 {
		return 0, fmt.Errorf("tally bench %v: %v\n%s", args, err, out)
	}
	for _, r := range rep.Latency {
		if r.Kind == "total" {
			return r.TransfersPerSec, nil
		}
	}
	return rep.Latency[0].TransfersPerSec, nil
}
