package shard_test

import (
	"context"
	"testing"
	"time"

	"tally/ledger"
	"tally/shard"
	"tally/shard/shardtest"
)

// TestPendingExpiresWithoutTraffic leaves a pending transfer with a
// one-second timeout alone: the leader's tick must append the expiry
// although no client writes anything.
func TestPendingExpiresWithoutTraffic(t *testing.T) {
	c := shardtest.New(t, 3, 4)
	const s = 3
	tg := tagOn(s, c.Shards())
	a, b := acct("a", tg), acct("b", tg)
	setup(t, c, 1000, a)
	setup(t, c, 0, b)

	p := xfer("hold", a, b, 300)
	p.Pending, p.TimeoutSeconds = true, 1
	res := submit(t, c, transfers(p))
	if res[0].Result != ledger.OK || res[0].Status != ledger.StatusPending {
		t.Fatalf("pending transfer: %+v", res[0])
	}
	held := time.Now()
	if got := balance(t, c, a); got.DebitsPending != 300 || got.Available() != 700 {
		t.Fatalf("after the hold: %+v", got)
	}

	const bound = 6 * time.Second
	var expired ledger.Event
	for expired.Seq == 0 {
		if time.Since(held) > bound {
			t.Fatalf("no %s event within %v\n%s", ledger.PendingExpiredEv, bound, c.Describe())
		}
		time.Sleep(50 * time.Millisecond)
		h := c.Leader(s)
		if h == nil {
			continue
		}
		evs, err := h.Events(s, res[0].Seq, 100)
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		for _, e := range evs {
			if e.Type == ledger.PendingExpiredEv && e.Data.PendingID == "hold" {
				expired = e
			}
		}
	}
	t.Logf("expired %v after the hold, at seq %d", time.Since(held), expired.Seq)

	ctx, cancel := context.WithTimeout(context.Background(), submitBudget)
	defer cancel()
	rec, _, err := c.WaitLeader(t, s).Transfer(ctx, s, "hold", shard.ReadOpts{})
	if err != nil || rec.Status != ledger.StatusVoided || rec.ResolvedBy != "expired" || rec.ResolvedSeq != expired.Seq {
		t.Errorf("record after expiry: %+v, %v", rec, err)
	}
	// Expiry is decided from log time, which must have passed the deadline.
	if rec.ExpiresAt != rec.Time+int64(time.Second) || int64(expired.Time) < rec.ExpiresAt {
		t.Errorf("held at %d until %d, expired at log time %d", rec.Time, rec.ExpiresAt, expired.Time)
	}
	if got := balance(t, c, a); got.DebitsPending != 0 || got.Balance() != 1000 || got.Available() != 1000 {
		t.Errorf("%s after expiry: %+v", a, got)
	}
	if got := balance(t, c, b); got.CreditsPending != 0 || got.Balance() != 0 {
		t.Errorf("%s after expiry: %+v", b, got)
	}
	post := xfer("post-hold", a, b, 0)
	post.PostPendingID = "hold"
	if res := submit(t, c, transfers(post)); res[0].Result != ledger.PendingExpired {
		t.Errorf("post after expiry: %+v, want pending_expired", res[0])
	}
	c.WaitConverged(t)
	c.VerifyAll(t)
}
