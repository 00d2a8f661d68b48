package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"tally/client"
	"tally/internal/table"
	"tally/ledger"
)

type historyOptions struct {
	limit int
	after string
	order string
}

func newHistoryCmd(a *app) *cobra.Command {
	var o historyOptions
	cmd := &cobra.Command{
		Use:   "history ACCOUNT",
		Short: "Show the events that touched an account",
		Long: `Show a page of the events that touched an account, with the account's balance
right after each. When there are more, the command for the next page is
printed on stderr.`,
		Example: `  tally history alice
  tally history alice --order desc --limit 20
  tally history alice --after 41 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if !ledger.ValidID(id) {
				return fmt.Errorf("account id %q must be 1 to %d bytes of [A-Za-z0-9._:@-{}]", id, ledger.MaxIDLen)
			}
			if o.order != "" && o.order != "asc" && o.order != "desc" {
				return fmt.Errorf("--order %q must be asc or desc", o.order)
			}
			if o.limit < 0 || o.limit > 1000 {
				return fmt.Errorf("--limit %d must be 1 to 1000", o.limit)
			}
			p, err := a.client().History(cmd.Context(), id, client.HistoryOpts{After: o.after, Limit: o.limit, Order: o.order})
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), p)
			}
			printHistory(cmd.OutOrStdout(), id, p.Events)
			if p.Next != "" {
				next := fmt.Sprintf("tally history %s --after %s", id, p.Next)
				if o.limit > 0 {
					next += fmt.Sprintf(" --limit %d", o.limit)
				}
				if o.order != "" {
					next += " --order " + o.order
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "more: %s\n", next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.limit, "limit", 0, "events per page, at most 1000 (default: the server's, 100)")
	f.StringVar(&o.after, "after", "", "cursor: the next value of the previous page")
	f.StringVar(&o.order, "order", "", "asc (oldest first) or desc (newest first)")
	return cmd
}

func printHistory(w io.Writer, account string, events []ledger.Event) {
	t := table.New(w)
	table.Row(t, "SHARD", "SEQ", "TIME", "TYPE", "ID", "DETAIL", "BALANCE")
	for _, e := range events {
		id, detail := describeEvent(&e)
		bal := "-"
		for _, b := range e.Balances {
			if b.Account == account {
				bal = fmt.Sprint(b.Balance)
			}
		}
		table.Row(t, e.Shard, e.Seq, fmtTime(e.Time), e.Type, orDash(id), orDash(detail), bal)
	}
	t.Flush()
}

// describeEvent names what an event is about and sums up its fields.
func describeEvent(e *ledger.Event) (id, detail string) {
	d := &e.Data
	switch {
	case d.Account != nil:
		return d.Account.ID, d.Account.Currency
	case d.AccountID != "":
		return d.AccountID, ""
	case d.Transfer != nil:
		x := d.Transfer
		amount := x.Amount
		if d.Amount != 0 {
			amount = d.Amount // a post or void of "all": the amount moved
		}
		detail = fmt.Sprintf("%s -> %s %d", x.Debit, x.Credit, amount)
		if pid := x.Resolves(); pid != "" {
			detail += " resolves " + pid
		}
		if d.Peer != nil {
			detail += fmt.Sprintf(" (shard %d)", *d.Peer)
		}
		if d.Result != "" && d.Result != ledger.OK {
			detail += " " + string(d.Result)
		}
		return x.ID, detail
	case d.PendingID != "":
		detail = fmt.Sprintf("amount %d", d.Amount)
		if d.Peer != nil {
			detail += fmt.Sprintf(" (shard %d)", *d.Peer)
		}
		if d.Result != "" && d.Result != ledger.OK {
			detail += " " + string(d.Result)
		}
		if d.Note != "" {
			detail += " note: " + d.Note
		}
		return d.PendingID, detail
	}
	return "", string(d.Result)
}
