package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"

	"github.com/dgraph-io/badger/v4"
)

// Named consumers keep their offsets in the cluster: a consumer's offset
// for shard S is the seq of S's log up to which it has processed events,
// stored in S's own Raft group (entries of KindConsumers), so it is
// replicated with the events it points into and survives the loss of a
// leader. Offsets are not ledger events: they are not in the hash chain
// and do not move the shard's seq.

// Limits of the consumers kind. Both are checked when an entry is decoded
// or applied, so every replica refuses the same entries.
const (
	// MaxConsumerName bounds a consumer's name in bytes.
	MaxConsumerName = 64
	// MaxConsumers bounds the consumers that one shard keeps offsets for;
	// a set or reset that would add one more is refused.
	MaxConsumers = 1024
)

var preConsumer = []byte("c:")

// consumerKind is the consumers' offsets, one key per consumer.
var consumerKind = &kind{
	code:     KindConsumers,
	name:     "consumers",
	prefixes: [][]byte{preConsumer},
	apply:    (*FSM).applyOffset,
	load:     (*FSM).loadOffsets,
}

// OffsetOp is what an offset entry does to one consumer's offset.
type OffsetOp byte

// The offset operations; their values are written in Raft logs.
const (
	// OffsetSet moves the offset forwards (or keeps it); going backwards
	// is refused with OffsetBackwards. It creates the consumer.
	OffsetSet OffsetOp = 1
	// OffsetReset sets the offset to any seq up to the applied one,
	// backwards included. It creates the consumer.
	OffsetReset OffsetOp = 2
	// OffsetResetEnd sets the offset to the shard's applied seq at the
	// moment the entry is applied, which every replica knows alike.
	OffsetResetEnd OffsetOp = 3
	// OffsetDelete forgets the consumer's offset.
	OffsetDelete OffsetOp = 4
)

// OffsetChange is one offset entry's payload.
type OffsetChange struct {
	Op   OffsetOp
	Name string
	Seq  uint64 // OffsetSet and OffsetReset only; 0 otherwise
}

// OffsetResult is how an offset entry was applied.
type OffsetResult byte

// The results of an offset entry, in the order they are checked.
const (
	OffsetOK        OffsetResult = iota
	OffsetUnknown                // delete: the consumer has no offset on this shard
	OffsetBeyond                 // the seq is beyond the shard's applied seq
	OffsetBackwards              // set: the seq is lower than the stored one
	OffsetTooMany                // the shard already keeps MaxConsumers offsets
)

// OffsetResponse is what ApplyBatch returns for an offset entry.
type OffsetResponse struct {
	Result OffsetResult
	// Seq is the consumer's offset after the entry: the new one, or, when
	// refused, the stored one (0 for a consumer without one).
	Seq uint64
	// Applied is the shard's applied seq when the entry was applied.
	Applied uint64
}

// ValidConsumerName reports whether s can name a consumer: 1 to
// MaxConsumerName bytes of [A-Za-z0-9._-].
func ValidConsumerName(s string) bool {
	if len(s) == 0 || len(s) > MaxConsumerName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// EncodeOffset returns the log entry of change c: op u8, the name as a
// uvarint-length string, seq uvarint.
func EncodeOffset(c OffsetChange) []byte {
	b := make([]byte, 0, 3+2*binary.MaxVarintLen64+len(c.Name))
	b = append(AppendHeader(b, KindConsumers), byte(c.Op))
	b = binary.AppendUvarint(b, uint64(len(c.Name)))
	b = append(b, c.Name...)
	return binary.AppendUvarint(b, c.Seq)
}

var errOffsetEntry = errors.New("bad consumer entry")

// decodeOffset decodes an offset entry's payload. Anything EncodeOffset
// would not write for a valid change is refused.
func decodeOffset(p []byte) (OffsetChange, error) {
	if len(p) == 0 {
		return OffsetChange{}, errOffsetEntry
	}
	c := OffsetChange{Op: OffsetOp(p[0])}
	p = p[1:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > MaxConsumerName || n > uint64(len(p)-k) {
		return OffsetChange{}, errOffsetEntry
	}
	c.Name = string(p[k : k+int(n)])
	p = p[k+int(n):]
	seq, k := binary.Uvarint(p)
	if k <= 0 || k != len(p) || !ValidConsumerName(c.Name) {
		return OffsetChange{}, errOffsetEntry
	}
	c.Seq = seq
	switch c.Op {
	case OffsetSet, OffsetReset:
	case OffsetResetEnd, OffsetDelete:
		if seq != 0 {
			return OffsetChange{}, errOffsetEntry
		}
	default:
		return OffsetChange{}, errOffsetEntry
	}
	return c, nil
}

// applyOffset applies one offset entry against the ledger's applied seq,
// which every replica has alike at this entry. A refused change writes
// nothing and is answered in the response.
func (f *FSM) applyOffset(_ uint64, payload []byte) (any, []kv, error) {
	c, err := decodeOffset(payload)
	if err != nil {
		return nil, nil, err
	}
	applied := f.st.Seq
	f.offMu.Lock()
	defer f.offMu.Unlock()
	cur, ok := f.offsets[c.Name]
	resp := &OffsetResponse{Seq: cur, Applied: applied}
	k := key(preConsumer, c.Name)
	if c.Op == OffsetDelete {
		if !ok {
			resp.Result = OffsetUnknown
			return resp, nil, nil
		}
		delete(f.offsets, c.Name)
		return resp, []kv{{k: k, del: true}}, nil
	}
	seq := c.Seq
	if c.Op == OffsetResetEnd {
		seq = applied
	}
	switch {
	case seq > applied:
		resp.Result = OffsetBeyond
	case c.Op == OffsetSet && ok && seq < cur:
		resp.Result = OffsetBackwards
	case !ok && len(f.offsets) >= MaxConsumers:
		resp.Result = OffsetTooMany
	}
	if resp.Result != OffsetOK {
		return resp, nil, nil
	}
	f.offsets[c.Name] = seq
	resp.Seq = seq
	return resp, []kv{{k: k, v: binary.BigEndian.AppendUint64(nil, seq)}}, nil
}

// Offsets returns a copy of every consumer's offset on this shard.
func (f *FSM) Offsets() map[string]uint64 {
	f.offMu.Lock()
	defer f.offMu.Unlock()
	return maps.Clone(f.offsets)
}

// loadOffsets reads the consumers' offsets from db.
func (f *FSM) loadOffsets(db *badger.DB) (func(), error) {
	offs := map[string]uint64{}
	err := db.View(func(txn *badger.Txn) error {
		return eachValue(txn, preConsumer, func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("offset %q: %d bytes, want 8", k, len(v))
			}
			offs[string(k[len(preConsumer):])] = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: load consumer offsets: %w", err)
	}
	return func() {
		f.offMu.Lock()
		f.offsets = offs
		f.offMu.Unlock()
	}, nil
}
