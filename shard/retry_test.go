package shard_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"tally/ledger"
	"tally/shard"
	"tally/shard/shardtest"
)

// TestRetrySameIDs submits the same batches again through another node's
// leader after a leader change, and concurrently from two clients while
// leadership moves: every id applies once, and a repeat answers exists
// with the original outcome and seq.
func TestRetrySameIDs(t *testing.T) {
	c := shardtest.New(t, 3, 4)
	const s = 2
	tg := tagOn(s, c.Shards())
	a, b := acct("a", tg), acct("b", tg)
	setup(t, c, 1_000_000, a)
	setup(t, c, 0, b)
	batch := func(prefix string) ledger.Command {
		var ts []ledger.Transfer
		for i := 0; i < 40; i++ {
			ts = append(ts, xfer(fmt.Sprintf("%s.%d", prefix, i), a, b, int64(i+1)))
		}
		// A rejection is an outcome too, and must be repeated as such.
		ts = append(ts, xfer(prefix+".big", a, b, 10_000_000))
		return transfers(ts...)
	}
	const sumBatch = 40 * 41 / 2

	// Once on the first leader, again on a leader on another node.
	first := submit(t, c, batch("r"))
	for _, r := range first[:40] {
		if !acked(r) || r.Status != ledger.StatusPosted {
			t.Fatalf("first submission: %+v", r)
		}
	}
	if big := first[40]; big.Result != ledger.InsufficientFunds {
		t.Fatalf("first submission of r.big: %+v, want insufficient_funds", big)
	}
	l1 := c.WaitLeader(t, s)
	l2 := moveLeader(t, c, s)
	if l2.NodeID() == l1.NodeID() {
		t.Fatalf("leadership of shard %d did not move off %s", s, l1.NodeID())
	}
	again := submitOn(t, c, l2, s, batch("r"))
	for i, r := range again {
		want := first[i]
		orig := want.Result
		if orig == ledger.Exists {
			orig = want.Original
		}
		if r.Result != ledger.Exists || r.Original != orig || r.Status != want.Status || r.Seq != want.Seq {
			t.Errorf("repeat of %s on %s: %+v, want exists of %s/%s at seq %d", r.ID, l2.NodeID(), r, orig, want.Status, want.Seq)
		}
	}

	// Two clients send the same batch at once while leadership moves.
	var wg sync.WaitGroup
	answers := make([][]ledger.Result, 2)
	for k := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), submitBudget)
			defer cancel()
			res, err := c.Submit(ctx, batch("q"))
			if err != nil {
				t.Errorf("client %d: %v", k, err)
			}
			answers[k] = res
		}()
	}
	moveLeader(t, c, s)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i := 0; i < 40; i++ {
		oks := 0
		for k, res := range answers {
			r := res[i]
			if !acked(r) || r.Status != ledger.StatusPosted {
				t.Errorf("client %d, %s: %+v, want ok or exists(ok), posted", k, r.ID, r)
			}
			if r.Result == ledger.OK {
				oks++
			}
		}
		if oks > 1 {
			t.Errorf("q.%d: both clients were told ok", i)
		}
		if answers[0][i].Seq != answers[1][i].Seq {
			t.Errorf("q.%d: clients were told seqs %d and %d", i, answers[0][i].Seq, answers[1][i].Seq)
		}
	}

	// The same id with another amount is not a retry.
	changed := submit(t, c, transfers(xfer("r.0", a, b, 999)))
	if changed[0].Result != ledger.ExistsWithDifferentFields {
		t.Errorf("r.0 with a new amount: %+v, want exists_with_different_fields", changed[0])
	}

	c.WaitConverged(t)
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, fmt.Sprintf("r.%d", i), fmt.Sprintf("q.%d", i))
	}
	leader := c.WaitLeader(t, s)
	wantPostedOnce(t, leader, s, ids)
	evs := transferEvents(t, leader, s)
	for _, id := range []string{"r.big", "q.big"} {
		if got := evs[id]; len(got) != 1 || got[0] != ledger.TransferRejected {
			t.Errorf("%s: events %v, want one %s", id, got, ledger.TransferRejected)
		}
	}
	if got := balance(t, c, b); got.CreditsPosted != 2*sumBatch {
		t.Errorf("credits of %s: %d, want %d", b, got.CreditsPosted, 2*sumBatch)
	}
	c.VerifyAll(t)
}

// moveLeader hands shard s's leadership to another node and returns the
// new leader.
func moveLeader(t *testing.T, c *shardtest.Cluster, s int) *shard.Host {
	t.Helper()
	old := c.WaitLeader(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := old.TransferLeader(ctx, s, ""); err != nil {
		// An election may have moved it already; WaitLeader says.
		t.Logf("transfer leadership of shard %d from %s: %v", s, old.NodeID(), err)
	}
	return c.WaitLeader(t, s, old)
}

// submitOn runs cmd on host h, which should lead shard s; if it lost the
// lead meanwhile, the harness routes the retry.
func submitOn(t *testing.T, c *shardtest.Cluster, h *shard.Host, s int, cmd ledger.Command) []ledger.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), shardtest.AttemptTimeout)
	defer cancel()
	res, err := h.Submit(ctx, s, cmd)
	if err == nil {
		return res
	}
	if !shardtest.Retryable(err) {
		t.Fatalf("submit on %s: %v", h.NodeID(), err)
	}
	t.Logf("submit on %s: %v; retrying through the harness", h.NodeID(), err)
	return submit(t, c, cmd)
}

// TestHandoff: a node that leads shards hands every one of them to
// another node, as it does on SIGTERM, and then leads none.
func TestHandoff(t *testing.T) {
	c := shardtest.New(t, 3, 4)
	h := c.WaitLeader(t, 0)
	for s := 1; s < c.Shards(); s++ {
		if c.WaitLeader(t, s) != h {
			moveTo(t, c, s, h)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.Handoff(ctx); err != nil {
		t.Fatalf("handoff: %v", err)
	}
	for s := 0; s < c.Shards(); s++ {
		if l := c.WaitLeader(t, s); l == h {
			t.Errorf("shard %d: %s still leads after its handoff", s, h.NodeID())
		}
	}
}

// moveTo hands shard s's leadership to host to.
func moveTo(t *testing.T, c *shardtest.Cluster, s int, to *shard.Host) {
	t.Helper()
	for range 10 {
		old := c.WaitLeader(t, s)
		if old == to {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := old.TransferLeader(ctx, s, to.NodeID())
		cancel()
		if err != nil {
			t.Logf("transfer shard %d to %s: %v", s, to.NodeID(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("shard %d: could not move its leadership to %s", s, to.NodeID())
}
