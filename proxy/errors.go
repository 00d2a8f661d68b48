package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"tally/ledger"
)

// Error codes of docs/api.md that the proxy itself answers or reads.
const (
	codeInvalid     = "invalid_request"
	codeTooLarge    = "request_too_large"
	codeNotLeader   = "not_leader"
	codeUnavailable = "unavailable"
	codeUnknown     = "outcome_unknown"
)

// apiError is the "error" object of an error answer.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Index and Result name the first bad item of a batch.
	Index  *int        `json:"index,omitempty"`
	Result ledger.Code `json:"result,omitempty"`
}

// nodeError is what the proxy reads from a node's error answer.
type nodeError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		LeaderHTTP string `json:"leader_http"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, format string, args ...any) {
	writeAPIError(w, status, apiError{Code: code, Message: fmt.Sprintf(format, args...)})
}

func writeAPIError(w http.ResponseWriter, status int, e apiError) {
	writeJSON(w, status, struct {
		Error apiError `json:"error"`
	}{e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the proxy's own plain structs reach here; they always marshal.
		panic(fmt.Sprintf("proxy: marshal answer: %v", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// A write error means the client left; there is no one to tell.
	_, _ = w.Write(append(b, '\n'))
}

// itemError is a validation failure of item index of a batch.
func itemError(list string, index int, p *ledger.Problem) apiError {
	return apiError{
		Code:    codeInvalid,
		Message: fmt.Sprintf("%s[%d]: %s", list, index, p.Msg),
		Index:   &index,
		Result:  p.Code,
	}
}

// requestTimeout reads ?timeout=: a positive Go duration, DefaultTimeout
// when absent, capped at MaxTimeout (a longer wait is not an error, it is
// just not granted).
func requestTimeout(q url.Values) (time.Duration, error) {
	s := q.Get("timeout")
	if s == "" {
		return DefaultTimeout, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("timeout %q must be a positive duration such as 10s", s)
	}
	return min(d, MaxTimeout), nil
}

// nodeTimeout is the ?timeout= the proxy passes to a node when remaining
// is left of the request's deadline: a little less, so that the node's own
// answer (503, 504, in_flight) arrives before the proxy must give up.
func nodeTimeout(remaining time.Duration) time.Duration {
	margin := min(max(remaining/20, 10*time.Millisecond), 250*time.Millisecond)
	d := (remaining - margin).Truncate(time.Millisecond)
	if d < time.Millisecond {
		return 0
	}
	return d
}
