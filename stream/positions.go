package stream

import (
	"fmt"
	"strconv"
	"strings"
)

// ParsePairs reads a list of shard:seq pairs, "0:42,1:17", for a cluster
// of shards shards (any shard number when shards is 0): the seq of each
// shard listed. A shard listed twice or out of range, or a part that is
// not two unsigned decimal numbers, is an error.
func ParsePairs(s string, shards int) (map[int]uint64, error) {
	out := map[int]uint64{}
	for _, pair := range strings.Split(s, ",") {
		sh, seq, ok := strings.Cut(strings.TrimSpace(pair), ":")
		i, err1 := strconv.Atoi(sh)
		n, err2 := strconv.ParseUint(seq, 10, 64)
		switch {
		case !ok || err1 != nil || err2 != nil || strings.HasPrefix(sh, "+"):
			return nil, fmt.Errorf("%q is not shard:seq", pair)
		case i < 0 || (shards > 0 && i >= shards):
			return nil, fmt.Errorf("%q: shard must be 0 to %d", pair, shards-1)
		}
		if _, dup := out[i]; dup {
			return nil, fmt.Errorf("shard %d is listed twice", i)
		}
		out[i] = n
	}
	return out, nil
}

// ParsePositions reads shard:seq pairs as ParsePairs does, into every
// shard's position: the seq after which its stream starts, 0 for a shard
// not listed (or for all, when s is empty).
func ParsePositions(s string, shards int) ([]uint64, error) {
	pos := make([]uint64, shards)
	if s == "" {
		return pos, nil
	}
	pairs, err := ParsePairs(s, shards)
	if err != nil {
		return nil, err
	}
	for i, n := range pairs {
		pos[i] = n
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
