package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// AppendEntriesPipeline wraps the NetworkTransport's pipeline so that its
// responses are always drained. hashicorp/raft's pipeline can deadlock:
// when a follower answers Success=false, raft's decoder returns and no one
// reads the pipeline's unbuffered done channel; the send loop may still
// take one more trigger and block on the in-progress channel behind the
// response that cannot be delivered, while pipeline.Close, which would
// free both, is deferred in that same loop. Replication to that follower
// then stops for good (heartbeats go on, so no election heals it), and
// Raft's Shutdown waits for that goroutine forever: a node that got
// SIGTERM under load hung in it. Refusing to pipeline also avoids it but
// cost about a fifth of the random-pairs throughput.
func (t serialTransport) AppendEntriesPipeline(id raft.ServerID, addr raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, addr)
	if err != nil {
		return nil, err
	}
	return drain(p), nil
}

// drainedPipeline forwards the inner pipeline's responses into a buffer,
// so the inner decoder never waits for raft's. With raft's decoder gone,
// the buffer takes what the send loop still sends before it sees that and
// closes the pipeline.
type drainedPipeline struct {
	raft.AppendPipeline
	out   chan raft.AppendFuture
	stop  chan struct{}
	done  chan struct{}
	close sync.Once
}

// drainBuffer bounds the responses held for a consumer that is gone: the
// send loop would have to pick another send over its closed finish
// channel this many times in a row to fill it.
const drainBuffer = 64

func drain(p raft.AppendPipeline) *drainedPipeline {
	d := &drainedPipeline{AppendPipeline: p, out: make(chan raft.AppendFuture, drainBuffer),
		stop: make(chan struct{}), done: make(chan struct{})}
	go d.forward()
	return d
}

func (d *drainedPipeline) forward() {
	defer close(d.done)
	in := d.AppendPipeline.Consumer()
	for {
		select {
		case f := <-in:
			select {
			case d.out <- f:
			case <-d.stop:
				return
			}
		case <-d.stop:
			return
		}
	}
}

// Consumer returns the forwarded responses, in the order they came.
func (d *drainedPipeline) Consumer() <-chan raft.AppendFuture { return d.out }

// Close stops the forwarding and closes the inner pipeline.
func (d *drainedPipeline) Close() error {
	d.close.Do(func() { close(d.stop) })
	err := d.AppendPipeline.Close()
	<-d.done
	return err
}
