package node

import (
	"context"

	"tally/edge"
	"tally/stream"
)

// WaitApplied waits, until ctx ends, for this replica of shard i to apply
// seq, as a read with min_seq does.
func (s *Service) WaitApplied(ctx context.Context, i int, seq uint64) error {
	if err := s.checkShard(i); err != nil {
		return err
	}
	log, err := s.h.Log(i)
	if err != nil {
		return err
	}
	if err := log.WaitSeq(ctx, seq); err != nil {
		return edge.Unavailable("shard %d has not applied seq %d here: %v", i, seq, err)
	}
	return nil
}

// Follow streams shard i's events after seq after from this replica
// (stream.Shard).
func (s *Service) Follow(ctx context.Context, i int, after uint64, o stream.Options,
	emit func(seq uint64, raw []byte) error, progress func(seq uint64) error) error {
	if err := s.checkShard(i); err != nil {
		return err
	}
	log, err := s.h.Log(i)
	if err != nil {
		return err
	}
	return stream.Shard(ctx, log, after, o, emit, progress)
}

// FollowAll streams every shard's events from this node's replicas, shard
// i's after after[i] (stream.All).
func (s *Service) FollowAll(ctx context.Context, after []uint64, o stream.Options,
	emit func(shard int, seq uint64, raw []byte) error, progress func(pos []uint64) error) error {
	logs := make([]stream.Log, s.h.Shards())
	for i := range logs {
		log, err := s.h.Log(i)
		if err != nil {
			return err
		}
		logs[i] = log
	}
	return stream.All(ctx, logs, after, o, emit, progress)
}
