package nemesis

import (
	"context"
	"fmt"
	"time"
)

// The membership family: remove from every shard the node that leads the
// window's shard (it must hand its leaderships over first, so every
// shard keeps a leader), then wipe it and join it again as a new member,
// which must come in as a non-voter, catch up from a snapshot and be
// promoted to voter. The run ends with the original membership, so the
// final checks compare the same three replicas.
var membership Fault = member{"membership"}

// leftLed bounds how long after the leave every shard must have a leader
// again: well under an election timeout plus a pre-vote round would mean
// the hand-off worked, but a loaded machine needs slack.
const leftLed = 3 * time.Second

type member struct{ name string }

// change is a membership window's record.
type change struct {
	left      bool // the target was a member of no shard after the leave
	led       bool // every shard had a leader right after the leave
	nonvoter  bool // the target was seen as a non-voter while it caught up
	voter     bool // the target ended a voter of every shard
	pid0, pid int
}

func (m member) Name() string      { return m.name }
func (member) Available(Env) error { return nil }
func (member) Traits() Traits      { return Traits{Leader: true, OptIn: true} }

func (member) Inject(ctx context.Context, c Cluster, w *Window) error {
	w.Target = aimLeaderOrNode.target(c, w)
	ch := &change{pid0: c.Proc(w.Target).Pid()}
	w.state = ch
	if err := c.Leave(ctx, w.Target); err != nil {
		return fmt.Errorf("leave %s: %w", w.Target, err)
	}
	ch.left, ch.led = afterLeave(ctx, c, w.Target)
	if err := c.Rejoin(ctx, w.Target); err != nil {
		return fmt.Errorf("rejoin %s: %w", w.Target, err)
	}
	ch.pid = c.Proc(w.Target).Pid()
	ch.nonvoter, ch.voter = watchJoin(ctx, c, w.Target, catchUp)
	return nil
}

// afterLeave reports whether node is gone from every shard and whether
// every shard has a leader, right after the leave.
func afterLeave(ctx context.Context, c Cluster, node string) (left, led bool) {
	WaitFor(leftLed, func() bool {
		ms, err := c.Members(ctx)
		if err != nil || len(ms) != c.Shards() {
			return false
		}
		left, led = true, true
		for _, s := range ms {
			if _, ok := memberOf(s, node); ok {
				left = false
			}
			if s.Leader == "" || s.Leader == node {
				led = false
			}
		}
		return left && led
	})
	return left, led
}

// watchJoin polls the membership until node is a caught-up voter of
// every shard, noting whether it was ever seen as a non-voter.
func watchJoin(ctx context.Context, c Cluster, node string, d time.Duration) (sawNonvoter, voter bool) {
	voter = WaitFor(d, func() bool {
		if ctx.Err() != nil {
			return true
		}
		ms, err := c.Members(ctx)
		if err != nil || len(ms) != c.Shards() {
			return false
		}
		all := true
		for _, s := range ms {
			m, ok := memberOf(s, node)
			if ok && !m.Voter {
				sawNonvoter = true
			}
			all = all && ok && m.Voter && m.Lag <= caughtLag && s.Leader != ""
		}
		return all
	})
	return sawNonvoter, voter && ctx.Err() == nil
}

// Verify: the node left every shard while every shard kept a leader, and
// came back as a new process that is a voter of every shard. Whether it
// was caught as a non-voter is noted, not required: a node that catches
// up between two polls is promoted before the harness looks.
func (member) Verify(_ context.Context, _ Cluster, w *Window) {
	ch := w.state.(*change)
	w.Verified = ch.left && ch.led && ch.voter && ch.pid != 0 && ch.pid != ch.pid0
	w.Verify = fmt.Sprintf("%s left every shard (%v) with every shard led (%v), rejoined fresh (pid %d->%d) and is a voter of every shard (%v)",
		w.Target, ch.left, ch.led, ch.pid0, ch.pid, ch.voter)
	if ch.nonvoter {
		w.note("seen as a non-voter while catching up")
	}
}

// Heal makes sure the target is a running voter of every shard. A
// window that failed half way removes it from every shard before joining
// it again: wiping a node that is still a voter somewhere would lose its
// vote.
func (member) Heal(ctx context.Context, c Cluster, w *Window) {
	if w.Target == "" {
		w.HealVerified = true
		return
	}
	if !c.Proc(w.Target).Running() {
		_ = c.Restart(ctx, w.Target) // caughtUp below tells whether it worked
	}
	if caughtUp(ctx, c, w.Target, 5*time.Second) {
		w.HealVerified = true
		return
	}
	if err := c.Leave(ctx, w.Target); err != nil {
		w.HealMsg = "leave: " + err.Error()
		return
	}
	if err := c.Rejoin(ctx, w.Target); err != nil {
		w.HealMsg = "rejoin: " + err.Error()
		return
	}
	w.HealVerified = caughtUp(ctx, c, w.Target, catchUp)
	if !w.HealVerified {
		w.HealMsg = w.Target + " is not a caught-up voter of every shard"
	}
}
