package shard

import (
	"context"
	"errors"
	"fmt"

	"tally/cluster"
	"tally/fsm"
)

// Errors of an offset change that the shard's log refused; nothing was
// changed. They wrap the offset the consumer has (Offset in the error's
// *OffsetError).
var (
	ErrOffsetBackwards  = errors.New("offset would go backwards")
	ErrOffsetBeyond     = errors.New("offset beyond the shard's applied seq")
	ErrConsumerNotFound = errors.New("consumer has no offset on this shard")
	ErrTooManyConsumers = errors.New("too many consumers on this shard")
)

// MaxConsumerName bounds a consumer's name (fsm.MaxConsumerName).
const MaxConsumerName = fsm.MaxConsumerName

// ValidConsumerName reports whether s can name a consumer: 1 to
// MaxConsumerName bytes of [A-Za-z0-9._-].
func ValidConsumerName(s string) bool { return fsm.ValidConsumerName(s) }

// Offset is a consumer's offset on one shard, with the shard's applied
// seq at the time.
type Offset struct {
	Seq     uint64
	Applied uint64
}

// OffsetError is a refused offset change: Err is one of the errors above
// and Offset what the shard holds.
type OffsetError struct {
	Shard  int
	Name   string
	Err    error
	Offset Offset
}

func (e *OffsetError) Error() string {
	return fmt.Sprintf("shard %d: consumer %s: %v (offset %d, applied seq %d)", e.Shard, e.Name, e.Err, e.Offset.Seq, e.Offset.Applied)
}

func (e *OffsetError) Unwrap() error { return e.Err }

// SetOffset moves consumer name's offset on shard i to seq, never
// backwards. This node must lead shard i. Errors are those of Submit, or
// an *OffsetError (ErrOffsetBackwards, ErrOffsetBeyond,
// ErrTooManyConsumers).
func (h *Host) SetOffset(ctx context.Context, i int, name string, seq uint64) (Offset, error) {
	return h.changeOffset(ctx, i, fsm.OffsetChange{Op: fsm.OffsetSet, Name: name, Seq: seq})
}

// ResetOffset sets consumer name's offset on shard i to seq, backwards
// too, or, when end is true, to the shard's applied seq as the entry is
// applied. This node must lead shard i.
func (h *Host) ResetOffset(ctx context.Context, i int, name string, seq uint64, end bool) (Offset, error) {
	c := fsm.OffsetChange{Op: fsm.OffsetReset, Name: name, Seq: seq}
	if end {
		c = fsm.OffsetChange{Op: fsm.OffsetResetEnd, Name: name}
	}
	return h.changeOffset(ctx, i, c)
}

// DeleteConsumer forgets consumer name's offset on shard i; an
// *OffsetError with ErrConsumerNotFound when it has none. This node must
// lead shard i.
func (h *Host) DeleteConsumer(ctx context.Context, i int, name string) error {
	_, err := h.changeOffset(ctx, i, fsm.OffsetChange{Op: fsm.OffsetDelete, Name: name})
	return err
}

// changeOffset proposes one offset entry straight to the group, as the
// node directory's entries are: offsets do not go through the batcher,
// whose entries are ledger entries.
func (h *Host) changeOffset(ctx context.Context, i int, c fsm.OffsetChange) (Offset, error) {
	if !fsm.ValidConsumerName(c.Name) {
		return Offset{}, fmt.Errorf("shard %d: bad consumer name %q", i, c.Name)
	}
	r, err := h.Replica(i)
	if err != nil {
		return Offset{}, err
	}
	if !r.Group.IsLeader() {
		return Offset{}, h.notLeader(r)
	}
	resp, err := r.Group.Apply(ctx, fsm.EncodeOffset(c))
	if err != nil {
		var nl *cluster.NotLeaderError
		if errors.As(err, &nl) {
			return Offset{}, h.notLeader(r)
		}
		return Offset{}, fmt.Errorf("shard %d: consumer %s: %w", i, c.Name, err)
	}
	or, ok := resp.(*fsm.OffsetResponse)
	if !ok {
		return Offset{}, fmt.Errorf("shard %d: consumer %s: %w: offset entry answered %T", i, c.Name, cluster.ErrOutcomeUnknown, resp)
	}
	off := Offset{Seq: or.Seq, Applied: or.Applied}
	var refused error
	switch or.Result {
	case fsm.OffsetOK:
		return off, nil
	case fsm.OffsetBackwards:
		refused = ErrOffsetBackwards
	case fsm.OffsetBeyond:
		refused = ErrOffsetBeyond
	case fsm.OffsetUnknown:
		refused = ErrConsumerNotFound
	case fsm.OffsetTooMany:
		refused = ErrTooManyConsumers
	default:
		return off, fmt.Errorf("shard %d: consumer %s: unknown offset result %d", i, c.Name, or.Result)
	}
	return off, &OffsetError{Shard: i, Name: c.Name, Err: refused, Offset: off}
}

// Offsets reads every consumer's offset on shard i and the applied seq
// they are read at, at the requested consistency (the default asks the
// leader).
func (h *Host) Offsets(ctx context.Context, i int, o ReadOpts) (offs map[string]uint64, applied uint64, err error) {
	err = h.read(ctx, i, o, func(f *fsm.FSM) error {
		offs = f.Offsets()
		_, applied = f.Applied()
		return nil
	})
	return offs, applied, err
}
