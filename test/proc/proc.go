// Package proc starts and stops the tally processes of the tests that
// span processes: the end-to-end tests, the benchmark runner and the
// fault suite. A Proc is one `tally server` or `tally proxy` with its
// flags, its output appended to a log file, in its own process group,
// optionally run through a command prefix (`ip netns exec NAME`), and
// started again with the same flags after a kill.
package proc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits on waiting for a process.
const (
	// KillWait bounds the wait for a process to end after SIGKILL.
	KillWait = 5 * time.Second
	// readyEvery is how often WaitReady asks whether the process answers.
	readyEvery = 100 * time.Millisecond
)

// Proc is one tally process. Set the exported fields before the first
// Start and do not change them after. The methods are safe for
// concurrent use.
type Proc struct {
	Name string   // for messages and the log: n1, proxy
	Bin  string   // the tally binary
	Args []string // its arguments on every start
	// Prefix, if set, is a command that runs the binary, such as
	// `ip netns exec NAME`. It must exec the binary, so that the pid is
	// tally's own and signals reach it.
	Prefix  []string
	LogPath string   // output, appended to; each start writes a header line
	Env     []string // added to the environment the process inherits
	// Ready reports whether the process answers (an HTTP probe of its
	// health endpoint); WaitReady and Restart poll it.
	Ready func(ctx context.Context) bool

	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{} // closed when the current run has been waited for
	exit       string        // how the last run ended
	killed     bool          // we signalled it to end
	expect     bool          // a fault may crash it
	unexpected []string
}

// Start launches the process with Args and then extra.
func (p *Proc) Start(extra ...string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.Name)
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log of %s: %w", p.Name, err)
	}
	args := append(append([]string{}, p.Args...), extra...)
	fmt.Fprintf(f, "==== %s start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	argv := append(append(append([]string{}, p.Prefix...), p.Bin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	// Its own process group: a Ctrl-C at the terminal reaches the caller
	// only, which then stops everything in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.done, p.killed = cmd, make(chan struct{}), false
	go p.wait(cmd, f, p.done)
	return nil
}

// wait reaps one run and records how it ended.
func (p *Proc) wait(cmd *exec.Cmd, log *os.File, done chan struct{}) {
	err := cmd.Wait()
	log.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.exit = "exited"
	if err != nil {
		p.exit = err.Error()
	}
	if !p.killed && !p.expect {
		p.unexpected = append(p.unexpected, fmt.Sprintf("%s %s", time.Now().Format("15:04:05.000"), p.exit))
	}
	if p.cmd == cmd {
		p.cmd = nil
	}
	close(done)
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

// Exit says how the last run ended ("" if none has).
func (p *Proc) Exit() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// Signal sends sig to the process. SIGKILL and SIGTERM mark its end as
// one we caused.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s is not running", p.Name)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		p.killed = true
	}
	return syscall.Kill(p.cmd.Process.Pid, sig)
}

// current returns the running process's done channel, or nil.
func (p *Proc) current() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	return p.done
}

// Kill sends SIGKILL (no shutdown, no flush) and waits up to KillWait for
// the process to end.
func (p *Proc) Kill() error {
	done := p.current()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(KillWait):
		return fmt.Errorf("%s did not exit after SIGKILL", p.Name)
	}
}

// Stop asks the process to shut down (SIGCONT, in case it is paused, then
// SIGTERM) and kills it if it has not ended within d. It reports whether
// it had to kill.
func (p *Proc) Stop(d time.Duration) bool {
	return len(StopAll(d, p)) > 0
}

// StopAll stops every process at once: SIGCONT and SIGTERM to each, then
// SIGKILL to those still running d later. It returns the names of those
// it killed.
func StopAll(d time.Duration, ps ...*Proc) []string {
	dones := make([]<-chan struct{}, len(ps))
	for i, p := range ps {
		if dones[i] = p.current(); dones[i] != nil {
			// An error means it has just exited: nothing left to stop.
			_ = p.Signal(syscall.SIGCONT)
			_ = p.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(d)
	var killed []string
	for i, p := range ps {
		if dones[i] == nil {
			continue
		}
		select {
		case <-dones[i]:
			continue
		case <-time.After(time.Until(deadline)):
		}
		select {
		case <-dones[i]:
		default:
			killed = append(killed, p.Name)
			_ = p.Kill() // as above; a process SIGKILL cannot end is beyond help
		}
	}
	return killed
}

// WaitExit waits up to d for the process to end and reports whether it
// has.
func (p *Proc) WaitExit(d time.Duration) bool {
	done := p.current()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Stopped reports whether the kernel shows the process stopped (state T),
// as after SIGSTOP.
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

// ExpectDeath marks the process as one a fault may crash: its end is not
// reported by Unexpected.
func (p *Proc) ExpectDeath(v bool) {
	p.mu.Lock()
	p.expect = v
	p.mu.Unlock()
}

// Unexpected returns the ends of the process that nobody caused or
// expected, each with its time.
func (p *Proc) Unexpected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// ErrExited is returned by WaitReady when the process ends while it is
// waited for.
var ErrExited = errors.New("exited")

// WaitReady polls Ready until it reports true, the process ends, ctx
// ends or timeout passes.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !p.Ready(ctx) {
		if !p.Running() {
			return fmt.Errorf("%s %w (%s); see %s", p.Name, ErrExited, p.Exit(), p.LogPath)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s; see %s", p.Name, timeout, p.LogPath)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", p.Name, ctx.Err())
		case <-time.After(readyEvery):
		}
	}
	return nil
}

// Restart starts a process that is not running again, with its Args and
// its data, and waits up to timeout until it is ready. A running process
// is left alone.
func (p *Proc) Restart(ctx context.Context, timeout time.Duration) error {
	if p.Running() {
		return nil
	}
	if err := p.Start(); err != nil {
		return err
	}
	return p.WaitReady(ctx, timeout)
}

// HTTPReady returns a Ready probe: GET http://addr+path through hc
// answers 200 within a second.
func HTTPReady(hc *http.Client, addr, path string) func(ctx context.Context) bool {
	return URLReady(hc, "http://"+addr+path)
}

// URLReady returns a Ready probe: GET url through hc answers 200 within a
// second.
func URLReady(hc *http.Client, url string) func(ctx context.Context) bool {
	return func(ctx context.Context) bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

// FreePorts returns n distinct loopback ports that were free a moment
// ago.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
