package node

import (
	"context"
	"errors"
	"io"

	"tally/backup"
	"tally/edge"
	"tally/shard"
)

// Backup chooses the cut of a backup of this node's replicas (see
// shard.Host.BackupHeader) and returns its header and what writes the
// file. The file is this node's: every node holds a replica of every
// shard, so no other node is asked.
func (s *Service) Backup(ctx context.Context) (backup.Header, func(ctx context.Context, w io.Writer) (backup.Summary, error), error) {
	hd, err := s.h.BackupHeader(ctx)
	if errors.Is(err, shard.ErrRestoring) {
		return hd, nil, edge.Unavailable("this node is being restored: %v", err)
	}
	if err != nil {
		return hd, nil, err
	}
	write := func(ctx context.Context, w io.Writer) (backup.Summary, error) {
		return s.h.WriteBackup(ctx, hd, w)
	}
	return hd, write, nil
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
