package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tally/client"
	"tally/ledger"
	natssink "tally/sink/nats"
	"tally/sink/nats/natstest"
	"tally/test/proc"
)

const (
	natsStream   = "LEDGER"
	natsConsumer = "jetstream-e2e"
	natsStep     = 400 // events the sink must move on by between two faults
)

// natsLoad sends same-shard and cross-shard transfers and pending ones,
// posted or voided, through the proxy until stopped. Failures during a
// kill are expected: the log, not the answers, is what the sink follows.
type natsLoad struct {
	cl      *client.Client
	byShard [][]string // two accounts per shard
	sent    atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startNATSLoad(ctx context.Context, t *testing.T, proxy string) *natsLoad {
	t.Helper()
	l := &natsLoad{cl: client.New(proxy, client.WithTimeout(3*time.Second)), stop: make(chan struct{}),
		byShard: make([][]string, streamShards)}
	var accounts []ledger.Account
	var deposits []ledger.Transfer
	for i, left := 0, 2*streamShards; left > 0; i++ {
		id := fmt.Sprintf("js%d", i)
		if sh := ledger.ShardOf(id, streamShards); len(l.byShard[sh]) < 2 {
			l.byShard[sh] = append(l.byShard[sh], id)
			accounts = append(accounts, ledger.Account{ID: id, Currency: "USD"})
			deposits = append(deposits, ledger.Transfer{ID: "dep-" + id, Debit: ledger.World, Credit: id, Amount: 1 << 40})
			left--
		}
	}
	res, err := l.cl.CreateAccounts(ctx, accounts)
	mustOK(t, res, err)
	res, err = l.cl.CreateTransfers(ctx, deposits)
	mustOK(t, res, err)
	for g := range 4 {
		l.wg.Add(1)
		go l.run(ctx, g)
	}
	t.Cleanup(l.halt)
	return l
}

// run is one writer: in turn a same-shard transfer, a cross-shard one,
// and a pending one that the next turn posts or voids.
func (l *natsLoad) run(ctx context.Context, g int) {
	defer l.wg.Done()
	for k := 0; ; k++ {
		select {
		case <-l.stop:
			return
		default:
		}
		sh := (g + k) % streamShards
		a, b := l.byShard[sh][0], l.byShard[sh][1]
		id := fmt.Sprintf("w%d-%d", g, k)
		var tr ledger.Transfer
		switch k % 4 {
		case 0:
			tr = ledger.Transfer{ID: id, Debit: a, Credit: b, Amount: 3}
		case 1:
			tr = ledger.Transfer{ID: id, Debit: a, Credit: l.byShard[(sh+1)%streamShards][1], Amount: 5}
		case 2:
			tr = ledger.Transfer{ID: id, Debit: b, Credit: a, Amount: 7, Pending: true, TimeoutSeconds: 3600}
		case 3:
			prev := fmt.Sprintf("w%d-%d", g, k-1)
			if k%8 == 3 {
				tr = ledger.Transfer{ID: id, PostPendingID: prev}
			} else {
				tr = ledger.Transfer{ID: id, VoidPendingID: prev}
			}
		}
		if _, err := l.cl.CreateTransfers(ctx, []ledger.Transfer{tr}); err != nil {
			time.Sleep(20 * time.Millisecond) // a node is down; the next one goes through
			continue
		}
		l.sent.Add(1)
	}
}

func (l *natsLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// natsSink is `tally sink nats` as a process, restarted with the same
// flags after a kill.
type natsSink struct {
	*proc.Proc
	cl *client.Client
}

func newNATSSink(t *testing.T, c *cluster, url string) *natsSink {
	t.Helper()
	ports, err := proc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.http)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p := &proc.Proc{Name: "sink-nats", Bin: bin, LogPath: filepath.Join(c.dir, "sink-nats.log"),
		Args: []string{"--addr", strings.Join(addrs, ","), "sink", "nats", "--url", url, "--stream", natsStream,
			"--consumer", natsConsumer, "--metrics", metrics, "--flush", "50ms"},
		Ready: proc.HTTPReady(http.DefaultClient, metrics, "/metrics")}
	s := &natsSink{Proc: p, cl: client.New(c.proxy, client.WithTimeout(2*time.Second))}
	t.Cleanup(func() {
		s.Stop(10 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(p.LogPath) // a missing log shows as empty
			t.Logf("---- sink log (last 4 KiB) ----\n%s", tail(b, 4096))
		}
	})
	return s
}

// applied returns the consumer's offsets summed over the shards, or -1
// while the cluster does not answer.
func (s *natsSink) applied(ctx context.Context) int64 {
	cs, err := s.cl.Consumer(ctx, natsConsumer)
	if err != nil {
		return -1
	}
	var n int64
	for _, sh := range cs.Shards {
		n += int64(sh.Seq)
	}
	return n
}

// moveOn waits until the sink has applied step more events than now.
func (s *natsSink) moveOn(ctx context.Context, t *testing.T, what string) { moveOn(ctx, t, s, what) }

// appliedSink is a sink whose applied events a test can count.
type appliedSink interface {
	applied(ctx context.Context) int64
}

// withNodeDown kills node n with SIGKILL, waits until sink s has moved
// on without it, and starts n again.
func withNodeDown(ctx context.Context, t *testing.T, c *cluster, n *node, s appliedSink) {
	t.Helper()
	t.Logf("kill -9 node %s", n.id)
	c.kill(n)
	moveOn(ctx, t, s, "with "+n.id+" down")
	c.start(n)
	c.waitHTTP(n.http, "/readyz")
}

// stoppedSink is a sink process a test can count and stop.
type stoppedSink interface {
	appliedSink
	Stop(d time.Duration) bool
	Exit() string
}

// drainAndStop halts the load, waits until s holds every event of the
// cluster's final logs, stops s with SIGTERM (it must exit cleanly), and
// returns the logs' lengths and head hashes.
func drainAndStop(ctx context.Context, t *testing.T, c *cluster, load *natsLoad, s stoppedSink) ([]uint64, []string) {
	t.Helper()
	load.halt()
	seqs, heads := c.finalLogs(ctx)
	waitFor(t, 30*time.Second, "the sink to catch up", func() bool {
		return s.applied(ctx) == int64(sumOf(seqs))
	})
	if s.Stop(10 * time.Second) {
		t.Errorf("the sink did not stop on SIGTERM within 10s")
	} else if ex := s.Exit(); ex != "exited" {
		t.Errorf("the sink ended with %q after SIGTERM, want a clean exit", ex)
	}
	return seqs, heads
}

// moveOn waits until s has applied natsStep more events than now.
func moveOn(ctx context.Context, t *testing.T, s appliedSink, what string) {
	t.Helper()
	from := s.applied(ctx)
	waitFor(t, 30*time.Second, fmt.Sprintf("the sink to apply %d more events %s", natsStep, what), func() bool {
		return s.applied(ctx) >= from+natsStep
	})
}

// TestSinkNATS runs `tally sink nats` against a real nats-server under
// write load while the sink is killed twice, a node once and the NATS
// server is stopped and started again; once the load stops and the sink
// has caught up, the stream holds exactly one message per event of the
// cluster's log, and each shard's last message is its head.
func TestSinkNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test on real processes: skipped with -short")
	}
	srv := natstest.Start(t)
	c := startCluster(t, streamShards)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	load := startNATSLoad(ctx, t, c.proxy)
	s := newNATSSink(t, c, srv.URL)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	s.moveOn(ctx, t, "after its start")

	for i := 1; i <= 2; i++ {
		s.kill9(ctx, t, i)
		s.moveOn(ctx, t, fmt.Sprintf("after kill -9 #%d", i))
		if i == 1 {
			withNodeDown(ctx, t, c, c.nodes[1], s)
		}
	}

	// The NATS server goes away: the sink says why it waits, and after
	// the server is back the batch it was retrying is not stored twice.
	mark := logSize(t, s.LogPath)
	t.Logf("stopping nats-server (pid %d)", srv.Pid())
	srv.Stop()
	waitFor(t, 20*time.Second, "the sink to show it retries", func() bool {
		out := logSince(t, s.LogPath, mark)
		return strings.Contains(out, "[retrying]") && strings.Contains(out, "unreachable")
	})
	srv.Restart()
	s.moveOn(ctx, t, "after nats-server restarted")

	seqs, heads := drainAndStop(ctx, t, c, load, s)
	if out := logSince(t, s.LogPath, mark); !strings.Contains(out, "nats server "+srv.URL+" unreachable") {
		t.Errorf("the sink's retry did not name the server")
	}
	checkNATSStream(t, srv, seqs, heads)
	t.Logf("%d transfers sent; the stream holds %d events (%v per shard), each once", load.sent.Load(), sumOf(seqs), seqs)
}

