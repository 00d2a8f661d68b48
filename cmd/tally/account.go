package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"tally/internal/table"
	"tally/ledger"
)

func newAccountCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "account",
		Short: "Create, show and close accounts",
		Example: `  tally account create alice bob --currency USD
  tally account get alice
  tally account close alice`,
	}
	cmd.AddCommand(newAccountCreateCmd(a), newAccountGetCmd(a), newAccountCloseCmd(a))
	return cmd
}

type accountCreateOptions struct {
	currency      string
	allowNegative bool
	meta          []string
}

func newAccountCreateCmd(a *app) *cobra.Command {
	var o accountCreateOptions
	cmd := &cobra.Command{
		Use:   "create ID...",
		Short: "Create one or more accounts in one currency",
		Long: `Create accounts. Creating an account again with the same fields answers
"exists" and changes nothing, so the command is safe to retry. Ids are 1 to 64
bytes of [A-Za-z0-9._:@-]; a part in braces places the account, so alice{eu}
and bob{eu} live on the same shard.`,
		Example: `  tally account create alice --currency USD
  tally account create ops:float --currency EUR --allow-negative --meta team=ops
  tally account create alice{eu} bob{eu} --currency EUR`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runAccountCreate(cmd, a, &o, args) },
	}
	f := cmd.Flags()
	f.StringVar(&o.currency, "currency", "", "currency: 1 to 12 uppercase letters or digits (required)")
	f.BoolVar(&o.allowNegative, "allow-negative", false, "let the balance go below zero")
	f.StringArrayVar(&o.meta, "meta", nil, "metadata key=value (repeatable)")
	cmd.MarkFlagRequired("currency") // the flag exists, so this cannot fail
	return cmd
}

func runAccountCreate(cmd *cobra.Command, a *app, o *accountCreateOptions, ids []string) error {
	meta, err := parseMeta(o.meta)
	if err != nil {
		return err
	}
	accounts := make([]ledger.Account, len(ids))
	for i, id := range ids {
		accounts[i] = ledger.Account{ID: id, Currency: o.currency, AllowNegative: o.allowNegative, Metadata: meta}
		if p := ledger.CheckAccount(&accounts[i]); p != nil {
			return fmt.Errorf("invalid account: %s", p.Msg)
		}
	}
	results, err := a.client().CreateAccounts(cmd.Context(), accounts)
	if err != nil {
		return err
	}
	if a.json {
		if err := writeJSON(cmd.OutOrStdout(), map[string]any{"results": results}); err != nil {
			return err
		}
	} else {
		printResults(cmd.OutOrStdout(), results, false)
	}
	for _, r := range results {
		if r.Result != ledger.OK && r.Result != ledger.Exists {
			return fmt.Errorf("account %s: %s", r.ID, r.Result)
		}
	}
	return nil
}

// printResults shows per-item results as a table.
func printResults(w io.Writer, results []ledger.Result, status bool) {
	t := table.New(w)
	if status {
		table.Row(t, "ID", "RESULT", "STATUS", "SHARD", "SEQ")
	} else {
		table.Row(t, "ID", "RESULT", "SHARD", "SEQ")
	}
	for _, r := range results {
		if status {
			table.Row(t, r.ID, fmtResult(r), orDash(string(r.Status)), r.Shard, r.Seq)
		} else {
			table.Row(t, r.ID, fmtResult(r), r.Shard, r.Seq)
		}
	}
	t.Flush()
}

func newAccountGetCmd(a *app) *cobra.Command {
	var o readOptions
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show every field of an account",
		Long:  `Show every field of an account. It reads like balance and takes the same flags.`,
		Example: `  tally account get alice
  tally account get alice --stale --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := readAccount(cmd, a, args[0], &o)
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			printAccount(cmd.OutOrStdout(), v)
			return nil
		},
	}
	o.bind(cmd.Flags())
	return cmd
}

func newAccountCloseCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "close ID",
		Short: "Close an account",
		Long: `Close an account: it rejects new transfers and posts from then on; voids and
expiries still release its holds. Closing a closed account answers
account_closed, which is not an error.`,
		Example: `  tally account close alice`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if !ledger.ValidID(id) || ledger.IsSystem(id) {
				return fmt.Errorf("account id %q must be 1 to %d bytes of [A-Za-z0-9._:@-{}], not starting with @", id, ledger.MaxIDLen)
			}
			r, err := a.client().CloseAccount(cmd.Context(), id)
			if err != nil {
				return err
			}
			if a.json {
				if err := writeJSON(cmd.OutOrStdout(), r); err != nil {
					return err
				}
			} else {
				printResults(cmd.OutOrStdout(), []ledger.Result{r}, false)
			}
			if r.Result != ledger.OK && r.Result != ledger.AccountClosed {
				return fmt.Errorf("account %s: %s", r.ID, r.Result)
			}
			return nil
		},
	}
}
