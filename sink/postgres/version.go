package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// setup makes the schema on first use, checks it on every start and, for
// a rebuild, creates the new version. It runs under an advisory lock, so
// that two sinks starting at once do not both create a version.
func (t *Target) setup(ctx context.Context) error {
	tx, err := t.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	schema := t.o.Schema
	stmts := []string{
		"SELECT pg_advisory_xact_lock(hashtext('tally sink ' || $1))",
		"CREATE SCHEMA IF NOT EXISTS " + schema,
		`CREATE TABLE IF NOT EXISTS ` + schema + `.version (one boolean PRIMARY KEY DEFAULT true CHECK (one),
			current integer NOT NULL, building integer, model integer NOT NULL,
			switched_at timestamptz NOT NULL DEFAULT now())`,
	}
	for i, q := range stmts {
		var args []any
		if i == 0 {
			args = append(args, schema)
		}
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("set up schema %s: %w", schema, err)
		}
	}
	var cur, model int
	var building *int
	err = tx.QueryRow(ctx, "SELECT current, building, model FROM "+schema+".version").Scan(&cur, &building, &model)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if err := t.create(ctx, tx); err != nil {
			return err
		}
		if t.o.Rebuild {
			t.switchOnce.Do(func() { close(t.switched) }) // nothing to rebuild: the new view is current
		}
	case err != nil:
		return fmt.Errorf("read %s.version: %w", schema, err)
	case t.o.Rebuild:
		if err := t.startRebuild(ctx, tx, cur, building); err != nil {
			return err
		}
	default:
		if model != Model {
			return modelError(schema, model)
		}
		if err := checkTables(ctx, tx, versionSchema(schema, cur)); err != nil {
			return err
		}
		if err := checkViews(ctx, tx, schema); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("set up schema %s: %w", schema, err)
	}
	if t.building != 0 {
		return t.switchIfCaughtUp(ctx)
	}
	return nil
}

// create makes version 1 and its views in a schema that has none.
func (t *Target) create(ctx context.Context, tx pgx.Tx) error {
	schema := t.o.Schema
	if err := checkNoTables(ctx, tx, schema); err != nil {
		return err
	}
	s := versionSchema(schema, 1)
	if err := createTables(ctx, tx, s); err != nil {
		return err
	}
	if err := pointViews(ctx, tx, schema, s); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, "INSERT INTO "+schema+".version (current, model) VALUES (1, $1)", Model)
	if err != nil {
		return fmt.Errorf("set up schema %s: %w", schema, err)
	}
	t.o.Logger.Info("created the view", "schema", schema, "version", s)
	return nil
}

// checkNoTables refuses a schema where tables of the sink's names exist
// that the sink did not make.
func checkNoTables(ctx context.Context, q querier, schema string) error {
	err := checkViews(ctx, q, schema)
	var se *SchemaError
	if !errors.As(err, &se) {
		return err
	}
	var diffs []string
	for _, d := range se.Diffs {
		if len(d) < 8 || d[len(d)-8:] != " missing" {
			diffs = append(diffs, d)
		}
	}
	if len(diffs) > 0 {
		return &SchemaError{Schema: schema, Diffs: diffs}
	}
	return nil
}

// startRebuild creates a new version to build next to the current one.
// A rebuild that was interrupted left its version behind: it is dropped
// and started over, since the log, not that half, is the source.
func (t *Target) startRebuild(ctx context.Context, tx pgx.Tx, cur int, building *int) error {
	schema := t.o.Schema
	next := cur + 1
	if building != nil {
		if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+versionSchema(schema, *building)+" CASCADE"); err != nil {
			return fmt.Errorf("drop the unfinished version: %w", err)
		}
		next = max(next, *building+1)
	}
	s := versionSchema(schema, next)
	if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+s+" CASCADE"); err != nil {
		return fmt.Errorf("drop %s: %w", s, err)
	}
	if err := createTables(ctx, tx, s); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "UPDATE "+schema+".version SET building = $1", next); err != nil {
		return fmt.Errorf("record the rebuild: %w", err)
	}
	t.building = next
	t.o.Logger.Info("rebuilding the view", "schema", schema, "from", versionSchema(schema, cur), "into", s)
	return nil
}

// switchIfCaughtUp switches at once when the new version has nothing to
// catch up (an empty log).
func (t *Target) switchIfCaughtUp(ctx context.Context) error {
	tx, err := t.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	ok, err := t.trySwitch(ctx, tx)
	if err != nil || !ok {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	t.building = 0
	t.switchOnce.Do(func() { close(t.switched) })
	return nil
}

// trySwitch makes the rebuild's version current, in tx, once it holds on
// every shard at least what the current version holds and the seqs of
// Options.CatchUp: readers' views then point at it and the old version is
// dropped, all at the commit of tx. It reports whether it switched.
func (t *Target) trySwitch(ctx context.Context, tx pgx.Tx) (bool, error) {
	schema, s := t.o.Schema, versionSchema(t.o.Schema, t.building)
	have, err := readOffsets(ctx, tx, s, nil, false)
	if err != nil {
		return false, err
	}
	if !reached(have, t.o.CatchUp) {
		return false, nil
	}
	// The version row's lock waits for a batch of a sink following the
	// current version, and holds off its next one until the commit.
	var cur int
	if err := tx.QueryRow(ctx, "SELECT current FROM "+schema+".version FOR UPDATE").Scan(&cur); err != nil {
		return false, fmt.Errorf("lock %s.version: %w", schema, err)
	}
	old := versionSchema(schema, cur)
	oldOffs, err := t.oldOffsets(ctx, tx, old)
	if err != nil {
		return false, err
	}
	if !reached(have, seqs(oldOffs)) {
		return false, nil
	}
	if err := pointViews(ctx, tx, schema, s); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+old+" CASCADE"); err != nil {
		return false, fmt.Errorf("drop %s: %w", old, err)
	}
	_, err = tx.Exec(ctx, "UPDATE "+schema+".version SET current = $1, building = NULL, model = $2, switched_at = now()",
		t.building, Model)
	if err != nil {
		return false, fmt.Errorf("switch to %s: %w", s, err)
	}
	t.o.Logger.Info("switched the view", "schema", schema, "from", old, "to", s)
	return true, nil
}

// oldOffsets reads the current version's offsets in a savepoint: a
// version someone broke by hand has none worth waiting for.
func (t *Target) oldOffsets(ctx context.Context, tx pgx.Tx, old string) (map[int]offset, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	offs, err := readOffsets(ctx, sp, old, nil, false)
	if err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return nil, rerr
		}
		t.o.Logger.Warn("the current version's offsets are unreadable; switching without them", "err", err)
		return map[int]offset{}, nil
	}
	return offs, sp.Commit(ctx)
}

// reached reports whether have is at or past want on every shard.
func reached(have map[int]offset, want map[int]uint64) bool {
	for sh, seq := range want {
		if have[sh].Seq < seq {
			return false
		}
	}
	return true
}

// seqs are the seqs of offsets, per shard.
func seqs(offs map[int]offset) map[int]uint64 {
	out := make(map[int]uint64, len(offs))
	for sh, o := range offs {
		out[sh] = o.Seq
	}
	return out
}
