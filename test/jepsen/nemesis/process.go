package nemesis

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// The process family: kill -9 a node or the proxy and start it again with
// its data; stop one with SIGSTOP and continue it; a duty cycle of short
// stops (a slow node). It needs nothing but the processes, so it is the
// family a run without root applies.
var (
	killLeader    Fault = kill{"kill-leader", aimLeader}
	killFollower  Fault = kill{"kill-follower", aimFollower}
	proxyKill     Fault = kill{"proxy-kill", aimProxy}
	pauseLeader   Fault = pause{"pause-leader", aimLeader}
	pauseFollower Fault = pause{"pause-follower", aimFollower}
	proxyPause    Fault = pause{"proxy-pause", aimProxy}
	slowNode      Fault = slow{"slow-node"}
)

// kill sends SIGKILL; the heal starts the process again with its data.
type kill struct {
	name string
	aim  aim
}

func (k kill) Name() string                                 { return k.name }
func (kill) Available(Env) error                            { return nil }
func (k kill) Traits() Traits                               { return Traits{Leader: k.aim == aimLeader} }
func (kill) Heal(ctx context.Context, c Cluster, w *Window) { restart(ctx, c, w, w.Target) }

func (k kill) Inject(ctx context.Context, c Cluster, w *Window) error {
	w.Target = k.aim.target(c, w)
	return c.Proc(w.Target).Kill()
}

func (kill) Verify(ctx context.Context, c Cluster, w *Window) {
	up := c.Healthy(ctx, w.Target)
	w.Verified = !c.Proc(w.Target).Running() && !up
	w.Verify = fmt.Sprintf("%s exited (SIGKILL) and refuses connections", w.Target)
}

// restart heals a kill or a crash: the process starts again with its data.
func restart(ctx context.Context, c Cluster, w *Window, name string) {
	if err := c.Restart(ctx, name); err != nil {
		w.HealMsg = err.Error()
		return
	}
	w.HealVerified = true
}

// pause sends SIGSTOP; the heal sends SIGCONT.
type pause struct {
	name string
	aim  aim
}

func (p pause) Name() string      { return p.name }
func (pause) Available(Env) error { return nil }
func (p pause) Traits() Traits    { return Traits{Leader: p.aim == aimLeader} }

func (p pause) Inject(_ context.Context, c Cluster, w *Window) error {
	w.Target = p.aim.target(c, w)
	return c.Proc(w.Target).Signal(syscall.SIGSTOP)
}

func (pause) Verify(_ context.Context, c Cluster, w *Window) {
	w.Verified = WaitFor(time.Second, c.Proc(w.Target).Stopped)
	w.Verify = fmt.Sprintf("%s stopped (SIGSTOP, state T)", w.Target)
}

func (pause) Heal(_ context.Context, c Cluster, w *Window) { cont(c.Proc(w.Target), w) }

// cont continues a stopped process and confirms it runs.
func cont(p Proc, w *Window) {
	_ = p.Signal(syscall.SIGCONT) // a process that is gone needs no SIGCONT; Stopped says so below
	w.HealVerified = WaitFor(time.Second, func() bool { return !p.Stopped() })
}

// slow pauses a node in a duty cycle: 200 ms stopped, 300 ms running.
type slow struct{ name string }

// cycle is a slow window's state: the goroutine that sends the signals.
type cycle struct {
	stop, done chan struct{}
	stopped    chan struct{} // closed once the node was seen stopped
	once       sync.Once
}

func (s slow) Name() string      { return s.name }
func (slow) Available(Env) error { return nil }
func (slow) Traits() Traits      { return Traits{} }

func (slow) Inject(_ context.Context, c Cluster, w *Window) error {
	w.Target = aimNode.target(c, w)
	p := c.Proc(w.Target)
	cy := &cycle{stop: make(chan struct{}), done: make(chan struct{}), stopped: make(chan struct{})}
	w.state = cy
	var seen sync.Once
	go func() {
		defer close(cy.done)
		for {
			if p.Signal(syscall.SIGSTOP) == nil {
				time.Sleep(20 * time.Millisecond)
				if p.Stopped() {
					seen.Do(func() { close(cy.stopped) })
				}
			}
			select {
			case <-cy.stop:
				return
			case <-time.After(180 * time.Millisecond):
			}
			_ = p.Signal(syscall.SIGCONT) // when it fails the process is gone; the heal tells
			select {
			case <-cy.stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return nil
}

func (slow) Verify(_ context.Context, _ Cluster, w *Window) {
	cy := w.state.(*cycle)
	select {
	case <-cy.stopped:
		w.Verified = true
	case <-time.After(2 * time.Second):
	}
	w.Verify = fmt.Sprintf("%s cycles 200ms stopped / 300ms running", w.Target)
}

func (slow) Heal(_ context.Context, c Cluster, w *Window) {
	if cy, ok := w.state.(*cycle); ok {
		cy.once.Do(func() {
			close(cy.stop)
			<-cy.done
		})
	}
	cont(c.Proc(w.Target), w)
}

// resetProcesses continues every stopped process.
func resetProcesses(c Cluster) {
	for _, name := range members(c) {
		if p := c.Proc(name); p.Running() {
			_ = p.Signal(syscall.SIGCONT) // best effort: the run is ending
		}
	}
}
