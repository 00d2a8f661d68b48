// Package client is the Go client of Tally's HTTP API (docs/api.md). The
// CLI, the proxy, the benchmark and the tests all talk to the cluster
// through it.
//
// Errors are an *Error for every answer the API gives with a non-2xx
// status; IsUnavailable, IsOutcomeUnknown and IsNotFound classify errors
// of both kinds (answers and broken connections) for retry decisions.
//
// A Batcher lets many goroutines submit one transfer (or account) each
// and sends what they submit together: calls that arrive while a request
// is in flight leave in the next request, up to ledger.MaxBatch items,
// with no timer on the path, and each call gets its own item's result or
// its request's error. A bad item is refused before it is sent and fails
// only its own call; linked transfers are refused, since a chain must
// travel in one caller's request. Its type documentation is the contract.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"tally/api/wire"
	"tally/ledger"
)

const (
	// maxBody bounds a successful answer; the largest is a page of 1,000
	// events or the results of a batch of 8,190 transfers.
	maxBody = 64 << 20
	// maxServerTimeout is the largest deadline the API accepts.
	maxServerTimeout = 60 * time.Second
	// idleConnsPerHost keeps enough connections open for a closed-loop
	// benchmark with hundreds of workers (net/http keeps only 2 by default,
	// and reconnecting per request would measure TCP, not the ledger).
	idleConnsPerHost = 512
)

// Client talks to one address: a node or the proxy. It is safe for
// concurrent use by many goroutines; every method blocks until the answer
// arrives, ctx ends, or the client's timeout passes.
type Client struct {
	base    string // "http://host:port"
	hc      *http.Client
	timeout time.Duration
	tls     *tls.Config
	auth    string // the Authorization header, if any
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithTimeout bounds every call by d (0: only ctx bounds it). The server is
// given a slightly smaller deadline through the timeout query parameter, so
// it can answer 503 or 504 before the client gives up on it.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithTLS makes the client speak TLS with tc: https for an address without
// a scheme, the server checked against tc's CA (and tc's certificate
// shown, if it has one). It applies to the client's own transport, not to
// one given by WithHTTPClient.
func WithTLS(tc *tls.Config) Option { return func(c *Client) { c.tls = tc } }

// WithToken sends token as the bearer credential of every request (none
// when empty).
func WithToken(token string) Option {
	return func(c *Client) {
		if token != "" {
			c.auth = "Bearer " + token
		}
	}
}

// New returns a client of the node or proxy at addr ("host:port"; an
// "http://" or "https://" prefix is kept).
func New(addr string, opts ...Option) *Client {
	c := &Client{}
	for _, o := range opts {
		o(c)
	}
	base := strings.TrimRight(addr, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		if c.tls != nil {
			base = "https://" + base
		} else {
			base = "http://" + base
		}
	}
	c.base = base
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = idleConnsPerHost
		tr.MaxIdleConnsPerHost = idleConnsPerHost
		tr.TLSClientConfig = c.tls
		c.hc = &http.Client{Transport: tr}
	}
	return c
}

// authorize puts the client's credential on req.
func (c *Client) authorize(req *http.Request) {
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
}

// Addr returns the base URL the client talks to.
func (c *Client) Addr() string { return c.base }

// CreateAccounts creates accounts in one batch and returns one result per
// account, in order. Only ID, Currency, AllowNegative and Metadata are sent.
func (c *Client) CreateAccounts(ctx context.Context, accounts []ledger.Account) ([]ledger.Result, error) {
	in := make([]wire.AccountIn, len(accounts))
	for i, a := range accounts {
		in[i] = wire.AccountIn{ID: a.ID, Currency: a.Currency, AllowNegative: a.AllowNegative, Metadata: a.Metadata}
	}
	var out wire.Results
	err := c.do(ctx, http.MethodPost, "/v1/accounts", nil, wire.AccountsIn{Accounts: in}, &out)
	if err != nil {
		return nil, err
	}
	if len(out.Results) != len(accounts) {
		return out.Results, fmt.Errorf("create accounts: %d results for %d accounts", len(out.Results), len(accounts))
	}
	return out.Results, nil
}

