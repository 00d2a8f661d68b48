package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"tally/edge"
)

// Error is an error answer of the API: {"error": {"code": ..., "message": ...}}
// with its HTTP status.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the stable error code (invalid_request, account_not_found,
	// unavailable, outcome_unknown, ...). When the body was not the API's
	// JSON (a load balancer's page, for example) it is derived from Status.
	Code    string
	Message string
	// LeaderHTTP names the shard leader's HTTP address on 421 not_leader.
	LeaderHTTP string
	// Index is the position of the first bad item of a batch, or -1 when
	// the error names no item.
	Index int
	// Result is the first bad item's result code, if any.
	Result string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Code)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.LeaderHTTP != "" {
		b.WriteString(" (leader ")
		b.WriteString(e.LeaderHTTP)
		b.WriteString(")")
	}
	fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	return b.String()
}

// transportError is a failure to get any answer: the connection could not
// be made, or it broke or timed out before the answer arrived.
type transportError struct {
	op  string // "POST /v1/transfers"
	err error
	// sent is true when the request may have reached the server, so its
	// outcome is unknown.
	sent bool
}

func (e *transportError) Error() string {
	if e.sent {
		return e.op + ": " + e.err.Error() + " (the request may have been applied)"
	}
	return e.op + ": " + e.err.Error()
}
func (e *transportError) Unwrap() error { return e.err }

// IsUnavailable reports whether err says the request was not applied and
// may be retried: a 503 answer, or a connection error before the request
// was sent.
func IsUnavailable(err error) bool {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Status == http.StatusServiceUnavailable
	}
	if e, ok := errors.AsType[*transportError](err); ok {
		return !e.sent
	}
	return false
}

// IsOutcomeUnknown reports whether err says the write may or may not have
// been applied: a 504 answer, or a timeout or broken connection after the
// request was sent. Retrying with the same transfer ids is safe.
func IsOutcomeUnknown(err error) bool {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Status == http.StatusGatewayTimeout
	}
	if e, ok := errors.AsType[*transportError](err); ok {
		return e.sent
	}
	return false
}

// IsNotFound reports whether err is a 404 answer (account_not_found,
// transfer_not_found, shard_not_found, not_found).
func IsNotFound(err error) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && e.Status == http.StatusNotFound
}

// isDialError reports whether err happened while connecting, before any
// byte of the request could be written.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// decodeError turns a non-2xx answer into an *Error. The answer is read
// as the edge writes it; a body that is not the API's error JSON still
// gives a useful message.
// fromEdge is the client's view of an error answer with status.
func fromEdge(status int, x *edge.Error) *Error {
	e := &Error{Status: status, Code: x.Code, Message: x.Message, LeaderHTTP: x.LeaderHTTP, Result: x.Result, Index: -1}
	if x.Index != nil {
		e.Index = *x.Index
	}
	return e
}

func decodeError(status int, body []byte) *Error {
	var env struct {
		Error *edge.Error `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error != nil && env.Error.Code != "" {
		return fromEdge(status, env.Error)
	}
	e := &Error{Status: status, Index: -1}
	e.Code = codeOfStatus(status)
	e.Message = strings.TrimSpace(string(body))
	if len(e.Message) > 200 {
		e.Message = e.Message[:200] + "..."
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// codeOfStatus names the API code a status stands for when the body does
// not say.
func codeOfStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return edge.CodeInvalid
	case http.StatusNotFound:
		return edge.CodeNotFound
	case http.StatusMethodNotAllowed:
		return edge.CodeMethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		return edge.CodeTooLarge
	case http.StatusMisdirectedRequest:
		return edge.CodeNotLeader
	case http.StatusServiceUnavailable:
		return edge.CodeUnavailable
	case http.StatusGatewayTimeout:
		return edge.CodeOutcomeUnknown
	}
	return fmt.Sprintf("http_%d", status)
}
