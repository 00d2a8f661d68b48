package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tally/client"
	"tally/ledger"
)

// streamShards is the shard count of the streaming tests' cluster.
const streamShards = 4

// depositor deposits into one account per shard through the proxy until
// stopped; the log, not its answers, is what the streaming tests check.
type depositor struct {
	cl       *client.Client
	accounts []string // one per shard, accounts[i] on shard i
	n        atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startDepositor(ctx context.Context, t *testing.T, proxy string) *depositor {
	t.Helper()
	d := &depositor{cl: client.New(proxy, client.WithTimeout(3*time.Second)), stop: make(chan struct{})}
	d.accounts = make([]string, streamShards)
	var accounts []ledger.Account
	for i, left := 0, streamShards; left > 0; i++ {
		id := fmt.Sprintf("st%d", i)
		if sh := ledger.ShardOf(id, streamShards); d.accounts[sh] == "" {
			d.accounts[sh] = id
			accounts = append(accounts, ledger.Account{ID: id, Currency: "USD"})
			left--
		}
	}
	res, err := d.cl.CreateAccounts(ctx, accounts)
	mustOK(t, res, err)
	for g := range 4 {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			for k := 0; ; k++ {
				select {
				case <-d.stop:
					return
				default:
				}
				id := fmt.Sprintf("g%d-%d-%d", g, time.Now().UnixNano(), k)
				tr := ledger.Transfer{ID: id, Debit: ledger.World, Credit: d.accounts[k%streamShards], Amount: 1}
				// A failure during a kill is expected; the stream shows
				// what was applied.
				if _, err := d.cl.CreateTransfers(ctx, []ledger.Transfer{tr}); err == nil {
					d.n.Add(1)
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	t.Cleanup(d.halt)
	return d
}

func (d *depositor) halt() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	d.wg.Wait()
}

// shardLog is one shard's log as a reader received it, checked as it
// grows: seqs consecutive from the start, each prev_hash the previous
// hash.
type shardLog struct {
	mu   sync.Mutex
	last uint64
	hash ledger.Hash
	errs []string
}

func (l *shardLog) add(e *ledger.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Seq != l.last+1 || e.PrevHash != l.hash {
		l.errs = append(l.errs, fmt.Sprintf("shard %d: seq %d (prev_hash %.8s) after %d (hash %.8s)", e.Shard, e.Seq, e.PrevHash, l.last, l.hash))
	}
	l.last, l.hash = e.Seq, e.Hash
}

func (l *shardLog) at() (uint64, ledger.Hash) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, l.hash
}

// finalLogs waits for every replica to agree, then returns each shard's
// applied seq and head hash.
func (c *cluster) finalLogs(ctx context.Context) ([]uint64, []string) {
	c.t.Helper()
	c.waitConverged(ctx)
	seqs, heads := make([]uint64, streamShards), make([]string, streamShards)
	for sh := range streamShards {
		st, err := client.New(c.nodes[0].http).ShardState(ctx, sh)
		if err != nil {
			c.t.Fatal(err)
		}
		seqs[sh], heads[sh] = st.AppliedSeq, st.HeadHash
	}
	return seqs, heads
}

// TestStreams runs the streaming scenarios on one cluster, in turn: each
// leaves every node running.
func TestStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test on real processes: skipped with -short")
	}
	c := startCluster(t, streamShards)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := startDepositor(ctx, t, c.proxy)
	t.Run("FollowerStreamSurvivesLeaderKill", func(t *testing.T) { testFollowerStream(ctx, t, c) })
	t.Run("SubscribeFailsOverWithoutGapOrDuplicate", func(t *testing.T) { testSubscribeFailover(ctx, t, c, d) })
	t.Run("DisconnectedStreamsLeakNoGoroutine", func(t *testing.T) { testStreamGoroutines(ctx, t, c) })
	t.Run("ConsumerResumesAfterSIGKILL", func(t *testing.T) { testConsumerProcess(ctx, t, c) })
}

