package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"tally/client"
	"tally/internal/table"
)

func newSagasCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sagas",
		Short: "Inspect and resolve cross-shard transfers (sagas)",
		Long: `A transfer between accounts on different shards runs as a saga: its source
shard holds the amount, the destination shard credits it, and the source
completes (or aborts, releasing the hold, if the destination rejected the
credit). The source shard's leader drives every open saga and retries until
it finishes; it never aborts because of a timeout.`,
		Example: `  tally sagas list
  tally sagas list --state stuck
  tally sagas show t-42
  tally sagas resolve t-42 --note "destination shard lost, ticket 1234"`,
	}
	cmd.AddCommand(newSagasListCmd(a), newSagasShowCmd(a), newSagasResolveCmd(a))
	return cmd
}

func newSagasListCmd(a *app) *cobra.Command {
	var state string
	var shard int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sagas in flight, stuck (in flight for over 30s) or aborted",
		Example: `  tally sagas list
  tally sagas list --state aborted --shard 2 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ss, err := a.client().Sagas(cmd.Context(), state, shard)
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"sagas": ss})
			}
			t := table.New(cmd.OutOrStdout())
			table.Row(t, "ID", "FROM", "TO", "DEBIT", "CREDIT", "AMOUNT", "STEP", "AGE", "ATTEMPTS", "LAST_ERROR")
			for _, s := range ss {
				table.Row(t, s.ID, s.Shard, s.PeerShard, s.Debit, s.Credit, s.Amount, stepOf(s), fmt.Sprintf("%.1fs", s.AgeSeconds), s.Attempts, orDash(s.LastError))
			}
			t.Flush()
			fmt.Fprintf(cmd.ErrOrStderr(), "%s %s\n", table.Plural(len(ss), "saga"), state)
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", "in_flight", "in_flight, stuck or aborted")
	cmd.Flags().IntVar(&shard, "shard", -1, "only sagas started by this shard")
	return cmd
}

func stepOf(s client.Saga) string {
	if s.Result != "" && s.Result != "ok" {
		return s.Step + " (" + string(s.Result) + ")"
	}
	return s.Step
}

func newSagasShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Show one cross-shard transfer and the step its saga reached",
		Example: `  tally sagas show t-42`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.client().Transfer(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			if v.Saga == nil {
				return errors.New("transfer " + args[0] + " is not a cross-shard transfer")
			}
			t := table.New(cmd.OutOrStdout())
			table.Row(t, "ID", "STATUS", "RESULT", "STEP", "FROM", "TO", "DEBIT", "CREDIT", "AMOUNT", "ATTEMPTS", "LAST_ERROR", "NOTE")
			table.Row(t, v.ID, v.Status, v.Result, v.Saga.Step, v.Shard, v.Saga.Peer, v.Debit, v.Credit, v.Amount,
				v.Saga.Attempts, orDash(v.Saga.LastError), orDash(v.Saga.Note))
			return t.Flush()
		},
	}
}

func newSagasResolveCmd(a *app) *cobra.Command {
	var note string
	cmd := &cobra.Command{
		Use:   "resolve ID --note TEXT",
		Short: "Give an open saga up: abort it, or complete it if already credited",
		Long: `Ask the saga's source shard to give it up. The destination shard is fenced
first: if it had already credited the transfer the saga completes, otherwise
no later credit can happen and the saga aborts, releasing the hold. The note
is recorded in the saga's final event, so the log shows who resolved it and
why. This needs the destination shard to answer.`,
		Example: `  tally sagas resolve t-42 --note "customer cancelled, ticket 1234"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if note == "" {
				return errors.New("--note is required: say who resolves the saga and why")
			}
			if err := a.client().ResolveSaga(cmd.Context(), args[0], note); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saga %s: resolution requested; 'tally sagas show %s' shows the outcome\n", args[0], args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&note, "note", "", "who resolves the saga and why (kept in the log)")
	return cmd
}

func newAuditCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "audit",
		Short: "Prove the books: every shard sums to 0, clearing accounts match the sagas",
		Long: `Read every shard's books twice, each through its leader at one applied seq
(reported), and check that every shard sums to 0 per currency and that the
saga clearing accounts between every pair of shards agree: no completion
without its credit, no credit without its saga, no credited saga aborted.
When both rounds read the same seqs the cut is consistent, and the clearing
accounts must net to between minus the amount in flight and 0. Exits with
status 1 on any violation.`,
		Example: `  tally audit
  tally audit --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := a.client().Audit(cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				t := table.New(cmd.OutOrStdout())
				table.Row(t, "SHARD", "SEQ_ROUND1", "SEQ_ROUND2")
				for i, s := range rep.Seqs {
					table.Row(t, i, s[0], s[1])
				}
				t.Flush()
				fmt.Fprintln(cmd.OutOrStdout())
				t = table.New(cmd.OutOrStdout())
				table.Row(t, "CURRENCY", "CLEARING_NET", "IN_FLIGHT")
				for _, c := range rep.Currencies {
					table.Row(t, c.Currency, c.Net, c.InFlight)
				}
				t.Flush()
				for _, v := range rep.Violations {
					fmt.Fprintln(cmd.OutOrStdout(), "VIOLATION:", v)
				}
				cut := "consistent cut"
				if !rep.Consistent {
					cut = "shards moved between rounds: bounds checked"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "audit: %s (%s)\n", map[bool]string{true: "ok", false: "FAILED"}[rep.OK], cut)
			}
			if !rep.OK {
				return fmt.Errorf("audit found %s", table.Plural(len(rep.Violations), "violation"))
			}
			return nil
		},
	}
}
