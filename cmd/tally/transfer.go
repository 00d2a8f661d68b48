package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tally/client"
	"tally/internal/table"
	"tally/ledger"
)

// transferOptions are the flags of a transfer, a deposit or a withdrawal.
type transferOptions struct {
	id        string
	reference string
	meta      []string
	// Two-phase transfers; only the transfer command has these.
	pending bool
	timeout time.Duration
	post    string
	void    string
	amount  string
}

func (o *transferOptions) bindCommon(f *pflag.FlagSet) {
	f.StringVar(&o.id, "id", "", "transfer id, the idempotency key (default: a random id, printed)")
	f.StringVar(&o.reference, "reference", "", "free text, up to 256 bytes")
	f.StringArrayVar(&o.meta, "meta", nil, "metadata key=value (repeatable)")
}

func newTransferCmd(a *app) *cobra.Command {
	var o transferOptions
	cmd := &cobra.Command{
		Use:   "transfer DEBIT CREDIT AMOUNT | --post PENDING_ID | --void PENDING_ID",
		Short: "Move money between two accounts",
		Long: `Move AMOUNT (an integer in minor units) from the DEBIT account to the CREDIT
account, in the same currency.

The transfer id is the idempotency key: sending the same transfer with the
same id again changes nothing and answers "exists". Without --id a random id
is made and printed; if the command fails with outcome_unknown or
unavailable, run it again with that id.

--pending holds the amount instead of moving it; a later --post PENDING_ID
moves it (all of it, or --amount of it) and --void PENDING_ID releases it.
With --pending, --timeout voids the hold after that long (log time); on this
command --timeout is the hold's timeout, not the request deadline.

The command exits with status 1 if the transfer is rejected, after printing
the result.`,
		Example: `  tally transfer alice bob 2500 --id t-42 --reference "invoice 7"
  tally transfer alice bob 2500 --pending --timeout 30m --id hold-1
  tally transfer --post hold-1 --amount 2000
  tally transfer --void hold-1
  tally transfer get t-42`,
		Args: func(cmd *cobra.Command, args []string) error {
			if o.post != "" || o.void != "" {
				if len(args) != 0 {
					return errors.New("--post and --void take no DEBIT CREDIT AMOUNT: the pending transfer names them")
				}
				return nil
			}
			if len(args) != 3 {
				return fmt.Errorf("want DEBIT CREDIT AMOUNT, got %d arguments (see tally transfer --help)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := o.build(cmd, a, args)
			if err != nil {
				return err
			}
			return submitTransfer(cmd, a, t, o.id == "")
		},
	}
	o.bindCommon(cmd.Flags())
	f := cmd.Flags()
	f.BoolVar(&o.pending, "pending", false, "hold the amount until a post or void (two-phase)")
	f.DurationVar(&o.timeout, "timeout", 0, "with --pending: void the hold after this long, in whole seconds")
	f.StringVar(&o.post, "post", "", "post (complete) the pending transfer with this id")
	f.StringVar(&o.void, "void", "", "void (release) the pending transfer with this id")
	f.StringVar(&o.amount, "amount", "", "with --post: post only this much of the held amount")
	cmd.MarkFlagsMutuallyExclusive("post", "void")
	cmd.MarkFlagsMutuallyExclusive("post", "pending")
	cmd.MarkFlagsMutuallyExclusive("void", "pending")
	cmd.MarkFlagsMutuallyExclusive("void", "amount")
	cmd.AddCommand(newTransferGetCmd(a))
	return cmd
}

// build makes the transfer the flags and arguments describe, checked as
// the ledger would check it.
func (o *transferOptions) build(cmd *cobra.Command, a *app, args []string) (ledger.Transfer, error) {
	meta, err := parseMeta(o.meta)
	if err != nil {
		return ledger.Transfer{}, err
	}
	t := ledger.Transfer{ID: o.id, Reference: o.reference, Metadata: meta, Pending: o.pending}
	if t.ID == "" {
		t.ID = newTransferID()
	}
	if o.timeout != 0 {
		if !o.pending {
			return t, errors.New("--timeout on transfer is the hold's timeout and needs --pending (the global request deadline cannot be set on this command)")
		}
		if o.timeout < time.Second || o.timeout%time.Second != 0 {
			return t, fmt.Errorf("--timeout %v must be a whole number of seconds", o.timeout)
		}
		t.TimeoutSeconds = int64(o.timeout / time.Second)
	}
	if o.amount != "" && o.post == "" {
		return t, errors.New("--amount is only for --post; give the amount as the third argument")
	}
	if pid := o.post + o.void; pid != "" {
		err = o.resolve(cmd, a, &t, pid)
	} else {
		t.Debit, t.Credit = args[0], args[1]
		t.Amount, err = parseAmount(args[2])
	}
	if err != nil {
		return t, err
	}
	return t, checkTransfer(&t)
}

// resolve fills a post or void of pending transfer pid: the API requires
// the same debit and credit as the pending transfer, so they are looked up.
func (o *transferOptions) resolve(cmd *cobra.Command, a *app, t *ledger.Transfer, pid string) error {
	if o.post != "" {
		t.PostPendingID = pid
	} else {
		t.VoidPendingID = pid
	}
	if o.amount != "" {
		n, err := parseAmount(o.amount)
		if err != nil {
			return err
		}
		t.Amount = n
	}
	if !ledger.ValidID(pid) || ledger.IsSystem(pid) {
		return fmt.Errorf("pending id %q is not a valid transfer id", pid)
	}
	v, err := a.client().Transfer(cmd.Context(), pid)
	if client.IsNotFound(err) {
		return fmt.Errorf("pending transfer %s does not exist", pid)
	}
	if err != nil {
		return fmt.Errorf("look up pending transfer %s: %w", pid, err)
	}
	t.Debit, t.Credit = v.Debit, v.Credit
	return nil
}

func checkTransfer(t *ledger.Transfer) error {
	if p := ledger.CheckTransfer(t); p != nil {
		return fmt.Errorf("invalid transfer: %s", p.Msg)
	}
	return nil
}

// submitTransfer sends one transfer, prints its result and fails unless it
// was applied (or had been, for a repeat).
func submitTransfer(cmd *cobra.Command, a *app, t ledger.Transfer, madeID bool) error {
	results, err := a.client().CreateTransfers(cmd.Context(), []ledger.Transfer{t})
	if err != nil {
		if madeID && (client.IsOutcomeUnknown(err) || client.IsUnavailable(err)) {
			return fmt.Errorf("transfer %s: %w (retry with --id %s)", t.ID, err, t.ID)
		}
		return fmt.Errorf("transfer %s: %w", t.ID, err)
	}
	r := results[0]
	if a.json {
		if err := writeJSON(cmd.OutOrStdout(), map[string]any{"results": results}); err != nil {
			return err
		}
	} else {
		printResults(cmd.OutOrStdout(), results, true)
	}
	if r.Status == ledger.StatusInFlight {
		// A cross-shard saga outlived the request; it will finish on its own.
		fmt.Fprintf(cmd.ErrOrStderr(), "transfer %s is still in flight; see it with: tally transfer get %s\n", r.ID, r.ID)
	}
	return transferFailure(r)
}

// transferFailure says why a result is a failure, or nil for an applied
// transfer. A repeat ("exists") of a transfer that was rejected is still a
// rejection.
func transferFailure(r ledger.Result) error {
	switch {
	case r.Result == ledger.Exists && r.Status == ledger.StatusRejected:
		return fmt.Errorf("transfer %s was rejected earlier: %s", r.ID, orDash(string(r.Original)))
	case r.Result == ledger.OK, r.Result == ledger.Exists:
		return nil
	}
	return fmt.Errorf("transfer %s rejected: %s", r.ID, r.Result)
}

func newDepositCmd(a *app) *cobra.Command {
	return newWorldCmd(a, true)
}

func newWithdrawCmd(a *app) *cobra.Command {
	return newWorldCmd(a, false)
}

// newWorldCmd builds deposit (from @world) or withdraw (to @world).
func newWorldCmd(a *app, deposit bool) *cobra.Command {
	var o transferOptions
	cmd := &cobra.Command{
		Use:   "deposit ACCOUNT AMOUNT",
		Short: "Add money to an account from @world",
		Long: `Add AMOUNT (an integer in minor units) to ACCOUNT: a transfer from @world,
the outside world, which exists on every shard in every currency. Without
--id a random id is made and printed; retry with it after an unknown outcome.`,
		Example: `  tally deposit alice 10000
  tally deposit alice 10000 --id dep-2026-001 --reference "wire 88"`,
		Args: cobra.ExactArgs(2),
	}
	if !deposit {
		cmd.Use = "withdraw ACCOUNT AMOUNT"
		cmd.Short = "Take money out of an account to @world"
		cmd.Long = `Take AMOUNT (an integer in minor units) out of ACCOUNT: a transfer to @world.
It is rejected with insufficient_funds if the account has less available.
Without --id a random id is made and printed; retry with it after an unknown
outcome.`
		cmd.Example = `  tally withdraw alice 2500
  tally withdraw alice 2500 --id wd-17`
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		meta, err := parseMeta(o.meta)
		if err != nil {
			return err
		}
		amount, err := parseAmount(args[1])
		if err != nil {
			return err
		}
		t := ledger.Transfer{ID: o.id, Debit: ledger.World, Credit: args[0], Amount: amount, Reference: o.reference, Metadata: meta}
		if !deposit {
			t.Debit, t.Credit = args[0], ledger.World
		}
		if t.ID == "" {
			t.ID = newTransferID()
		}
		if ledger.IsSystem(args[0]) {
			return fmt.Errorf("account %q: system accounts cannot be used here", args[0])
		}
		if err := checkTransfer(&t); err != nil {
			return err
		}
		return submitTransfer(cmd, a, t, o.id == "")
	}
	o.bindCommon(cmd.Flags())
	return cmd
}

func newTransferGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a transfer",
		Long: `Show a transfer by id: its accounts, amount, status (posted, pending, voided,
rejected, in_flight) and result, and how a pending transfer was resolved.`,
		Example: `  tally transfer get t-42
  tally transfer get hold-1 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.client().Transfer(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			printTransfer(cmd.OutOrStdout(), v)
			return nil
		},
	}
}

func printTransfer(w io.Writer, v *client.TransferView) {
	t := table.New(w)
	table.Row(t, "id", v.ID)
	table.Row(t, "debit", v.Debit)
	table.Row(t, "credit", v.Credit)
	table.Row(t, "amount", v.Amount)
	table.Row(t, "status", v.Status)
	table.Row(t, "result", v.Result)
	table.Row(t, "cross_shard", v.CrossShard)
	table.Row(t, "shard", v.Shard)
	table.Row(t, "seq", v.Seq)
	table.Row(t, "time", fmtTime(v.Time))
	if x := v.Transfer; x != nil {
		if x.Pending {
			table.Row(t, "pending", true)
			if x.TimeoutSeconds > 0 {
				table.Row(t, "timeout", (time.Duration(x.TimeoutSeconds) * time.Second).String())
			}
		}
		if pid := x.Resolves(); pid != "" {
			table.Row(t, "resolves", pid)
		}
		if x.Reference != "" {
			table.Row(t, "reference", x.Reference)
		}
		if len(x.Metadata) > 0 {
			table.Row(t, "metadata", fmtMeta(x.Metadata))
		}
	}
	if v.ResolvedBy != "" {
		table.Row(t, "resolved_by", v.ResolvedBy)
		table.Row(t, "resolved_seq", v.ResolvedSeq)
		table.Row(t, "resolved_amount", v.ResolvedAmount)
	}
	t.Flush()
}