// testFollowerStream: a stream from a follower of a shard keeps
// delivering, in order and chained, while that shard's leader is killed
// and another is elected.
func testFollowerStream(ctx context.Context, t *testing.T, c *cluster) {
	const sh = 1
	leader := c.leaderOf(ctx, sh)
	var follower *node
	for _, n := range c.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	var log shardLog
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- client.New(follower.http).StreamShard(sctx, sh, 0, client.StreamOpts{Follow: true}, func(it client.StreamItem) error {
			if it.Event != nil {
				log.add(it.Event)
			}
			return nil
		})
	}()
	waitFor(t, 10*time.Second, "events on the follower's stream", func() bool { n, _ := log.at(); return n > 5 })
	t.Logf("killing %s, leader of shard %d; reading from %s", leader.id, sh, follower.id)
	c.kill(leader)
	atKill, _ := log.at()
	waitFor(t, 20*time.Second, "events after the election on the same stream", func() bool {
		n, _ := log.at()
		return n > atKill+20
	})
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("the stream ended with %v before it was stopped", err)
	}
	if len(log.errs) > 0 {
		t.Errorf("chain broken: %v", log.errs)
	}
	n, _ := log.at()
	t.Logf("delivered seqs 1..%d of shard %d, %d after the kill", n, sh, n-atKill)
	c.start(leader)
	c.waitHTTP(leader.http, "/readyz")
}

// testSubscribeFailover: Subscribe reading every shard from one node,
// which is then killed, resumes on another with no gap and no duplicate:
// what it delivered is every shard's final log, count and last hash.
func testSubscribeFailover(ctx context.Context, t *testing.T, c *cluster, d *depositor) {
	victim := c.nodes[1]
	var endpoints []string
	for _, n := range []*node{victim, c.nodes[0], c.nodes[2]} {
		endpoints = append(endpoints, n.http)
	}
	logs := make([]shardLog, streamShards)
	var total atomic.Int64
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- client.Subscribe(sctx, client.SubscribeOptions{Endpoints: endpoints, Follow: true, Idle: 2 * time.Second},
			func(_ context.Context, e ledger.Event) error {
				logs[e.Shard].add(&e)
				total.Add(1)
				return nil
			})
	}()
	waitFor(t, 10*time.Second, "events delivered from "+victim.id, func() bool { return total.Load() > 50 })
	t.Logf("killing %s, which the subscription reads from, after %d events", victim.id, total.Load())
	c.kill(victim)
	atKill := total.Load()
	waitFor(t, 20*time.Second, "events delivered after the kill", func() bool { return total.Load() > atKill+50 })
	c.start(victim)
	c.waitHTTP(victim.http, "/readyz")
	d.halt()

	seqs, heads := c.finalLogs(ctx)
	waitFor(t, 20*time.Second, "every shard's final log delivered", func() bool {
		for sh := range streamShards {
			if n, _ := logs[sh].at(); n < seqs[sh] {
				return false
			}
		}
		return true
	})
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe ended with %v before it was stopped", err)
	}
	for sh := range streamShards {
		n, h := logs[sh].at()
		if len(logs[sh].errs) > 0 {
			t.Errorf("shard %d: %v", sh, logs[sh].errs)
		}
		if n != seqs[sh] || h.String() != heads[sh] {
			t.Errorf("shard %d: delivered up to %d (hash %s), final log %d (hash %s)", sh, n, h, seqs[sh], heads[sh])
		}
	}
	if int64(sumOf(seqs)) != total.Load() {
		t.Errorf("%d events delivered, the final logs hold %d", total.Load(), sumOf(seqs))
	}
	t.Logf("delivered %d events (%v per shard), %d after the kill", total.Load(), seqs, total.Load()-atKill)
}

func sumOf(xs []uint64) (s uint64) {
	for _, x := range xs {
		s += x
	}
	return s
}

// goroutines reads a node's go_goroutines gauge.
func goroutines(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("no go_goroutines in %s/metrics", addr)
	return 0
}

// testStreamGoroutines: clients that leave in the middle of streams (of
// every shard, of one shard, following or not, over a backlog) leave no
// goroutine behind on the node.
func testStreamGoroutines(ctx context.Context, t *testing.T, c *cluster) {
	n := c.nodes[2]
	before := goroutines(t, n.http)
	const streams = 24
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			read := 0
			fn := func(it client.StreamItem) error {
				if read++; read == 10 {
					cancel() // leave mid-stream, with the node still sending
				}
				return nil
			}
			cl := client.New(n.http)
			if i%2 == 0 {
				_ = cl.StreamAll(sctx, nil, client.StreamOpts{Follow: i%4 == 0}, fn) // ends by the cancel
			} else {
				_ = cl.StreamShard(sctx, i%streamShards, 0, client.StreamOpts{Follow: true}, fn) // likewise
			}
		}()
	}
	// And some that leave before reading anything, their connection cut.
	for range 8 {
		conn, err := net.DialTimeout("tcp", n.http, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /v1/events?follow=true HTTP/1.1\r\nHost: %s\r\n\r\n", n.http)
		time.Sleep(20 * time.Millisecond)
		conn.Close()
	}
	wg.Wait()
	var now int
	waitFor(t, 15*time.Second, "the node's goroutines back to their level", func() bool {
		now = goroutines(t, n.http)
		return now <= before+2
	})
	t.Logf("%s: %d goroutines before %d streams, %d after they left", n.id, before, streams+8, now)
}

