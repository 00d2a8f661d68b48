package cluster

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The transport must not install Raft's heartbeat fast path: a heartbeat
// handled off the main loop can raise the term while the main loop
// dispatches a batch as leader, which then lands in the log with the new
// term and diverges the replicas (hashicorp/raft#695). The fault suite
// found this divergence (test/README.md); here a heartbeat must reach the
// consumer channel, which only the main loop reads, and never the handler.
func TestHeartbeatsTakeTheMainLoop(t *testing.T) {
	recv, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	st := serialTransport{recv}
	called := make(chan struct{}, 1)
	st.SetHeartbeatHandler(func(rpc raft.RPC) {
		called <- struct{}{}
		rpc.Respond(&raft.AppendEntriesResponse{}, nil)
	})
	send, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	heartbeat := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n2"), Addr: send.EncodePeer("n2", send.LocalAddr())},
		Term: 7}
	done := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		done <- send.AppendEntries("n1", st.LocalAddr(), heartbeat, &resp)
	}()
	select {
	case rpc := <-st.Consumer():
		if _, ok := rpc.Command.(*raft.AppendEntriesRequest); !ok {
			t.Fatalf("consumer got %T", rpc.Command)
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: 7, Success: true}, nil)
	case <-called:
		t.Fatal("the heartbeat went to the fast-path handler, off the main loop")
	case <-time.After(5 * time.Second):
		t.Fatal("the heartbeat never arrived")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Pre-vote and Close must survive the wrapping: Raft turns pre-vote off
// silently for a transport without RequestPreVote.
var (
	_ raft.WithPreVote = serialTransport{}
	_ raft.WithClose   = serialTransport{}
)
