package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Model is the version of the tables' shape and of the fold that fills
// them. A change to either bumps it; a view made by another model is
// refused until it is rebuilt (--rebuild).
const Model = 1

// The view lives in versioned schemas, <schema>_v1, <schema>_v2, ...,
// one of them current. <schema> itself holds the version table and one
// view per table pointing at the current version, so readers query
// <schema>.accounts whatever the version, and a rebuild switches them
// over by replacing the views in one transaction.

// column is one column of a table: its name and its type as
// information_schema.columns spells it.
type column struct{ name, typ string }

// table is one table of a version.
type table struct {
	name    string
	columns []column
	key     []string // the primary key
	indexes []string // extra indexes, each a column list
}

const (
	tInt    = "integer"
	tBig    = "bigint"
	tText   = "text"
	tTime   = "timestamp with time zone"
	tJSON   = "jsonb"
	tBool   = "boolean"
	tNum    = "numeric"
	tDate   = "date"
	notNull = " NOT NULL"
)

var tables = []table{
	{name: "events", key: []string{"shard", "seq"}, columns: []column{
		{"shard", tInt}, {"seq", tBig}, {"type", tText}, {"time", tTime}, {"raft_index", tBig},
		{"data", tJSON}, {"balances", tJSON}, {"prev_hash", tText}, {"hash", tText}}},
	{name: "accounts", key: []string{"shard", "id", "currency"}, indexes: []string{"id"}, columns: []column{
		{"shard", tInt}, {"id", tText}, {"currency", tText}, {"balance", tBig}, {"available", tBig},
		{"debits_posted", tBig}, {"credits_posted", tBig}, {"debits_pending", tBig}, {"credits_pending", tBig},
		{"closed", tBool}, {"seq", tBig}}},
	{name: "transfers", key: []string{"shard", "id"}, indexes: []string{"debit", "credit"}, columns: []column{
		{"shard", tInt}, {"id", tText}, {"debit", tText}, {"credit", tText}, {"amount", tBig}, {"currency", tText},
		{"status", tText}, {"result", tText}, {"pending_id", tText}, {"peer_shard", tInt}, {"seq", tBig},
		{"time", tTime}, {"expires_at", tTime}, {"resolved_seq", tBig}, {"resolved_by", tText},
		{"resolved_amount", tBig}}},
	{name: "daily_volume", key: []string{"currency", "day"}, columns: []column{
		{"currency", tText}, {"day", tDate}, {"transfers", tBig}, {"volume", tNum}}},
	{name: "offsets", key: []string{"shard"}, columns: []column{
		{"shard", tInt}, {"seq", tBig}, {"hash", tText}}},
}

// nullable columns; every other one is NOT NULL.
var nullable = map[string]bool{"transfers.result": true, "transfers.pending_id": true,
	"transfers.peer_shard": true, "transfers.expires_at": true, "transfers.resolved_seq": true,
	"transfers.resolved_by": true, "transfers.resolved_amount": true}

// schemaName is what --schema accepts: a plain lowercase identifier, so
// that it needs no quoting and <schema>_vN is one too.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,39}$`)

func versionSchema(schema string, v int) string { return fmt.Sprintf("%s_v%d", schema, v) }

// createTables creates the tables of a version in schema s.
func createTables(ctx context.Context, tx pgx.Tx, s string) error {
	stmts := []string{"CREATE SCHEMA " + s}
	for _, t := range tables {
		var cols []string
		for _, c := range t.columns {
			def := c.name + " " + c.typ
			if !nullable[t.name+"."+c.name] {
				def += notNull
			}
			cols = append(cols, def)
		}
		cols = append(cols, "PRIMARY KEY ("+strings.Join(t.key, ", ")+")")
		stmts = append(stmts, fmt.Sprintf("CREATE TABLE %s.%s (%s)", s, t.name, strings.Join(cols, ", ")))
		for _, ix := range t.indexes {
			stmts = append(stmts, fmt.Sprintf("CREATE INDEX ON %s.%s (%s)", s, t.name, ix))
		}
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("create %s: %w", s, err)
		}
	}
	return nil
}

// pointViews makes the views in schema point at the tables of version
// schema s. It drops them first, since a new model may change columns.
func pointViews(ctx context.Context, tx pgx.Tx, schema, s string) error {
	for _, t := range tables {
		q := fmt.Sprintf("DROP VIEW IF EXISTS %s.%s; CREATE VIEW %[1]s.%[2]s AS SELECT * FROM %[3]s.%[2]s",
			schema, t.name, s)
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("point %s.%s at %s: %w", schema, t.name, s, err)
		}
	}
	return nil
}

// ErrSchema marks a schema that is not as the sink made it.
var ErrSchema = errors.New("schema changed by hand")

