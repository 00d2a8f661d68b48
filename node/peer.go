package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"tally/api/wire"
	"tally/edge"
	"tally/ledger"
)

// InternalPrefix is where a node takes the calls of other nodes:
// POST InternalPrefix+op (edge.InternalPrefix).
const InternalPrefix = edge.InternalPrefix

// Limits of calls between nodes.
const (
	// peerMargin is kept from the caller's deadline when passing it on,
	// so that the callee's own answer arrives before the caller gives up.
	peerMargin = 50 * time.Millisecond
	// maxPeerAnswer bounds an answer read from another node.
	maxPeerAnswer = 64 << 20
	// healthTimeout bounds a health probe.
	healthTimeout = 300 * time.Millisecond
)

// Peer carries every call this node makes to another node: forwarded
// commands and reads, saga steps, the fan-out of cluster status and
// health probes. They are HTTP requests to the other node's API port,
// under InternalPrefix: the port every node already serves, so that a
// node needs no second listener, and one place to add TLS and node
// credentials. The scheme, the client, the deadline passed on and the hop
// count are set here and nowhere else.
//
// A Peer is safe for concurrent use.
type Peer struct {
	hc     *http.Client
	scheme string
	tls    *tls.Config
	// auth is the Authorization header that proves this node when TLS is
	// off (the cluster secret); with TLS the certificate proves it.
	auth string
}

// PeerOption configures a Peer.
type PeerOption func(*Peer)

// PeerTLS makes calls over TLS with tc, which carries this node's
// certificate: the callee knows a node by it.
func PeerTLS(tc *tls.Config) PeerOption {
	return func(p *Peer) { p.tls, p.scheme = tc, "https" }
}

// PeerSecret proves this node by the cluster secret, for clusters without
// TLS.
func PeerSecret(secret string) PeerOption {
	return func(p *Peer) {
		if secret != "" {
			p.auth = "Bearer " + secret
		}
	}
}

// NewPeer returns a Peer that sends through hc (nil: a client of its own,
// with PeerTLS's configuration if given).
func NewPeer(hc *http.Client, opts ...PeerOption) *Peer {
	p := &Peer{hc: hc, scheme: "http"}
	for _, o := range opts {
		o(p)
	}
	if p.hc == nil {
		p.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute,
			TLSClientConfig: p.tls}}
	}
	return p
}

// credentials sets what proves this node on req: its certificate goes with
// the transport; the secret, when there is one, goes here.
func (p *Peer) credentials(req *http.Request) {
	if p.auth != "" {
		req.Header.Set("Authorization", p.auth)
	}
}

// url is the base URL of the node at addr (host:port).
func (p *Peer) url(addr string) string { return p.scheme + "://" + addr }

// opCommands is the operation that takes one encoded ledger command.
const opCommands = "commands"

// Submit runs cmd on shard i at the node at addr, which runs it there or
// on the leader it knows. The command travels in the log's own encoding.
func (p *Peer) Submit(ctx context.Context, addr string, i int, cmd ledger.Command) ([]ledger.Result, error) {
	body := (&ledger.Entry{Commands: []ledger.Command{cmd}}).Encode(nil)
	var out wire.Results
	if err := p.call(ctx, addr, opCommands, url.Values{"shard": {strconv.Itoa(i)}}, body, true, &out); err != nil {
		return nil, err
	}
	return out.Results, nil
}

// Call runs operation op at the node at addr with the JSON of in as its
// arguments, and decodes the answer into out.
func (p *Peer) Call(ctx context.Context, addr, op string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode %s: %w", op, err)
	}
	return p.call(ctx, addr, op, nil, body, !reads[op], out)
}

// Healthy probes the node at addr briefly.
func (p *Peer) Healthy(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url(addr)+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// call posts body to op at addr and decodes a 200 answer's JSON into out.
// An error answer is the callee's *edge.Error. A failure before the
// request could have been sent is a definite 503; after, for a write
// (which may have been applied), 504.
func (p *Peer) call(ctx context.Context, addr, op string, q url.Values, body []byte, write bool, out any) error {
	if q == nil {
		q = url.Values{}
	}
	if d, ok := ctx.Deadline(); ok {
		rem := time.Until(d) - peerMargin
		if rem <= 0 {
			return edge.Unavailable("deadline passed before calling %s", addr)
		}
		q.Set("timeout", min(rem, edge.MaxTimeout).Truncate(time.Millisecond).String())
	}
	u := p.url(addr) + InternalPrefix + op + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return edge.Internal("call %s: %v", addr, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if op == opCommands {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	req.Header.Set(edge.HopHeader, strconv.Itoa(Hops(ctx)+1))
	p.credentials(req)
	resp, err := p.hc.Do(req)
	if err != nil {
		return sendError(addr, err, write)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPeerAnswer))
	if err != nil {
		return sendError(addr, err, write)
	}
	if resp.StatusCode != http.StatusOK {
		return edge.ReadError(resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		if write {
			return edge.OutcomeUnknown("%s answered %s unreadably: %v", addr, op, err)
		}
		return edge.Unavailable("%s answered %s unreadably: %v", addr, op, err)
	}
	return nil
}

func sendError(addr string, err error, write bool) error {
	var op *net.OpError
	if !write || (errors.As(err, &op) && op.Op == "dial") {
		return edge.Unavailable("node %s: %v", addr, err)
	}
	return edge.OutcomeUnknown("node %s: %v", addr, err)
}
