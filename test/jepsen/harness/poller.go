package harness

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Poller watches every replica's Raft state (GET /v1/shards/N/state on
// every node, from the harness's namespace, which partitions never cut)
// and keeps each shard's leader: the node that says it leads, in the
// highest term seen.
type Poller struct {
	c     *Cluster
	every time.Duration

	mu      sync.Mutex
	leader  []leaderAt // per shard, the latest
	changes []LeaderChange
	states  map[string]*stateView // "node/shard" -> last answer
}

type leaderAt struct {
	node string
	term uint64
}

// LeaderChange is one change of a shard's leader.
type LeaderChange struct {
	At       time.Time
	Shard    int
	From, To string
	Term     uint64
}

type stateView struct {
	Shard       int    `json:"shard"`
	Node        string `json:"node"`
	AppliedSeq  uint64 `json:"applied_seq"`
	AppliedIdx  uint64 `json:"applied_index"`
	HeadHash    string `json:"head_hash"`
	StateHash   string `json:"state_hash"`
	Pending     int    `json:"pending"`
	RaftState   string `json:"raft_state"`
	Term        uint64 `json:"term"`
	Leader      string `json:"leader"`
	CommitIndex uint64 `json:"commit_index"`
}

// NewPoller starts polling every d until ctx ends.
func NewPoller(ctx context.Context, c *Cluster, d time.Duration) *Poller {
	p := &Poller{c: c, every: d, leader: make([]leaderAt, c.Shards), states: map[string]*stateView{}}
	go p.loop(ctx)
	return p
}

func (p *Poller) loop(ctx context.Context) {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		p.Poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll asks every replica once, concurrently.
func (p *Poller) Poll(ctx context.Context) {
	type ans struct {
		key string
		v   *stateView
	}
	ch := make(chan ans, len(p.c.Nodes)*p.c.Shards)
	n := 0
	for _, node := range p.c.Nodes {
		if !node.Running() {
			continue
		}
		for s := 0; s < p.c.Shards; s++ {
			n++
			go func() {
				var v stateView
				err := p.c.cl.getJSON(ctx, node.HTTP, fmt.Sprintf("/v1/shards/%d/state", s), nil, p.every, &v)
				key := fmt.Sprintf("%s/%d", node.ID, s)
				if err != nil {
					ch <- ans{key, nil}
					return
				}
				ch <- ans{key, &v}
			}()
		}
	}
	got := map[string]*stateView{}
	for range n {
		a := <-ch
		got[a.key] = a.v
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, v := range got {
		if v == nil {
			delete(p.states, k)
			continue
		}
		p.states[k] = v
		if v.RaftState != "Leader" || v.Shard < 0 || v.Shard >= len(p.leader) {
			continue
		}
		cur := p.leader[v.Shard]
		if v.Term > cur.term || (v.Term == cur.term && cur.node == "") {
			if cur.node != v.Node {
				p.changes = append(p.changes, LeaderChange{At: now, Shard: v.Shard, From: cur.node, To: v.Node, Term: v.Term})
			}
			p.leader[v.Shard] = leaderAt{v.Node, v.Term}
		}
	}
}

// Leader returns a shard's latest known leader and its term.
func (p *Poller) Leader(shard int) (string, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.leader[shard]
	return l.node, l.term
}

// Changes returns the leader changes seen so far (the first leader of
// each shard is not a change).
func (p *Poller) Changes() []LeaderChange {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []LeaderChange
	for _, c := range p.changes {
		if c.From != "" {
			out = append(out, c)
		}
	}
	return out
}

// States returns the last answer of every replica that answered.
func (p *Poller) States() map[string]stateView {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]stateView{}
	for k, v := range p.states {
		out[k] = *v
	}
	return out
}

// AllLed reports whether every shard has a replica that says it leads.
func (p *Poller) AllLed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	led := make([]bool, p.c.Shards)
	for _, v := range p.states {
		if v.RaftState == "Leader" && v.Shard < len(led) {
			led[v.Shard] = true
		}
	}
	for _, l := range led {
		if !l {
			return false
		}
	}
	return true
}
