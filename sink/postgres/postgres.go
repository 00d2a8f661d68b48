// Package postgres keeps a view of the ledger in PostgreSQL: accounts,
// transfers, events, a daily aggregate and the view's own offsets, each
// batch of events written in one SQL transaction with the offsets it
// reaches, so that the view is exactly the fold of the log after any
// crash. It is a sink.Target; docs/streaming.md describes the tables.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tally/ledger"
	"tally/sink"
)

// Limits of the connection to PostgreSQL.
const (
	// applyTimeout bounds one batch's transaction, so that a server that
	// stops answering (rather than closing the connection) is retried.
	applyTimeout = 60 * time.Second
	// connectTimeout bounds opening a connection when the DSN does not.
	connectTimeout = 5 * time.Second
	// maxConns: the sink writes from one goroutine; one more connection
	// lets a status read or a rebuild's check not wait for it.
	maxConns = 2
)

// Options configure a Target.
type Options struct {
	// DSN is a PostgreSQL connection string (URL or key=value).
	DSN string
	// Schema names the schema readers query (default "tally"); the
	// tables live in <Schema>_v1, <Schema>_v2, ...
	Schema string
	// Rebuild builds a new version from seq 0 and, once it has caught up,
	// makes it current and drops the old one.
	Rebuild bool
	// CatchUp, with Rebuild, are seqs per shard the new version must
	// reach before it replaces the current one (the cluster's applied
	// seqs when the rebuild starts), besides the current version's own.
	CatchUp map[int]uint64
	// Logger receives the rebuild's steps (default: none).
	Logger *slog.Logger
}

// Target is a sink.Target writing into PostgreSQL. Its sink.Target
// methods are called from one goroutine; Switched may be read from any.
type Target struct {
	o    Options
	pool *pgxpool.Pool

	ready    bool
	building int // the version a rebuild writes, 0 when following the current one

	switchOnce sync.Once
	switched   chan struct{}
}

var _ sink.Target = (*Target)(nil)

