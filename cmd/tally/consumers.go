package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"tally/client"
	"tally/internal/table"
)

func newConsumersCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consumers",
		Short: "Inspect, move and delete named consumers' offsets",
		Long: `A named consumer (a sink, a projection, an export) keeps in the cluster how
far it has processed each shard's events: its offset per shard, replicated
in that shard's Raft group. An offset only moves forwards as the consumer
commits; reset moves it anywhere, backwards too. Lag is the shard's applied
seq minus the offset: the events the consumer has still to process.`,
		Example: `  tally consumers list
  tally consumers show orders-sink
  tally consumers reset orders-sink --to start
  tally consumers reset orders-sink --to 0:42,1:17
  tally consumers delete orders-sink`,
	}
	cmd.AddCommand(newConsumersListCmd(a), newConsumersShowCmd(a), newConsumersResetCmd(a), newConsumersDeleteCmd(a))
	return cmd
}

func newConsumersListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every named consumer with its total lag",
		Example: `  tally consumers list
  tally consumers list --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := a.client().Consumers(cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"consumers": cs})
			}
			t := table.New(cmd.OutOrStdout())
			table.Row(t, "NAME", "LAG", "SHARDS_BEHIND")
			for _, c := range cs {
				behind := 0
				for _, s := range c.Shards {
					if s.Lag > 0 {
						behind++
					}
				}
				table.Row(t, c.Name, c.Lag, behind)
			}
			t.Flush()
			fmt.Fprintln(cmd.ErrOrStderr(), table.Plural(len(cs), "consumer"))
			return nil
		},
	}
}

func newConsumersShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a consumer's offset, the applied seq and the lag on every shard",
		Example: `  tally consumers show orders-sink
  tally consumers show orders-sink --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client().Consumer(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), c)
			}
			return positionTable(cmd.OutOrStdout(), c)
		},
	}
}

// positionTable prints a consumer's shards and its total lag.
func positionTable(w io.Writer, c *client.Consumer) error {
	t := table.New(w)
	table.Row(t, "SHARD", "OFFSET", "APPLIED_SEQ", "LAG")
	for _, s := range c.Shards {
		table.Row(t, s.Shard, s.Seq, s.AppliedSeq, s.Lag)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "consumer %s: lag %d\n", c.Name, c.Lag)
	return err
}

func newConsumersResetCmd(a *app) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "reset NAME --to start|end|SHARD:SEQ,...",
		Short: "Move a consumer's offsets, backwards too",
		Long: `Move a consumer to the start of every shard's log (seq 0: it processes
everything again), to the end (each shard's applied seq: it skips what is
there now), or to the given seqs of the shards listed, which leaves the
other shards where they are. A consumer that does not exist is created.
Each shard moves on its own; if the command fails part-way, run it again.`,
		Example: `  tally consumers reset orders-sink --to start
  tally consumers reset orders-sink --to end
  tally consumers reset orders-sink --to 0:42,1:17`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return errors.New("--to is required: start, end, or SHARD:SEQ pairs such as 0:42,1:17")
			}
			c, err := a.client().ResetConsumer(cmd.Context(), args[0], to)
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), c)
			}
			return positionTable(cmd.OutOrStdout(), c)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "start, end, or SHARD:SEQ pairs such as 0:42,1:17")
	return cmd
}

func newConsumersDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Short:   "Forget a consumer and its offsets on every shard",
		Example: `  tally consumers delete orders-sink`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client().DeleteConsumer(cmd.Context(), args[0]); err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"ok": true, "name": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "consumer %s deleted\n", args[0])
			return nil
		},
	}
}
