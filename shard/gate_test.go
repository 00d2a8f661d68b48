package shard_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"tally/cluster"
	"tally/ledger"
	"tally/shard"
	"tally/shard/shardtest"
)

// TestSagaHold: while a backup holds sagas back, a transfer that would
// start one waits and, past its deadline, fails with nothing applied;
// same-shard transfers go on; the sagas in flight finish and every
// leader reports its shards drained; a release or the lease's end lets
// new sagas start.
func TestSagaHold(t *testing.T) {
	const shards = 2
	c := shardtest.New(t, 3, shards)
	a, a2, b := acct("a", tagOn(0, shards)), acct("a2", tagOn(0, shards)), acct("b", tagOn(1, shards))
	setup(t, c, 1000, a, a2, b)
	wantOK(t, submit(t, c, transfers(xfer("before", a, b, 1)))) // a saga, finished

	hold := func(lease time.Duration) []int {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var drained []int
		for _, h := range c.Live() {
			drained = append(drained, h.HoldSagas(ctx, lease)...)
		}
		slices.Sort(drained)
		return drained
	}
	if d := hold(shard.MaxSagaHold); !slices.Equal(d, []int{0, 1}) {
		t.Fatalf("drained shards %v, want [0 1]", d)
	}
	leader := c.WaitLeader(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := leader.Submit(ctx, 0, transfers(xfer("held", a, b, 1)))
	cancel()
	if !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("a saga-starting transfer during a hold: %v, want unavailable", err)
	}
	if rec, _, err := leader.Transfer(context.Background(), 0, "held", shard.ReadOpts{}); err == nil {
		t.Fatalf("the held transfer was applied: %+v", rec)
	}
	wantOK(t, submit(t, c, transfers(xfer("same-shard", a, a2, 1))))

	for _, h := range c.Live() {
		h.ReleaseSagas()
	}
	wantOK(t, submit(t, c, transfers(xfer("after-release", a, b, 1))))

	// A hold nobody releases ends with its lease.
	hold(200 * time.Millisecond)
	start := time.Now()
	wantOK(t, submit(t, c, transfers(xfer("after-lease", a, b, 1))))
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("a transfer waited %v after a 200ms lease", waited)
	}
	if !ledger.Crosses(&ledger.Transfer{Debit: a, Credit: b}, shards) || ledger.Crosses(&ledger.Transfer{Debit: a, Credit: a2}, shards) ||
		ledger.Crosses(&ledger.Transfer{Debit: ledger.World, Credit: b}, shards) {
		t.Fatal("ledger.Crosses")
	}
}
