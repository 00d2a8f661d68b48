// Package shardtest runs several shard.Hosts in one process, wired
// together with hashicorp/raft's in-memory transport, for fast multi-node
// tests of elections, partitions, crashes and catch-up. Node n (1-based)
// has the id, and on every shard the Raft address, "n<n>". Each node has
// an HTTP server whose address stays the same across restarts; it answers
// /healthz, or serves the handler of WithHandler (the node's API, so that
// saga steps can cross nodes). It is the one in-process cluster of the
// repository: the API's tests run on it too, each node serving the API
// at URL, with leadership spread by SpreadLeaders. Real processes over
// TCP are tested in test/.
package shardtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"tally/cluster"
	"tally/ledger"
	nodesvc "tally/node"
	"tally/shard"
)

// Bounds of the harness's waits. Generous enough for the race detector
// on two cores; a healthy in-memory cluster needs a fraction of them.
const (
	StartTimeout    = 30 * time.Second // New, until every shard has a leader known to all
	LeaderTimeout   = 15 * time.Second // WaitLeader and WaitLeaders
	ConvergeTimeout = 30 * time.Second // WaitConverged
	AttemptTimeout  = 2 * time.Second  // one attempt of Submit on one leader
	SpreadTimeout   = 30 * time.Second // SpreadLeaders, until leadership has settled
	pollEvery       = 20 * time.Millisecond
)

// DefaultTiming fails over in well under a second and is valid for
// hashicorp/raft (the lease may not exceed the heartbeat timeout, nor the
// heartbeat the election timeout). A 50 ms lease made leaders step down
// for no reason when the race detector or other processes starved the
// two cores; 100 ms rarely does.
var DefaultTiming = cluster.Timing{Heartbeat: 200 * time.Millisecond,
	Election: 200 * time.Millisecond, LeaderLease: 100 * time.Millisecond}

// SoloTiming elects the leader of a one-node cluster at once. It is for
// one node only: a leader with no follower has no lease to lose, however
// starved the machine, but between nodes a 50 ms lease is the one
// DefaultTiming warns of.
var SoloTiming = cluster.Timing{Heartbeat: 100 * time.Millisecond,
	Election: 100 * time.Millisecond, LeaderLease: 50 * time.Millisecond}

// SteadyTiming is for tests that assert on which node leads a shard
// rather than on failover: its longer lease keeps a busy test machine
// from costing a leader its lease in the middle of a test.
var SteadyTiming = cluster.Timing{Heartbeat: 300 * time.Millisecond,
	Election: 300 * time.Millisecond, LeaderLease: 150 * time.Millisecond}

// Option changes how New builds the cluster.
type Option func(*options)

type options struct {
	timing  cluster.Timing
	handler HandlerFunc
}

// WithTiming sets the Raft timeouts of every node.
func WithTiming(t cluster.Timing) Option { return func(o *options) { o.timing = t } }

// HandlerFunc makes the HTTP handler of one incarnation of a node, for
// its node service and its logger.
type HandlerFunc func(svc *nodesvc.Service, log *slog.Logger) http.Handler

// WithHandler makes every node serve fn's handler (typically api.New) on
// its HTTP address while it runs, instead of /healthz alone. The harness
// takes it as a function so that it need not import the API.
func WithHandler(fn HandlerFunc) Option { return func(o *options) { o.handler = fn } }

// Cluster is a set of nodes, each running one replica of every shard. Its
// methods are safe for concurrent use, except that Kill, Restart, Heal
// and the Partition methods are meant to be called by the test's
// goroutine.
type Cluster struct {
	t       testing.TB
	shards  int
	timing  cluster.Timing
	handler HandlerFunc
	logs    *logBuffer
	log     *slog.Logger
	faults  [Hang + 1]atomic.Int64 // HTTP requests hit by each fault

	mu    sync.Mutex
	nodes []*node
	cut   map[link]bool        // Raft links that cannot carry messages
	http  map[[2]int]HTTPFault // node index pairs, lower first, whose HTTP is cut
	// healed is closed, and replaced, by Heal: it releases held requests.
	healed chan struct{}
}

