package nemesis

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The rolling-restart family: SIGTERM each node in turn, as an operator
// upgrading the cluster would, start it again with its data, and wait
// until it is back and caught up before the next. SIGTERM hands the
// node's leaderships over first, so no shard should wait an election.
var rollingRestart Fault = rolling{"rolling-restart"}

// Bounds of one node's turn.
const (
	termExit  = 35 * time.Second // a node exits within 30 s of SIGTERM
	catchUp   = 60 * time.Second // back as a voter of every shard, caught up
	caughtLag = 128              // Raft entries behind the commit index (the promotion rule)
)

type rolling struct{ name string }

// restarts is a rolling window's record: each node's pid before and
// after its turn, and what went wrong.
type restarts struct {
	before, after map[string]int
	problems      []string
}

func (r rolling) Name() string      { return r.name }
func (rolling) Available(Env) error { return nil }
func (rolling) Traits() Traits      { return Traits{OptIn: true} }

func (rolling) Inject(ctx context.Context, c Cluster, w *Window) error {
	w.Target = "all"
	st := &restarts{before: map[string]int{}, after: map[string]int{}}
	w.state = st
	for _, n := range c.Nodes() {
		if err := restartOne(ctx, c, n, st); err != nil {
			st.problems = append(st.problems, err.Error())
		}
	}
	return nil
}

// restartOne stops node n with SIGTERM, starts it again and waits until
// it is caught up.
func restartOne(ctx context.Context, c Cluster, n string, st *restarts) error {
	p := c.Proc(n)
	st.before[n] = p.Pid()
	p.ExpectDeath(true)
	defer p.ExpectDeath(false)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("%s: SIGTERM: %v", n, err)
	}
	if !p.WaitExit(termExit) {
		return fmt.Errorf("%s did not exit within %s of SIGTERM", n, termExit)
	}
	if err := c.Restart(ctx, n); err != nil {
		return fmt.Errorf("%s: restart: %v", n, err)
	}
	st.after[n] = p.Pid()
	if !caughtUp(ctx, c, n, catchUp) {
		return fmt.Errorf("%s was not a caught-up voter of every shard %s after its restart", n, catchUp)
	}
	return nil
}

// caughtUp waits until node is a voter of every shard, within caughtLag
// of the commit index, and every shard has a leader.
func caughtUp(ctx context.Context, c Cluster, node string, d time.Duration) bool {
	return WaitFor(d, func() bool {
		if ctx.Err() != nil {
			return false // a cancelled run proves nothing caught up
		}
		ms, err := c.Members(ctx)
		if err != nil || len(ms) != c.Shards() {
			return false
		}
		for _, s := range ms {
			m, ok := memberOf(s, node)
			if s.Leader == "" || !ok || !m.Voter || m.Lag > caughtLag || m.State == "unknown" || m.State == "unreachable" {
				return false
			}
		}
		return true
	})
}

func memberOf(s ShardMembers, node string) (Member, bool) {
	i := slices.IndexFunc(s.Replicas, func(m Member) bool { return m.Node == node })
	if i < 0 {
		return Member{}, false
	}
	return s.Replicas[i], true
}

// Verify: every node ran again under a new pid, and caught up.
func (rolling) Verify(_ context.Context, c Cluster, w *Window) {
	st := w.state.(*restarts)
	ok := len(st.problems) == 0
	var pids []string
	for _, n := range c.Nodes() {
		b, a := st.before[n], st.after[n]
		pids = append(pids, fmt.Sprintf("%s %d->%d", n, b, a))
		ok = ok && b != 0 && a != 0 && a != b
	}
	w.Verified = ok
	w.Verify = "each node SIGTERMed, restarted under a new pid and caught up in turn: " + strings.Join(pids, ", ")
	for _, p := range st.problems {
		w.note("%s", p)
	}
}

// Heal starts any node the window left down.
func (rolling) Heal(ctx context.Context, c Cluster, w *Window) {
	w.HealVerified = true
	for _, n := range c.Nodes() {
		if !c.Proc(n).Running() {
			if err := c.Restart(ctx, n); err != nil {
				w.HealVerified, w.HealMsg = false, err.Error()
			}
		}
	}
}
