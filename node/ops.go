package node

import (
	"context"
	"strconv"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
)

// The operations that one node asks of another (Peer.Call), each served
// by the same Service method that a client's request reaches, so that a
// forwarded request is answered exactly as a local one.
const (
	opAccount        = "account"
	opTransfer       = "transfer"
	opHistory        = "history"
	opSagas          = "sagas"
	opAudit          = "audit"
	opResolve        = "resolve"
	opMember         = "member"
	opLocal          = "local"
	opLeaderTransfer = "transfer-leader"
	opOffsets        = "consumer-offsets"
	opOffset         = "consumer-offset"
)

// reads are the operations that change nothing: a failure after sending
// one is a definite 503, never a 504.
var reads = map[string]bool{opAccount: true, opTransfer: true, opHistory: true, opSagas: true,
	opAudit: true, opLocal: true, opOffsets: true, opApplied: true}

// op serves one operation for another node, from its arguments.
type op func(ctx context.Context, q string, body []byte) (any, error)

func (s *Service) operations() map[string]op {
	return map[string]op{
		opCommands:       s.commandsOp,
		opAccount:        jsonOp(s.Account),
		opTransfer:       jsonOp(s.transferOn),
		opHistory:        jsonOp(s.History),
		opSagas:          jsonOp(s.sagasOn),
		opAudit:          jsonOp(s.auditOn),
		opResolve:        jsonOp(s.resolveOn),
		opMember:         jsonOp(s.memberOn),
		opLeaderTransfer: jsonOp(s.leaderTransferOn),
		opOffsets:        jsonOp(s.offsetsOn),
		opOffset:         jsonOp(s.offsetOn),
		opApplied:        jsonOp(s.appliedOn),
		opHoldSagas:      jsonOp(s.holdOn),
		opReleaseSagas:   jsonOp(s.releaseOn),
		opLocal:          func(context.Context, string, []byte) (any, error) { return s.Local(), nil },
	}
}

// jsonOp serves fn with its arguments decoded strictly from JSON.
func jsonOp[In, Out any](fn func(ctx context.Context, in In) (Out, error)) op {
	return func(ctx context.Context, _ string, body []byte) (any, error) {
		var in In
		if e := edge.DecodeBytes(body, &in); e != nil {
			return nil, e
		}
		return fn(ctx, in)
	}
}

// Internal serves operation op that another node called (Peer), with the
// shard query parameter shardQ and the request's body. The answer is
// encoded as JSON by the caller.
func (s *Service) Internal(ctx context.Context, name, shardQ string, body []byte) (any, error) {
	fn, ok := s.ops[name]
	if !ok {
		return nil, edge.NotFound(edge.CodeNotFound, "no internal operation %q", name)
	}
	return fn(ctx, shardQ, body)
}

// commandsOp takes one encoded client or saga command for shard q. The
// kinds that only a shard's own leader proposes (a saga's resolution) are
// refused.
func (s *Service) commandsOp(ctx context.Context, q string, body []byte) (any, error) {
	i, err := strconv.Atoi(q)
	if err != nil {
		return nil, edge.Invalid("shard must be a shard number, not %q", q)
	}
	if err := s.checkShard(i); err != nil {
		return nil, err
	}
	e, err := ledger.DecodeEntry(body)
	if err != nil || len(e.Commands) != 1 {
		return nil, edge.Invalid("want one encoded command (%v)", err)
	}
	cmd := e.Commands[0]
	switch cmd.Kind {
	case ledger.CmdOpenAccounts, ledger.CmdCloseAccount, ledger.CmdTransfers, ledger.CmdSagaCredit, ledger.CmdSagaFence:
	default:
		return nil, edge.Invalid("command kind %d is not taken from other nodes", cmd.Kind)
	}
	res, err := s.Submit(ctx, i, cmd)
	if err != nil {
		return nil, err
	}
	if cmd.Kind == ledger.CmdTransfers {
		// This node leads the shard, so it is the one that can wait for the
		// sagas the transfers started, as it would for its own client.
		s.settle(ctx, res)
	}
	return wire.Results{Results: res}, nil
}