// New checks the options and prepares the connection pool; it does not
// connect, so that a server that is down is retried by the sink with its
// reason shown, rather than failing the start.
func New(o Options) (*Target, error) {
	if o.Schema == "" {
		o.Schema = "tally"
	}
	if !schemaName.MatchString(o.Schema) {
		return nil, fmt.Errorf("--schema %q: want a lowercase name of letters, digits and _ (at most 40)", o.Schema)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("--dsn: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("--dsn: %w", err)
	}
	return &Target{o: o, pool: pool, switched: make(chan struct{})}, nil
}

// Name names the target in status lines and metrics.
func (t *Target) Name() string {
	if t.o.Rebuild {
		return "postgres-rebuild"
	}
	return "postgres"
}

// Switched is closed once a rebuild's version has replaced the current
// one (at once when there was none).
func (t *Target) Switched() <-chan struct{} { return t.switched }

// Close closes the connections. It is idempotent.
func (t *Target) Close() error {
	t.pool.Close()
	return nil
}

// Positions sets the schema up on the first call, then returns the
// offsets of the version the target writes.
func (t *Target) Positions(ctx context.Context) (map[int]sink.Position, bool, error) {
	if !t.ready {
		if err := t.setup(ctx); err != nil {
			return nil, false, permanent(err)
		}
		t.ready = true
	}
	s, err := t.schemaOf(ctx, t.pool, false)
	if err != nil {
		return nil, false, permanent(err)
	}
	offs, err := readOffsets(ctx, t.pool, s, nil, false)
	if err != nil {
		return nil, false, permanent(err)
	}
	pos := make(map[int]sink.Position, len(offs))
	for sh, o := range offs {
		pos[sh] = sink.Position{Seq: o.Seq, Hash: o.Hash}
	}
	return pos, true, nil
}

// querier is what both a pool and a transaction offer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaOf returns the version schema the target writes: the rebuild's,
// else the current one. With lock (inside a batch's transaction) it holds
// the version row's share lock until commit, so that a rebuild's switch
// (which takes it exclusively) waits for the batch, and the next batch
// writes into the new version.
func (t *Target) schemaOf(ctx context.Context, q querier, lock bool) (string, error) {
	if t.building != 0 {
		return versionSchema(t.o.Schema, t.building), nil
	}
	sql := fmt.Sprintf("SELECT current, model FROM %s.version", t.o.Schema)
	if lock {
		sql += " FOR SHARE"
	}
	var cur, model int
	if err := q.QueryRow(ctx, sql).Scan(&cur, &model); err != nil {
		return "", fmt.Errorf("read %s.version: %w", t.o.Schema, err)
	}
	if model != Model {
		return "", modelError(t.o.Schema, model)
	}
	return versionSchema(t.o.Schema, cur), nil
}

func modelError(schema string, model int) error {
	return fmt.Errorf("%w: the view in %s is of model %d and this sink writes model %d; rebuild it with --rebuild",
		ErrSchema, schema, model, Model)
}

// readOffsets reads the offsets of version schema s (of the shards
// listed, or all), locking their rows when lock is set.
func readOffsets(ctx context.Context, q querier, s string, shards []int32, lock bool) (map[int]offset, error) {
	sql := "SELECT shard, seq, hash FROM " + s + ".offsets"
	var args []any
	if shards != nil {
		sql += " WHERE shard = ANY($1)"
		args = append(args, shards)
	}
	if lock {
		sql += " FOR UPDATE"
	}
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s.offsets: %w", s, err)
	}
	out := map[int]offset{}
	var sh int
	var seq int64
	var hash string
	_, err = pgx.ForEachRow(rows, []any{&sh, &seq, &hash}, func() error {
		var h ledger.Hash
		if err := h.UnmarshalText([]byte(hash)); err != nil {
			return fmt.Errorf("shard %d: %w", sh, err)
		}
		out[sh] = offset{Seq: uint64(seq), Hash: h}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s.offsets: %w", s, err)
	}
	return out, nil
}

// Apply writes the events the view does not hold yet, in one transaction
// with the offsets they reach. Events at or below a shard's stored offset
// are skipped under the offsets rows' lock, so a batch given again (after
// a crash before the cluster's offset moved) changes nothing twice.
func (t *Target) Apply(ctx context.Context, events []ledger.Event) error {
	ctx, cancel := context.WithTimeout(ctx, applyTimeout)
	defer cancel()
	switched, err := t.apply(ctx, events)
	if err != nil {
		return t.classify(ctx, err)
	}
	if switched {
		t.building = 0
		t.switchOnce.Do(func() { close(t.switched) })
	}
	return nil
}

func (t *Target) apply(ctx context.Context, events []ledger.Event) (switched bool, err error) {
	tx, err := t.pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op; on failure the error that matters is returned
	s, err := t.schemaOf(ctx, tx, true)
	if err != nil {
		return false, err
	}
	fresh, err := t.unapplied(ctx, tx, s, events)
	if err != nil {
		return false, err
	}
	if len(fresh) > 0 {
		ch, err := fold(fresh)
		if err != nil {
			return false, fmt.Errorf("%w: %v", errPermanent, err)
		}
		if err := write(ctx, tx, s, ch); err != nil {
			return false, err
		}
	}
	if t.building != 0 {
		if switched, err = t.trySwitch(ctx, tx); err != nil {
			return false, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return switched, nil
}

// unapplied returns the events after each shard's stored offset, checking
// that they continue the stored hash chain.
func (t *Target) unapplied(ctx context.Context, tx pgx.Tx, s string, events []ledger.Event) ([]ledger.Event, error) {
	seen := map[int]bool{}
	var shards []int32
	for _, e := range events {
		if !seen[e.Shard] {
			seen[e.Shard] = true
			shards = append(shards, int32(e.Shard))
		}
	}
	offs, err := readOffsets(ctx, tx, s, shards, true)
	if err != nil {
		return nil, err
	}
	fresh := make([]ledger.Event, 0, len(events))
	for _, e := range events {
		o := offs[e.Shard]
		if e.Seq <= o.Seq {
			continue
		}
		if e.Seq != o.Seq+1 || e.PrevHash != o.Hash {
			return nil, fmt.Errorf("%w: %s holds shard %d up to seq %d (hash %.12s), and the next event given is seq %d after hash %.12s: the view is not of this log; rebuild it with --rebuild",
				errPermanent, s, e.Shard, o.Seq, o.Hash, e.Seq, e.PrevHash)
		}
		offs[e.Shard] = offset{Seq: e.Seq, Hash: e.Hash}
		fresh = append(fresh, e)
	}
	return fresh, nil
}

// errPermanent marks an error that retrying cannot cure.
var errPermanent = errors.New("postgres sink")

// classify decides whether an error is worth retrying. A statement that
// meets a missing table or column, or a value of the wrong type, is
// checked against the model: a schema changed by hand stops the sink
// with one line instead of retrying for ever.
func (t *Target) classify(ctx context.Context, err error) error {
	if errors.Is(err, errPermanent) || errors.Is(err, ErrSchema) {
		return permanent(err)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || (pe.Code[:2] != "42" && pe.Code[:2] != "22" && pe.Code[:2] != "23") {
		return oneLine(err)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), connectTimeout)
	defer cancel()
	s, serr := t.schemaOf(cctx, t.pool, false)
	if serr == nil {
		serr = checkTables(cctx, t.pool, s)
	}
	if errors.Is(serr, ErrSchema) {
		return permanent(serr)
	}
	return oneLine(err)
}

// oneLine keeps an error on one line for the sink's status line: pgx
// reports a failed connection with a line per address tried, often the
// same line twice (with and without TLS).
func oneLine(err error) error {
	if err == nil || !strings.Contains(err.Error(), "\n") {
		return err
	}
	return &flatError{err}
}

type flatError struct{ err error }

func (e *flatError) Error() string {
	var out []string
	seen := map[string]bool{}
	for _, l := range strings.Split(e.err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return strings.Join(out, " ")
}

func (e *flatError) Unwrap() error { return e.err }

// permanent tells the sink's retry loop to give up on err
// (sink.Permanent); other errors are retried.
func permanent(err error) error {
	if errors.Is(err, errPermanent) || errors.Is(err, ErrSchema) {
		return sink.Permanent(oneLine(err))
	}
	return oneLine(err)
}
