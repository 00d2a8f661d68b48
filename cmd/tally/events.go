package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tally/client"
	"tally/internal/table"
	"tally/ledger"
	"tally/stream"
)

// tailFlush is how many rows of a table tail buffers to align them before
// it writes them, so that a long log is printed in bounded memory.
const tailFlush = 1000

type eventsOptions struct {
	shard  int
	after  uint64
	limit  int
	follow bool
}

func (o *eventsOptions) bind(f *pflag.FlagSet) {
	f.IntVar(&o.shard, "shard", 0, "shard whose log to read")
	f.Uint64Var(&o.after, "after", 0, "show events after this seq")
	f.IntVar(&o.limit, "limit", 0, "events per page, at most 1000 (default: the server's, 100)")
	f.BoolVar(&o.follow, "follow", false, "keep printing new events as they commit, until interrupted")
}

func newEventsCmd(a *app) *cobra.Command {
	var o eventsOptions
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show a shard's event log",
		Long: `Show a page of a shard's event log, read from the answering replica. With
--follow, keep printing events as they commit (one JSON object per line with
--json) until interrupted. "tally events tail" follows every shard, resumes
a named consumer, filters, and fails over between addresses.`,
		Example: `  tally events --shard 0
  tally events --shard 2 --after 100 --limit 50 --json
  tally events --shard 0 --follow
  tally events tail --follow --consumer audit-export`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runEvents(cmd, a, &o) },
	}
	o.bind(cmd.Flags())
	cmd.AddCommand(newEventsTailCmd(a))
	return cmd
}

func runEvents(cmd *cobra.Command, a *app, o *eventsOptions) error {
	if o.shard < 0 {
		return fmt.Errorf("--shard %d must be 0 or more", o.shard)
	}
	if o.limit < 0 || o.limit > 1000 {
		return fmt.Errorf("--limit %d must be 1 to 1000", o.limit)
	}
	if o.follow {
		return followEvents(cmd, a, o)
	}
	p, err := a.client().Events(cmd.Context(), o.shard, o.after, o.limit)
	if err != nil {
		return err
	}
	if a.json {
		return writeJSON(cmd.OutOrStdout(), p)
	}
	t := table.New(cmd.OutOrStdout())
	eventHeader(t)
	for _, e := range p.Events {
		eventRow(t, &e)
	}
	return t.Flush()
}

func eventHeader(t io.Writer) { table.Row(t, "SHARD", "SEQ", "TIME", "TYPE", "ID", "DETAIL") }

func eventRow(t io.Writer, e *ledger.Event) {
	id, detail := describeEvent(e)
	table.Row(t, e.Shard, e.Seq, fmtTime(e.Time), e.Type, orDash(id), orDash(detail))
}

// eventLine prints one event of a stream. Lines are not aligned as a
// table, since a stream has no end to align against.
func eventLine(w io.Writer, e *ledger.Event) error {
	id, detail := describeEvent(e)
	_, err := fmt.Fprintf(w, "%d %-6d %s %-18s %s %s\n", e.Shard, e.Seq, fmtTime(e.Time), e.Type, orDash(id), detail)
	return err
}

// followEvents prints a shard's events as they arrive, from one stream
// of the answering node.
func followEvents(cmd *cobra.Command, a *app, o *eventsOptions) error {
	w := cmd.OutOrStdout()
	err := a.client().FollowEvents(cmd.Context(), o.shard, o.after, func(e ledger.Event) error {
		if a.json {
			return writeCompactJSON(w, e)
		}
		return eventLine(w, &e)
	})
	if cmd.Context().Err() != nil {
		return nil // interrupted: the normal way to stop following
	}
	return err
}

// tailOptions are the flags of tally events tail.
type tailOptions struct {
	shard    int
	after    string
	limit    int
	follow   bool
	consumer string
	from     string
	types    []string
	account  string
	currency string
}

