package wire

// ConsumerShard is a named consumer's position on one shard: its offset
// (the seq up to which it has processed the shard's events; 0 when it
// has none stored there), the shard's applied seq, and how far behind it
// is.
type ConsumerShard struct {
	Shard      int    `json:"shard"`
	Seq        uint64 `json:"seq"`
	AppliedSeq uint64 `json:"applied_seq"`
	Lag        uint64 `json:"lag"`
}

// Consumer is the answer to GET /v1/consumers/{name} and POST
// /v1/consumers/{name}/reset: the consumer's position on shards, and its
// lag summed over them.
type Consumer struct {
	Name   string          `json:"name"`
	Lag    uint64          `json:"lag"`
	Shards []ConsumerShard `json:"shards"`
}

// Consumers is the answer to GET /v1/consumers, sorted by name.
type Consumers struct {
	Consumers []Consumer `json:"consumers"`
}

// ConsumerOffset is the answer to PUT
// /v1/consumers/{name}/offsets/{shard}.
type ConsumerOffset struct {
	Name string `json:"name"`
	ConsumerShard
}

// OffsetIn is the body of PUT /v1/consumers/{name}/offsets/{shard}. Seq
// is a pointer so that a body without it is refused.
type OffsetIn struct {
	Seq *uint64 `json:"seq"`
}

// ResetIn is the body of POST /v1/consumers/{name}/reset: "start",
// "end", or a list of shard:seq pairs such as "0:42,1:17".
type ResetIn struct {
	To string `json:"to"`
}
