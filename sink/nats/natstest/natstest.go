// Package natstest runs a real nats-server with JetStream for tests: the
// binary of the Debian package (2.9), on a free loopback port, with its
// store in a throw-away directory, stopped by its pid when the test ends.
package natstest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	natsio "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Limits on waiting for the server.
const (
	readyWait = 20 * time.Second // start to JetStream answering
	stopWait  = 10 * time.Second // SIGTERM to exit, before SIGKILL
)

// Binary is the server's command, found on PATH.
const Binary = "nats-server"

// Server is one nats-server process. Its methods are called from the
// test's goroutine.
type Server struct {
	URL     string // nats://127.0.0.1:PORT
	Port    int
	Dir     string // the JetStream store (-sd)
	LogPath string

	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts nats-server with JetStream on a free port and waits until
// JetStream answers. The test fails with one line naming the binary when
// it is not installed (`make prereqs` installs it). The server is stopped
// when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Fatalf("%s is not installed (apt-get install nats-server, or make prereqs)", Binary)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Port: port, Dir: filepath.Join(dir, "store"),
		LogPath: filepath.Join(dir, "nats-server.log"), t: t}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(s.LogPath) // shown only to help; a missing log says enough
			t.Logf("---- nats-server log (last 4 KiB) ----\n%s", tail(b, 4096))
		}
	})
	s.Restart()
	return s
}

// Restart starts the server again on the same port and store (it must be
// stopped) and waits until JetStream answers.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatalf("nats-server is already running (pid %d)", s.cmd.Process.Pid)
	}
	f, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	// -js turns JetStream on, -sd puts its store in the test's directory,
	// -a keeps it on loopback.
	cmd := exec.Command(Binary, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-sd", s.Dir)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		s.t.Fatalf("start %s: %v", Binary, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // how it ended is in its log
		f.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	if err := s.waitReady(); err != nil {
		s.t.Fatalf("%v; see %s", err, s.LogPath)
	}
}

// Pid is the running server's pid, or 0.
func (s *Server) Pid() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop sends SIGTERM to the server's pid and SIGKILL if it has not ended
// within stopWait. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM) // an error means it has just exited
	select {
	case <-s.done:
	case <-time.After(stopWait):
		_ = syscall.Kill(pid, syscall.SIGKILL) // as above
		<-s.done
	}
	s.cmd = nil
}

// waitReady waits until the server's JetStream answers an account info
// request, the process ends, or readyWait passes.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(readyWait)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("%s exited at start: %s", Binary, lastLine(s.LogPath))
		default:
		}
		if last = s.ping(); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s: %v", Binary, readyWait, last)
}

func (s *Server) ping() error {
	nc, err := natsio.Connect(s.URL, natsio.Timeout(time.Second), natsio.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// Connect returns a connection to the server, closed when the test ends.
func (s *Server) Connect() (*natsio.Conn, jetstream.JetStream) {
	s.t.Helper()
	nc, err := natsio.Connect(s.URL, natsio.Timeout(2*time.Second))
	if err != nil {
		s.t.Fatalf("connect to %s: %v", s.URL, err)
	}
	s.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatal(err)
	}
	return nc, js
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var last string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	return last
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Msg is one message of a stream as ReadStream returns it.
type Msg struct {
	Seq     uint64 // the stream's sequence
	Subject string
	ID      string // its Nats-Msg-Id
	Data    []byte
}

// ReadStream reads every message of stream, in order, through an ordered
// consumer, within d.
func ReadStream(t testing.TB, js jetstream.JetStream, stream string, d time.Duration) []Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	last := s.CachedInfo().State.LastSeq
	var out []Msg
	if s.CachedInfo().State.Msgs == 0 {
		return out
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("read stream %s: %v", stream, err)
	}
	for {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatalf("read stream %s: %v", stream, err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatalf("read stream %s: %v", stream, err)
			}
			out = append(out, Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), ID: m.Headers().Get(jetstream.MsgIDHeader), Data: m.Data()})
			if md.Sequence.Stream >= last {
				return out
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, natsio.ErrTimeout) {
			t.Fatalf("read stream %s: %v", stream, err)
		}
		if ctx.Err() != nil {
			t.Fatalf("read stream %s: %d messages up to seq %d after %s, want up to seq %d", stream, len(out), lastSeq(out), d, last)
		}
	}
}

func lastSeq(ms []Msg) uint64 {
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Seq
}
