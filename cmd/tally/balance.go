package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tally/client"
	"tally/internal/table"
	"tally/ledger"
)

// readOptions are the flags of an account read (balance, account get).
type readOptions struct {
	stale    bool
	minSeq   uint64
	atSeq    uint64
	atTime   string
	currency string
	shard    int
}

func (o *readOptions) bind(f *pflag.FlagSet) {
	f.BoolVar(&o.stale, "stale", false, "read the answering replica's local state (may lag)")
	f.Uint64Var(&o.minSeq, "min-seq", 0, "wait until the replica has applied this seq of the account's shard")
	f.Uint64Var(&o.atSeq, "at-seq", 0, "the balance right after this seq of the account's shard")
	f.StringVar(&o.atTime, "at-time", "", "the balance right after the last event of the account's shard at or before this RFC 3339 time")
	f.StringVar(&o.currency, "currency", "", "currency of a system account such as @world")
	f.IntVar(&o.shard, "shard", -1, "one shard of a system account (default: the sum over all shards)")
}

func (o *readOptions) opts() (client.ReadOpts, error) {
	r := client.ReadOpts{MinSeq: o.minSeq, AtSeq: o.atSeq, Currency: o.currency}
	if o.stale {
		r.Consistency = client.Stale
	}
	if o.shard >= 0 {
		r.Shard = &o.shard
	}
	if o.currency != "" && !ledger.ValidCurrency(o.currency) {
		return r, fmt.Errorf("currency %q must be 1 to %d uppercase letters or digits", o.currency, ledger.MaxCurrencyLen)
	}
	if o.atTime != "" {
		if o.atSeq > 0 {
			return r, fmt.Errorf("--at-seq and --at-time exclude each other")
		}
		t, err := time.Parse(time.RFC3339Nano, o.atTime)
		if err != nil {
			return r, fmt.Errorf("--at-time %q must be an RFC 3339 time such as 2026-01-02T15:04:05Z", o.atTime)
		}
		r.AtTime = t
	}
	return r, nil
}

func newBalanceCmd(a *app) *cobra.Command {
	var o readOptions
	cmd := &cobra.Command{
		Use:   "balance ACCOUNT",
		Short: "Show an account's balance",
		Long: `Show an account's balance, what is available (the balance less holds), and
the pending amounts. Reads are linearizable by default (served by the shard's
leader); --stale reads any replica, --min-seq waits for a seq you have seen.
--at-seq and --at-time read the balance as it was right after a seq of the
account's shard, or after its last event at or before a time; SEQ says which
event answered.`,
		Example: `  tally balance alice
  tally balance alice --stale --min-seq 42
  tally balance alice --at-time 2026-01-02T15:04:05Z
  tally balance @world --currency USD
  tally balance @world --currency USD --shard 2 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := readAccount(cmd, a, args[0], &o)
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			printBalance(cmd.OutOrStdout(), v)
			return nil
		},
	}
	o.bind(cmd.Flags())
	return cmd
}

func readAccount(cmd *cobra.Command, a *app, id string, o *readOptions) (*client.AccountView, error) {
	if !ledger.ValidID(id) {
		return nil, fmt.Errorf("account id %q must be 1 to %d bytes of [A-Za-z0-9._:@-{}]", id, ledger.MaxIDLen)
	}
	ro, err := o.opts()
	if err != nil {
		return nil, err
	}
	if ledger.IsSystem(id) && ro.Currency == "" {
		return nil, fmt.Errorf("%s needs --currency", id)
	}
	return a.client().Account(cmd.Context(), id, ro)
}

func printBalance(w io.Writer, v *client.AccountView) {
	t := table.New(w)
	table.Row(t, "ACCOUNT", "CURRENCY", "BALANCE", "AVAILABLE", "DEBITS_PENDING", "CREDITS_PENDING", "SHARD", "SEQ")
	table.Row(t, v.ID, v.Currency, v.Balance, v.Available, v.DebitsPending, v.CreditsPending, v.Shard, v.Seq)
	t.Flush()
}

// printAccount shows every field of an account, one per line.
func printAccount(w io.Writer, v *client.AccountView) {
	t := table.New(w)
	table.Row(t, "id", v.ID)
	table.Row(t, "currency", v.Currency)
	table.Row(t, "balance", v.Balance)
	table.Row(t, "available", v.Available)
	table.Row(t, "debits_posted", v.DebitsPosted)
	table.Row(t, "credits_posted", v.CreditsPosted)
	table.Row(t, "debits_pending", v.DebitsPending)
	table.Row(t, "credits_pending", v.CreditsPending)
	table.Row(t, "allow_negative", v.AllowNegative)
	table.Row(t, "closed", v.Closed)
	table.Row(t, "metadata", fmtMeta(v.Metadata))
	table.Row(t, "shard", v.Shard)
	table.Row(t, "seq", v.Seq)
	table.Row(t, "created_seq", v.CreatedSeq)
	table.Row(t, "created_at", fmtTime(v.CreatedAt))
	t.Flush()
}