// link is one shard's Raft link between two nodes (indices, lower first).
type link struct {
	pair  [2]int
	shard int
}

type node struct {
	id  string
	dir string
	// web serves handler while the node runs; leader spreading probes
	// its /healthz.
	web     *httptest.Server
	handler atomic.Pointer[http.Handler]
	up      atomic.Bool
	// client carries the node's saga steps to other nodes through the
	// HTTP cuts; it outlives the node's incarnations.
	client *http.Client
	host   *shard.Host
	// trans holds this incarnation's transport per shard; nil while the
	// node is down.
	trans []*raft.InmemTransport
}

// New starts nodes hosts with shards shards each in t.TempDir(): node 1
// bootstraps every shard, the others join through each shard's leader.
// It returns once every shard has a leader known to every node. The
// cluster is closed, and its logs shown if the test failed, at cleanup.
func New(t testing.TB, nodes, shards int, opts ...Option) *Cluster {
	t.Helper()
	o := options{timing: DefaultTiming}
	for _, fn := range opts {
		fn(&o)
	}
	root := t.TempDir()
	logs := newLogBuffer()
	c := &Cluster{t: t, shards: shards, timing: o.timing, handler: o.handler, logs: logs,
		log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: shortTime})),
		cut: map[link]bool{}, http: map[[2]int]HTTPFault{}, healed: make(chan struct{})}
	t.Cleanup(c.close)
	for i := 1; i <= nodes; i++ {
		n := &node{id: fmt.Sprintf("n%d", i), dir: filepath.Join(root, fmt.Sprintf("n%d", i))}
		n.web = httptest.NewServer(serve(n))
		n.client = &http.Client{Transport: &faultyTransport{c: c, from: i - 1,
			base: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}}}
		c.nodes = append(c.nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if err := c.start(0, true); err != nil {
		t.Fatalf("start n1: %v", err)
	}
	for s := 0; s < shards; s++ {
		if _, err := c.waitLeader(ctx, s, nil); err != nil {
			t.Fatalf("bootstrap shard %d: %v", s, err)
		}
	}
	for i := 1; i < nodes; i++ {
		if err := c.start(i, false); err != nil {
			t.Fatalf("start %s: %v", c.nodes[i].id, err)
		}
		for s := 0; s < shards; s++ {
			if err := c.join(ctx, i, s); err != nil {
				t.Fatalf("join %s to shard %d: %v", c.nodes[i].id, s, err)
			}
		}
	}
	c.WaitLeaders(t)
	return c
}

// serve answers 503 while node n is down, else passes the request to
// the running incarnation's handler (InternalOnly unless WithHandler).
func serve(n *node) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !n.up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if h := n.handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		if r.URL.Path != "/healthz" {
			http.Error(w, "no handler", http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// start opens node i's host with fresh transports wired to the live nodes.
func (c *Cluster) start(i int, bootstrap bool) error {
	n := c.nodes[i]
	trans := make([]*raft.InmemTransport, c.shards)
	for s := range trans {
		_, trans[s] = raft.NewInmemTransport(raft.ServerAddress(n.id))
	}
	c.mu.Lock()
	n.trans = trans
	c.wireLocked()
	c.mu.Unlock()
	log := c.log.With("node", n.id)
	peer := nodesvc.NewPeer(n.client)
	h, err := shard.Open(shard.Config{NodeID: n.id, RaftAddr: n.id, HTTPAddr: n.web.Listener.Addr().String(),
		Dir: n.dir, Shards: c.shards, Bootstrap: bootstrap, Timing: c.timing,
		Logger:     log,
		Transports: func(s int) raft.Transport { return trans[s] },
		Peers:      peer})
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.detachLocked(n)
		return err
	}
	n.host = h
	hd := InternalOnly(nodesvc.New(h, peer))
	if c.handler != nil {
		hd = c.handler(nodesvc.New(h, peer), log)
	}
	n.handler.Store(&hd)
	n.up.Store(true)
	return nil
}

// InternalOnly serves /healthz and the calls of other nodes (node.Peer),
// which a leader needs to see a joining node's catch-up: the handler of a
// node of a cluster built without WithHandler. A WithHandler function
// that is not the node's API passes InternalPrefix paths to it.
func InternalOnly(svc *nodesvc.Service) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("POST "+nodesvc.InternalPrefix+"{op}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var out any
		if err == nil {
			out, err = svc.Internal(r.Context(), r.PathValue("op"), r.URL.Query().Get("shard"), body)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out) // a failed write is the caller's error to see
	})
	return mux
}

