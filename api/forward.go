package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"tally/shard"
)

// leaderWait is how long a node waits between looks for a shard's leader
// while an election runs.
const leaderWait = 50 * time.Millisecond

// next decides what to do after a local attempt on a shard failed with
// err: forward to the leader (addr), try again locally (retry, after a
// short wait for an election), or give up with an answer.
func (s *Server) next(ctx context.Context, r *http.Request, err error) (addr string, retry bool, ae *apiError) {
	var nl *shard.NotLeaderError
	if !errors.As(err, &nl) {
		return "", false, s.toAPI(err)
	}
	if r.URL.Query().Get("forward") == "false" {
		return "", false, &apiError{Status: http.StatusMisdirectedRequest, Code: "not_leader",
			Message: nl.Error(), LeaderHTTP: nl.LeaderHTTP}
	}
	if nl.LeaderHTTP != "" && nl.LeaderID != s.h.NodeID() {
		if hops(r) >= maxHops {
			return "", false, &apiError{Status: 503, Code: "unavailable", Message: "too many forwarding hops: " + nl.Error()}
		}
		return nl.LeaderHTTP, false, nil
	}
	select {
	case <-ctx.Done():
		return "", false, &apiError{Status: 503, Code: "unavailable", Message: fmt.Sprintf("shard %d: no leader within the deadline", nl.Shard)}
	case <-time.After(leaderWait):
		return "", true, nil
	}
}

func hops(r *http.Request) int {
	n, _ := strconv.Atoi(r.Header.Get(hopHeader))
	return n
}

// forward sends r (with body instead of r's own body) to the node at addr
// and returns its answer. The forwarded request carries the remaining
// deadline and one more hop. An error that happened before the request
// could have been sent is a definite 503; after that, 504.
func (s *Server) forward(ctx context.Context, r *http.Request, addr string, body []byte) (int, []byte, *apiError) {
	q := r.URL.Query()
	if d, ok := ctx.Deadline(); ok {
		rem := time.Until(d) - 50*time.Millisecond
		if rem <= 0 {
			return 0, nil, &apiError{Status: 503, Code: "unavailable", Message: "deadline passed before forwarding"}
		}
		q.Set("timeout", rem.String())
	}
	u := "http://" + addr + r.URL.Path + "?" + q.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u, rd)
	if err != nil {
		return 0, nil, &apiError{Status: 500, Code: "internal", Message: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(hopHeader, strconv.Itoa(hops(r)+1))
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, nil, forwardError(addr, err, body != nil)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, forwardError(addr, err, body != nil)
	}
	return resp.StatusCode, b, nil
}

func forwardError(addr string, err error, write bool) *apiError {
	var op *net.OpError
	if !write || (errors.As(err, &op) && op.Op == "dial") {
		return &apiError{Status: 503, Code: "unavailable", Message: fmt.Sprintf("leader %s: %v", addr, err)}
	}
	return &apiError{Status: 504, Code: "outcome_unknown", Message: fmt.Sprintf("leader %s: %v; retry with the same ids", addr, err)}
}

// relay writes a forwarded answer through unchanged.
func relay(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// errorOf decodes a forwarded error answer.
func errorOf(status int, body []byte) *apiError {
	var env struct {
		Error *apiError `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || env.Error == nil {
		return &apiError{Status: 502, Code: "internal", Message: fmt.Sprintf("leader answered %d: %.200s", status, body)}
	}
	env.Error.Status = status
	return env.Error
}

// read runs a read on shard i here when this node can serve it, or relays
// it to the leader. fn writes the answer itself.
func (s *Server) read(w http.ResponseWriter, r *http.Request, i int, fn func() error) {
	ctx := r.Context()
	for {
		err := fn()
		if err == nil {
			return
		}
		addr, retry, ae := s.next(ctx, r, err)
		switch {
		case ae != nil:
			writeError(w, ae)
			return
		case retry:
			continue
		}
		status, body, ae := s.forward(ctx, r, addr, nil)
		if ae != nil {
			writeError(w, ae)
			return
		}
		relay(w, status, body)
		return
	}
}
