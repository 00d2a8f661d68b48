package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"tally/api/wire"
	"tally/edge"
	"tally/shard"
	"tally/stream"
)

// Named consumers: a consumer's offset for shard S is kept in S's own
// Raft group (shard.Host.SetOffset), so every change runs on that
// shard's leader and every read asks it, as a linearizable read does:
// what a client set through any node is what it reads back through any
// other. A consumer exists while some shard keeps an offset for it, and
// is reported on every shard, at seq 0 where it has none (a stream
// without a position for a shard starts there too).

// Reset targets (POST /v1/consumers/{name}/reset).
const (
	ResetStart = "start" // every shard to seq 0
	ResetEnd   = "end"   // every shard to its applied seq
)

// Offset operations between nodes (OffsetQuery.Op).
const (
	offsetSet    = "set"
	offsetReset  = "reset"
	offsetEnd    = "end"
	offsetDelete = "delete"
)

// OffsetsQuery reads every consumer's offset on shard Shard.
type OffsetsQuery struct {
	Shard int `json:"shard"`
}

// ShardOffsets is every consumer's offset on one shard, read on its
// leader with the shard's applied seq.
type ShardOffsets struct {
	Shard      int               `json:"shard"`
	AppliedSeq uint64            `json:"applied_seq"`
	Offsets    map[string]uint64 `json:"offsets"`
}

// OffsetQuery changes consumer Name's offset on shard Shard: Op is set,
// reset (to Seq), end (reset to the applied seq) or delete.
type OffsetQuery struct {
	Shard int    `json:"shard"`
	Name  string `json:"name"`
	Op    string `json:"op"`
	Seq   uint64 `json:"seq,omitempty"`
}

