package node

import (
	"context"
	"errors"
	"net/http"

	"tally/cluster"
	"tally/edge"
	"tally/shard"
)

// Problem maps an error of the service to its answer: an *edge.Error
// passes as it is; a definite failure is 503, a possible commit 504; any
// other error is a 500 (reported is true then, so the caller logs it).
func Problem(err error) (e *edge.Error, reported bool) {
	var ee *edge.Error
	var nl *shard.NotLeaderError
	switch {
	case errors.As(err, &ee):
		return ee, false
	case errors.As(err, &nl):
		e := edge.Unavailable("%s", err.Error())
		e.LeaderHTTP = nl.LeaderHTTP
		return e, false
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		return edge.OutcomeUnknown("%s", err.Error()), false
	case errors.Is(err, cluster.ErrUnavailable), errors.Is(err, cluster.ErrNotLeader),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return edge.Unavailable("%s", err.Error()), false
	case errors.Is(err, shard.ErrNotSaga):
		return edge.Errorf(http.StatusConflict, edge.CodeNotInFlight, "%s", err.Error()), false
	case errors.Is(err, shard.ErrFuture):
		return edge.Invalid("%s", err.Error()), false
	case errors.Is(err, shard.ErrNoShard):
		return edge.NotFound(edge.CodeShardNotFound, "%s", err.Error()), false
	}
	return edge.Internal("%s", err.Error()), true
}

// notFoundAs turns a read of what does not exist into its 404 answer.
func notFoundAs(err error, code, format string, args ...any) error {
	if errors.Is(err, shard.ErrNotFound) {
		return edge.NotFound(code, format, args...)
	}
	return err
}
