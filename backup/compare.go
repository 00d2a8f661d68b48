package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Diff is how backup b compares with backup a.
type Diff struct {
	// Equal: the same shards and cut, and the same events byte for byte.
	// The header's other fields (creation time, source epoch) may differ.
	Equal bool `json:"equal"`
	// Prefix: every shard's events in a are the first events of that
	// shard in b, byte for byte (b was taken at or after a, of the same
	// history). Equal implies Prefix.
	Prefix bool `json:"prefix"`
	// Extra is, per shard, how many events b has beyond a's.
	Extra []uint64 `json:"extra,omitempty"`
	// Reason says where a is not a prefix of b.
	Reason string `json:"reason,omitempty"`
}

// Compare reads the backups a and b through, checking both (an error
// wraps ErrCorrupt), and says whether b holds a.
func Compare(a, b io.Reader) (Diff, error) {
	ra, err := NewReader(a)
	if err != nil {
		return Diff{}, fmt.Errorf("first: %w", err)
	}
	rb, err := NewReader(b)
	if err != nil {
		return Diff{}, fmt.Errorf("second: %w", err)
	}
	ha, hb := ra.Header(), rb.Header()
	d := Diff{Prefix: true}
	if ha.Shards != hb.Shards {
		d.Prefix, d.Reason = false, fmt.Sprintf("%d shards, then %d", ha.Shards, hb.Shards)
	}
	for i := 0; i < ha.Shards && d.Prefix; i++ {
		ca, cb := ha.Cut[i].Seq, hb.Cut[i].Seq
		if ca > cb {
			d.Prefix, d.Reason = false, fmt.Sprintf("shard %d: cut %d, then %d", i, ca, cb)
			break
		}
		d.Extra = append(d.Extra, cb-ca)
		for seq := uint64(1); seq <= cb; seq++ {
			_, rawB, _, err := rb.Next()
			if err != nil {
				return d, fmt.Errorf("second: %w", noEnd(err))
			}
			if seq > ca {
				continue
			}
			_, rawA, _, err := ra.Next()
			if err != nil {
				return d, fmt.Errorf("first: %w", noEnd(err))
			}
			if !bytes.Equal(rawA, rawB) {
				d.Prefix, d.Reason = false, fmt.Sprintf("shard %d: event %d differs", i, seq)
				break
			}
		}
	}
	// Read both to their ends: a file counts only once its trailer checks.
	for _, r := range []*Reader{ra, rb} {
		for {
			if _, _, _, err := r.Next(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return d, err
			}
		}
	}
	d.Equal = d.Prefix && ra.Summary().Content == rb.Summary().Content
	return d, nil
}

// noEnd reports a file that ends before its cut says it should.
func noEnd(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: fewer events than its cut", ErrCorrupt)
	}
	return err
}
