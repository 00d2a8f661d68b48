package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"

	"tally/ledger"
	"tally/sink/postgres/pgtest"
)

// history makes a log with every kind of transfer on 4 shards.
func history(t *testing.T) *sim {
	s := newSim(t, 4)
	s.open("alice", "carol", "dave")
	s.transfer(ledger.Transfer{ID: "d-1", Debit: ledger.World, Credit: "alice", Amount: 10000})
	s.transfer(ledger.Transfer{ID: "t-1", Debit: "alice", Credit: "carol", Amount: 300})
	s.transfer(ledger.Transfer{ID: "t-2", Debit: "alice", Credit: "carol", Amount: 1 << 40})
	s.transfer(ledger.Transfer{ID: "h-1", Debit: "alice", Credit: "carol", Amount: 100, Pending: true})
	s.transfer(ledger.Transfer{ID: "h-2", Debit: "alice", Credit: "carol", Amount: 200, Pending: true})
	s.transfer(ledger.Transfer{ID: "h-3", Debit: "alice", Credit: "carol", Amount: 50, Pending: true})
	s.saga("x-1", "alice", "dave", 400, true)
	s.saga("x-2", "alice", "dave", 100, false)
	s.transfer(ledger.Transfer{ID: "p-1", Debit: "alice", Credit: "carol", Amount: 60, PostPendingID: "h-1"})
	s.transfer(ledger.Transfer{ID: "v-2", Debit: "alice", Credit: "carol", VoidPendingID: "h-2"})
	s.exec(s.shardOf("carol"), ledger.Command{Kind: ledger.CmdCloseAccount, AccountID: "carol"})
	return s
}

