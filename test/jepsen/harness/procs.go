package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one tally process (a node or the proxy), started again with the
// same arguments after a kill.
type Proc struct {
	Name    string
	NS      string // network namespace, "" to run in the harness's own
	Args    []string
	LogPath string
	Env     []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exit    string // how the last run ended
	paused  bool
	killed  bool // the harness killed it on purpose
	expect  bool // the harness expects it may die (a fault that crashes it)
	unexpct []string
}

// Start launches the process.
func (p *Proc) Start(bin string, extra ...string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.Name)
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "==== %s start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(append(p.Args, extra...), " "))
	args := append(append([]string{}, p.Args...), extra...)
	var cmd *exec.Cmd
	if p.NS != "" {
		// ip netns exec execs the binary: the pid is tally's own.
		cmd = exec.Command("ip", append([]string{"netns", "exec", p.NS, bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), p.Env...)
	// Its own process group: a Ctrl-C at the terminal reaches the harness
	// only, which then stops everything in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	p.cmd, p.done, p.paused, p.killed = cmd, make(chan struct{}), false, false
	done := p.done
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		p.exit = "exited"
		if err != nil {
			p.exit = err.Error()
		}
		if !p.killed && !p.expect {
			p.unexpct = append(p.unexpct, fmt.Sprintf("%s %s", time.Now().Format("15:04:05.000"), p.exit))
		}
		if p.cmd == cmd {
			p.cmd = nil
		}
		close(done)
	}()
	return nil
}

// Pid returns the running process's pid, or 0.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process runs.
func (p *Proc) Running() bool { return p.Pid() != 0 }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s is not running", p.Name)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
	case syscall.SIGCONT:
		p.paused = false
	case syscall.SIGKILL, syscall.SIGTERM:
		p.killed = true
	}
	return syscall.Kill(p.cmd.Process.Pid, sig)
}

// Kill sends SIGKILL and waits (bounded) for the process to end.
func (p *Proc) Kill() error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s did not exit after SIGKILL", p.Name)
	}
}

// Stop asks the process to shut down (SIGTERM after a SIGCONT), then
// kills it if it has not exited within d.
func (p *Proc) Stop(d time.Duration) {
	p.mu.Lock()
	done := p.done
	running := p.cmd != nil
	p.mu.Unlock()
	if !running {
		return
	}
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(d):
		_ = p.Kill()
	}
}

// WaitExit waits up to d for the process to end.
func (p *Proc) WaitExit(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	running := p.cmd != nil
	p.mu.Unlock()
	if !running {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Stopped reports whether the kernel shows the process stopped (state T).
func (p *Proc) Stopped() bool {
	pid := p.Pid()
	if pid == 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && (s[i+2] == 'T' || s[i+2] == 't')
}

// ExpectDeath marks the process as one a fault may crash.
func (p *Proc) ExpectDeath(v bool) {
	p.mu.Lock()
	p.expect = v
	p.mu.Unlock()
}

// Unexpected returns the exits the harness did not cause or expect.
func (p *Proc) Unexpected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpct...)
}
