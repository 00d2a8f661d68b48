package nemesis

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxElectionWait bounds how long a leader-targeted fault stays past its
// hold while the shard has not elected another leader.
const maxElectionWait = 8 * time.Second

// Window is what happened to one scheduled fault.
type Window struct {
	N             int       `json:"n"`
	Fault         Step      `json:"fault"`
	Target        string    `json:"target"`
	Start         time.Time `json:"start"`
	Healed        time.Time `json:"healed"`
	Recovered     time.Time `json:"recovered"`
	Verified      bool      `json:"verified"`
	Verify        string    `json:"verify"`
	HealVerified  bool      `json:"heal_verified"`
	HealMsg       string    `json:"heal_msg,omitempty"`
	LeaderBefore  string    `json:"leader_before,omitempty"`
	LeaderAfter   string    `json:"leader_after,omitempty"`
	TermBefore    uint64    `json:"term_before,omitempty"`
	TermAfter     uint64    `json:"term_after,omitempty"`
	LeaderChanged *bool     `json:"leader_changed,omitempty"`
	Notes         []string  `json:"notes,omitempty"`
	Err           string    `json:"err,omitempty"`
	Skipped       bool      `json:"skipped,omitempty"`
	// Backup is what a backup window wrote (its file and cut), for C10.
	Backup *BackupCut `json:"backup,omitempty"`

	// state is what a class keeps between Inject, Verify and Heal of
	// this window (a duty cycle to stop, the rule set it installed).
	state any
}

func (w *Window) note(format string, args ...any) {
	w.Notes = append(w.Notes, fmt.Sprintf(format, args...))
}