// Account reads one account's balances.
func (c *Client) Account(ctx context.Context, id string, o ReadOpts) (*AccountView, error) {
	q := url.Values{}
	if o.Consistency != "" {
		q.Set("consistency", o.Consistency)
	}
	if o.MinSeq > 0 {
		q.Set("min_seq", strconv.FormatUint(o.MinSeq, 10))
	}
	if o.AtSeq > 0 {
		q.Set("at_seq", strconv.FormatUint(o.AtSeq, 10))
	}
	if !o.AtTime.IsZero() {
		q.Set("at_time", o.AtTime.Format(time.RFC3339Nano))
	}
	if o.Currency != "" {
		q.Set("currency", o.Currency)
	}
	if o.Shard != nil {
		q.Set("shard", strconv.Itoa(*o.Shard))
	}
	var out AccountView
	if err := c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(id), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CloseAccount closes an account: it rejects new transfers from then on.
func (c *Client) CloseAccount(ctx context.Context, id string) (ledger.Result, error) {
	var out ledger.Result
	err := c.do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(id)+"/close", nil, struct{}{}, &out)
	return out, err
}

// CreateTransfers submits transfers in one batch and returns one result per
// transfer, in order. Business rejections are results, not errors.
func (c *Client) CreateTransfers(ctx context.Context, transfers []ledger.Transfer) ([]ledger.Result, error) {
	var out wire.Results
	err := c.do(ctx, http.MethodPost, "/v1/transfers", nil, wire.TransfersIn{Transfers: transfers}, &out)
	if err != nil {
		return nil, err
	}
	if len(out.Results) != len(transfers) {
		return out.Results, fmt.Errorf("create transfers: %d results for %d transfers", len(out.Results), len(transfers))
	}
	return out.Results, nil
}

