package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tally/client"
	"tally/ledger"
	"tally/sink/postgres/pgtest"
	"tally/test/proc"
)

const pgConsumer = "postgres-e2e"

// pgSink is `tally sink postgres` as a process, restarted with the same
// flags after a kill.
type pgSink struct {
	*proc.Proc
	db *pgx.Conn
}

func newPGSink(t *testing.T, c *cluster, dsn, name string, extra ...string) *pgSink {
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
	p := &proc.Proc{Name: name, Bin: bin, LogPath: filepath.Join(c.dir, name+".log"),
		Args: append([]string{"--addr", strings.Join(addrs, ","), "sink", "postgres", "--dsn", dsn,
			"--consumer", pgConsumer, "--metrics", metrics, "--flush", "50ms"}, extra...),
		Ready: proc.HTTPReady(http.DefaultClient, metrics, "/metrics")}
	db, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	s := &pgSink{Proc: p, db: db}
	t.Cleanup(func() {
		s.Stop(10 * time.Second)
		db.Close(context.Background())
		if t.Failed() {
			b, _ := os.ReadFile(p.LogPath) // a missing log shows as empty
			t.Logf("---- %s log (last 4 KiB) ----\n%s", name, tail(b, 4096))
		}
	})
	return s
}

// applied returns the events the view holds (its offsets summed), or -1
// while it cannot be read.
func (s *pgSink) applied(ctx context.Context) int64 {
	var n int64
	if err := s.db.QueryRow(ctx, `SELECT coalesce(sum(seq), 0) FROM tally.offsets`).Scan(&n); err != nil {
		return -1
	}
	return n
}

// moveOn waits until the sink has applied step more events than now.
func (s *pgSink) moveOn(ctx context.Context, t *testing.T, what string) { moveOn(ctx, t, s, what) }

// TestSinkPostgres runs `tally sink postgres` against a real PostgreSQL
// under write load while the sink is killed twice, the node it reads from
// once, and PostgreSQL is stopped and started again. Once the load stops
// and the sink has caught up, the view equals the cluster: every
// account's balances (linearizable reads), each shard's events (count
// and head hash), the transfers' statuses and an aggregate that counted
// each posting once. A rebuild then yields identical tables.
func TestSinkPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test on real processes: skipped with -short")
	}
	srv := pgtest.Start(t, pgtest.Options{})
	c := startCluster(t, streamShards)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	load := startNATSLoad(ctx, t, c.proxy)
	s := newPGSink(t, c, srv.DSN, "sink-postgres")
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	s.moveOn(ctx, t, "after its start")
	for i := 1; i <= 2; i++ {
		t.Logf("kill -9 the sink (#%d) at %d events applied", i, s.applied(ctx))
		if err := s.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := s.Restart(ctx, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		s.moveOn(ctx, t, fmt.Sprintf("after kill -9 #%d", i))
		if i == 1 {
			withNodeDown(ctx, t, c, c.nodes[0], s) // the node the sink's stream reads from
		}
	}

	// PostgreSQL goes away: the sink says why it waits and, once the
	// server is back, the batch it was retrying is not applied twice.
	mark := logSize(t, s.LogPath)
	t.Logf("stopping postgres")
	srv.Stop()
	waitFor(t, 20*time.Second, "the sink to show it retries", func() bool {
		return strings.Contains(logSince(t, s.LogPath, mark), "[retrying] apply to postgres")
	})
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Close(ctx); err != nil {
		t.Log(err)
	}
	var err error
	if s.db, err = pgx.Connect(ctx, srv.DSN); err != nil {
		t.Fatal(err)
	}
	s.moveOn(ctx, t, "after postgres restarted")

	seqs, heads := drainAndStop(ctx, t, c, load, s)
	checkPGView(ctx, t, c, s.db, seqs, heads)
	t.Logf("%d transfers sent; the view holds %d events (%v per shard)", load.sent.Load(), sumOf(seqs), seqs)

	// A rebuild replays the log into a new version and switches to it.
	before := dumpPG(ctx, t, s.db)
	rb := newPGSink(t, c, srv.DSN, "sink-postgres-rebuild", "--rebuild")
	start := time.Now()
	if err := rb.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the rebuild to switch", func() bool {
		return strings.Contains(logSince(t, rb.LogPath, 0), "rebuilt: readers of tally see the new version")
	})
	t.Logf("rebuilt %d events in %s", sumOf(seqs), time.Since(start).Round(time.Millisecond))
	if rb.Stop(10 * time.Second) {
		t.Errorf("the rebuilding sink did not stop on SIGTERM within 10s")
	}
	if after := dumpPG(ctx, t, s.db); after != before {
		t.Errorf("the rebuilt view differs from the one it replaced (%d and %d bytes)", len(after), len(before))
	}
	var version int
	if err := s.db.QueryRow(ctx, `SELECT current FROM tally.version`).Scan(&version); err != nil || version != 2 {
		t.Errorf("current version %d (%v), want 2", version, err)
	}
}

