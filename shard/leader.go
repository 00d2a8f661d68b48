package shard

import (
	"context"
	"slices"
	"time"

	"tally/fsm"
	"tally/ledger"
)

// Leader duties, run while this node leads a shard.
const (
	tickEvery      = time.Second      // expiry check
	balanceEvery   = 10 * time.Second // leader spreading check
	balanceSettle  = 5 * time.Second  // leadership age before handing it on
	registerEvery  = 2 * time.Second  // retry of the node-directory entry
	dutyCallBudget = 5 * time.Second
)

// lead watches shard r's leadership and runs the leader's duties for as
// long as this node leads it.
func (h *Host) lead(r *Replica) {
	defer h.wg.Done()
	stopDuties := func() {}
	defer func() { stopDuties() }()
	for {
		select {
		case <-h.stop:
			return
		case isLeader := <-r.Group.LeaderChanges():
			stopDuties()
			stopDuties = func() {}
			if isLeader {
				ctx, cancel := context.WithCancel(context.Background())
				stopDuties = cancel
				h.wg.Add(1)
				go h.duties(ctx, r)
			}
		}
	}
}

// duties: apply the term's barrier (reads and the saga driver rely on it),
// make sure the node directory has this node's address, propose an entry
// when a pending transfer is due to expire, promote the non-voters that
// have caught up (promote.go), and hand leadership to the
// node that should lead this shard so that leaders spread over the nodes.
func (h *Host) duties(ctx context.Context, r *Replica) {
	defer h.wg.Done()
	since := time.Now()
	r.log.Info("leading")
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	registered := false
	var lastBalance time.Time
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		r.saga.run(ctx)
	}()
	for {
		if !r.Group.BarrierDone() {
			h.call(ctx, func(c context.Context) error { return r.Group.Barrier(c, r.Group.Raft().CurrentTerm()) })
		}
		if !registered {
			registered = h.register(ctx, r)
		}
		if t, ok := r.FSM.NextExpiry(); ok && int64(t) <= time.Now().UnixNano() {
			h.call(ctx, func(c context.Context) error {
				_, err := r.b.submit(c, ledger.Command{Kind: ledger.CmdTransfers})
				return err
			})
		}
		h.promoteAll(ctx, r)
		if time.Since(since) > balanceSettle && time.Since(lastBalance) > balanceEvery {
			lastBalance = time.Now()
			h.spread(ctx, r)
		}
		select {
		case <-ctx.Done():
			r.log.Info("no longer leading")
			return
		case <-h.stop:
			return
		case <-tick.C:
		}
	}
}

func (h *Host) call(ctx context.Context, fn func(context.Context) error) {
	c, cancel := context.WithTimeout(ctx, dutyCallBudget)
	defer cancel()
	if err := fn(c); err != nil && ctx.Err() == nil {
		h.log.Debug("leader duty", "err", err)
	}
}

// register records this node's HTTP address in the shard's directory.
func (h *Host) register(ctx context.Context, r *Replica) bool {
	if r.FSM.Nodes()[h.cfg.NodeID] == h.cfg.HTTPAddr {
		return true
	}
	ok := false
	h.call(ctx, func(c context.Context) error {
		_, err := r.Group.Apply(c, fsm.EncodeNode(h.cfg.NodeID, h.cfg.HTTPAddr))
		ok = err == nil
		return err
	})
	return ok
}

// spread hands leadership of shard r to its preferred node: the voters
// sorted by id, shard i preferring voter i mod n. It acts only when this
// node leads more than its share of shards, and only towards a voter with
// a known HTTP address that answers its health check, because a transfer
// stalls the shard's writes until it completes or times out.
func (h *Host) spread(ctx context.Context, r *Replica) {
	led := 0
	for _, o := range h.replicas {
		if o.Group.IsLeader() {
			led++
		}
	}
	servers, err := r.Group.Servers()
	if err != nil {
		return
	}
	nodes := r.FSM.Nodes()
	var ids []string
	for _, s := range servers {
		if s.Voter && nodes[s.ID] != "" {
			ids = append(ids, s.ID)
		}
	}
	if len(ids) < 2 || led <= (len(h.replicas)+len(ids)-1)/len(ids) {
		return
	}
	slices.Sort(ids)
	want := ids[r.ID%len(ids)]
	if want == h.cfg.NodeID || !h.cfg.Peers.Healthy(ctx, nodes[want]) {
		return
	}
	h.call(ctx, func(c context.Context) error {
		r.log.Info("handing leadership to preferred node", "to", want)
		return r.Group.TransferLeadership(c, want)
	})
}
