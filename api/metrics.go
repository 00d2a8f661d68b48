package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tally/cluster"
	"tally/shard"
)

// replicas is what the metrics read of this node's replicas at scrape
// time.
type replicas interface {
	NodeID() string
	Shards() int
	Leader(i int) (id, http string)
	Status(i int) (shard.ReplicaStatus, error)
	Sagas(ctx context.Context, i int, aborted bool, limit int, o shard.ReadOpts) ([]shard.SagaView, error)
	Offsets(ctx context.Context, i int, o shard.ReadOpts) (map[string]uint64, uint64, error)
	Snapshots(i int) (*shard.SnapshotStats, error)
}

type metrics struct {
	reg       *prometheus.Registry
	auditOK   prometheus.Gauge
	auditTime prometheus.Gauge
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

// newMetrics registers request metrics and per-shard gauges that read the
// host's state at scrape time.
func newMetrics(h replicas) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_http_requests_total",
		Help: "HTTP requests by route and status."}, []string{"route", "status"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tally_http_request_seconds",
		Help: "HTTP request latency by route.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"})
	m.auditOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_audit_ok",
		Help: "1 when the last audit run on this node found no violation, 0 when it found one."})
	m.auditTime = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tally_audit_last_run_timestamp_seconds",
		Help: "When this node last ran an audit."})
	m.reg.MustRegister(m.requests, m.latency, m.auditOK, m.auditTime, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(newSagaCollector(h), newLagCollector(h), newSnapshotCollector(h))
	if ls, ok := h.(interface{ LogStats() cluster.LogStats }); ok {
		// Rates give commits (each two fdatasyncs) per second and, divided,
		// entries and appends per commit of the shared Raft log store.
		for _, c := range []struct {
			name, help string
			v          func(cluster.LogStats) uint64
		}{
			{"tally_raft_log_commits_total", "Write transactions of the node's shared Raft log store; each fdatasyncs twice.",
				func(s cluster.LogStats) uint64 { return s.Commits }},
			{"tally_raft_log_appends_total", "Shard appends (StoreLogs calls) written by those transactions.",
				func(s cluster.LogStats) uint64 { return s.Appends }},
			{"tally_raft_log_entries_total", "Raft entries written to the shared Raft log store.",
				func(s cluster.LogStats) uint64 { return s.Entries }},
		} {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
				func() float64 { return float64(c.v(ls.LogStats())) }))
		}
	}
	if p, ok := h.(interface{ Promotions() uint64 }); ok {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_raft_promotions_total",
			Help: "Joining non-voters this node promoted to voter, as a shard's leader, once they had caught up."},
			func() float64 { return float64(p.Promotions()) }))
	}
	if g, ok := h.(interface{ SagaHolds() (uint64, uint64) }); ok {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_saga_holds_total",
			Help: "Times a backup held new cross-shard transfers back on this node while it took its cut."},
			func() float64 { n, _ := g.SagaHolds(); return float64(n) }))
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tally_saga_held_requests_total",
			Help: "Cross-shard transfer requests that waited for a backup's hold to end."},
			func() float64 { _, n := g.SagaHolds(); return float64(n) }))
	}
	for i := 0; i < h.Shards(); i++ {
		labels := prometheus.Labels{"shard": fmt.Sprint(i)}
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_shard_applied_seq",
			Help: "Last event seq applied by this replica.", ConstLabels: labels}, func() float64 {
			st, err := h.Status(i)
			if err != nil {
				return 0
			}
			return float64(st.AppliedSeq)
		}))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_shard_applied_index",
			Help: "Last Raft index applied by this replica.", ConstLabels: labels}, func() float64 {
			st, err := h.Status(i)
			if err != nil {
				return 0
			}
			return float64(st.AppliedIndex)
		}))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tally_shard_is_leader",
			Help: "1 when this node leads the shard.", ConstLabels: labels}, func() float64 {
			if id, _ := h.Leader(i); id == h.NodeID() {
				return 1
			}
			return 0
		}))
	}
	return m
}

func (m *metrics) observe(route string, status int, d time.Duration) {
	if route == "" {
		route = "other"
	}
	m.requests.WithLabelValues(route, fmt.Sprint(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

func (m *metrics) audited(ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.auditOK.Set(v)
	m.auditTime.SetToCurrentTime()
}

// sagaCollector reports, for the shards this node leads, the open sagas
// and the age of the oldest, read when scraped.
type sagaCollector struct {
	h           replicas
	open, older *prometheus.Desc
}

func newSagaCollector(h replicas) *sagaCollector {
	return &sagaCollector{h: h,
		open:  prometheus.NewDesc("tally_sagas_open", "Open sagas started by a shard this node leads.", []string{"shard"}, nil),
		older: prometheus.NewDesc("tally_sagas_oldest_age_seconds", "Age of the oldest open saga of a shard this node leads.", []string{"shard"}, nil)}
}

func (c *sagaCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.open; ch <- c.older }

func (c *sagaCollector) Collect(ch chan<- prometheus.Metric) {
	for i := 0; i < c.h.Shards(); i++ {
		if id, _ := c.h.Leader(i); id != c.h.NodeID() {
			continue
		}
		vs, err := c.h.Sagas(context.Background(), i, false, -1, shard.ReadOpts{Stale: true})
		if err != nil {
			continue
		}
		oldest := 0.0
		for _, v := range vs {
			oldest = max(oldest, v.Age.Seconds())
		}
		ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(len(vs)), fmt.Sprint(i))
		ch <- prometheus.MustNewConstMetric(c.older, prometheus.GaugeValue, oldest, fmt.Sprint(i))
	}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// snapshotCollector reports the snapshots each replica on this node
// wrote, as summaries without quantiles: their count, and their total
// time and bytes, so that a rate gives the average snapshot and its
// growth with history shows.
type snapshotCollector struct {
	h            replicas
	secs, nbytes *prometheus.Desc
	sent         *prometheus.Desc
}

func newSnapshotCollector(h replicas) *snapshotCollector {
	return &snapshotCollector{h: h,
		secs:   prometheus.NewDesc("tally_snapshot_seconds", "Time this replica spent writing Raft snapshots.", []string{"shard"}, nil),
		nbytes: prometheus.NewDesc("tally_snapshot_bytes", "Bytes of the Raft snapshots this replica wrote (markers: the state itself is in Badger).", []string{"shard"}, nil),
		sent:   prometheus.NewDesc("tally_snapshot_sent_bytes", "Full state streams this replica built for followers too far behind for the log, and their bytes.", []string{"shard"}, nil)}
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.secs
	ch <- c.nbytes
	ch <- c.sent
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	for i := 0; i < c.h.Shards(); i++ {
		st, err := c.h.Snapshots(i)
		if err != nil {
			continue
		}
		n, sh := uint64(st.Count.Load()), fmt.Sprint(i)
		ch <- prometheus.MustNewConstSummary(c.secs, n, time.Duration(st.Nanos.Load()).Seconds(), nil, sh)
		ch <- prometheus.MustNewConstSummary(c.nbytes, n, float64(st.Bytes.Load()), nil, sh)
		ch <- prometheus.MustNewConstSummary(c.sent, uint64(st.Sent.Load()), float64(st.SentBytes.Load()), nil, sh)
	}
}