// checkPGView compares the view with the cluster.
func checkPGView(ctx context.Context, t *testing.T, c *cluster, db *pgx.Conn, seqs []uint64, heads []string) {
	t.Helper()
	for sh := range streamShards {
		var n, last uint64
		var hash string
		err := db.QueryRow(ctx, `SELECT count(*), coalesce(max(seq), 0),
			coalesce((SELECT hash FROM tally.events WHERE shard = $1 ORDER BY seq DESC LIMIT 1), '')
			FROM tally.events WHERE shard = $1`, sh).Scan(&n, &last, &hash)
		if err != nil {
			t.Fatal(err)
		}
		if n != seqs[sh] || last != seqs[sh] || hash != heads[sh] {
			t.Errorf("shard %d: the view holds %d events up to seq %d (hash %.12s), the log %d (hash %.12s)",
				sh, n, last, hash, seqs[sh], heads[sh])
		}
	}
	checkPGAccounts(ctx, t, c, db)
	checkPGTransfers(ctx, t, c, db)
	// Every posting counted once: the aggregate equals what the events say.
	var aggN, evN int64
	var aggV, evV string
	err := db.QueryRow(ctx, `SELECT (SELECT sum(transfers) FROM tally.daily_volume), (SELECT sum(volume)::text FROM tally.daily_volume),
		count(*), sum(CASE type WHEN 'TransferPosted' THEN (data->'transfer'->>'amount')::numeric
			ELSE (data->>'amount')::numeric END)::text
		FROM tally.events WHERE type IN ('TransferPosted', 'PendingPosted', 'SagaCompleted')`).Scan(&aggN, &aggV, &evN, &evV)
	if err != nil {
		t.Fatal(err)
	}
	if aggN != evN || aggV != evV {
		t.Errorf("daily_volume counts %d postings for %s, the events %d for %s", aggN, aggV, evN, evV)
	}
}

// checkPGAccounts compares every account row with a linearizable read,
// system accounts on their shard.
func checkPGAccounts(ctx context.Context, t *testing.T, c *cluster, db *pgx.Conn) {
	t.Helper()
	cl := client.New(c.proxy, client.WithTimeout(5*time.Second))
	rows, err := db.Query(ctx, `SELECT shard, id, currency, balance, available, debits_posted, credits_posted,
		debits_pending, credits_pending, closed FROM tally.accounts ORDER BY shard, id`)
	if err != nil {
		t.Fatal(err)
	}
	var views []client.AccountView
	var a client.AccountView
	_, err = pgx.ForEachRow(rows, []any{&a.Shard, &a.ID, &a.Currency, &a.Balance, &a.Available, &a.DebitsPosted,
		&a.CreditsPosted, &a.DebitsPending, &a.CreditsPending, &a.Closed}, func() error {
		views = append(views, a)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	for _, v := range views {
		o := client.ReadOpts{}
		if ledger.IsSystem(v.ID) {
			o.Currency, o.Shard = v.Currency, &v.Shard
		}
		got, err := cl.Account(ctx, v.ID, o)
		if err != nil {
			t.Fatalf("read %s on shard %d: %v", v.ID, v.Shard, err)
		}
		if got.Balance != v.Balance || got.Available != v.Available || got.DebitsPosted != v.DebitsPosted ||
			got.CreditsPosted != v.CreditsPosted || got.DebitsPending != v.DebitsPending ||
			got.CreditsPending != v.CreditsPending || got.Closed != v.Closed {
			t.Errorf("account %s/%s on shard %d: the view has %+v, the cluster %+v", v.ID, v.Currency, v.Shard, v, *got)
		}
		sums[fmt.Sprintf("%d/%s", v.Shard, v.Currency)] += v.Balance
	}
	if len(views) < 2*streamShards {
		t.Errorf("the view holds %d accounts", len(views))
	}
	for k, s := range sums {
		if s != 0 {
			t.Errorf("shard/currency %s: the view's balances sum to %d, not 0", k, s)
		}
	}
}

// checkPGTransfers compares the transfer rows' statuses with the
// cluster's records.
func checkPGTransfers(ctx context.Context, t *testing.T, c *cluster, db *pgx.Conn) {
	t.Helper()
	cl := client.New(c.proxy, client.WithTimeout(5*time.Second))
	rows, err := db.Query(ctx, `SELECT id, status, amount FROM tally.transfers ORDER BY random() LIMIT 300`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id, status string
		amount     int64
	}
	var r row
	var sample []row
	if _, err := pgx.ForEachRow(rows, []any{&r.id, &r.status, &r.amount}, func() error {
		sample = append(sample, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range sample {
		got, err := cl.Transfer(ctx, r.id)
		if err != nil {
			t.Fatalf("read transfer %s: %v", r.id, err)
		}
		if string(got.Status) != r.status {
			t.Errorf("transfer %s: the view says %s, the cluster %s", r.id, r.status, got.Status)
		}
	}
}

// dumpPG prints every table readers see, in key order.
func dumpPG(ctx context.Context, t *testing.T, db *pgx.Conn) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{"events t ORDER BY shard, seq", "accounts t ORDER BY shard, id, currency",
		"transfers t ORDER BY shard, id", "daily_volume t ORDER BY currency, day", "offsets t ORDER BY shard"} {
		rows, err := db.Query(ctx, "SELECT t::text FROM tally."+q)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s\n%s\n", q, strings.Join(lines, "\n"))
	}
	return b.String()
}
