package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"tally/api/wire"
)

// table is one version of the leader map. A published table is never
// modified: a change publishes a copy.
type table struct {
	leaders []string // shard -> leader's HTTP address, "" when unknown
	nodes   []string // every known node: the seeds, then the ones /v1/cluster lists
}

// complete reports whether every shard of a GET /v1/cluster answer has a
// leader.
func complete(cs *wire.Cluster) bool {
	for _, s := range cs.Shards {
		if s.LeaderHTTP == "" {
			return false
		}
	}
	return true
}

// Leaders returns the current leader map: the HTTP address of each shard's
// leader, "" where none is known, nil before the first refresh. Safe for
// concurrent use; it does not block.
func (p *Proxy) Leaders() []string {
	if t := p.table.Load(); t != nil {
		return slices.Clone(t.leaders)
	}
	return nil
}

// Refresh asks the cluster for its leaders now and waits for the answer
// (or ctx). Concurrent calls share one round of requests. Safe for
// concurrent use.
func (p *Proxy) Refresh(ctx context.Context) error {
	return p.refresh(ctx)
}

func (p *Proxy) refreshLoop() {
	defer p.wg.Done()
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		// The outcome is logged by the refresh itself; the next tick or
		// the next failing request tries again.
		_ = p.refresh(p.ctx)
		select {
		case <-p.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (p *Proxy) refresh(ctx context.Context) error {
	// One round at a time: callers that come while it runs share it.
	// The round runs on the proxy's context, not a caller's, because
	// other callers may be waiting on it; a caller whose ctx ends stops
	// waiting.
	ch := p.refreshes.DoChan("", p.runRefresh)
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errClosed is the answer of a refresh asked for after Close.
var errClosed = errors.New("proxy closed")

// runRefresh does one round of GET /v1/cluster, no sooner than
// minRefreshGap after the last one.
func (p *Proxy) runRefresh() (any, error) {
	p.refreshMu.Lock()
	if p.ctx.Err() != nil {
		p.refreshMu.Unlock()
		return nil, errClosed
	}
	// Added under refreshMu, so that Close, which cancels under it before
	// it waits, never waits while a round is starting.
	p.wg.Add(1)
	defer p.wg.Done()
	wait := minRefreshGap - time.Since(p.lastRefresh)
	p.refreshMu.Unlock()

	err := sleep(p.ctx, wait)
	var t *table
	if err == nil {
		t, err = p.fetch(p.ctx)
	}
	if err == nil {
		p.publish(t)
	}
	p.refreshMu.Lock()
	p.lastRefresh = time.Now()
	wasOK := p.refreshOK
	p.refreshOK = err == nil
	p.refreshMu.Unlock()
	switch {
	case err != nil && p.ctx.Err() != nil:
	case err != nil && wasOK:
		p.log.Warn("cannot refresh the leader map", "err", err)
	case err != nil:
		p.log.Debug("cannot refresh the leader map", "err", err)
	case !wasOK:
		p.log.Info("leader map refreshed", "leaders", leadersAttr(t.leaders))
	}
	return nil, err
}

// publish installs t and logs a change of leaders.
func (p *Proxy) publish(t *table) {
	old := p.table.Swap(t)
	if old == nil || !slices.Equal(old.leaders, t.leaders) {
		p.log.Info("leaders changed", "leaders", leadersAttr(t.leaders))
	}
}

// leadersAttr shows a leader map in a log line: "none" where a shard has
// no known leader.
func leadersAttr(leaders []string) []string {
	out := slices.Clone(leaders)
	for i, l := range out {
		if l == "" {
			out[i] = "none"
		}
	}
	return out
}

// fetch asks every known node for the cluster's layout at once and takes
// the first answer that names a leader for every shard; failing that, it
// merges the answers it got. Asking all at once keeps one dead or paused
// node from delaying the map.
func (p *Proxy) fetch(ctx context.Context) (*table, error) {
	nodes := p.knownNodes()
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	type answer struct {
		addr string
		cs   *wire.Cluster
		err  error
	}
	ch := make(chan answer, len(nodes))
	for _, n := range nodes {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			cs, err := p.fetchCluster(ctx, n)
			ch <- answer{n, cs, err}
		}()
	}
	var got []*wire.Cluster
	var errs []error
	for range nodes {
		a := <-ch
		if a.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.addr, a.err))
			continue
		}
		if complete(a.cs) {
			return p.build(a.cs), nil
		}
		got = append(got, a.cs)
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("get cluster layout: %w", errors.Join(errs...))
	}
	return p.build(merge(got)), nil
}

// merge fills the shards the first answer has no leader for from the
// later answers that agree on the shard count.
func merge(got []*wire.Cluster) *wire.Cluster {
	base := got[0]
	for _, cs := range got[1:] {
		if len(cs.Shards) != len(base.Shards) {
			continue
		}
		for i := range base.Shards {
			if base.Shards[i].LeaderHTTP == "" && cs.Shards[i].Shard == base.Shards[i].Shard {
				base.Shards[i].LeaderHTTP = cs.Shards[i].LeaderHTTP
			}
		}
	}
	return base
}

