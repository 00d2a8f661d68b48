package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"tally/client"
	"tally/internal/table"
	"tally/ledger"
)

// After a run with cross-shard transfers, money may still be moving: a
// saga answered in_flight (or cut off with its request) is still driven
// by its source shard's leader, and until it completes its destination
// has credited an amount its source has only held, so the bench accounts
// briefly sum to more than they hold. The Conservation check therefore
// waits first for the run's sagas to finish, as GET /v1/sagas lists them.
const (
	// sagaSettleTimeout bounds that wait. A saga is retried with backoff
	// until it finishes; a minute covers a leader election or two.
	sagaSettleTimeout = time.Minute
	sagaPollEvery     = 100 * time.Millisecond
)

// waitSagas waits until no saga of a transfer whose id starts with prefix
// is in flight on any shard, or the bound passes.
func waitSagas(ctx context.Context, c *client.Client, prefix string, errw io.Writer) *SagaSettle {
	start := time.Now()
	deadline := start.Add(sagaSettleTimeout)
	res := &SagaSettle{Open: -1}
	told := false
	var lastErr error
	for {
		open, err := openSagas(ctx, c, prefix)
		switch {
		case client.IsNotFound(err):
			res.Detail = "the cluster does not list sagas (GET /v1/sagas): balances re-read until they add up"
			return res
		case err != nil:
			lastErr = err
		default:
			lastErr = nil
			if res.Open < 0 {
				res.Open = open
			}
			if open == 0 {
				res.Settled, res.Seconds = true, time.Since(start).Seconds()
				res.Detail = fmt.Sprintf("%s in flight when the load stopped, none after %.2fs", table.Plural(res.Open, "saga"), res.Seconds)
				return res
			}
			if !told {
				fmt.Fprintf(errw, "bench: waiting for %s in flight to finish\n", table.Plural(open, "saga"))
				told = true
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			res.Seconds = time.Since(start).Seconds()
			if lastErr != nil {
				res.Detail = fmt.Sprintf("could not list sagas for %.0fs: %v", res.Seconds, lastErr)
			} else {
				res.Detail = fmt.Sprintf("%s still in flight after %.0fs ('tally sagas list' shows them)", table.Plural(open, "saga"), res.Seconds)
			}
			return res
		}
		select {
		case <-ctx.Done():
		case <-time.After(sagaPollEvery):
		}
	}
}

// openSagas counts the sagas in flight whose transfer id starts with prefix.
func openSagas(ctx context.Context, c *client.Client, prefix string) (int, error) {
	ss, err := c.Sagas(ctx, "in_flight", -1)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range ss {
		if strings.HasPrefix(s.ID, prefix) {
			n++
		}
	}
	return n, nil
}

// confirmCross reads back a transfer the bench sent as cross-shard: the
// cluster must have run it as a saga, or the bench placed accounts on
// shards other than the cluster's and its cross-shard figures are not.
func confirmCross(ctx context.Context, c *client.Client, id string) (*bool, error) {
	v, err := c.Transfer(ctx, id)
	if err != nil {
		return nil, err
	}
	return &v.CrossShard, nil
}

// auditAfter runs the cluster's audit: every shard sums to 0 and the
// clearing accounts between shards match the sagas. It is retried a few
// times while the cut is not consistent (shards moved between its two
// rounds), which is not a failure but proves less.
func auditAfter(ctx context.Context, c *client.Client) *AuditCheck {
	var rep *ledger.AuditReport
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		rep, err = c.Audit(ctx)
		if err != nil || !rep.OK || rep.Consistent {
			break
		}
	}
	switch {
	case client.IsNotFound(err):
		return nil // a cluster without the audit
	case err != nil:
		return &AuditCheck{Skipped: true, Detail: fmt.Sprintf("could not run the audit: %v", err)}
	}
	a := &AuditCheck{OK: rep.OK, Consistent: rep.Consistent, Currencies: rep.Currencies, Violations: rep.Violations}
	cut := "consistent cut"
	if !rep.Consistent {
		cut = "shards moved between rounds: bounds checked"
	}
	var parts []string
	for _, cur := range rep.Currencies {
		parts = append(parts, fmt.Sprintf("%s clearing net %s, in flight %s", cur.Currency, cur.Net, cur.InFlight))
	}
	if len(parts) == 0 {
		parts = append(parts, "no clearing accounts")
	}
	a.Detail = fmt.Sprintf("%s; %s", cut, strings.Join(parts, "; "))
	if !rep.OK {
		a.Detail = fmt.Sprintf("%s: %s", table.Plural(len(rep.Violations), "violation"), a.Detail)
	}
	return a
}
