// Package edge is the HTTP edge that a node's API and the proxy share:
// the error answer and its codes, strict JSON decoding with limits, the
// request deadline, and the table of routes with the query parameters
// each accepts. Both serve the same API (docs/api.md), so everything a
// client can observe before a request reaches the ledger is decided here,
// once.
package edge

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"tally/ledger"
)

// Limits at the edge.
const (
	// MaxBody bounds a request body; a larger one is 413.
	MaxBody = 4 << 20
	// DefaultTimeout is a request's deadline without ?timeout=.
	DefaultTimeout = 10 * time.Second
	// MaxTimeout is the longest ?timeout= accepted; a longer one is a 400,
	// at a node and at the proxy alike.
	MaxTimeout = 60 * time.Second
	// HopHeader counts how often a request was forwarded between nodes.
	HopHeader = "X-Tally-Hops"
	// EpochHeader carries, on every event stream and backup, the answering
	// replica's restore epoch (0: never restored; one more at each restore
	// from a backup): a reader that saw another epoch before knows that
	// the seqs it had are of another history.
	EpochHeader = "Tally-Epoch"
	// MaxHops bounds forwarding between nodes.
	MaxHops = 2
)

// Error codes of docs/api.md.
const (
	CodeInvalid          = "invalid_request"
	CodeTooLarge         = "request_too_large"
	CodeNotFound         = "not_found"
	CodeAccountNotFound  = "account_not_found"
	CodeTransferNotFound = "transfer_not_found"
	CodeShardNotFound    = "shard_not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeNotInFlight      = "not_in_flight"
	CodeConsumerNotFound = "consumer_not_found"
	CodeOffsetBackwards  = "offset_backwards"
	CodeTooManyConsumers = "too_many_consumers"
	CodeNotLeader        = "not_leader"
	CodeUnavailable      = "unavailable"
	CodeOutcomeUnknown   = "outcome_unknown"
	CodeInternal         = "internal"
)

// Error is an error answer, written as {"error": {...}}. It is a value:
// safe to copy, and to share once built.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// LeaderHTTP names the leader of the shard with not_leader and, when
	// known, unavailable.
	LeaderHTTP string `json:"leader_http,omitempty"`
	// Index and Result name the first bad item of a batch and its result
	// code.
	Index  *int   `json:"index,omitempty"`
	Result string `json:"result,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an error answer with a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid is a 400 invalid_request.
func Invalid(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, CodeInvalid, format, args...)
}

// NotFound is a 404 with code.
func NotFound(code, format string, args ...any) *Error {
	return Errorf(http.StatusNotFound, code, format, args...)
}

// Unavailable is a 503: nothing was applied, the client may retry.
func Unavailable(format string, args ...any) *Error {
	return Errorf(http.StatusServiceUnavailable, CodeUnavailable, format, args...)
}

// OutcomeUnknown is a 504: a write may have committed; the client retries
// with the same ids.
func OutcomeUnknown(format string, args ...any) *Error {
	e := Errorf(http.StatusGatewayTimeout, CodeOutcomeUnknown, format, args...)
	e.Message += "; retry with the same ids"
	return e
}

// Internal is a 500.
func Internal(format string, args ...any) *Error {
	return Errorf(http.StatusInternalServerError, CodeInternal, format, args...)
}

// ItemError is a validation failure of item i of the batch list.
func ItemError(list string, i int, p *ledger.Problem) *Error {
	e := Invalid("%s[%d]: %s", list, i, p.Msg)
	e.Index, e.Result = &i, string(p.Code)
	return e
}

// Rank orders the failures of a batch's parts: a possible commit outranks
// a definite failure, which outranks anything else.
func Rank(e *Error) int {
	switch e.Status {
	case http.StatusGatewayTimeout:
		return 3
	case http.StatusServiceUnavailable:
		return 2
	}
	return 1
}

// WriteJSON writes v as the JSON answer with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// An encoding error here means the client has gone; nothing else to
	// tell it.
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes e as the error answer.
func WriteError(w http.ResponseWriter, e *Error) {
	WriteJSON(w, e.Status, envelope{e})
}

type envelope struct {
	Error *Error `json:"error"`
}

// ReadError decodes an error answer that another server sent with status;
// an answer that is not one becomes a 502 internal error quoting it.
func ReadError(status int, body []byte) *Error {
	var env envelope
	if json.Unmarshal(body, &env) != nil || env.Error == nil || env.Error.Code == "" {
		return Errorf(http.StatusBadGateway, CodeInternal, "answered %d: %.200s", status, body)
	}
	env.Error.Status = status
	return env.Error
}

// Relay writes an answer received from another server through unchanged.
func Relay(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// A write error means the client left; there is no one to tell.
	_, _ = w.Write(body)
}