// SchemaError says what differs between a schema and what the sink
// writes, in one line.
type SchemaError struct {
	Schema string
	Diffs  []string
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("schema %s is not as the sink made it (changed by hand?): %s; restore it, or rebuild the view with --rebuild",
		e.Schema, strings.Join(e.Diffs, "; "))
}

// Is makes errors.Is(err, ErrSchema) hold.
func (e *SchemaError) Is(target error) bool { return target == ErrSchema }

// checkTables compares the tables of version schema s with the model,
// column by column (name, type, nullability) and primary key.
func checkTables(ctx context.Context, q querier, s string) error {
	have, err := columnsOf(ctx, q, s)
	if err != nil {
		return err
	}
	keys, err := primaryKeys(ctx, q, s)
	if err != nil {
		return err
	}
	var diffs []string
	for _, t := range tables {
		cols, ok := have[t.name]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("table %s.%s is missing", s, t.name))
			continue
		}
		want := map[string]bool{}
		for _, c := range t.columns {
			want[c.name] = true
			got, ok := cols[c.name]
			switch {
			case !ok:
				diffs = append(diffs, fmt.Sprintf("%s.%s has no column %s", s, t.name, c.name))
			case got.typ != c.typ:
				diffs = append(diffs, fmt.Sprintf("%s.%s.%s is %s, not %s", s, t.name, c.name, got.typ, c.typ))
			}
		}
		for _, name := range sortedKeys(cols) {
			if !want[name] && !cols[name].nullable {
				diffs = append(diffs, fmt.Sprintf("%s.%s has a column %s the sink does not write", s, t.name, name))
			}
		}
		if k := keys[t.name]; !slices.Equal(k, sorted(t.key)) {
			diffs = append(diffs, fmt.Sprintf("%s.%s's primary key is (%s), not (%s)", s, t.name,
				strings.Join(k, ", "), strings.Join(t.key, ", ")))
		}
	}
	if len(diffs) > 0 {
		return &SchemaError{Schema: s, Diffs: diffs}
	}
	return nil
}

// checkViews checks that schema holds the sink's views, not tables of
// the same names.
func checkViews(ctx context.Context, q querier, schema string) error {
	rows, err := q.Query(ctx, `SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = $1`, schema)
	if err != nil {
		return fmt.Errorf("read schema %s: %w", schema, err)
	}
	kinds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var k [2]string
		err := r.Scan(&k[0], &k[1])
		return k, err
	})
	if err != nil {
		return fmt.Errorf("read schema %s: %w", schema, err)
	}
	have := map[string]string{}
	for _, k := range kinds {
		have[k[0]] = k[1]
	}
	var diffs []string
	for _, t := range tables {
		switch have[t.name] {
		case "VIEW":
		case "":
			diffs = append(diffs, fmt.Sprintf("view %s.%s is missing", schema, t.name))
		default:
			diffs = append(diffs, fmt.Sprintf("%s.%s is a table, not the sink's view", schema, t.name))
		}
	}
	if len(diffs) > 0 {
		return &SchemaError{Schema: schema, Diffs: diffs}
	}
	return nil
}

type columnInfo struct {
	typ      string
	nullable bool
}

func columnsOf(ctx context.Context, q querier, s string) (map[string]map[string]columnInfo, error) {
	rows, err := q.Query(ctx, `SELECT c.table_name, c.column_name, c.data_type, c.is_nullable = 'YES'
		FROM information_schema.columns c JOIN information_schema.tables t
		  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
		WHERE c.table_schema = $1 AND t.table_type = 'BASE TABLE'`, s)
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", s, err)
	}
	out := map[string]map[string]columnInfo{}
	var tn, cn, typ string
	var null bool
	_, err = pgx.ForEachRow(rows, []any{&tn, &cn, &typ, &null}, func() error {
		if out[tn] == nil {
			out[tn] = map[string]columnInfo{}
		}
		out[tn][cn] = columnInfo{typ: typ, nullable: null}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", s, err)
	}
	return out, nil
}

func primaryKeys(ctx context.Context, q querier, s string) (map[string][]string, error) {
	rows, err := q.Query(ctx, `SELECT c.relname, a.attname FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
		WHERE i.indisprimary AND n.nspname = $1`, s)
	if err != nil {
		return nil, fmt.Errorf("read the keys of %s: %w", s, err)
	}
	out := map[string][]string{}
	var tn, cn string
	_, err = pgx.ForEachRow(rows, []any{&tn, &cn}, func() error {
		out[tn] = append(out[tn], cn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the keys of %s: %w", s, err)
	}
	for k := range out {
		sort.Strings(out[k])
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}
