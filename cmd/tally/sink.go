package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"tally/edge"
	"tally/sink"
)

// sinkOpts are the flags every sink shares.
type sinkOpts struct {
	consumer string
	metrics  string // address of the Prometheus endpoint, "" for none
	batch    int
	flush    time.Duration
}

func newSinkCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sink",
		Short: "Keep a derived view of the ledger in another system",
		Long: `A sink follows every shard's events (as a named consumer, through --addr,
which may list several nodes or proxies separated by commas) and keeps a
view of them in another system. It resumes after a crash with no gap and
no duplicate effect, waits and retries (saying why) while the target is
down, and stops cleanly on SIGTERM. A status line is printed every second
(--json: one JSON object per line).`,
		Example: `  tally sink postgres --dsn postgres://tally@127.0.0.1:5432/ledger --consumer reports
  tally sink nats --url nats://127.0.0.1:4222 --stream LEDGER --consumer jetstream`,
	}
	// Each target's command adds itself here.
	cmd.AddCommand(newSinkNATSCmd(a))
	cmd.AddCommand(newSinkPostgresCmd(a))
	return cmd
}

// addSinkFlags adds the shared flags to a sink's command.
func addSinkFlags(cmd *cobra.Command, o *sinkOpts) {
	f := cmd.Flags()
	f.StringVar(&o.consumer, "consumer", "", "the named consumer whose offsets the sink moves (required)")
	f.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on this host:port (/metrics)")
	f.IntVar(&o.batch, "batch", 1000, "most events applied to the target at once")
	f.DurationVar(&o.flush, "flush", 100*time.Millisecond, "longest wait for a batch to fill")
}

// runSink runs target t with the shared flags until ctx ends, printing a
// status line every second (or JSON with --json) to out and serving
// metrics when asked. It closes t.
func runSink(ctx context.Context, a *app, o *sinkOpts, t sink.Target, out io.Writer) error {
	defer t.Close()
	if o.consumer == "" {
		return errors.New("--consumer is required")
	}
	m := newSinkMetrics(t.Name(), o.consumer)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if o.metrics != "" {
		ln, err := net.Listen("tcp", o.metrics)
		if err != nil {
			return fmt.Errorf("--metrics %s: %w", o.metrics, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
		srv := edge.NewServer(mux, log)
		go func() { _ = srv.Serve(ln) }() // ends with Close below
		defer srv.Close()
	}
	err := sink.Run(ctx, t, sink.Options{
		Endpoints:  strings.Split(a.addr, ","),
		Consumer:   o.consumer,
		Batch:      o.batch,
		FlushEvery: o.flush,
		Logger:     log,
		Status: func(st sink.Status) {
			m.observe(st)
			printSinkStatus(out, a.json, st)
		},
	})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return errors.New("stopped before the last batch could be applied; it is applied again on the next start")
	}
	return err
}

// printSinkStatus prints one status line.
func printSinkStatus(w io.Writer, asJSON bool, st sink.Status) {
	if asJSON {
		b, _ := json.Marshal(st) // plain values: it cannot fail
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	shards := make([]int, 0, len(st.Applied))
	for sh := range st.Applied {
		shards = append(shards, sh)
	}
	sort.Ints(shards)
	var seqs []string
	var lag uint64
	for _, sh := range shards {
		seqs = append(seqs, fmt.Sprintf("%d:%d", sh, st.Applied[sh]))
	}
	for _, l := range st.Lag {
		lag += l
	}
	line := fmt.Sprintf("%s %s: applied %s, lag %d, %d events (%.0f/s)", time.Now().Format("15:04:05"), st.Target,
		strings.Join(seqs, ","), lag, st.Events, st.Rate)
	if st.State != sink.StateFollowing {
		line += fmt.Sprintf(" [%s] %s", st.State, st.Reason)
	}
	fmt.Fprintln(w, line)
}

// sinkMetrics are a sink's Prometheus metrics.
type sinkMetrics struct {
	reg      *prometheus.Registry
	events   prometheus.Gauge
	lag      *prometheus.GaugeVec
	applied  *prometheus.GaugeVec
	retries  prometheus.Gauge
	retrying prometheus.Gauge
}

func newSinkMetrics(target, consumer string) *sinkMetrics {
	labels := prometheus.Labels{"target": target, "consumer": consumer}
	m := &sinkMetrics{reg: prometheus.NewRegistry(),
		events: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_sink_events_applied",
			Help: "Events applied to the target since the sink started.", ConstLabels: labels}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_sink_lag_events",
			Help: "Events applied in the cluster but not yet in the target, per shard.", ConstLabels: labels}, []string{"shard"}),
		applied: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tally_sink_applied_seq",
			Help: "The last seq the target holds, per shard.", ConstLabels: labels}, []string{"shard"}),
		retries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_sink_retries",
			Help: "Failed attempts to reach the target since the sink started.", ConstLabels: labels}),
		retrying: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_sink_retrying",
			Help: "1 while the sink waits for its target to come back.", ConstLabels: labels}),
	}
	m.reg.MustRegister(m.events, m.lag, m.applied, m.retries, m.retrying)
	return m
}

func (m *sinkMetrics) observe(st sink.Status) {
	m.events.Set(float64(st.Events))
	m.retries.Set(float64(st.Retries))
	if st.State == sink.StateRetrying {
		m.retrying.Set(1)
	} else {
		m.retrying.Set(0)
	}
	for sh, seq := range st.Applied {
		m.applied.WithLabelValues(fmt.Sprint(sh)).Set(float64(seq))
	}
	for sh, l := range st.Lag {
		m.lag.WithLabelValues(fmt.Sprint(sh)).Set(float64(l))
	}
}
