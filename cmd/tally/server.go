package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"tally/api"
	"tally/cluster"
	"tally/edge"
	"tally/node"
	"tally/shard"
)

type serverOpts struct {
	id        string
	data      string
	raft      string
	http      string
	bootstrap bool
	join      string
	shards    int
	logLevel  string
	fast      bool
	memLimit  int64
	sec       secOpts
	restore   string
}

func newServerCmd(a *app) *cobra.Command {
	o := &serverOpts{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a node: one replica of every shard and the HTTP API",
		Long: `Run a Tally node. A node hosts one replica of every shard (each its own
Raft group) on one Raft port, and serves the HTTP API on another.

Start the first node of a new cluster with --bootstrap; start every other
node with --join pointing at the HTTP address of any running node. A node
that restarts with its data directory needs neither: it rejoins its groups.

With --bootstrap --restore FILE the new cluster starts from a backup
(tally backup): the node checks the whole file, restores every shard
through Raft, then serves; other nodes --join it as usual.`,
		Example: `  tally server --id n1 --data ./data/n1 --raft 127.0.0.1:7001 --http 127.0.0.1:8001 --bootstrap
  tally server --id n2 --data ./data/n2 --raft 127.0.0.1:7002 --http 127.0.0.1:8002 --join 127.0.0.1:8001`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServer(cmd.Context(), a, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "node id (required), for example n1")
	f.StringVar(&o.data, "data", "", "data directory (default ./data/<id>)")
	f.StringVar(&o.raft, "raft", "127.0.0.1:7001", "Raft address (bound and advertised)")
	f.StringVar(&o.http, "http", "127.0.0.1:8001", "HTTP address (bound and advertised)")
	f.BoolVar(&o.bootstrap, "bootstrap", false, "start a new cluster with this node as its only member")
	f.StringVar(&o.join, "join", "", "HTTP address of a running node to join")
	f.IntVar(&o.shards, "shards", shard.DefaultShards, "number of shards of a new cluster (fixed at bootstrap)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&o.fast, "fast-failover", false, "500ms Raft heartbeat and election timeouts instead of 1s")
	f.Int64Var(&o.memLimit, "memory-limit", defaultMemLimit>>20,
		"soft limit of the Go heap in MiB (the garbage collector works harder near it; 0: none); the GOMEMLIMIT variable overrides it")
	o.sec.flags(f, true)
	f.StringVar(&o.restore, "restore", "", "with --bootstrap: start the new cluster from this backup file (tally backup)")
	cmd.MarkFlagRequired("id")
	return cmd
}

func runServer(ctx context.Context, a *app, o *serverOpts) error {
	if o.restore != "" && !o.bootstrap {
		return errRestoreBootstrap
	}
	if o.bootstrap == (o.join != "") && !hasState(o) {
		return errors.New("a new node needs exactly one of --bootstrap or --join")
	}
	if o.data == "" {
		o.data = filepath.Join("data", o.id)
	}
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	log = log.With("node", o.id)
	sec, err := o.sec.load(a.tlsCA, []string{o.http, o.raft}, true, log)
	if err != nil {
		return err
	}
	if err := sec.nodeIdentity(o.id, log); err != nil {
		return err
	}
	// The node's own calls as a client (joining, asking the shard count)
	// show what proves it a node: its certificate, or the cluster secret.
	a.tls = sec.client()
	if !sec.serve {
		a.token = string(sec.secret)
	}
	setMemoryLimit(o.memLimit, log)
	if o.join != "" && !hasState(o) {
		n, err := clusterShards(ctx, a, o.join)
		if err != nil {
			return err
		}
		o.shards = n
	}
	timing := cluster.DefaultTiming
	if o.fast {
		timing = cluster.Timing{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond, LeaderLease: 250 * time.Millisecond}
	}
	ln, err := sec.listen(o.http)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	peer := node.NewPeer(nil, sec.peerOptions()...)
	host, err := openHost(ctx, shard.Config{NodeID: o.id, RaftAddr: o.raft, HTTPAddr: o.http, Dir: o.data,
		Shards: o.shards, Bootstrap: o.bootstrap, Timing: timing, Logger: log, Peers: peer, RaftTLS: sec.raft()}, o.restore, log)
	if err != nil {
		ln.Close()
		return err
	}
	sec.watch(ctx, log)
	handler := api.New(node.New(host, peer), log, api.WithGuard(sec.guard))
	srv := edge.NewServer(handler, log)
	srv.RegisterOnShutdown(handler.StopStreams)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	log.Info("serving", "http", o.http, "raft", o.raft, "shards", host.Shards(), "data", o.data,
		"tls", sec.serve, "auth", sec.tokens != nil)
	if o.join != "" {
		go joinLoop(ctx, a, o, log)
	}
	<-ctx.Done()
	return shutdown(srv, host, log, shutdownBound)
}

// shutdownBound is how long a node may take to stop after SIGTERM: a
// process supervisor waits for it, and a node that never exits (a disk
// that fails while Badger flushes, a Raft goroutine that never returns)
// is worse than one that exits with an error.
const shutdownBound = 30 * time.Second

// stopper is what shutdown stops: the host.
type stopper interface {
	Handoff(ctx context.Context) error
	Close() error
}

// shutdown hands off this node's leaderships while HTTP still serves (a
// request that arrives meanwhile is forwarded to the new leader), stops
// serving HTTP, then closes the host, all within bound. Past the bound it
// gives up: the caller exits non-zero, and the next start replays what was
// not flushed from the Raft log.
func shutdown(srv *http.Server, host stopper, log *slog.Logger, bound time.Duration) error {
	log.Info("shutting down", "bound", bound)
	deadline := time.Now().Add(bound)
	hctx, hcancel := context.WithTimeout(context.Background(), bound/3)
	if err := host.Handoff(hctx); err != nil {
		log.Warn("hand off leadership", "err", err)
	}
	hcancel()
	sctx, cancel := context.WithTimeout(context.Background(), bound/3)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	done := make(chan error, 1)
	go func() { done <- host.Close() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("close: %w", err)
		}
		log.Info("stopped")
		return nil
	case <-time.After(time.Until(deadline)):
		return fmt.Errorf("shutdown did not finish within %v; exiting without a clean close", bound)
	}
}

// defaultMemLimit keeps a node of 4 shards near its 512 MiB budget: the
// heap is mostly Badger's memtables and caches (fsm.openDB), and without
// a limit the collector lets it grow to twice what is live.
const defaultMemLimit = 384 << 20

// setMemoryLimit applies --memory-limit unless GOMEMLIMIT is set, which
// the runtime has applied already.
func setMemoryLimit(mib int64, log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" || mib <= 0 {
		return
	}
	debug.SetMemoryLimit(mib << 20)
	log.Debug("memory limit", "mib", mib)
}

func hasState(o *serverOpts) bool {
	dir := o.data
	if dir == "" {
		dir = filepath.Join("data", o.id)
	}
	_, err := os.Stat(filepath.Join(dir, "node.json"))
	return err == nil
}

// clusterShards asks a running node how many shards the cluster has.
func clusterShards(ctx context.Context, a *app, addr string) (int, error) {
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := a.clientOf(addr).Cluster(c)
		cancel()
		if err == nil && len(st.Shards) > 0 {
			return len(st.Shards), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("join %s: %v", addr, err)
		case <-time.After(time.Second):
		}
	}
}

// joinLoop asks the cluster to add this node to every shard until it
// succeeds; joining again is harmless.
func joinLoop(ctx context.Context, a *app, o *serverOpts, log *slog.Logger) {
	for {
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.clientOf(o.join).Join(c, o.id, o.raft, o.http)
		cancel()
		if err == nil {
			log.Info("joined cluster", "via", o.join)
			return
		}
		log.Warn("join failed; retrying", "via", o.join, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
