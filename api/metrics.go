package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// newMetrics registers request metrics and per-shard gauges that read the
// host's state at scrape time.
func newMetrics(h Host) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tally_http_requests_total",
		Help: "HTTP requests by route and status."}, []string{"route", "status"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tally_http_request_seconds",
		Help: "HTTP request latency by route.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"})
	m.reg.MustRegister(m.requests, m.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
