package client

import (
	"time"

	"tally/api/wire"
)

// Consistency levels of a read (docs/api.md, "Accounts").
const (
	Linearizable = "linearizable"
	Stale        = "stale"
)

// ReadOpts says how an account read is served. The zero value is a
// linearizable read of the sum over all shards (for @world).
type ReadOpts struct {
	// Consistency is Linearizable (the default when empty) or Stale.
	Consistency string
	// MinSeq makes a replica wait until it has applied this seq of the
	// account's shard (read-your-writes without going to the leader).
	MinSeq uint64
	// AtSeq asks for the balance right after this seq (time travel).
	AtSeq uint64
	// AtTime, when not zero, asks for the balance right after the last
	// event of the account's shard at or before this time; it excludes
	// AtSeq.
	AtTime time.Time
	// Currency selects the currency of a system account such as @world.
	Currency string
	// Shard selects one shard of a system account; nil means the sum over
	// every shard.
	Shard *int
}

// The API's answers are declared once, in tally/api/wire, for the server
// that encodes them and the clients that decode them; these are their
// names in this package.
type (
	// AccountView is the answer to GET /v1/accounts/{id}.
	AccountView = wire.Account
	// TransferView is the answer to GET /v1/transfers/{id}.
	TransferView = wire.Transfer
	// SagaState is a cross-shard transfer's progress on its source shard.
	SagaState = wire.SagaState
	// Saga is one entry of GET /v1/sagas.
	Saga = wire.Saga
	// EventPage is a page of events from an account's history or a
	// shard's log.
	EventPage = wire.Page
	// ClusterStatus is the answer to GET /v1/cluster.
	ClusterStatus = wire.Cluster
	// ShardInfo is one shard's Raft group as a node sees it.
	ShardInfo = wire.Shard
	// Replica is one member of a shard's Raft group.
	Replica = wire.Replica
	// Node is one tally server process.
	Node = wire.Node
	// ShardState is the answer to GET /v1/shards/{n}/state: one replica's
	// view of its shard.
	ShardState = wire.ShardState
	// VerifyReport is the answer to GET /v1/shards/{n}/verify: the outcome
	// of one replica replaying its event log from seq 1.
	VerifyReport = wire.VerifyReport
)

// HistoryOpts pages through an account's history.
type HistoryOpts struct {
	// After is a cursor: the Next of the previous page, or empty.
	After string
	// Limit is the page size; 0 lets the server choose (100).
	Limit int
	// Order is "asc" or "desc"; empty lets the server choose.
	Order string
}
