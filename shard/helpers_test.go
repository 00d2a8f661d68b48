package shard_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"tally/ledger"
	"tally/shard"
	"tally/shard/shardtest"
)

const usd = "USD"

// submitBudget bounds one Submit through the harness, retries included.
const submitBudget = 20 * time.Second

// tagOn returns a brace tag whose accounts live on shard s, so that the
// debit and the credit of a transfer share a shard.
func tagOn(s, shards int) string {
	for i := 0; ; i++ {
		tg := fmt.Sprintf("s%d.%d", s, i)
		if shard.Of("x{"+tg+"}", shards) == s {
			return tg
		}
	}
}

// acct names account name on the shard of tag tg.
func acct(name, tg string) string { return name + "{" + tg + "}" }

func openCmd(ids ...string) ledger.Command {
	cmd := ledger.Command{Kind: ledger.CmdOpenAccounts}
	for _, id := range ids {
		cmd.Accounts = append(cmd.Accounts, ledger.Account{ID: id, Currency: usd})
	}
	return cmd
}

func xfer(id, debit, credit string, amount int64) ledger.Transfer {
	return ledger.Transfer{ID: id, Debit: debit, Credit: credit, Amount: amount}
}

func transfers(ts ...ledger.Transfer) ledger.Command {
	return ledger.Command{Kind: ledger.CmdTransfers, Transfers: ts}
}

// submit runs cmd through the harness and fails the test on error.
func submit(t *testing.T, c *shardtest.Cluster, cmd ledger.Command) []ledger.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), submitBudget)
	defer cancel()
	res, err := c.Submit(ctx, cmd)
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, c.Describe())
	}
	return res
}

// wantOK fails the test unless every result is ok (or exists with an ok
// original, the answer to a retry of an applied command).
func wantOK(t *testing.T, res []ledger.Result) {
	t.Helper()
	for _, r := range res {
		if !acked(r) {
			t.Fatalf("result %+v, want ok", r)
		}
	}
}

// acked reports whether r says the item was applied successfully.
func acked(r ledger.Result) bool {
	return r.Result == ledger.OK || (r.Result == ledger.Exists && r.Original == ledger.OK)
}

// setup opens accounts and funds each of them from @world.
func setup(t *testing.T, c *shardtest.Cluster, fund int64, ids ...string) {
	t.Helper()
	for _, id := range ids {
		wantOK(t, submit(t, c, openCmd(id)))
		if fund > 0 {
			wantOK(t, submit(t, c, transfers(xfer("fund-"+id, ledger.World, id, fund))))
		}
	}
}

// transferEvents returns, per transfer id, the types of the events on
// shard s of h that decided it (TransferPosted, TransferPending,
// TransferRejected, ...), read from h's event log.
func transferEvents(t *testing.T, h *shard.Host, s int) map[string][]ledger.EventType {
	t.Helper()
	out := map[string][]ledger.EventType{}
	var after uint64
	for {
		evs, err := h.Events(s, after, 1000)
		if err != nil {
			t.Fatalf("events of shard %d on %s: %v", s, h.NodeID(), err)
		}
		if len(evs) == 0 {
			return out
		}
		for _, e := range evs {
			if e.Seq != after+1 {
				t.Fatalf("shard %d on %s: event seq %d follows %d", s, h.NodeID(), e.Seq, after)
			}
			after = e.Seq
			if e.Data.Transfer != nil {
				out[e.Data.Transfer.ID] = append(out[e.Data.Transfer.ID], e.Type)
			}
		}
	}
}

// wantPostedOnce fails unless each id was decided by exactly one
// TransferPosted event on shard s of h and by nothing else.
func wantPostedOnce(t *testing.T, h *shard.Host, s int, ids []string) {
	t.Helper()
	evs := transferEvents(t, h, s)
	for _, id := range ids {
		if got := evs[id]; len(got) != 1 || got[0] != ledger.TransferPosted {
			t.Errorf("transfer %s on shard %d: events %v, want exactly one %s", id, s, got, ledger.TransferPosted)
		}
	}
}

// balance reads account id linearizably from its shard's leader.
func balance(t *testing.T, c *shardtest.Cluster, id string) ledger.Account {
	t.Helper()
	s := shard.Of(id, c.Shards())
	ctx, cancel := context.WithTimeout(context.Background(), submitBudget)
	defer cancel()
	for {
		h := c.WaitLeader(t, s)
		a, _, err := h.Account(ctx, s, id, shard.ReadOpts{})
		if err == nil {
			return a
		}
		if !shardtest.Retryable(err) || ctx.Err() != nil {
			t.Fatalf("read %s: %v", id, err)
		}
	}
}
