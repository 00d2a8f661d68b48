package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"tally/api/wire"
	"tally/edge"
	"tally/shard"
)

// consumerService is what the named consumers' handlers need of the node.
type consumerService interface {
	Shards() int
	Consumers(ctx context.Context) ([]wire.Consumer, error)
	Consumer(ctx context.Context, name string) (wire.Consumer, error)
	SetOffset(ctx context.Context, name string, i int, seq uint64) (wire.ConsumerOffset, error)
	Reset(ctx context.Context, name, to string) (wire.Consumer, error)
	Delete(ctx context.Context, name string) (wire.OK, error)
}

func (s *Server) consumerRoutes() map[string]handler {
	return map[string]handler{
		"GET /v1/consumers":                        s.listConsumers,
		"GET /v1/consumers/{name}":                 s.consumer,
		"DELETE /v1/consumers/{name}":              s.deleteConsumer,
		"PUT /v1/consumers/{name}/offsets/{shard}": s.setOffset,
		"POST /v1/consumers/{name}/reset":          s.resetConsumer,
	}
}

// listConsumers lists every consumer with its position on every shard.
func (s *Server) listConsumers(r *http.Request) (any, error) {
	cs, err := s.consumers.Consumers(r.Context())
	if err != nil {
		return nil, err
	}
	return wire.Consumers{Consumers: cs}, nil
}

// consumer is one consumer's position on every shard.
func (s *Server) consumer(r *http.Request) (any, error) {
	return s.consumers.Consumer(r.Context(), r.PathValue("name"))
}

// setOffset moves a consumer's offset on one shard forwards.
func (s *Server) setOffset(r *http.Request) (any, error) {
	sh, err := shardParam(r, s.consumers.Shards())
	if err != nil {
		return nil, err
	}
	var in wire.OffsetIn
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	if in.Seq == nil {
		return nil, edge.Invalid("seq is required: the seq up to which the consumer has processed shard %d", sh)
	}
	return s.consumers.SetOffset(r.Context(), r.PathValue("name"), sh, *in.Seq)
}

// resetConsumer moves a consumer anywhere, backwards too.
func (s *Server) resetConsumer(r *http.Request) (any, error) {
	var in wire.ResetIn
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return s.consumers.Reset(r.Context(), r.PathValue("name"), in.To)
}

// deleteConsumer forgets a consumer on every shard.
func (s *Server) deleteConsumer(r *http.Request) (any, error) {
	return s.consumers.Delete(r.Context(), r.PathValue("name"))
}

// lagCollector reports, for the shards this node leads, how far each
// consumer is behind the shard's applied seq, read from this replica when
// scraped (every node hosts every shard, so it knows every consumer). A
// consumer with no offset on a shard lags by the shard's whole log there.
type lagCollector struct {
	h   replicas
	lag *prometheus.Desc
}

func newLagCollector(h replicas) *lagCollector {
	return &lagCollector{h: h, lag: prometheus.NewDesc("tally_consumer_lag_events",
		"Events of a shard this node leads that a named consumer has not processed (applied seq - offset).",
		[]string{"consumer", "shard"}, nil)}
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.lag }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	offs := make([]map[string]uint64, c.h.Shards())
	applied := make([]uint64, len(offs))
	names := map[string]bool{}
	for i := range offs {
		o, seq, err := c.h.Offsets(context.Background(), i, shard.ReadOpts{Stale: true})
		if err != nil {
			continue
		}
		offs[i], applied[i] = o, seq
		for name := range o {
			names[name] = true
		}
	}
	for i := range offs {
		if id, _ := c.h.Leader(i); id != c.h.NodeID() || offs[i] == nil {
			continue
		}
		for name := range names {
			lag := uint64(0)
			if seq := offs[i][name]; applied[i] > seq {
				lag = applied[i] - seq
			}
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(lag), name, fmt.Sprint(i))
		}
	}
}
