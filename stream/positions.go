package stream

import (
	"fmt"
	"strconv"
	"strings"
)

// ParsePositions reads a list of shard:seq pairs, "0:42,1:17", for a
// cluster of shards shards: the seq after which each shard's stream
// starts. Shards not listed start from 0; a shard listed twice, out of
// range, or a seq that is not a non-negative integer is an error.
func ParsePositions(s string, shards int) ([]uint64, error) {
	pos := make([]uint64, shards)
	if s == "" {
		return pos, nil
	}
	seen := make([]bool, shards)
	for _, pair := range strings.Split(s, ",") {
		sh, seq, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok {
			return nil, fmt.Errorf("%q is not shard:seq", pair)
		}
		i, err := strconv.Atoi(sh)
		if err != nil || i < 0 || i >= shards {
			return nil, fmt.Errorf("%q: shard must be 0 to %d", pair, shards-1)
		}
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q: seq must be a non-negative integer", pair)
		}
		if seen[i] {
			return nil, fmt.Errorf("shard %d is listed twice", i)
		}
		seen[i], pos[i] = true, n
	}
	return pos, nil
}

// FormatPositions writes every shard's position as ParsePositions reads it.
func FormatPositions(pos []uint64) string {
	var b strings.Builder
	for i, p := range pos {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(i))
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(p, 10))
	}
	return b.String()
}
