package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Mux shares one TCP port among the Raft groups of a node: every new
// connection starts with one byte naming the group, and the mux hands the
// connection to that group's stream layer. Each group keeps hashicorp/raft's
// stock NetworkTransport (and with it pre-vote) on top.
type Mux struct {
	ln  net.Listener
	log *slog.Logger
	sec *TLS // nil: plaintext

	mu     sync.Mutex
	layers map[byte]*Layer
	done   chan struct{}
	once   sync.Once
}

// handshakeTimeout bounds how long a new connection may take to name its
// group before the mux drops it.
const handshakeTimeout = 5 * time.Second

// keepAlive makes a connection whose peer went silent fail within seconds
// rather than the kernel's default minutes. It matters most to a follower
// installing a snapshot: hashicorp/raft reads the stream on the follower's
// main loop with no deadline, so while a leader cut off mid-stream keeps the
// read blocked, the follower can neither vote nor time out, and with one node
// already down its shard cannot elect a leader. Probes are answered by the
// peer's kernel, so idle but healthy connections are not affected.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 3}

// TLS secures a Raft port with mutual TLS: both ends must show a node
// certificate of the cluster, so that nothing else can join a group or
// send it Raft traffic.
type TLS struct {
	// Server is the configuration the port accepts with; it must require
	// and verify client certificates.
	Server *tls.Config
	// Client returns the configuration for dialing the port at addr.
	Client func(addr string) *tls.Config
}

// Listen opens the node's Raft port; sec nil leaves it plaintext.
func Listen(addr string, sec *TLS, log *slog.Logger) (*Mux, error) {
	lc := net.ListenConfig{KeepAliveConfig: keepAlive}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("raft listen %s: %w", addr, err)
	}
	m := &Mux{ln: ln, log: log, sec: sec, layers: map[byte]*Layer{}, done: make(chan struct{})}
	go m.serve()
	return m, nil
}

// Addr returns the listening address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Layer returns the stream layer of group id, creating it on first use.
func (m *Mux) Layer(id byte) *Layer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.layers[id]; ok {
		return l
	}
	l := &Layer{mux: m, id: id, conns: make(chan net.Conn, 16), closed: make(chan struct{})}
	m.layers[id] = l
	return l
}

func (m *Mux) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			m.log.Warn("raft accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go m.route(c)
	}
}

func (m *Mux) route(c net.Conn) {
	var b [1]byte
	// The TLS handshake, if any, runs within the first read, under the
	// same deadline.
	if m.sec != nil {
		c = tls.Server(c, m.sec.Server)
	}
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := c.Read(b[:]); err != nil {
		if m.sec != nil {
			m.log.Warn("raft connection refused", "from", c.RemoteAddr().String(), "err", err)
		}
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	m.mu.Lock()
	l := m.layers[b[0]]
	m.mu.Unlock()
	if l == nil {
		c.Close()
		return
	}
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	case <-m.done:
		c.Close()
	}
}

// Close stops accepting connections. It is idempotent.
func (m *Mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		err = m.ln.Close()
	})
	return err
}

// Layer is one group's raft.StreamLayer on a shared port.
type Layer struct {
	mux    *Mux
	id     byte
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

var errLayerClosed = errors.New("raft stream layer closed")

// Accept waits for the next connection for this group.
func (l *Layer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, errLayerClosed
	case <-l.mux.done:
		return nil, errLayerClosed
	}
}

// Close stops this layer's Accept. It is idempotent.
func (l *Layer) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr returns the shared listening address.
func (l *Layer) Addr() net.Addr { return l.mux.Addr() }

// Dial connects to a peer's shared port and names this group.
func (l *Layer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAliveConfig: keepAlive}
	c, err := d.Dial("tcp", string(addr))
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	if l.mux.sec != nil {
		tc := tls.Client(c, l.mux.sec.Client(string(addr)))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("raft TLS to %s: %w", addr, err)
		}
		c = tc
	}
	if _, err := c.Write([]byte{l.id}); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

var _ raft.StreamLayer = (*Layer)(nil)