// join adds node i to shard s through the shard's leader, retrying while
// leadership moves.
func (c *Cluster) join(ctx context.Context, i, s int) error {
	n := c.nodes[i]
	for {
		var err error
		if h := c.Leader(s); h != nil {
			if err = h.Join(ctx, s, n.id, n.id, n.web.Listener.Addr().String()); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(pollEvery):
		}
	}
}

// wireLocked connects every pair of live nodes on every shard, both ways,
// unless the pair is cut, and detaches nodes that are down. c.mu is held.
func (c *Cluster) wireLocked() {
	for a, na := range c.nodes {
		if na.trans == nil {
			continue
		}
		for b, nb := range c.nodes {
			if a == b {
				continue
			}
			for s, tr := range na.trans {
				if nb.trans == nil || c.cut[link{pair(a, b), s}] {
					tr.Disconnect(raft.ServerAddress(nb.id))
				} else {
					tr.Connect(raft.ServerAddress(nb.id), nb.trans[s])
				}
			}
		}
	}
}

// detachLocked takes node n off the network. c.mu is held.
func (c *Cluster) detachLocked(n *node) {
	for _, tr := range n.trans {
		tr.DisconnectAll()
	}
	n.trans = nil
	c.wireLocked()
}

func pair(a, b int) [2]int {
	if a > b {
		a, b = b, a
	}
	return [2]int{a, b}
}

func (c *Cluster) node(n int) *node {
	if n < 1 || n > len(c.nodes) {
		panic(fmt.Sprintf("shardtest: no node %d in a cluster of %d", n, len(c.nodes)))
	}
	return c.nodes[n-1]
}

// Shards returns the number of shards.
func (c *Cluster) Shards() int { return c.shards }

// Nodes returns the number of nodes, live or not.
func (c *Cluster) Nodes() int { return len(c.nodes) }

// Timing returns the Raft timeouts the nodes run with.
func (c *Cluster) Timing() cluster.Timing { return c.timing }

// Host returns node n's host, or nil while it is down.
func (c *Cluster) Host(n int) *shard.Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node(n).host
}

// Num returns the number of the node that runs h.
func (c *Cluster) Num(h *shard.Host) int {
	for i, n := range c.nodes {
		if n.id == h.NodeID() {
			return i + 1
		}
	}
	panic("shardtest: host " + h.NodeID() + " is not in the cluster")
}

// Dir returns node n's data directory.
func (c *Cluster) Dir(n int) string { return c.node(n).dir }

// HTTPAddr returns node n's HTTP address ("host:port"), the same across
// restarts.
func (c *Cluster) HTTPAddr(n int) string { return c.node(n).web.Listener.Addr().String() }

// URL returns the base URL ("http://host:port") of node n's HTTP server,
// the same across restarts.
func (c *Cluster) URL(n int) string { return c.node(n).web.URL }

// ID returns node n's id.
func (c *Cluster) ID(n int) string { return c.node(n).id }

// RaftAddr returns node n's Raft address on every shard, as the shards'
// configurations and the API's cluster answers name it.
func (c *Cluster) RaftAddr(n int) string { return c.node(n).id }

// Handler returns the handler that node n's running incarnation serves
// (made by WithHandler's function), to call it without the network; nil
// while the node is down or when the cluster has no WithHandler.
func (c *Cluster) Handler(n int) http.Handler {
	if h := c.node(n).handler.Load(); h != nil {
		return *h
	}
	return nil
}

// Log returns the logger the nodes log to, whose output the cluster
// shows when the test fails. A test may give it to what it runs beside
// the nodes (a proxy, say) so that those logs are shown with the nodes'.
func (c *Cluster) Log() *slog.Logger { return c.log }

