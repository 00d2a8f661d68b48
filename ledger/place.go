package ledger

import (
	"hash/fnv"
	"strings"
)

// ShardOf returns the shard, in [0, shards), that owns account id: a jump
// consistent hash of the FNV-1a hash of the id, or of the part in braces
// when the id has one ("alice{eu}" and "bob{eu}" live together).
// System accounts exist on every shard; callers route them by the other
// party of a transfer.
func ShardOf(id string, shards int) int {
	if shards <= 1 {
		return 0
	}
	key := id
	if i := strings.IndexByte(id, '{'); i >= 0 {
		if j := strings.IndexByte(id[i+1:], '}'); j > 0 {
			key = id[i+1 : i+1+j]
		}
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	return jump(h.Sum64(), shards)
}

// jump is Lamping and Veach's jump consistent hash.
func jump(key uint64, buckets int) int {
	var b, j int64 = -1, 0
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}

// TransferShard returns the shard that decides transfer t.
func TransferShard(t *Transfer, shards int) int { return ShardOf(Home(t), shards) }
