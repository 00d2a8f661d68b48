package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync/atomic"
	"time"

	"tally/test/jepsen/history"
)

// client is the suite's own small HTTP client of the API (docs/api.md).
// It is deliberately not tally/client: the suite judges the product from
// the outside and must not share its mistakes.
type client struct {
	hc *http.Client
}

func newClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *client {
	tr := &http.Transport{
		DialContext:         dial,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
		// A connection that was cut must not be reused silently.
		ResponseHeaderTimeout: 0,
	}
	return &client{hc: &http.Client{Transport: tr}}
}

// reply is an HTTP answer, or why there was none.
type reply struct {
	Status int
	Body   []byte
	Err    error
	// Sent reports whether the request was written: after that a write
	// may have been applied even without an answer.
	Sent bool
	// Malformed marks a 200 answer that breaks the API contract (Err
	// says how); its request may have been applied.
	Malformed bool
}

// apiError is the error object of an answer.
type apiError struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	LeaderHTTP string `json:"leader_http"`
}

func (r *reply) errCode() string {
	var e struct {
		Error apiError `json:"error"`
	}
	if json.Unmarshal(r.Body, &e) == nil {
		return e.Error.Code
	}
	return ""
}

func (r *reply) String() string {
	if r.Err != nil {
		return r.Err.Error()
	}
	if c := r.errCode(); c != "" {
		return fmt.Sprintf("%d %s", r.Status, c)
	}
	return fmt.Sprintf("%d", r.Status)
}

// do sends one request to base (host:port) with a server-side deadline
// (?timeout=) a little shorter than the client's own.
func (c *client) do(ctx context.Context, method, base, path string, q url.Values, body any, timeout time.Duration) reply {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{Err: err}
		}
		rd = bytes.NewReader(b)
	}
	if q == nil {
		q = url.Values{}
	}
	if timeout > 0 {
		q.Set("timeout", (timeout * 8 / 10).String())
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			wrote.Store(true)
		}
	}}
	u := "http://" + base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, u, rd)
	if err != nil {
		return reply{Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{Err: err, Sent: wrote.Load()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return reply{Status: resp.StatusCode, Err: err, Sent: true}
	}
	return reply{Status: resp.StatusCode, Body: b, Sent: true}
}

// transferResult is one item of POST /v1/transfers.
type transferResult struct {
	ID       string `json:"id"`
	Result   string `json:"result"`
	Status   string `json:"status"`
	Original string `json:"original"`
	Shard    int    `json:"shard"`
	Seq      uint64 `json:"seq"`
}

// postTransfers sends a batch; a 200 answer has one result per transfer,
// in order.
func (c *client) postTransfers(ctx context.Context, base string, ts []history.Transfer, timeout time.Duration) (reply, []transferResult) {
	r := c.do(ctx, http.MethodPost, base, "/v1/transfers", nil, map[string]any{"transfers": ts}, timeout)
	if r.Err != nil || r.Status != http.StatusOK {
		return r, nil
	}
	var res struct {
		Results []transferResult `json:"results"`
	}
	if err := json.Unmarshal(r.Body, &res); err != nil || len(res.Results) != len(ts) {
		r.Err = fmt.Errorf("bad transfers answer: %.200s", r.Body)
		r.Status, r.Malformed = 0, true
		return r, nil
	}
	for i := range ts {
		if res.Results[i].ID != ts[i].ID {
			r.Err = fmt.Errorf("transfers answer out of order: result %d is %s, want %s", i, res.Results[i].ID, ts[i].ID)
			r.Status, r.Malformed = 0, true
			return r, nil
		}
	}
	return r, res.Results
}

// transferView is GET /v1/transfers/{id}.
type transferView struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Result string `json:"result"`
	Shard  int    `json:"shard"`
	Seq    uint64 `json:"seq"`
}

func (c *client) getTransfer(ctx context.Context, base, id string, timeout time.Duration) (reply, *transferView) {
	r := c.do(ctx, http.MethodGet, base, "/v1/transfers/"+url.PathEscape(id), nil, nil, timeout)
	if r.Err != nil || r.Status != http.StatusOK {
		return r, nil
	}
	var v transferView
	if err := json.Unmarshal(r.Body, &v); err != nil {
		r.Err = err
		return r, nil
	}
	return r, &v
}

// accountView is GET /v1/accounts/{id}.
type accountView struct {
	history.Balance
	ID    string `json:"id"`
	Shard int    `json:"shard"`
	Seq   uint64 `json:"seq"`
}

func (c *client) getAccount(ctx context.Context, base, id string, timeout time.Duration) (reply, *accountView) {
	r := c.do(ctx, http.MethodGet, base, "/v1/accounts/"+url.PathEscape(id), nil, nil, timeout)
	if r.Err != nil || r.Status != http.StatusOK {
		return r, nil
	}
	var v accountView
	if err := json.Unmarshal(r.Body, &v); err != nil {
		r.Err = err
		return r, nil
	}
	return r, &v
}

type accountResult struct {
	ID     string `json:"id"`
	Result string `json:"result"`
	Shard  int    `json:"shard"`
	Seq    uint64 `json:"seq"`
}

func (c *client) openAccount(ctx context.Context, base, id, cur string, timeout time.Duration) (reply, *accountResult) {
	body := map[string]any{"accounts": []map[string]any{{"id": id, "currency": cur}}}
	r := c.do(ctx, http.MethodPost, base, "/v1/accounts", nil, body, timeout)
	if r.Err != nil || r.Status != http.StatusOK {
		return r, nil
	}
	var res struct {
		Results []accountResult `json:"results"`
	}
	if err := json.Unmarshal(r.Body, &res); err != nil || len(res.Results) != 1 {
		r.Err = fmt.Errorf("bad accounts answer: %.200s", r.Body)
		return r, nil
	}
	return r, &res.Results[0]
}

func (c *client) getJSON(ctx context.Context, base, path string, q url.Values, timeout time.Duration, v any) error {
	r := c.do(ctx, http.MethodGet, base, path, q, nil, timeout)
	if r.Err != nil {
		return r.Err
	}
	if r.Status != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, r.String())
	}
	return json.Unmarshal(r.Body, v)
}

func (c *client) healthy(ctx context.Context, base string) bool {
	r := c.do(ctx, http.MethodGet, base, "/healthz", nil, nil, time.Second)
	return r.Err == nil && r.Status == http.StatusOK
}

func (c *client) close() {
	c.hc.CloseIdleConnections()
}