// Transfer looks a transfer up by id.
func (c *Client) Transfer(ctx context.Context, id string) (*TransferView, error) {
	var out TransferView
	if err := c.do(ctx, http.MethodGet, "/v1/transfers/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// History returns a page of the events that touched an account.
func (c *Client) History(ctx context.Context, account string, o HistoryOpts) (*EventPage, error) {
	q := url.Values{}
	if o.After != "" {
		q.Set("after", o.After)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Order != "" {
		q.Set("order", o.Order)
	}
	var out EventPage
	if err := c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(account)+"/history", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Events returns a page of a shard's log: the events after seq after, at
// most limit of them (0: the server's default).
func (c *Client) Events(ctx context.Context, shard int, after uint64, limit int) (*EventPage, error) {
	var out EventPage
	if err := c.do(ctx, http.MethodGet, shardPath(shard, "events"), eventsQuery(after, limit), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func eventsQuery(after uint64, limit int) url.Values {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return q
}

// Cluster returns the cluster's shards, their leaders and replicas, and
// its nodes.
func (c *Client) Cluster(ctx context.Context) (*ClusterStatus, error) {
	var out ClusterStatus
	if err := c.do(ctx, http.MethodGet, "/v1/cluster", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Join adds node id (Raft at raftAddr, HTTP at httpAddr) to every shard.
func (c *Client) Join(ctx context.Context, id, raftAddr, httpAddr string) error {
	body := map[string]string{"id": id, "raft": raftAddr, "http": httpAddr}
	return c.do(ctx, http.MethodPost, "/v1/cluster/join", nil, body, &wire.OK{})
}

// Leave removes node id from every shard.
func (c *Client) Leave(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/v1/cluster/leave", nil, map[string]string{"id": id}, &wire.OK{})
}

// TransferLeader moves a shard's leadership to node to ("": any other voter).
func (c *Client) TransferLeader(ctx context.Context, shard int, to string) error {
	body := struct {
		Shard int    `json:"shard"`
		To    string `json:"to,omitempty"`
	}{shard, to}
	return c.do(ctx, http.MethodPost, "/v1/cluster/transfer-leader", nil, body, &wire.OK{})
}

// ShardState returns the answering node's view of one shard.
func (c *Client) ShardState(ctx context.Context, shard int) (*ShardState, error) {
	var out ShardState
	if err := c.do(ctx, http.MethodGet, shardPath(shard, "state"), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Verify makes the answering node replay its copy of a shard's event log
// from seq 1 and compare it with its stored state. It can take long on a
// big log; give ctx a deadline to match.
func (c *Client) Verify(ctx context.Context, shard int) (*VerifyReport, error) {
	var out VerifyReport
	if err := c.do(ctx, http.MethodGet, shardPath(shard, "verify"), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// HashAt returns the hash-chain value of a shard right after seq, as the
// answering node has it.
func (c *Client) HashAt(ctx context.Context, shard int, seq uint64) (ledger.Hash, error) {
	var out wire.HashAt
	q := url.Values{"seq": {strconv.FormatUint(seq, 10)}}
	if err := c.do(ctx, http.MethodGet, shardPath(shard, "hash"), q, nil, &out); err != nil {
		return ledger.Hash{}, err
	}
	return out.Hash, nil
}

// Sagas lists sagas by state: "in_flight", "stuck" or "aborted"; shard < 0
// lists every shard's.
func (c *Client) Sagas(ctx context.Context, state string, shard int) ([]Saga, error) {
	q := url.Values{"state": {state}}
	if shard >= 0 {
		q.Set("shard", strconv.Itoa(shard))
	}
	var out wire.Sagas
	if err := c.do(ctx, http.MethodGet, "/v1/sagas", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Sagas, nil
}

// ResolveSaga asks the saga's source shard to give it up: the destination
// is fenced and the saga aborts, or completes if it was already credited.
// The note is kept in the saga's final event.
func (c *Client) ResolveSaga(ctx context.Context, id, note string) error {
	return c.do(ctx, http.MethodPost, "/v1/sagas/"+url.PathEscape(id)+"/resolve", nil, map[string]string{"note": note}, nil)
}

// Audit checks the books of every shard and the saga clearing accounts
// between them.
func (c *Client) Audit(ctx context.Context) (*ledger.AuditReport, error) {
	var out ledger.AuditReport
	if err := c.do(ctx, http.MethodGet, "/v1/audit", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func shardPath(shard int, what string) string {
	return "/v1/shards/" + strconv.Itoa(shard) + "/" + what
}

// do sends one request and decodes a 2xx answer into out (nil: discard).
// The whole answer is read before do returns, so the call's deadline ends
// with it.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	op := method + " " + path
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
		if q == nil {
			q = url.Values{}
		}
		q.Set("timeout", serverTimeout(c.timeout).String())
	}
	resp, err := c.roundTrip(ctx, op, method, path, q, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody)) // a cut body still decodes to an *Error
		return decodeError(resp.StatusCode, body)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		// The server answered, but a write whose answer broke off cannot
		// be told apart from one that failed.
		return &transportError{op: op, err: fmt.Errorf("read answer: %w", err), sent: true}
	}
	if len(body) > maxBody {
		return fmt.Errorf("%s: answer larger than %d bytes", op, maxBody)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: decode answer: %w", op, err)
	}
	return nil
}

// serverTimeout is the deadline given to the server: the client's, less a
// margin for the answer to travel back, within the API's bounds.
func serverTimeout(d time.Duration) time.Duration {
	margin := min(d/10, time.Second)
	return min(max(d-margin, time.Millisecond), maxServerTimeout)
}

// roundTrip sends one request and returns the answer, whose body the
// caller closes. A transport failure is a *transportError that says
// whether the request may have reached the server.
func (c *Client) roundTrip(ctx context.Context, op, method, path string, q url.Values, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s: encode request: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	// gotConn records that a connection was handed to this request, so
	// bytes of it may have left: from then on a failure leaves the outcome
	// unknown, unless the failure was the dial itself.
	var gotConn atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Accept", "application/json")
	c.authorize(req)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		sent := gotConn.Load() && !isDialError(err)
		// *url.Error repeats the method and the whole URL; op and the
		// host say the same more briefly.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, &transportError{op: op + " at " + req.URL.Host, err: err, sent: sent}
	}
	return resp, nil
}

// FollowEvents follows a shard's log: it calls fn for each event after
// seq after, in order, as they commit, read from one stream
// (GET /v1/shards/{shard}/events?follow=true) that the answering replica
// keeps open; progress lines only keep the stream alive. The client's
// timeout bounds the wait for the stream to start. It returns when ctx
// ends (with ctx's error), when fn returns an error (that error), or when
// the stream breaks, stays silent for DefaultStreamIdle or is ended by the
// server (that error): the caller resumes from the last seq it saw.
// Subscribe does that by itself, over several addresses.
func (c *Client) FollowEvents(ctx context.Context, shard int, after uint64, fn func(ledger.Event) error) error {
	return c.StreamShard(ctx, shard, after, StreamOpts{Follow: true}, func(it StreamItem) error {
		if it.Event == nil {
			return nil
		}
		return fn(*it.Event)
	})
}