// testConsumerProcess: `tally events tail --consumer` killed with SIGKILL
// and started again resumes after its stored offsets, which survive the
// kill of a shard's leader.
func testConsumerProcess(ctx context.Context, t *testing.T, c *cluster) {
	d := startDepositor(ctx, t, c.proxy)
	defer d.halt()
	addrs := c.nodes[0].http + "," + c.nodes[1].http + "," + c.nodes[2].http
	out1 := filepath.Join(c.dir, "tail-1.ndjson")
	p1 := startTail(t, addrs, out1)
	waitFor(t, 15*time.Second, "the consumer's first commits", func() bool {
		cs, err := client.New(c.proxy).Consumer(ctx, "e2e-sink")
		return err == nil && committed(cs) > 20
	})
	if err := p1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p1.Wait() // killed: its exit status says so
	d.halt()
	stored := offsets(ctx, t, c.proxy)
	printed := readTail(t, out1)
	for sh, seq := range stored {
		if seq > printed[sh].last {
			t.Errorf("shard %d: offset %d beyond the last printed seq %d", sh, seq, printed[sh].last)
		}
	}

	const sh = 2
	leader := c.leaderOf(ctx, sh)
	t.Logf("consumer killed at offsets %v; killing %s, leader of shard %d", stored, leader.id, sh)
	c.kill(leader)
	waitFor(t, 20*time.Second, "the offsets read from a new leader", func() bool {
		cs, err := client.New(c.proxy, client.WithTimeout(2*time.Second)).Consumer(ctx, "e2e-sink")
		return err == nil && c.leaderOf(ctx, sh) != leader && cs.Shards[sh].Seq == stored[sh]
	})
	if after := offsets(ctx, t, c.proxy); fmt.Sprint(after) != fmt.Sprint(stored) {
		t.Errorf("offsets %v after the leader kill, %v before", after, stored)
	}

	out2 := filepath.Join(c.dir, "tail-2.ndjson")
	p2 := startTail(t, addrs, out2)
	c.start(leader)
	c.waitHTTP(leader.http, "/readyz")
	seqs, _ := c.finalLogs(ctx)
	waitFor(t, 20*time.Second, "the restarted consumer at every shard's end", func() bool {
		got := readTail(t, out2)
		for i := range streamShards {
			if seqs[i] > stored[i] && got[i].last < seqs[i] {
				return false
			}
		}
		return true
	})
	p2.Process.Signal(syscall.SIGTERM)
	p2.Wait()
	again := readTail(t, out2)
	for i := range streamShards {
		if want := stored[i] + 1; seqs[i] > stored[i] && again[i].first != want {
			t.Errorf("shard %d: the restarted consumer began at seq %d, want %d (its stored offset + 1)", i, again[i].first, want)
		}
		if len(again[i].errs) > 0 {
			t.Errorf("shard %d: %v", i, again[i].errs)
		}
	}
	if final := offsets(ctx, t, c.proxy); fmt.Sprint(final) != fmt.Sprint(seqs) {
		t.Errorf("offsets %v after a clean stop, want every shard's end %v", final, seqs)
	}
}

func committed(cs *client.Consumer) (n uint64) {
	for _, s := range cs.Shards {
		n += s.Seq
	}
	return n
}

func offsets(ctx context.Context, t *testing.T, addr string) []uint64 {
	t.Helper()
	cs, err := client.New(addr, client.WithTimeout(5*time.Second)).Consumer(ctx, "e2e-sink")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]uint64, streamShards)
	for _, s := range cs.Shards {
		out[s.Shard] = s.Seq
	}
	return out
}

// startTail runs the named consumer as its own process, its NDJSON in
// path.
func startTail(t *testing.T, addrs, path string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--addr", addrs, "--json", "events", "tail", "--follow", "--consumer", "e2e-sink")
	cmd.Stdout = f
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close() // the child has its own copy
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

// tailed is what a consumer process printed of one shard.
type tailed struct {
	first, last uint64
	errs        []string
}

// readTail reads a consumer's NDJSON; a last line cut by a kill is
// ignored.
func readTail(t *testing.T, path string) []tailed {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]tailed, streamShards)
	for line := range strings.SplitSeq(string(b), "\n") {
		var e ledger.Event
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		s := &out[e.Shard]
		if s.first == 0 {
			s.first = e.Seq
		} else if e.Seq != s.last+1 {
			s.errs = append(s.errs, fmt.Sprintf("seq %d after %d", e.Seq, s.last))
		}
		s.last = e.Seq
	}
	return out
}
