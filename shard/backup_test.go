package shard_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"tally/backup"
	"tally/ledger"
	"tally/shard"
	"tally/shard/shardtest"
)

// takeBackup writes a backup of h's replicas.
func takeBackup(t *testing.T, h *shard.Host) ([]byte, backup.Summary) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hd, err := h.BackupHeader(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sum, err := h.WriteBackup(ctx, hd, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Check(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("the backup does not read back: %v", err)
	}
	return buf.Bytes(), sum
}

// restoreInto restores file into a new one-node cluster of shards shards.
func restoreInto(t *testing.T, file []byte, shards int) *shardtest.Cluster {
	t.Helper()
	c := shardtest.New(t, 1, shards)
	r, err := backup.NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Host(1).Restore(ctx, r); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBackupDuringSagas takes a backup while cross-shard transfers run,
// restores it into a new cluster, and checks that the restored cluster
// verifies, its books balance, every account is as it was at the cut,
// its in-flight sagas finish, and that a backup of it holds the first
// backup's events; a backup taken once writes stopped restores to a
// cluster whose backup equals it.
func TestBackupDuringSagas(t *testing.T) {
	const shards = 3
	c := shardtest.New(t, 3, shards)
	var ids []string
	for s := 0; s < shards; s++ {
		id := acct("a", tagOn(s, shards))
		setup(t, c, 1_000_000, id)
		ids = append(ids, id)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := 0; k < 6; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c.Submit(ctx, transfers(xfer(fmt.Sprintf("x%d.%d", k, i), ids[k%shards], ids[(k+1)%shards], 1)))
				cancel()
			}
		}()
	}
	time.Sleep(700 * time.Millisecond) // let sagas run; the backup is taken among them
	live, liveSum := takeBackup(t, c.Host(1))
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()

	r := restoreInto(t, live, shards)
	h := r.Host(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src := c.Host(1)
	for s := 0; s < shards; s++ {
		cut := liveSum.Header.Cut[s]
		if rep, err := h.Verify(ctx, s); err != nil {
			t.Fatalf("verify shard %d: %v", s, err)
		} else if rep.Events < cut.Seq {
			t.Fatalf("shard %d: %d events, the cut is %d", s, rep.Events, cut.Seq)
		}
		if hash, err := h.HashAt(s, cut.Seq); err != nil || hash != cut.Head {
			t.Fatalf("shard %d: head at the cut %s (%v), want %s", s, hash, err, cut.Head)
		}
		f, _ := h.Replica(s)
		if f.FSM.Epoch() != 1 {
			t.Fatalf("shard %d: epoch %d", s, f.FSM.Epoch())
		}
		for _, id := range append(ids, ledger.World) {
			for _, key := range []string{ledger.AccountKey(id, usd)} {
				want, werr := src.AccountAt(ctx, s, key, cut.Seq, shard.ReadOpts{})
				got, gerr := h.AccountAt(ctx, s, key, cut.Seq, shard.ReadOpts{})
				if (werr == nil) != (gerr == nil) || !bytes.Equal(want.AppendBinary(nil), got.AppendBinary(nil)) {
					t.Fatalf("shard %d account %s at the cut: restored %+v (%v), source %+v (%v)", s, key, got, gerr, want, werr)
				}
			}
		}
	}
	// The restored drivers finish what was in flight at the cut.
	shardtest.WaitFor(t, 20*time.Second, "restored sagas to finish", func() bool {
		for s := 0; s < shards; s++ {
			rep, _ := h.Replica(s)
			open, _ := rep.FSM.OpenSagas(nil)
			if len(open) > 0 {
				return false
			}
		}
		return true
	})
	for s := 0; s < shards; s++ {
		if _, err := h.Audit(ctx, s); err != nil {
			t.Fatalf("audit shard %d: %v", s, err)
		}
	}
	again, _ := takeBackup(t, h)
	if d, err := backup.Compare(bytes.NewReader(live), bytes.NewReader(again)); err != nil || !d.Prefix {
		t.Fatalf("a backup of the restored cluster does not hold the first: %+v %v", d, err)
	}

	// Quiet now: a backup, restored and backed up again, is the same.
	quiet, quietSum := takeBackup(t, src)
	r2 := restoreInto(t, quiet, shards)
	_, sum2 := takeBackup(t, r2.Host(1))
	if sum2.Content != quietSum.Content || fmt.Sprint(sum2.Header.Cut) != fmt.Sprint(quietSum.Header.Cut) {
		t.Fatalf("backup of the restored cluster: content %s cut %v, first %s %v", sum2.Content, sum2.Header.Cut, quietSum.Content, quietSum.Header.Cut)
	}
	if sum2.Header.Epoch != 1 || quietSum.Header.Epoch != 0 {
		t.Fatalf("epochs %d then %d, want 0 then 1", quietSum.Header.Epoch, sum2.Header.Epoch)
	}
}
