package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tally/ledger"
)

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
--json) until interrupted.`,
		Example: `  tally events --shard 0
  tally events --shard 2 --after 100 --limit 50 --json
  tally events tail --shard 0 --follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runEvents(cmd, a, &o) },
	}
	o.bind(cmd.Flags())
	cmd.AddCommand(newEventsTailCmd(a))
	return cmd
}

func newEventsTailCmd(a *app) *cobra.Command {
	var o eventsOptions
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Show a shard's event log (same as events)",
		Example: `  tally events tail --shard 0
  tally events tail --shard 0 --after 42 --follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runEvents(cmd, a, &o) },
	}
	o.bind(cmd.Flags())
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
	t := newTable(cmd.OutOrStdout())
	row(t, "SHARD", "SEQ", "TIME", "TYPE", "ID", "DETAIL")
	for _, e := range p.Events {
		id, detail := describeEvent(&e)
		row(t, e.Shard, e.Seq, fmtTime(e.Time), e.Type, orDash(id), orDash(detail))
	}
	return t.Flush()
}

// followEvents prints events as they arrive. Lines are not aligned as a
// table, since a stream has no end to align against.
func followEvents(cmd *cobra.Command, a *app, o *eventsOptions) error {
	w := cmd.OutOrStdout()
	err := a.client().FollowEvents(cmd.Context(), o.shard, o.after, func(e ledger.Event) error {
		if a.json {
			return writeCompactJSON(w, e)
		}
		id, detail := describeEvent(&e)
		_, err := fmt.Fprintf(w, "%d %-6d %s %-18s %s %s\n", e.Shard, e.Seq, fmtTime(e.Time), e.Type, orDash(id), detail)
		return err
	})
	if cmd.Context().Err() != nil {
		return nil // interrupted: the normal way to stop following
	}
	return err
}
