package nemesis

import (
	"context"
	"fmt"
	"time"
)

// The failpoint family: arm a failpoint of a failpoints build (tally
// reads its failpoint file while it runs) on the shard's leader and wait
// for the node to stop: an fsync that fails, or a crash at a named point
// (before or after apply, during a snapshot, between saga steps). The
// heal disarms it and starts the node again. Needs a failpoints build,
// and root: it is left to the full run.
var (
	fsyncError Fault = failpoint{name: "fsync-error", arm: func(string) string { return "fsync-error error" }}
	crashPoint Fault = failpoint{name: "crash-point", arm: func(v string) string { return "crash-" + v + " crash" },
		variants: []string{"before-apply", "after-apply", "snapshot", "saga-before-credit", "saga-before-resolve"}}
)

// FailpointBase is the failpoint file's content when nothing is armed:
// frequent snapshots, so that snapshot, restore and the snapshot crash
// point happen within a short run.
const FailpointBase = "snapshot-threshold 256\nsnapshot-interval 2s\n"

// failpoint arms one failpoint; arm gives its line from the variant.
type failpoint struct {
	name     string
	arm      func(variant string) string
	variants []string
}

// tripped is a failpoint window's state.
type tripped struct {
	arm  string
	died bool
}

func (f failpoint) Name() string { return f.name }

func (failpoint) Available(env Env) error {
	if !env.Root {
		return ErrNeedsRoot
	}
	if !env.Failpoints {
		return ErrNeedsFailpoints
	}
	return nil
}

func (f failpoint) Traits() Traits { return Traits{Variants: f.variants} }

// Inject arms the failpoint, waits (up to the hold and 5 s more) for the
// node to stop, and disarms it, so that the restart does not trip it
// again.
func (f failpoint) Inject(_ context.Context, c Cluster, w *Window) error {
	w.Target = aimLeaderOrNode.target(c, w)
	st := &tripped{arm: f.arm(w.Fault.Variant)}
	w.state = st
	p := c.Proc(w.Target)
	p.ExpectDeath(true)
	if err := c.SetFailpoints(w.Target, FailpointBase+st.arm+"\n"); err != nil {
		return err
	}
	st.died = p.WaitExit(w.Fault.Hold + 5*time.Second)
	return c.SetFailpoints(w.Target, FailpointBase)
}

func (failpoint) Verify(_ context.Context, _ Cluster, w *Window) {
	st := w.state.(*tripped)
	w.Verified = st.died
	w.Verify = fmt.Sprintf("%s armed %q and stopped", w.Target, st.arm)
	if !st.died {
		w.Verify = fmt.Sprintf("%s armed %q but did not stop", w.Target, st.arm)
	}
}

func (failpoint) Heal(ctx context.Context, c Cluster, w *Window) { restart(ctx, c, w, w.Target) }

// resetFailpoints disarms every node's failpoints.
func resetFailpoints(c Cluster) {
	for _, node := range c.Nodes() {
		_ = c.SetFailpoints(node, FailpointBase) // best effort, at the end of the run
	}
}