// Live returns the hosts that are running, in node order.
func (c *Cluster) Live() []*shard.Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	var hs []*shard.Host
	for _, n := range c.nodes {
		if n.host != nil {
			hs = append(hs, n.host)
		}
	}
	return hs
}

// Leader returns the live host that leads shard s, or nil. When more than
// one believes it leads (a deposed leader that has not noticed yet), the
// one with the highest term wins.
func (c *Cluster) Leader(s int) *shard.Host {
	var best *shard.Host
	var term uint64
	for _, h := range c.Live() {
		r, err := h.Replica(s)
		if err != nil || !r.Group.IsLeader() {
			continue
		}
		if t := r.Group.Raft().CurrentTerm(); best == nil || t > term {
			best, term = h, t
		}
	}
	return best
}

// WaitLeader waits until shard s has a leader, other than the hosts in
// not, that has applied its term's barrier (so it serves linearizable
// reads), and returns it.
func (c *Cluster) WaitLeader(t testing.TB, s int, not ...*shard.Host) *shard.Host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), LeaderTimeout)
	defer cancel()
	h, err := c.waitLeader(ctx, s, not)
	if err != nil {
		t.Fatalf("shard %d: no leader: %v\n%s", s, err, c.Describe())
	}
	return h
}

func (c *Cluster) waitLeader(ctx context.Context, s int, not []*shard.Host) (*shard.Host, error) {
	for {
		if h := c.Leader(s); h != nil && !contains(not, h) {
			if r, err := h.Replica(s); err == nil && r.Group.BarrierDone() {
				return h, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

func contains(hs []*shard.Host, h *shard.Host) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}

// WaitLeaders waits until every shard has a leader that has applied its
// term's barrier and that every live node names as the leader.
func (c *Cluster) WaitLeaders(t testing.TB) {
	t.Helper()
	c.waitGaps(t, "leaders not agreed", c.leaderGaps)
}

// waitGaps polls gaps until it says nothing is missing, failing the test
// with what, the last gap and the cluster's state after LeaderTimeout.
func (c *Cluster) waitGaps(t testing.TB, what string, gaps func() string) {
	t.Helper()
	deadline := time.Now().Add(LeaderTimeout)
	for {
		missing := gaps()
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s within %v: %s\n%s", what, LeaderTimeout, missing, c.Describe())
		}
		time.Sleep(pollEvery)
	}
}

func (c *Cluster) leaderGaps() string {
	for s := 0; s < c.shards; s++ {
		l := c.Leader(s)
		if l == nil {
			return fmt.Sprintf("shard %d has no leader", s)
		}
		if r, _ := l.Replica(s); !r.Group.BarrierDone() {
			return fmt.Sprintf("shard %d leader %s has not applied its barrier", s, l.NodeID())
		}
		for _, h := range c.Live() {
			if id, _ := h.Leader(s); id != l.NodeID() {
				return fmt.Sprintf("%s names %q as leader of shard %d, not %s", h.NodeID(), id, s, l.NodeID())
			}
		}
	}
	return ""
}

// ShardOf returns the shard that a command belongs to. Every item of the
// command must belong to the same shard.
func (c *Cluster) ShardOf(cmd ledger.Command) (int, error) {
	var ids []string
	switch cmd.Kind {
	case ledger.CmdOpenAccounts:
		for i := range cmd.Accounts {
			ids = append(ids, cmd.Accounts[i].ID)
		}
	case ledger.CmdCloseAccount:
		ids = append(ids, cmd.AccountID)
	case ledger.CmdTransfers:
		for i := range cmd.Transfers {
			ids = append(ids, ledger.Home(&cmd.Transfers[i]))
		}
	}
	if len(ids) == 0 {
		return 0, errors.New("shardtest: command names no account")
	}
	s := shard.Of(ids[0], c.shards)
	for _, id := range ids[1:] {
		if o := shard.Of(id, c.shards); o != s {
			return 0, fmt.Errorf("shardtest: command spans shards %d and %d", s, o)
		}
	}
	return s, nil
}

// Submit runs cmd on its shard's leader, retrying with the same command
// while the answer is not-leader, unavailable or outcome-unknown, until
// ctx ends. A retry is safe because ids are idempotency keys; a command
// that applied on an earlier attempt answers exists on the retry.
func (c *Cluster) Submit(ctx context.Context, cmd ledger.Command) ([]ledger.Result, error) {
	s, err := c.ShardOf(cmd)
	if err != nil {
		return nil, err
	}
	var last error
	for {
		if h := c.Leader(s); h != nil {
			actx, cancel := context.WithTimeout(ctx, AttemptTimeout)
			res, err := h.Submit(actx, s, cmd)
			cancel()
			if err == nil {
				return res, nil
			}
			if !Retryable(err) {
				return nil, err
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("shard %d: %w (last error: %v)", s, ctx.Err(), last)
		case <-time.After(pollEvery):
		}
	}
}

// Retryable reports whether err is one of the answers after which the
// same command may be sent again: not leader, unavailable, or outcome
// unknown.
func Retryable(err error) bool {
	return errors.Is(err, cluster.ErrNotLeader) || errors.Is(err, cluster.ErrUnavailable) ||
		errors.Is(err, cluster.ErrOutcomeUnknown)
}

// Partition cuts the given nodes off from all the others, both ways, on
// every shard's Raft links and on the HTTP requests the hosts send each
// other (the saga steps, which then fail as refused), in addition to any
// cut already made. The nodes in the set still reach each other.
func (c *Cluster) Partition(nodes ...int) {
	all := make([]int, c.shards)
	for s := range all {
		all[s] = s
	}
	c.PartitionShards(all, nodes...)
	c.PartitionHTTP(Refuse, nodes...)
}

// PartitionShards cuts the given nodes off from all the others on the
// Raft links of the listed shards only, both ways, in addition to any cut
// already made.
func (c *Cluster) PartitionShards(shards []int, nodes ...int) {
	pairs := c.across(nodes)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range pairs {
		for _, s := range shards {
			c.cut[link{p, s}] = true
		}
	}
	c.wireLocked()
	c.log.Info("shardtest: partition raft", "shards", shards, "isolated", nodes)
}

// HTTPFault is what a cut does to an HTTP request a host sends to another
// node (a saga step).
type HTTPFault int

const (
	// Refuse fails the request before it is sent, as a refused
	// connection: the other node never sees it.
	Refuse HTTPFault = iota + 1
	// LoseReply delivers the request and serves it, then loses the
	// answer: the sender cannot tell whether it applied.
	LoseReply
	// Hang holds the request until the sender's context ends or the cut
	// heals, then fails it, as a network that drops packets silently: the
	// other node never sees it.
	Hang
)

func (f HTTPFault) String() string {
	switch f {
	case Refuse:
		return "refuse"
	case LoseReply:
		return "lose-reply"
	case Hang:
		return "hang"
	}
	return "none"
}

// PartitionHTTP cuts the HTTP requests that the given nodes' hosts and
// all the others' send each other, both ways, with fault f, replacing
// the fault of any such pair already cut. Raft links are not touched, nor
// are requests that a node's handler sends (an API forwarding a client's
// request to a leader): only the hosts' own client is cut.
func (c *Cluster) PartitionHTTP(f HTTPFault, nodes ...int) {
	pairs := c.across(nodes)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range pairs {
		c.http[p] = f
	}
	c.log.Info("shardtest: partition http", "fault", f, "isolated", nodes)
}

// HTTPFaults returns how many HTTP requests between hosts each fault has
// hit so far.
func (c *Cluster) HTTPFaults() map[HTTPFault]int64 {
	out := map[HTTPFault]int64{}
	for f := Refuse; f <= Hang; f++ {
		out[f] = c.faults[f].Load()
	}
	return out
}

// across returns the node index pairs with one node in the set and the
// other not.
func (c *Cluster) across(nodes []int) [][2]int {
	in := map[int]bool{}
	for _, n := range nodes {
		c.node(n)
		in[n-1] = true
	}
	var out [][2]int
	for a := range c.nodes {
		for b := a + 1; b < len(c.nodes); b++ {
			if in[a] != in[b] {
				out = append(out, pair(a, b))
			}
		}
	}
	return out
}

// Heal removes every cut, of Raft links and of HTTP.
func (c *Cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = map[link]bool{}
	c.http = map[[2]int]HTTPFault{}
	close(c.healed)
	c.healed = make(chan struct{})
	c.wireLocked()
	c.log.Info("shardtest: heal")
}

// faultyTransport sends a host's HTTP requests to other nodes, applying
// the cluster's HTTP cuts. A request to an address that is no node's
// passes.
type faultyTransport struct {
	c    *Cluster
	from int // node index
	base *http.Transport
}

func (t *faultyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f, healed := t.c.httpFault(t.from, req.URL.Host)
	if f == 0 {
		return t.base.RoundTrip(req)
	}
	t.c.faults[f].Add(1)
	if f == LoseReply {
		resp, err := t.base.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		// Read the answer whole, so that the other node has served the
		// request completely, then drop it.
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("shardtest: reply from %s lost by a cut", req.URL.Host)
	}
	if req.Body != nil {
		req.Body.Close()
	}
	if f == Hang {
		select {
		case <-req.Context().Done():
		case <-healed:
		}
		return nil, fmt.Errorf("shardtest: request to %s dropped by a cut", req.URL.Host)
	}
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("connection to %s refused by a cut", req.URL.Host)}
}

// httpFault returns the fault of the cut between node index from and the
// node at addr (0 if none), and the channel that the next Heal closes.
func (c *Cluster) httpFault(from int, addr string) (HTTPFault, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for to, n := range c.nodes {
		if to != from && n.web.Listener.Addr().String() == addr {
			return c.http[pair(from, to)], c.healed
		}
	}
	return 0, c.healed
}

// Kill takes node n off the network, as a crash would, and closes its
// host. Entries it had in flight may or may not commit elsewhere.
func (c *Cluster) Kill(n int) {
	c.t.Helper()
	c.mu.Lock()
	nd := c.node(n)
	h := nd.host
	nd.host = nil
	nd.up.Store(false)
	nd.handler.Store(nil)
	if nd.trans != nil {
		c.detachLocked(nd)
	}
	c.mu.Unlock()
	nd.client.CloseIdleConnections()
	c.log.Info("shardtest: kill", "node", nd.id)
	if h == nil {
		return
	}
	if err := h.Close(); err != nil {
		c.t.Errorf("close %s: %v", nd.id, err)
	}
}

// Restart opens node n again on its data directory, with new transports
// wired to the live nodes (cuts still apply). It never bootstraps: a node
// whose directory was removed starts empty and catches up from the
// leaders, by snapshot if their logs are compacted.
func (c *Cluster) Restart(n int) {
	c.t.Helper()
	if c.Host(n) != nil {
		c.t.Fatalf("restart n%d: still running", n)
	}
	c.log.Info("shardtest: restart", "node", c.node(n).id)
	if err := c.start(n-1, false); err != nil {
		c.t.Fatalf("restart n%d: %v", n, err)
	}
}

// WaitConverged waits until every live replica of every shard has applied
// the same seq with the same hash-chain head and the same state hash. It
// fails at once when two replicas that applied the same Raft index
// differ: they diverged and waiting will not help.
func (c *Cluster) WaitConverged(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(ConvergeTimeout)
	for {
		diff, diverged := c.divergence()
		if diff == "" {
			return
		}
		if diverged {
			t.Fatalf("replicas diverged:\n%s", diff)
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas did not converge within %v:\n%s", ConvergeTimeout, diff)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// divergence describes the shards whose live replicas differ, or is "";
// diverged says whether two of them differ at the same applied index.
func (c *Cluster) divergence() (diff string, diverged bool) {
	var b strings.Builder
	hosts := c.Live()
	for s := 0; s < c.shards; s++ {
		lines := make([]string, 0, len(hosts))
		byIndex := map[uint64]shard.Summary{}
		var first shard.Summary
		same := true
		for i, h := range hosts {
			sum, err := h.Summary(s)
			if err != nil {
				same = false
				lines = append(lines, fmt.Sprintf("  %s: %v", h.NodeID(), err))
				continue
			}
			if i == 0 {
				first = sum
			} else if sum.AppliedSeq != first.AppliedSeq || sum.Head != first.Head || sum.StateHash != first.StateHash {
				same = false
			}
			if o, ok := byIndex[sum.AppliedIndex]; ok && (o.AppliedSeq != sum.AppliedSeq || o.Head != sum.Head || o.StateHash != sum.StateHash) {
				diverged = true
			}
			byIndex[sum.AppliedIndex] = sum
			lines = append(lines, fmt.Sprintf("  %s: index %d seq %d head %.12s state %.12s accounts %d pending %d",
				h.NodeID(), sum.AppliedIndex, sum.AppliedSeq, sum.Head, sum.StateHash, sum.Accounts, sum.Pending))
		}
		if !same {
			fmt.Fprintf(&b, "shard %d:\n%s\n", s, strings.Join(lines, "\n"))
		}
	}
	return b.String(), diverged
}

// VerifyAll replays every live replica's event log of every shard and
// checks it against the stored state (hash chain, balances, records,
// currencies summing to 0, no overdraft), and that replicas at the same
// seq report the same head and state hash.
func (c *Cluster) VerifyAll(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ConvergeTimeout)
	defer cancel()
	for s := 0; s < c.shards; s++ {
		var first *shard.VerifyReport
		for _, h := range c.Live() {
			rep, err := h.Verify(ctx, s)
			if err != nil {
				t.Errorf("verify %s shard %d: %v", h.NodeID(), s, err)
				continue
			}
			if first == nil {
				first = &rep
				continue
			}
			if rep.AppliedSeq == first.AppliedSeq && (rep.Head != first.Head || rep.StateHash != first.StateHash) {
				t.Errorf("shard %d: %s differs at seq %d: %+v vs %+v", s, h.NodeID(), rep.AppliedSeq, rep, *first)
			}
		}
	}
}

// Describe is a one-line-per-replica view of the cluster, for failure
// messages.
func (c *Cluster) Describe() string {
	var b strings.Builder
	for _, h := range c.Live() {
		for s := 0; s < c.shards; s++ {
			st, err := h.Status(s)
			if err != nil {
				fmt.Fprintf(&b, "%s shard %d: %v\n", h.NodeID(), s, err)
				continue
			}
			fmt.Fprintf(&b, "%s shard %d: %s term %d leader %q commit %d applied %d seq %d\n", h.NodeID(), s,
				st.Raft.State, st.Raft.Term, st.Raft.LeaderID, st.Raft.CommitIndex, st.AppliedIndex, st.AppliedSeq)
		}
	}
	return b.String()
}

// close stops every node, then shows the logs if the test failed.
func (c *Cluster) close() {
	c.mu.Lock()
	var hosts []*shard.Host
	for _, n := range c.nodes {
		if n.host != nil {
			hosts = append(hosts, n.host)
		}
		n.host = nil
		n.up.Store(false)
		n.handler.Store(nil)
		if n.trans != nil {
			c.detachLocked(n)
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.Close(); err != nil {
				c.t.Errorf("close %s: %v", h.NodeID(), err)
			}
		}()
	}
	wg.Wait()
	for _, n := range c.nodes {
		n.web.Close()
		n.client.CloseIdleConnections()
	}
	if c.t.Failed() || os.Getenv("SHARDTEST_LOGS") != "" {
		c.t.Logf("node logs:\n%s", c.logs.String())
	}
}

// logBuffer keeps the last maxLogBytes of the nodes' logs.
type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

const maxLogBytes = 2 << 20

func newLogBuffer() *logBuffer { return &logBuffer{} }

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > maxLogBytes {
		l.b = append(l.b[:0], l.b[len(l.b)-maxLogBytes/2:]...)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

func shortTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 {
		return slog.String(a.Key, a.Value.Time().Format("15:04:05.000"))
	}
	return a
}
