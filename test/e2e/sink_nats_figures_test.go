package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"tally/client"
	"tally/sink/nats/natstest"
)

// natsBacklog is the events written while the sink is stopped, for the
// catch-up figure.
const natsBacklog = 300_000

// TestSinkNATSFigures measures the JetStream sink for
// docs/performance.md: the lag while the cluster runs at half its peak
// and the throughput of catching up a backlog. It runs only when asked
// (`make bench-sink`, TALLY_SINK_FIGURES=1).
func TestSinkNATSFigures(t *testing.T) {
	if os.Getenv("TALLY_SINK_FIGURES") == "" {
		t.Skip("figures for docs/performance.md: run with TALLY_SINK_FIGURES=1 (make bench-sink)")
	}
	srv := natstest.Start(t)
	c := startCluster(t, streamShards)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	peak := benchRate(ctx, t, c, "--duration", "10s")
	t.Logf("peak: %.0f transfers/s (closed loop, 64 clients, 1 transfer a request)", peak)

	s := newNATSSink(t, c, srv.URL)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	cl := client.New(c.proxy, client.WithTimeout(5*time.Second))
	waitFor(t, 60*time.Second, "the sink to catch up", func() bool { return natsLag(ctx, cl, s) == 0 })
	var lags []int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := runBench(ctx, c, "--rate", fmt.Sprint(int(peak/2)), "--concurrency", "256", "--duration", "20s"); err != nil {
			t.Error(err) // Fatal belongs to the test's goroutine
		}
	}()
	for tick := time.NewTicker(100 * time.Millisecond); ; {
		select {
		case <-tick.C:
			if l := natsLag(ctx, cl, s); l >= 0 {
				lags = append(lags, l)
			}
			continue
		case <-done:
		}
		tick.Stop()
		break
	}
	slices.Sort(lags)
	pct := func(p float64) int64 { return lags[min(len(lags)-1, int(p*float64(len(lags))))] }
	t.Logf("lag at %d transfers/s: p50 %d, p99 %d, max %d events (%d samples)", int(peak/2), pct(0.5), pct(0.99),
		lags[len(lags)-1], len(lags))

	// A backlog: the sink stops, events arrive, and it catches up from
	// its consumer's offsets.
	s.Stop(10 * time.Second)
	benchRate(ctx, t, c, "--batch", "1000", "--concurrency", "8", "--count", fmt.Sprint(natsBacklog), "--duration", "5m")
	seqs, _ := c.finalLogs(ctx)
	backlog := int64(sumOf(seqs)) - s.applied(ctx)
	start := time.Now()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Minute, "the sink to catch up the backlog", func() bool { return s.applied(ctx) == int64(sumOf(seqs)) })
	el := time.Since(start)
	t.Logf("catch-up: %d events in %s: %.0f events/s", backlog, el.Round(time.Millisecond), float64(backlog)/el.Seconds())
}

// natsLag is the events the cluster has applied and the sink has not
// had acknowledged by JetStream, or -1 while the cluster does not answer.
func natsLag(ctx context.Context, cl *client.Client, s *natsSink) int64 {
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