// Consumers lists every consumer, sorted by name, with its position on
// every shard.
func (s *Service) Consumers(ctx context.Context) ([]wire.Consumer, error) {
	all, err := s.allOffsets(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, so := range all {
		for name := range so.Offsets {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	out := make([]wire.Consumer, 0, len(names))
	for _, name := range names {
		out = append(out, consumerOf(name, all))
	}
	return out, nil
}

// Consumer is consumer name's position on every shard; 404
// consumer_not_found when no shard keeps an offset for it.
func (s *Service) Consumer(ctx context.Context, name string) (wire.Consumer, error) {
	if err := checkName(name); err != nil {
		return wire.Consumer{}, err
	}
	all, err := s.allOffsets(ctx)
	if err != nil {
		return wire.Consumer{}, err
	}
	for _, so := range all {
		if _, ok := so.Offsets[name]; ok {
			return consumerOf(name, all), nil
		}
	}
	return wire.Consumer{}, edge.NotFound(edge.CodeConsumerNotFound, "consumer %q has no offset on any shard", name)
}

// SetOffset moves consumer name's offset on shard i forwards to seq (or
// keeps it), creating the consumer: 409 offset_backwards when seq is
// below its offset, 400 when seq is beyond the shard's applied seq.
func (s *Service) SetOffset(ctx context.Context, name string, i int, seq uint64) (wire.ConsumerOffset, error) {
	if err := checkName(name); err != nil {
		return wire.ConsumerOffset{}, err
	}
	return s.offsetOn(ctx, OffsetQuery{Shard: i, Name: name, Op: offsetSet, Seq: seq})
}

// Reset moves consumer name, backwards too, to "start" (seq 0 on every
// shard), "end" (every shard's applied seq as the change applies) or a
// list of shard:seq pairs ("0:42,1:17"), which moves the shards listed
// and leaves the others as they are. It creates the consumer. Each
// shard moves on its own leader, in shard order; on a failure the
// shards before it have moved, and the same reset can be sent again.
// The answer has the shards it moved.
func (s *Service) Reset(ctx context.Context, name, to string) (wire.Consumer, error) {
	if err := checkName(name); err != nil {
		return wire.Consumer{}, err
	}
	qs, err := resetQueries(name, to, s.h.Shards())
	if err != nil {
		return wire.Consumer{}, err
	}
	out := wire.Consumer{Name: name, Shards: []wire.ConsumerShard{}}
	for _, q := range qs {
		o, err := s.offsetOn(ctx, q)
		if err != nil {
			return wire.Consumer{}, err
		}
		out.Shards = append(out.Shards, o.ConsumerShard)
		out.Lag += o.Lag
	}
	return out, nil
}

// Delete forgets consumer name on every shard; 404 consumer_not_found
// when no shard kept an offset for it. A retry after a failure part-way
// deletes the rest (and is a 404 if nothing was left).
func (s *Service) Delete(ctx context.Context, name string) (wire.OK, error) {
	if err := checkName(name); err != nil {
		return wire.OK{}, err
	}
	found := false
	for i := 0; i < s.h.Shards(); i++ {
		_, err := s.offsetOn(ctx, OffsetQuery{Shard: i, Name: name, Op: offsetDelete})
		var e *edge.Error
		switch {
		case err == nil:
			found = true
		case errors.As(err, &e) && e.Code == edge.CodeConsumerNotFound:
		default:
			return wire.OK{}, err
		}
	}
	if !found {
		return wire.OK{}, edge.NotFound(edge.CodeConsumerNotFound, "consumer %q has no offset on any shard", name)
	}
	return wire.OK{OK: true}, nil
}

// resetQueries turns a reset target into one change per shard it moves.
func resetQueries(name, to string, shards int) ([]OffsetQuery, error) {
	var qs []OffsetQuery
	switch to {
	case ResetStart, ResetEnd:
		for i := 0; i < shards; i++ {
			q := OffsetQuery{Shard: i, Name: name, Op: offsetReset}
			if to == ResetEnd {
				q.Op = offsetEnd
			}
			qs = append(qs, q)
		}
		return qs, nil
	case "":
		return nil, edge.Invalid(`to is required: "start", "end" or shard:seq pairs such as "0:42,1:17"`)
	}
	pairs, err := stream.ParsePairs(to, shards)
	if err != nil {
		return nil, edge.Invalid(`to: %v (want "start", "end" or pairs such as "0:42,1:17")`, err)
	}
	for i, seq := range pairs {
		qs = append(qs, OffsetQuery{Shard: i, Name: name, Op: offsetReset, Seq: seq})
	}
	slices.SortFunc(qs, func(a, b OffsetQuery) int { return a.Shard - b.Shard })
	return qs, nil
}

// offsetOn runs one offset change on shard q.Shard's leader.
func (s *Service) offsetOn(ctx context.Context, q OffsetQuery) (out wire.ConsumerOffset, err error) {
	if err := checkName(q.Name); err != nil {
		return out, err
	}
	if err := s.checkShard(q.Shard); err != nil {
		return out, err
	}
	err = s.onLeader(ctx, q.Shard, func() error {
		var o shard.Offset
		var err error
		switch q.Op {
		case offsetSet:
			o, err = s.h.SetOffset(ctx, q.Shard, q.Name, q.Seq)
		case offsetReset, offsetEnd:
			o, err = s.h.ResetOffset(ctx, q.Shard, q.Name, q.Seq, q.Op == offsetEnd)
		case offsetDelete:
			err = s.h.DeleteConsumer(ctx, q.Shard, q.Name)
		default:
			return edge.Invalid("unknown offset operation %q", q.Op)
		}
		if err != nil {
			return offsetProblem(err)
		}
		out = wire.ConsumerOffset{Name: q.Name, ConsumerShard: positionOf(q.Shard, o.Seq, o.Applied)}
		return nil
	}, func(addr string) error { return s.peer.Call(ctx, addr, opOffset, q, &out) })
	return out, err
}

// offsetProblem maps a change the shard's log refused to its answer.
func offsetProblem(err error) error {
	var oe *shard.OffsetError
	if !errors.As(err, &oe) {
		return err
	}
	switch {
	case errors.Is(err, shard.ErrOffsetBackwards):
		return edge.Errorf(http.StatusConflict, edge.CodeOffsetBackwards,
			"consumer %s is at seq %d on shard %d; an offset never goes backwards (reset moves it back)", oe.Name, oe.Offset.Seq, oe.Shard)
	case errors.Is(err, shard.ErrOffsetBeyond):
		return edge.Invalid("shard %d has applied seq %d; consumer %s cannot be beyond it", oe.Shard, oe.Offset.Applied, oe.Name)
	case errors.Is(err, shard.ErrConsumerNotFound):
		return edge.NotFound(edge.CodeConsumerNotFound, "consumer %s has no offset on shard %d", oe.Name, oe.Shard)
	case errors.Is(err, shard.ErrTooManyConsumers):
		return edge.Errorf(http.StatusConflict, edge.CodeTooManyConsumers,
			"shard %d keeps offsets for the most consumers it takes; delete one first", oe.Shard)
	}
	return err
}

// allOffsets reads every shard's offsets on its leader.
func (s *Service) allOffsets(ctx context.Context) ([]ShardOffsets, error) {
	out := make([]ShardOffsets, s.h.Shards())
	for i := range out {
		so, err := s.offsetsOn(ctx, OffsetsQuery{Shard: i})
		if err != nil {
			return nil, err
		}
		out[i] = so
	}
	return out, nil
}

func (s *Service) offsetsOn(ctx context.Context, q OffsetsQuery) (out ShardOffsets, err error) {
	if err := s.checkShard(q.Shard); err != nil {
		return out, err
	}
	err = s.onLeader(ctx, q.Shard, func() error {
		offs, applied, err := s.h.Offsets(ctx, q.Shard, shard.ReadOpts{})
		if err != nil {
			return err
		}
		if offs == nil {
			offs = map[string]uint64{}
		}
		out = ShardOffsets{Shard: q.Shard, AppliedSeq: applied, Offsets: offs}
		return nil
	}, func(addr string) error { return s.peer.Call(ctx, addr, opOffsets, q, &out) })
	return out, err
}

// consumerOf is consumer name's position on every shard of all.
func consumerOf(name string, all []ShardOffsets) wire.Consumer {
	c := wire.Consumer{Name: name, Shards: make([]wire.ConsumerShard, len(all))}
	for i, so := range all {
		c.Shards[i] = positionOf(so.Shard, so.Offsets[name], so.AppliedSeq)
		c.Lag += c.Shards[i].Lag
	}
	return c
}

// positionOf is an offset on a shard with its lag. An offset read ahead
// of the applied seq it is reported with (a change applied in the batch
// being published) lags by 0.
func positionOf(sh int, seq, applied uint64) wire.ConsumerShard {
	p := wire.ConsumerShard{Shard: sh, Seq: seq, AppliedSeq: applied}
	if applied > seq {
		p.Lag = applied - seq
	}
	return p
}

// checkName refuses a name no consumer can have.
func checkName(name string) error {
	if !shard.ValidConsumerName(name) {
		return edge.Invalid("consumer name %q must be 1 to %d bytes of [A-Za-z0-9._-]", truncate(name), shard.MaxConsumerName)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%.80s...", s)
	}
	return s
}
