package proc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sleeper is a Proc that runs sleep(1) through env(1), a prefix that
// execs its command the way ip netns exec does.
func sleeper(t *testing.T) *Proc {
	t.Helper()
	p := &Proc{Name: "s", Bin: "sleep", Args: []string{"30"}, Prefix: []string{"env"},
		LogPath: filepath.Join(t.TempDir(), "s.log"), Env: []string{"PROC_TEST=1"}}
	t.Cleanup(func() { p.Stop(time.Second) })
	return p
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSignals(t *testing.T) {
	p := sleeper(t)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err == nil {
		t.Error("a second Start of a running process succeeded")
	}
	if !p.Running() || p.Pid() == 0 {
		t.Fatal("not running after Start")
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "state T after SIGSTOP", p.Stopped)
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "running after SIGCONT", func() bool { return !p.Stopped() })
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() || !strings.Contains(p.Exit(), "killed") || len(p.Unexpected()) != 0 {
		t.Errorf("after Kill: running %v, exit %q, unexpected %v", p.Running(), p.Exit(), p.Unexpected())
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Error("signalled a process that is not running")
	}
	log, err := os.ReadFile(p.LogPath)
	if err != nil || !strings.Contains(string(log), " start 30\n") {
		t.Errorf("log %q (%v): want a start line", log, err)
	}
}

// An end nobody caused is reported, unless a fault was expected to cause
// it.
func TestUnexpected(t *testing.T) {
	p := sleeper(t)
	for _, expect := range []bool{false, true} {
		p.ExpectDeath(expect)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		pid := p.Pid()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if !p.WaitExit(5 * time.Second) {
			t.Fatal("no exit after SIGKILL")
		}
	}
	if u := p.Unexpected(); len(u) != 1 || !strings.Contains(u[0], "killed") {
		t.Errorf("unexpected %v, want the one end that was not expected", u)
	}
}

func TestStopAllKillsStragglers(t *testing.T) {
	calm := sleeper(t)
	// sh ignores SIGTERM here, so only SIGKILL ends it.
	stubborn := &Proc{Name: "stubborn", Bin: "sh", Args: []string{"-c", "trap '' TERM; sleep 30 & wait"},
		LogPath: filepath.Join(t.TempDir(), "x.log")}
	for _, p := range []*Proc{calm, stubborn} {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // let sh set its trap
	killed := StopAll(500*time.Millisecond, stubborn, calm, &Proc{Name: "never started"})
	if len(killed) != 1 || killed[0] != "stubborn" || calm.Running() || stubborn.Running() {
		t.Errorf("killed %v; running %v %v", killed, calm.Running(), stubborn.Running())
	}
}

func TestRestartWaitsReady(t *testing.T) {
	p := sleeper(t)
	var asked int
	p.Ready = func(context.Context) bool { asked++; return asked >= 3 }
	if err := p.Restart(context.Background(), 5*time.Second); err != nil || !p.Running() || asked != 3 {
		t.Fatalf("restart: %v, running %v, asked %d", err, p.Running(), asked)
	}
	if err := p.Restart(context.Background(), time.Second); err != nil || asked != 3 {
		t.Errorf("restart of a running process: %v, asked %d", err, asked)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	// A process that ends while it is awaited fails the wait at once.
	p.Args = []string{"0"}
	p.Ready = func(context.Context) bool { return false }
	start := time.Now()
	err := p.Restart(context.Background(), 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited") || time.Since(start) > 5*time.Second {
		t.Errorf("restart of a process that exits: %v after %v", err, time.Since(start))
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p == 0 || seen[p] {
			t.Errorf("ports %v", ports)
		}
		seen[p] = true
	}
}