// fetchCluster gets one node's GET /v1/cluster and records whether the
// node answered.
func (p *Proxy) fetchCluster(ctx context.Context, addr string) (*wire.Cluster, error) {
	cs, err := p.getCluster(ctx, addr)
	switch {
	case err == nil:
		p.setDown(addr, false)
	case errors.Is(ctx.Err(), context.Canceled):
		// The round ended without this answer; it says nothing of the node.
	default:
		p.setDown(addr, true)
	}
	return cs, err
}

func (p *Proxy) getCluster(ctx context.Context, addr string) (*wire.Cluster, error) {
	u := p.baseURL(addr) + "/v1/cluster?timeout=" + nodeTimeout(refreshTimeout).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	p.authorizeOwn(req)
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/cluster: status %d", resp.StatusCode)
	}
	var cs wire.Cluster
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxReplyBytes)).Decode(&cs); err != nil {
		return nil, fmt.Errorf("decode /v1/cluster: %w", err)
	}
	if len(cs.Shards) == 0 {
		return nil, errors.New("/v1/cluster lists no shards")
	}
	for i, s := range cs.Shards {
		if s.Shard < 0 || s.Shard >= len(cs.Shards) {
			return nil, fmt.Errorf("/v1/cluster: shard %d out of range", s.Shard)
		}
		cs.Shards[i].LeaderHTTP = normAddr(s.LeaderHTTP)
	}
	return &cs, nil
}

// build turns a cluster layout into a table. The shard count is the
// number of shards listed.
func (p *Proxy) build(cs *wire.Cluster) *table {
	t := &table{leaders: make([]string, len(cs.Shards)), nodes: slices.Clone(p.seeds)}
	for _, s := range cs.Shards {
		t.leaders[s.Shard] = s.LeaderHTTP
	}
	for _, n := range cs.Nodes {
		if a := normAddr(n.HTTP); a != "" && !slices.Contains(t.nodes, a) {
			t.nodes = append(t.nodes, a)
		}
	}
	return t
}

// setLeader records a leader hint (from a 421 or 503) for shard.
func (p *Proxy) setLeader(shard int, addr string) {
	addr = normAddr(addr)
	for {
		old := p.table.Load()
		if old == nil || shard >= len(old.leaders) || old.leaders[shard] == addr {
			return
		}
		t := &table{leaders: slices.Clone(old.leaders), nodes: old.nodes}
		t.leaders[shard] = addr
		if p.table.CompareAndSwap(old, t) {
			p.log.Debug("leader hint", "shard", shard, "leader", addr)
			return
		}
	}
}

// shardCount returns the number of shards, waiting for the first map if
// there is none yet.
func (p *Proxy) shardCount(ctx context.Context) (int, error) {
	if t := p.table.Load(); t != nil {
		return len(t.leaders), nil
	}
	if err := p.refresh(ctx); err != nil {
		return 0, fmt.Errorf("no cluster layout: %w", err)
	}
	if t := p.table.Load(); t != nil {
		return len(t.leaders), nil
	}
	return 0, errors.New("no cluster layout")
}

// leaderOf returns shard's leader, refreshing the map once if it names
// none.
func (p *Proxy) leaderOf(ctx context.Context, shard int) (string, error) {
	for i := 0; ; i++ {
		t := p.table.Load()
		if t != nil && shard < len(t.leaders) && t.leaders[shard] != "" {
			return t.leaders[shard], nil
		}
		if i > 0 {
			return "", fmt.Errorf("shard %d has no known leader", shard)
		}
		if err := p.refresh(ctx); err != nil {
			return "", fmt.Errorf("shard %d has no known leader: %w", shard, err)
		}
	}
}

func (p *Proxy) knownNodes() []string {
	if t := p.table.Load(); t != nil {
		return t.nodes
	}
	return p.seeds
}

// anyNodes returns the known nodes in the order to try them for a request
// any node can answer: up nodes first, starting at a rotating offset so
// that the load spreads.
func (p *Proxy) anyNodes() []string {
	nodes := p.knownNodes()
	out := make([]string, 0, len(nodes))
	start := int(p.next.Add(1) % uint64(len(nodes)))
	for pass := 0; pass < 2; pass++ {
		for i := range nodes {
			n := nodes[(start+i)%len(nodes)]
			if p.isDown(n) == (pass == 1) {
				out = append(out, n)
			}
		}
	}
	return out
}

func (p *Proxy) setDown(addr string, down bool) {
	v, ok := p.health.Load(addr)
	if !ok {
		v, _ = p.health.LoadOrStore(addr, new(atomic.Bool))
	}
	if v.(*atomic.Bool).Swap(down) != down {
		if down {
			p.log.Warn("node unreachable", "node", addr)
		} else {
			p.log.Info("node reachable", "node", addr)
		}
	}
}

func (p *Proxy) isDown(addr string) bool {
	v, ok := p.health.Load(addr)
	return ok && v.(*atomic.Bool).Load()
}

// normAddr trims an address as nodes report it.
func normAddr(a string) string { return strings.TrimSuffix(strings.TrimSpace(a), "/") }

// baseURL makes a node address (host:port or a URL) into a URL prefix.
func (p *Proxy) baseURL(addr string) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	return p.scheme + "://" + addr
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drainClose reads a little of what is left of a body so the connection
// can be reused, then closes it.
func drainClose(b io.ReadCloser) {
	// Errors here only cost a connection reuse.
	_, _ = io.CopyN(io.Discard, b, maxErrorBytes)
	_ = b.Close()
}
