package cluster

import (
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A follower installing a snapshot reads the stream on Raft's main loop
// with no deadline; if the leader is cut off mid-stream only TCP keepalive
// ends the read. The fault suite found a shard without a leader for 13 s
// that way (test/README.md). Both ends of a Raft connection must probe a
// silent peer within seconds.
func TestRaftConnsProbeSilentPeers(t *testing.T) {
	m, err := Listen("127.0.0.1:0", nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	l := m.Layer(3)
	out, err := l.Dial(raft.ServerAddress(m.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	in, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for name, c := range map[string]net.Conn{"dialed": out, "accepted": in} {
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		opts := map[string][2]int{
			"SO_KEEPALIVE":  {syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			"TCP_KEEPIDLE":  {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			"TCP_KEEPINTVL": {syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			"TCP_KEEPCNT":   {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
		}
		want := map[string]int{"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 1, "TCP_KEEPINTVL": 1, "TCP_KEEPCNT": 3}
		for opt, lv := range opts {
			var v int
			var gerr error
			raw.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), lv[0], lv[1]) })
			if gerr != nil {
				t.Fatalf("%s %s: %v", name, opt, gerr)
			}
			if v != want[opt] {
				t.Errorf("%s connection: %s = %d, want %d", name, opt, v, want[opt])
			}
		}
	}
}