func newEventsTailCmd(a *app) *cobra.Command {
	var o tailOptions
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print every shard's events, or one shard's, and follow them",
		Long: `Print the events of every shard (or of --shard), each shard's in seq order,
as a table, or one JSON object per line with --json. With --follow, keep
printing as events commit, until interrupted; without it, stop once caught
up.

The hash chain is checked as events arrive: a gap or a fork in a shard's
log is an error, never skipped. --addr may list several nodes or proxies,
comma separated: when the one being read dies or goes silent, tail resumes
on the next from the last event it printed, with no gap and no duplicate.

With --consumer NAME, tail starts where that named consumer left off (the
offsets stored in the cluster; --after and --from only place a new
consumer) and commits its offsets about every second as it prints, and
once more when it stops. A consumer killed outright prints again what it
printed after its last commit: delivery is at least once, and (shard, seq)
identifies an event. With a filter, progress lines move the consumer past
the events the filter skipped.`,
		Example: `  tally events tail
  tally events tail --shard 0 --after 42
  tally events tail --follow --json
  tally events tail --follow --from end --types TransferPosted,PendingPosted
  tally events tail --follow --account alice --currency USD
  tally events tail --follow --consumer audit-export --json
  tally --addr 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003 events tail --follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTail(cmd, a, &o) },
	}
	f := cmd.Flags()
	f.IntVar(&o.shard, "shard", -1, "shard to follow (default: every shard)")
	f.StringVar(&o.after, "after", "", "start after this seq of --shard, or after a list of shard:seq (0:42,1:17)")
	f.IntVar(&o.limit, "limit", 0, "stop after printing this many events (0: no limit)")
	f.BoolVar(&o.follow, "follow", false, "keep printing new events as they commit, until interrupted")
	f.StringVar(&o.consumer, "consumer", "", "named consumer to resume and whose offsets to commit")
	f.StringVar(&o.from, "from", client.FromStart, "where shards without a position start: start or end")
	f.StringSliceVar(&o.types, "types", nil, "only these event types (comma separated)")
	f.StringVar(&o.account, "account", "", "only events touching this account")
	f.StringVar(&o.currency, "currency", "", "only events in this currency")
	return cmd
}

// subscribeOptions turns tail's flags into Subscribe's options.
func (o *tailOptions) subscribeOptions(a *app, stderr io.Writer) (client.SubscribeOptions, error) {
	so := client.SubscribeOptions{Follow: o.follow, Consumer: o.consumer, From: o.from,
		Account: o.account, Currency: o.currency, Timeout: a.timeout,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	for _, addr := range strings.Split(a.addr, ",") {
		if addr = strings.TrimSpace(addr); addr != "" {
			so.Endpoints = append(so.Endpoints, addr)
		}
	}
	for _, t := range o.types {
		so.Types = append(so.Types, ledger.EventType(strings.TrimSpace(t)))
	}
	if o.from != client.FromStart && o.from != client.FromEnd {
		return so, fmt.Errorf("--from %q must be start or end", o.from)
	}
	if o.limit < 0 {
		return so, fmt.Errorf("--limit %d must be 0 or more", o.limit)
	}
	if o.shard < -1 {
		return so, fmt.Errorf("--shard %d must be 0 or more", o.shard)
	}
	if o.shard >= 0 {
		so.Shards = []int{o.shard}
	}
	after, err := parseAfter(o.after, o.shard)
	so.After = after
	return so, err
}

// parseAfter reads --after: a seq of the one shard given, or shard:seq
// pairs.
func parseAfter(s string, shard int) (map[int]uint64, error) {
	if s == "" {
		return nil, nil
	}
	if !strings.Contains(s, ":") {
		seq, err := strconv.ParseUint(s, 10, 64)
		if err != nil || shard < 0 {
			return nil, fmt.Errorf("--after %q: a seq needs --shard; otherwise list shard:seq pairs (0:42,1:17)", s)
		}
		return map[int]uint64{shard: seq}, nil
	}
	pairs, err := stream.ParsePairs(s, 0)
	if err != nil {
		return nil, fmt.Errorf("--after: %w", err)
	}
	return pairs, nil
}

// errLimit ends a tail that has printed --limit events.
var errLimit = errors.New("limit reached")

func runTail(cmd *cobra.Command, a *app, o *tailOptions) error {
	so, err := o.subscribeOptions(a, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	var t *tabwriter.Writer
	if !a.json && !o.follow {
		t = table.New(w)
		eventHeader(t)
	}
	// Once --limit events are printed, ctx ends the subscription; events
	// that arrive meanwhile are refused, so they are not committed.
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	n := 0
	err = client.Subscribe(ctx, so, func(_ context.Context, e ledger.Event) error {
		if o.limit > 0 && n >= o.limit {
			return errLimit
		}
		if n++; n == o.limit {
			cancel()
		}
		switch {
		case a.json:
			return writeCompactJSON(w, e)
		case t != nil:
			eventRow(t, &e)
			if n%tailFlush == 0 {
				return t.Flush()
			}
			return nil
		}
		return eventLine(w, &e)
	})
	if t != nil {
		if ferr := t.Flush(); err == nil {
			err = ferr
		}
	}
	if errors.Is(err, errLimit) || ctx.Err() != nil {
		return nil // interrupted, or enough printed: the normal ways to stop
	}
	return err
}