// Line is the window's output line; start is the run's start.
func (w *Window) Line(start time.Time) string {
	f := w.Fault
	what := f.Class
	if f.Variant != "" {
		what += ":" + f.Variant
	}
	v := "verified"
	if !w.Verified {
		v = "NOT VERIFIED"
	}
	h := "healed"
	if !w.HealVerified {
		h = "heal NOT VERIFIED"
		if w.HealMsg != "" {
			h += " (" + w.HealMsg + ")"
		}
	}
	lead := ""
	if w.LeaderChanged != nil {
		lead = fmt.Sprintf(" shard %d leader %s->%s", f.Shard, orNone(w.LeaderBefore), orNone(w.LeaderAfter))
		if !*w.LeaderChanged {
			lead += " (NO CHANGE)"
		}
	}
	s := fmt.Sprintf("fault %2d %6s-%6s %-24s %-10s %s; %s;%s %s", w.N, secs(w.Start.Sub(start)), secs(w.Healed.Sub(start)),
		what, w.Target, v, h, lead, w.Verify)
	if w.Err != "" {
		s += " ERROR: " + w.Err
	}
	if len(w.Notes) > 0 {
		s += " [" + strings.Join(w.Notes, "; ") + "]"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// Runner applies a schedule to a cluster, one window at a time, and
// writes each window as one JSON line. Run is called from one goroutine;
// HealAll may be called from any.
type Runner struct {
	c   Cluster
	obs Observer
	out *os.File

	// CatchUp makes each recovery also wait for every replica to catch
	// up, so that faults do not overlap (the CI profile).
	CatchUp bool

	mu     sync.Mutex
	active *Window // the window whose fault is in force, nil when none
}

// NewRunner writes its log (one JSON window per line) to path.
func NewRunner(c Cluster, obs Observer, path string) (*Runner, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &Runner{c: c, obs: obs, out: f}, nil
}

// Close closes the log.
func (r *Runner) Close() error { return r.out.Close() }

// Run applies the schedule, in order, until ctx ends or the phase
// (started at t0) reaches its end. Each fault waits for its time and for
// the cluster to have recovered from the previous one.
func (r *Runner) Run(ctx context.Context, t0, end time.Time, sched []Step, report func(*Window)) []*Window {
	var out []*Window
	for i, s := range sched {
		if wait := time.Until(t0.Add(s.At)); wait > 0 {
			sleepCtx(ctx, wait)
		}
		if ctx.Err() != nil || time.Now().Add(s.Hold).After(end) {
			break
		}
		w := r.one(ctx, i+1, s)
		out = append(out, w)
		if b, err := json.Marshal(w); err == nil {
			// The log is for a reader after the run; a failed write
			// loses a line of it, not the run.
			_, _ = r.out.Write(append(b, '\n'))
		}
		if report != nil {
			report(w)
		}
	}
	return out
}

// HealAll heals the fault in force, if any, then puts every family's
// machinery back to rest (no rules, no stopped process, no ballast,
// nothing armed). Safe to call at any time.
func (r *Runner) HealAll(ctx context.Context) {
	r.mu.Lock()
	w := r.active
	r.active = nil
	r.mu.Unlock()
	if w != nil {
		if f, ok := Lookup(w.Fault.Class); ok {
			f.Heal(ctx, r.c, w)
		}
	}
	resetProcesses(r.c)
	resetNetwork(r.c)
	resetDisks(r.c)
	resetFailpoints(r.c)
}

func (r *Runner) setActive(w *Window) {
	r.mu.Lock()
	r.active = w
	r.mu.Unlock()
}

// one runs one fault window: inject, hold, verify, heal, recover.
func (r *Runner) one(ctx context.Context, i int, s Step) *Window {
	w := &Window{N: i, Fault: s, Start: time.Now()}
	r.obs.Poll(ctx)
	w.LeaderBefore, w.TermBefore = r.obs.Leader(s.Shard)
	f, ok := Lookup(s.Class)
	switch {
	case !ok:
		w.Err = fmt.Sprintf("unknown fault class %q", s.Class)
	case f.Traits().Leader && w.LeaderBefore == "":
		w.Err = fmt.Sprintf("shard %d has no known leader", s.Shard)
	default:
		r.setActive(w)
		if err := f.Inject(ctx, r.c, w); err != nil {
			w.Err = err.Error()
		} else {
			r.hold(ctx, f, w)
			f.Verify(ctx, r.c, w)
		}
		r.setActive(nil)
		f.Heal(ctx, r.c, w)
	}
	w.Healed = time.Now()
	r.recover(ctx, w)
	w.Recovered = time.Now()
	return w
}

// hold keeps the fault for its hold and, for a leader-targeted one, until
// the shard's leader changes (bounded), then records the leader after.
func (r *Runner) hold(ctx context.Context, f Fault, w *Window) {
	sleepCtx(ctx, w.Fault.Hold)
	if f.Traits().Leader {
		// An election can take longer than a short hold (a lagging
		// voter, split votes): keep the fault until the shard's leader
		// changes, for a bounded while.
		WaitFor(maxElectionWait, func() bool {
			if ctx.Err() != nil {
				return true
			}
			r.obs.Poll(ctx)
			l, t := r.obs.Leader(w.Fault.Shard)
			return l != w.LeaderBefore || t > w.TermBefore
		})
	}
	r.obs.Poll(ctx)
	w.LeaderAfter, w.TermAfter = r.obs.Leader(w.Fault.Shard)
	if f.Traits().Leader {
		changed := w.LeaderBefore != "" && (w.LeaderAfter != w.LeaderBefore || w.TermAfter > w.TermBefore)
		w.LeaderChanged = &changed
	}
}

// recover restarts whatever died and waits until every shard has a
// leader and the proxy answers.
func (r *Runner) recover(ctx context.Context, w *Window) {
	for _, name := range members(r.c) {
		p := r.c.Proc(name)
		if !p.Running() {
			w.note("%s was down after the heal: restarted", name)
			if err := r.c.Restart(ctx, name); err != nil {
				w.note("restart %s: %v", name, err)
			}
		}
		p.ExpectDeath(false)
	}
	ok := WaitFor(30*time.Second, func() bool {
		if ctx.Err() != nil {
			return true
		}
		r.obs.Poll(ctx)
		return r.obs.AllLed() && r.c.Healthy(ctx, proxy)
	})
	if !ok {
		w.note("the cluster had not recovered 30s after the heal")
	}
	if r.CatchUp && ctx.Err() == nil && !r.caughtUp(ctx, 20*time.Second) {
		w.note("a replica had not caught up 20s after the heal")
	}
}

// caughtUp waits until every replica of every shard has applied at least
// the seq the most advanced replica of that shard had applied when the
// wait began, so that the next fault meets a cluster whose replicas are
// all current (no follower still installing a snapshot, say).
func (r *Runner) caughtUp(ctx context.Context, d time.Duration) bool {
	r.obs.Poll(ctx)
	target := map[int]uint64{}
	for s := 0; s < r.c.Shards(); s++ {
		for _, node := range r.c.Nodes() {
			if v, ok := r.obs.Applied(node, s); ok {
				target[s] = max(target[s], v)
			}
		}
	}
	return WaitFor(d, func() bool {
		if ctx.Err() != nil {
			return true
		}
		r.obs.Poll(ctx)
		for s := 0; s < r.c.Shards(); s++ {
			for _, node := range r.c.Nodes() {
				if v, ok := r.obs.Applied(node, s); !ok || v < target[s] {
					return false
				}
			}
		}
		return true
	})
}

// proxy is the proxy's member name.
const proxy = "proxy"

// members returns the nodes, then the proxy.
func members(c Cluster) []string { return append(slices.Clone(c.Nodes()), proxy) }

// WaitFor polls ok every 20 ms until it holds or d has passed.
func WaitFor(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
