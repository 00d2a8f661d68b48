package cluster

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// blockingPipeline behaves as raft's netPipeline does with its default
// depth: a send waits until the previous response was taken from the
// unbuffered consumer channel.
type blockingPipeline struct {
	done     chan raft.AppendFuture
	inflight chan struct{}
	closed   chan struct{}
}

func newBlockingPipeline() *blockingPipeline {
	return &blockingPipeline{done: make(chan raft.AppendFuture), inflight: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (p *blockingPipeline) AppendEntries(*raft.AppendEntriesRequest, *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	select {
	case p.inflight <- struct{}{}:
	case <-p.closed:
		return nil, raft.ErrPipelineShutdown
	}
	go func() {
		select {
		case p.done <- nil:
			<-p.inflight
		case <-p.closed:
		}
	}()
	return nil, nil
}

func (p *blockingPipeline) Consumer() <-chan raft.AppendFuture { return p.done }
func (p *blockingPipeline) Close() error                       { close(p.closed); return nil }

// TestDrainedPipeline: once raft's decoder stops reading responses, sends
// still go through (into the buffer) instead of blocking forever, and
// Close returns; while it reads, every response arrives in order.
func TestDrainedPipeline(t *testing.T) {
	d := drain(newBlockingPipeline())
	for i := 0; i < 3; i++ {
		if _, err := d.AppendEntries(nil, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case <-d.Consumer():
		case <-time.After(5 * time.Second):
			t.Fatalf("response %d not delivered", i)
		}
	}
	// The decoder is gone: nothing reads Consumer() any more.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; i < drainBuffer/2; i++ {
			if _, err := d.AppendEntries(nil, nil); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("sends block once responses are not read")
	}
	closed := make(chan error)
	go func() { closed <- d.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocks")
	}
}
