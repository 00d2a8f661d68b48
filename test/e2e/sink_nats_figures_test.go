package e2e

import (
	"context"
	"fmt"
	"os"
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
	waitFor(t, 60*time.Second, "the sink to catch up", func() bool { return lagOf(ctx, cl, s) == 0 })
	lagAtHalfPeak(ctx, t, c, peak, func() int64 { return lagOf(ctx, cl, s) })

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
