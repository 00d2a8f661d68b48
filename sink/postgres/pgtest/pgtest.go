// Package pgtest starts a throw-away PostgreSQL server for tests: the
// Debian package's initdb and postgres, on a loopback port, with its data
// in the test's temporary directory, stopped by pid when the test ends.
// A machine without PostgreSQL fails the test with one line naming it
// (scripts/prereqs.sh installs it for make test).
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// binDirs are where initdb and postgres are looked for before PATH.
var binDirs = []string{"/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"}

// Limits of starting and stopping a server.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

// Options tune the server.
type Options struct {
	// Durable keeps fsync and synchronous_commit on (the defaults of a
	// production server); tests leave it off to run faster.
	Durable bool
}

// Server is one postgres process.
type Server struct {
	// DSN connects as the superuser "postgres" to database "postgres".
	DSN  string
	Port int
	Data string
	Log  string

	bin  string
	cred *syscall.Credential
	cmd  *exec.Cmd
	done chan struct{}
	opts Options
}

// Start initialises a data directory and starts a server on a free
// loopback port; it is stopped when t ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := findBin()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{bin: bin, opts: o}
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: the server runs as the package's
		// postgres user, who must reach and own its directory.
		if s.cred, err = postgresUser(); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	s.Data, s.Log = filepath.Join(dir, "data"), filepath.Join(dir, "postgres.log")
	if out, err := s.command("initdb", "-D", s.Data, "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if s.Port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	s.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(s.Log); err == nil {
				t.Logf("postgres log:\n%s", b)
			}
		}
	})
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	return s
}

func findBin() (string, error) {
	for _, d := range binDirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL is not installed (no postgres in %s or PATH): apt-get install postgresql, or run scripts/prereqs.sh", binDirs[0])
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL needs its postgres user: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// Restart starts the server again on its data and port (after Stop or
// Kill) and waits until it accepts connections.
func (s *Server) Restart() error {
	args := []string{"-D", s.Data, "-p", strconv.Itoa(s.Port), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=", "-c", "max_connections=50"}
	if !s.opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	log, err := os.OpenFile(s.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := s.command("postgres", args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait() // its exit is seen through done
		log.Close()
		close(done)
	}(s.done)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for {
		conn, err := pgconn.Connect(ctx, s.DSN)
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited at start (see %s)", s.Log)
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready within %s: %v", readyTimeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop shuts the server down by its pid (fast shutdown, then SIGKILL).
// It is idempotent.
func (s *Server) Stop() { s.stop(syscall.SIGINT) }

// Kill stops the server with SIGKILL, as a crash would.
func (s *Server) Kill() { s.stop(syscall.SIGKILL) }

func (s *Server) stop(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig) // it may have exited already
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill() // a server that ignores the signal
		<-s.done
	}
	s.cmd = nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