func newTarget(t *testing.T, dsn string, rebuild bool) *Target {
	t.Helper()
	tg, err := New(Options{DSN: dsn, Schema: "tally", Rebuild: rebuild})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

func TestApplyIsExactlyOnceAndRebuildsIdentically(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	s := history(t)
	tg := newTarget(t, srv.DSN, false)
	if pos, ok, err := tg.Positions(ctx); err != nil || !ok || len(pos) != 0 {
		t.Fatalf("positions of a new view: %v %v %v", pos, ok, err)
	}
	for i := 0; i < len(s.events); i += 3 {
		b := s.events[i:min(i+3, len(s.events))]
		for range 2 { // the second time, as after a crash: nothing changes twice
			if err := tg.Apply(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tg.Apply(ctx, s.events); err != nil { // everything again
		t.Fatal(err)
	}
	conn := connect(t, srv.DSN)
	want := newView()
	want.apply(t, s.events)
	checkView(t, conn, s, want)

	pos, _, err := newTarget(t, srv.DSN, false).Positions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for sh, st := range s.shards {
		if pos[sh].Seq != st.Seq || pos[sh].Hash != st.Head {
			t.Errorf("shard %d: position %d, want %d", sh, pos[sh].Seq, st.Seq)
		}
	}

	before := dump(t, conn)
	rb := newTarget(t, srv.DSN, true)
	if pos, _, err := rb.Positions(ctx); err != nil || len(pos) != 0 {
		t.Fatalf("a rebuild starts from nothing: %v %v", pos, err)
	}
	if dump(t, conn) != before {
		t.Fatal("starting a rebuild changed what readers see")
	}
	half := len(s.events) / 2
	if err := rb.Apply(ctx, s.events[:half]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rb.Switched():
		t.Fatal("switched before catching up")
	default:
	}
	if err := rb.Apply(ctx, s.events[half:]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rb.Switched():
	default:
		t.Fatal("did not switch once caught up")
	}
	if after := dump(t, conn); after != before {
		t.Fatalf("the rebuilt view differs:\n%s\nwas:\n%s", after, before)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'tally_v%'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d version schemas after the switch (%v), want 1", n, err)
	}
	// The sink goes on following into the new version.
	s.transfer(ledger.Transfer{ID: "t-3", Debit: "alice", Credit: "carol", Amount: 1})
	if err := rb.Apply(ctx, s.events[len(s.events)-1:]); err != nil {
		t.Fatal(err)
	}
	want.apply(t, s.events[len(s.events)-1:])
	checkView(t, conn, s, want)
}

func TestHandChangedSchemaIsOneLine(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	s := history(t)
	if err := newTarget(t, srv.DSN, false).Apply(ctx, nil); err == nil {
		t.Fatal("applied before the schema was set up")
	}
	tg := newTarget(t, srv.DSN, false)
	if _, _, err := tg.Positions(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tg.Apply(ctx, s.events[:4]); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, srv.DSN)
	exec(t, conn, `ALTER TABLE tally_v1.accounts DROP COLUMN available CASCADE`)
	exec(t, conn, `DROP VIEW tally.transfers; ALTER TABLE tally_v1.transfers ALTER COLUMN amount TYPE text`)
	err := tg.Apply(ctx, s.events[4:])
	var perm *backoff.PermanentError
	if !errors.As(err, &perm) || !errors.Is(err, ErrSchema) {
		t.Fatalf("apply into a broken schema: %v, want a permanent schema error", err)
	}
	_, _, err = newTarget(t, srv.DSN, false).Positions(ctx)
	if !errors.Is(err, ErrSchema) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "tally_v1.accounts has no column available") ||
		!strings.Contains(err.Error(), "tally_v1.transfers.amount is text, not bigint") {
		t.Fatalf("start on a broken schema: %v", err)
	}
	t.Log(err)

	// A rebuild replaces it.
	rb := newTarget(t, srv.DSN, true)
	if _, _, err := rb.Positions(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rb.Apply(ctx, s.events); err != nil {
		t.Fatal(err)
	}
	<-rb.Switched()
	want := newView()
	want.apply(t, s.events)
	checkView(t, conn, s, want)

	// A table where the sink's view belongs is refused.
	exec(t, conn, `CREATE SCHEMA other; CREATE TABLE other.accounts (id text)`)
	_, _, err = newTarget2(t, srv.DSN, "other").Positions(ctx)
	if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "other.accounts is a table") {
		t.Fatalf("start on someone else's table: %v", err)
	}
}

func newTarget2(t *testing.T, dsn, schema string) *Target {
	tg, err := New(Options{DSN: dsn, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

func TestServerGoneIsRetriedAndNothingDoubles(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	s := history(t)
	tg := newTarget(t, srv.DSN, false)
	if _, _, err := tg.Positions(ctx); err != nil {
		t.Fatal(err)
	}
	half := len(s.events) / 2
	if err := tg.Apply(ctx, s.events[:half]); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	err := tg.Apply(ctx, s.events[half:])
	var perm *backoff.PermanentError
	if err == nil || errors.As(err, &perm) {
		t.Fatalf("apply with the server down: %v, want an error to retry", err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := retry(func() error { return tg.Apply(ctx, s.events) }); err != nil {
		t.Fatal(err)
	}
	want := newView()
	want.apply(t, s.events)
	checkView(t, connect(t, srv.DSN), s, want)

	bad, err := New(Options{DSN: "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=1"})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, _, err := bad.Positions(ctx); err == nil || errors.As(err, &perm) {
		t.Fatalf("positions from a server that is not there: %v, want an error to retry", err)
	}
	if _, err := New(Options{DSN: "postgres://a b"}); err == nil || !strings.HasPrefix(err.Error(), "--dsn: ") {
		t.Fatalf("a malformed DSN: %v", err)
	}
}

// retry calls fn until it succeeds (the pool may hand out a connection
// the restart broke) or 10 s pass.
func retry(fn func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// checkView compares what readers see in schema tally with the view
// folded in memory and the ledger.
func checkView(t *testing.T, conn *pgx.Conn, s *sim, want *view) {
	t.Helper()
	ctx := context.Background()
	got := newView()
	rows, _ := conn.Query(ctx, `SELECT shard, id, currency, balance, available, debits_posted, credits_posted,
		debits_pending, credits_pending, closed, seq FROM tally.accounts`)
	var a accountRow
	_, err := pgx.ForEachRow(rows, []any{&a.Shard, &a.ID, &a.Currency, &a.Balance, &a.Available, &a.DebitsPosted,
		&a.CreditsPosted, &a.DebitsPending, &a.CreditsPending, &a.Closed, &a.Seq}, func() error {
		got.accounts[a.accountKey] = a
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, _ = conn.Query(ctx, `SELECT shard, id, status, amount FROM tally.transfers`)
	var r transferRow
	_, err = pgx.ForEachRow(rows, []any{&r.Shard, &r.ID, &r.Status, &r.Amount}, func() error {
		got.transfers[r.transferKey] = transferRow{transferKey: r.transferKey, Status: r.Status, Amount: r.Amount}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.accounts) != len(want.accounts) || len(got.transfers) != len(want.transfers) {
		t.Fatalf("%d accounts and %d transfers, want %d and %d", len(got.accounts), len(got.transfers),
			len(want.accounts), len(want.transfers))
	}
	for k, w := range want.accounts {
		if got.accounts[k] != w {
			t.Errorf("account %v: %+v, want %+v", k, got.accounts[k], w)
		}
	}
	for k, w := range want.transfers {
		if g := got.transfers[k]; g.Status != w.Status || g.Amount != w.Amount {
			t.Errorf("transfer %v: %s %d, want %s %d", k, g.Status, g.Amount, w.Status, w.Amount)
		}
	}
	var events, posted int
	var volume string
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM tally.events), (SELECT coalesce(sum(transfers), 0) FROM tally.daily_volume),
		(SELECT coalesce(sum(volume), 0)::text FROM tally.daily_volume)`).Scan(&events, &posted, &volume); err != nil {
		t.Fatal(err)
	}
	var wantPosted int64
	var wantVolume string
	for _, v := range want.volumes {
		var n int64
		var amt string
		fmt.Sscanf(v, "%d/%s", &n, &amt)
		wantPosted += n
		wantVolume = addDecimal(wantVolume, amt)
	}
	if events != len(s.events) || int64(posted) != wantPosted || volume != wantVolume {
		t.Errorf("%d events, %d posted for %s, want %d, %d for %s", events, posted, volume, len(s.events), wantPosted, wantVolume)
	}
	checkLedger(t, s, want)
}

// dump prints every table readers see, in key order.
func dump(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var b strings.Builder
	for _, tb := range tables {
		rows, err := conn.Query(context.Background(), fmt.Sprintf("SELECT t::text FROM tally.%s t ORDER BY %s", tb.name,
			strings.Join(tb.key, ", ")))
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:\n%s\n", tb.name, strings.Join(lines, "\n"))
	}
	return b.String()
}
