// Package proxy is `tally proxy`: the one address clients talk to. It keeps
// a map of every shard's leader and sends each request straight to the
// node that can answer it, so a write costs one hop instead of a
// follower's forward.
//
// # The edge
//
// The proxy serves the same API as a node (docs/api.md) and refuses what a
// node refuses, with the same answer, through the same code (package
// edge): an unknown route is 404 not_found, a known path with another
// method 405 method_not_allowed with Allow, a query parameter the route
// does not take 400 invalid_request naming it, and a ?timeout= that is not
// a duration up to edge.MaxTimeout 400 invalid_request. Error answers are
// edge.Error values. /v1/internal/... (saga steps between nodes) is 404:
// it is never taken from clients.
//
// # Leader map
//
// The map comes from GET /v1/cluster on the known nodes (asked in
// parallel; the first answer that names a leader for every shard wins).
// The shard count is the number of shards listed there. The map is
// refreshed every RefreshInterval and at once after a routing failure;
// concurrent refreshes are coalesced into one round of requests.
//
// # Routing
//
//   - POST /v1/accounts: the accounts are split by ledger.ShardOf(id).
//   - POST /v1/transfers: the transfers are split by ledger.TransferShard.
//   - GET /v1/accounts/{id}, GET /v1/accounts/{id}/history and
//     POST /v1/accounts/{id}/close: the leader of ledger.ShardOf(id).
//   - Everything else (GET /v1/transfers/{id}, /v1/cluster, /v1/shards/...,
//     /metrics, /debug/pprof/..., system accounts such as @world) goes to
//     any healthy node, which fans out or forwards itself. /healthz and
//     /readyz are answered by the proxy: /readyz is 200 once every shard
//     has a known leader.
//
// Routed writes carry ?forward=false, so a node that lost leadership
// answers 421 not_leader with the new leader's address instead of
// forwarding. Every routed request carries ?timeout= set to what remains of
// the request's deadline less a small margin, so the node gives its own
// answer (503 or 504) before the proxy has to give up.
//
// # Retries
//
// On 421 (using its leader_http hint), 503, 504, or a connection error the
// proxy refreshes the map and tries again, up to MaxAttempts times within
// the request deadline, with a small exponential backoff. Retrying a write
// is safe because account and transfer ids are idempotency keys: a part
// that was already applied answers exists. When the attempts or the
// deadline run out the answer is
//
//   - 504 outcome_unknown if any attempt of a write may have reached a
//     node (a 504, or a connection lost or timed out after the request was
//     written): the write may or may not have committed;
//   - 503 unavailable otherwise (no leader reached, nothing applied), and
//     always for reads, which have no outcome to be unsure of.
//
// The deadline is ?timeout= (a Go duration, default edge.DefaultTimeout,
// at most edge.MaxTimeout). The proxy answers when it passes; it never
// hangs. For a request any node can answer, the deadline bounds the wait
// for the answer to start; a long answer (a profile, a verify) is then
// passed through, flushed as it arrives, until it ends.
//
// # Batches
//
// A batch is validated whole before anything is sent: JSON shape with
// unknown fields rejected, body at most edge.MaxBody (else 413
// request_too_large), 1 to ledger.MaxBatch items, every item through
// ledger.CheckAccount or ledger.CheckTransfer, ledger.CheckChains, and every
// linked chain on one shard. So a request with one bad item is rejected
// whole (400 invalid_request naming the item's index and result code) and
// no part of it is applied.
//
// A valid batch is split per shard; the parts are sent concurrently and
// the results are merged back in request order. A batch that lives on one
// shard is forwarded as the client sent it and the node's answer is
// streamed back unchanged.
//
// Partially successful batches: each shard's part commits on its own, so
// a mixed batch can end with some parts applied and others not. The proxy
// never answers 200 unless every part answered 200, because a 200 with
// holes would invite the client to drop the failed items. Instead:
//
//   - every part 200: 200 with all results in request order;
//   - a part answered a definite client error (4xx other than 421, which
//     validation at the proxy should make impossible): that answer, since
//     retrying would fail the same way;
//   - otherwise, if some part was applied or may have been: 504
//     outcome_unknown, naming the failed shards. The client must retry the
//     whole batch with the same ids; the applied parts answer exists.
//   - otherwise (every failed part definitely not applied and no part
//     applied): 503 unavailable.
//
// 503 is kept for "nothing was applied", as docs/api.md promises, and 504
// covers every case where some of the batch may be in the ledger.
//
// # Coalescing
//
// Concurrent POST /v1/transfers requests whose transfers all live on the
// same shard go to its leader together: while a request for a shard is in
// flight (maxInFlight), the next ones for that shard wait in its lane, and
// when it ends they go as one node request, in the order they came, up to
// ledger.MaxBatch transfers and edge.MaxBody bytes. There is no timer:
// the batch is whatever came during the last round trip. The rules:
//
//   - Each request is validated on its own first, as above, so one
//     client's bad item fails only its own request (400), at once.
//   - A request's transfers stay contiguous and in its order in the
//     merged batch. Each client's last transfer is not linked, so a chain
//     never runs into another client's items and stays whole.
//   - Each client gets the node's results for its own items, in its
//     order, in the node's encoding ({"results":[...]} and a newline). A
//     request that goes alone (the lane was idle, or nothing else came
//     meanwhile) is passed through as the client sent it, and its answer
//     is the node's, byte for byte, as without coalescing.
//   - A merged request is retried like any routed write (see Retries): a
//     write that may have been applied is only ever sent again with the
//     same ids. If it ends without a final answer, every client in it gets
//     what its own request would have got: 504 outcome_unknown if any
//     attempt may have been applied, else 503 unavailable. A final answer
//     other than 200 and 4xx (a 500) is passed to each client. A 4xx
//     should not happen (each part passed the node's own checks) and
//     means nothing was applied: each client's request is then sent on
//     its own, so that each gets its own answer.
//   - A client's deadline bounds its wait. One whose deadline passes
//     while it waits to be sent gets 503 and is never sent. Requests are
//     merged only if their deadlines are at most mergeSlack apart, and the
//     merged request runs to the earliest of them, so a client may get its
//     answer (a 503, a 504, a saga still in_flight) up to mergeSlack early,
//     never late. One whose deadline passes while the merged request is in
//     flight gets 504 (503 if no attempt of it may have been applied).
//   - Two clients may send the same transfer id together. The ledger
//     decides a batch's transfers in order and sees the ones decided
//     before in the same batch (ledger.State keeps them in its records
//     until Flush), so the second answers exists, as it would if the two
//     requests had been sent one after the other; such requests are
//     merged like any others.
//   - A request of more than coalesceMax transfers already spreads a
//     request's cost and goes at once, as the client sent it. Multi-shard
//     requests keep the split and merge above and are not coalesced.
//
// A merged request is sent by the handler of its first client, which
// waits for it anyway; it is not cancelled when that client leaves, since
// the others still wait for it, and it ends when the proxy is closed.
package proxy