// kill9 kills the sink with SIGKILL and starts it again.
func (s *natsSink) kill9(ctx context.Context, t *testing.T, i int) {
	t.Helper()
	t.Logf("kill -9 the sink (#%d) at %d events applied", i, s.applied(ctx))
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
}

// checkNATSStream reads the whole stream and checks that it holds each
// shard's seqs 1..seqs[sh] once each, on the shard's subjects, and that
// each shard's last message carries the head hash.
func checkNATSStream(t *testing.T, srv *natstest.Server, seqs []uint64, heads []string) {
	t.Helper()
	_, js := srv.Connect()
	msgs := natstest.ReadStream(t, js, natsStream, 30*time.Second)
	seen := make([]map[uint64]bool, streamShards)
	last := make([]string, streamShards)
	for i := range seen {
		seen[i] = map[uint64]bool{}
	}
	var dups, bad int
	for _, m := range msgs {
		sh, seq, err := natssink.ParseMsgID(m.ID)
		var e struct {
			Shard int              `json:"shard"`
			Seq   uint64           `json:"seq"`
			Type  ledger.EventType `json:"type"`
			Hash  string           `json:"hash"`
		}
		if err == nil {
			err = json.Unmarshal(m.Data, &e)
		}
		if err != nil || sh >= streamShards || e.Shard != sh || e.Seq != seq ||
			m.Subject != fmt.Sprintf("tally.%d.%s", sh, e.Type) {
			if bad++; bad <= 5 {
				t.Errorf("message %d: id %q on %s does not match its event (%v)", m.Seq, m.ID, m.Subject, err)
			}
			continue
		}
		if seen[sh][seq] {
			if dups++; dups <= 5 {
				t.Errorf("event %s is in the stream twice", m.ID)
			}
		}
		seen[sh][seq] = true
		if seq == seqs[sh] {
			last[sh] = e.Hash
		}
	}
	for sh := range streamShards {
		missing := 0
		for seq := uint64(1); seq <= seqs[sh]; seq++ {
			if !seen[sh][seq] {
				missing++
			}
		}
		if missing > 0 || uint64(len(seen[sh])) != seqs[sh] {
			t.Errorf("shard %d: the stream holds %d distinct events, %d of seqs 1..%d missing", sh, len(seen[sh]), missing, seqs[sh])
		}
		if last[sh] != heads[sh] {
			t.Errorf("shard %d: the message of seq %d has hash %.12s, the log's head is %.12s", sh, seqs[sh], last[sh], heads[sh])
		}
	}
	if uint64(len(msgs)) != sumOf(seqs) {
		t.Errorf("the stream holds %d messages (%d duplicates), the cluster's logs %d events", len(msgs), dups, sumOf(seqs))
	}
}

func logSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func logSince(t *testing.T, path string, from int64) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[min(from, int64(len(b))):])
}
