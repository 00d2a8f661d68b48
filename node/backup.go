package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"tally/backup"
	"tally/edge"
	"tally/shard"
)

// How a backup holds sagas back while it takes its cut (shard.HoldSagas).
const (
	// holdWait bounds the wait for the sagas in flight to finish; past
	// it the backup takes a cut with sagas in flight, which the cut rule
	// keeps whole and the header counts.
	holdWait = 3 * time.Second
	// holdLease is how long a node holds new sagas back if it is never
	// told to stop: a little more than the wait and the read of heads.
	holdLease = holdWait + 2*time.Second
)

// Operations of a backup's hold on other nodes.
const (
	opHoldSagas    = "hold-sagas"
	opReleaseSagas = "release-sagas"
)

// HoldQuery asks a node to hold new sagas back for LeaseMS.
type HoldQuery struct {
	LeaseMS int64 `json:"lease_ms"`
}

// HoldAnswer lists the shards a node leads that have no saga in flight.
type HoldAnswer struct {
	Drained []int `json:"drained"`
}

// Backup chooses the cut of a backup of this node's replicas (see
// shard.Host.BackupHeader) and returns its header and what writes the
// file. The file is this node's: every node holds a replica of every
// shard, so no other node is asked for events. Other nodes are asked to
// hold new sagas back for a moment, so that the cut has none in flight;
// if one cannot, the cut is taken anyway, with its sagas in flight
// counted in the header.
func (s *Service) Backup(ctx context.Context) (backup.Header, func(ctx context.Context, w io.Writer) (backup.Summary, error), error) {
	heads, err := s.holdSagas(ctx)
	hd, herr := s.h.BackupHeader(ctx, heads)
	if errors.Is(herr, shard.ErrRestoring) {
		return hd, nil, edge.Unavailable("this node is being restored: %v", herr)
	}
	if herr != nil {
		return hd, nil, herr
	}
	if err != nil {
		hd.Note = "sagas were not held back: " + err.Error()
	}
	write := func(ctx context.Context, w io.Writer) (backup.Summary, error) {
		return s.h.WriteBackup(ctx, hd, w)
	}
	return hd, write, nil
}

// holdSagas asks every node to hold new sagas back and waits until every
// shard's leader has none in flight. Then no saga step is pending
// anywhere and none can start, so every shard's head read now is a cut
// with no saga half inside; it returns those heads.
//
// The hold ends as soon as the heads are read (or the attempt fails):
// what follows, choosing the header at those heads, needs no hold.
func (s *Service) holdSagas(ctx context.Context) ([]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, holdWait)
	defer cancel()
	defer s.releaseSagas()
	nodes := s.Local().Nodes
	var mu sync.Mutex
	var errs []error
	var drained []int
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out HoldAnswer
			var err error
			if n.ID == s.h.NodeID() {
				out.Drained = s.h.HoldSagas(ctx, holdLease)
			} else if n.HTTP == "" {
				err = errors.New("address unknown")
			} else {
				err = s.peer.Call(ctx, n.HTTP, opHoldSagas, HoldQuery{LeaseMS: holdLease.Milliseconds()}, &out)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("node %s: %w", n.ID, err))
			}
			drained = append(drained, out.Drained...)
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for i := range s.h.Shards() {
		if !slices.Contains(drained, i) {
			return nil, fmt.Errorf("shard %d: its leader did not report its sagas finished within %v", i, holdWait)
		}
	}
	heads := make([]uint64, s.h.Shards())
	for _, sv := range s.Cluster(ctx).Shards {
		for _, rv := range sv.Replicas {
			heads[sv.Shard] = max(heads[sv.Shard], rv.AppliedSeq)
		}
	}
	return heads, nil
}

// releaseSagas lets every node start sagas again, without waiting: the
// lease ends a hold that this misses.
func (s *Service) releaseSagas() {
	s.h.ReleaseSagas()
	for _, n := range s.Local().Nodes {
		if n.ID == s.h.NodeID() || n.HTTP == "" {
			continue
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			var out struct{}
			_ = s.peer.Call(ctx, n.HTTP, opReleaseSagas, struct{}{}, &out)
		}()
	}
}

// holdOn serves opHoldSagas.
func (s *Service) holdOn(ctx context.Context, q HoldQuery) (HoldAnswer, error) {
	lease := time.Duration(q.LeaseMS) * time.Millisecond
	if lease <= 0 || lease > shard.MaxSagaHold {
		return HoldAnswer{}, edge.Invalid("lease_ms must be 1 to %d", shard.MaxSagaHold.Milliseconds())
	}
	return HoldAnswer{Drained: s.h.HoldSagas(ctx, lease)}, nil
}

// releaseOn serves opReleaseSagas.
func (s *Service) releaseOn(context.Context, struct{}) (struct{}, error) {
	s.h.ReleaseSagas()
	return struct{}{}, nil
}

// Epoch returns shard i's restore epoch on this node, or, for i < 0, the
// highest of every shard's (a restore gives every shard the same one).
func (s *Service) Epoch(i int) uint64 {
	if i >= 0 {
		return s.h.Epoch(i)
	}
	var e uint64
	for sh := 0; sh < s.h.Shards(); sh++ {
		e = max(e, s.h.Epoch(sh))
	}
	return e
}
