package nemesis

import (
	"context"
	"fmt"
)

// The disk family: fill a node's small loop-mounted filesystem to the
// last block, then remove the ballast. A node that cannot write stops
// (it must never acknowledge what it could not persist), so its exit is
// expected and the heal starts it again. Needs root (the loop mount).
var diskFull Fault = full{"disk-full"}

// full fills a node's filesystem.
type full struct{ name string }

// filled is a disk-full window's state.
type filled struct {
	disk Disk
	left int64 // bytes left after the fill
}

func (f full) Name() string          { return f.name }
func (full) Available(env Env) error { return needsRoot(env) }
func (full) Traits() Traits          { return Traits{} }

func (f full) Inject(_ context.Context, c Cluster, w *Window) error {
	w.Target = aimNode.target(c, w)
	d := c.Disk(w.Target)
	if d == nil {
		return fmt.Errorf("%s has no loop-mounted disk", w.Target)
	}
	c.Proc(w.Target).ExpectDeath(true)
	st := &filled{disk: d}
	w.state = st
	left, err := d.Fill()
	st.left = left
	return err
}

func (full) Verify(_ context.Context, _ Cluster, w *Window) {
	st := w.state.(*filled)
	w.Verified = st.left == 0
	w.Verify = fmt.Sprintf("%s's filesystem filled (%d bytes left)", w.Target, st.left)
}

func (full) Heal(ctx context.Context, c Cluster, w *Window) {
	st, ok := w.state.(*filled)
	if !ok {
		return
	}
	p := c.Proc(w.Target)
	if !p.Running() {
		w.note("%s stopped while its disk was full", w.Target)
	}
	if err := st.disk.Drain(); err != nil {
		w.HealMsg = err.Error()
	}
	w.HealVerified = st.disk.Free() > 1<<20
	if !p.Running() {
		restart(ctx, c, w, w.Target)
	}
}

// resetDisks removes the ballast of every node's disk.
func resetDisks(c Cluster) {
	for _, node := range c.Nodes() {
		if d := c.Disk(node); d != nil {
			_ = d.Drain() // best effort, at the end of the run: the disk is unmounted next
		}
	}
}
