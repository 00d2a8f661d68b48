package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tally/backup"
	"tally/client"
	"tally/ledger"
	"tally/test/proc"
)

// TestBackupRestore backs up a live three-node cluster while cross-shard
// transfers run, restores the file into a new cluster on other ports
// (one node with --restore, two joining), and checks it: verify and
// audit pass, every balance is the one at the cut, the shards carry the
// restore epoch, and a backup of the restored cluster holds the first
// one's events (beyond them only the steps of the sagas that were in
// flight at the cut). A damaged file is refused and leaves no data
// directory.
func TestBackupRestore(t *testing.T) {
	const shards = 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startCluster(t, shards)
	cl := client.New(c.proxy, client.WithTimeout(10*time.Second))
	var ids []string
	for i := range 12 {
		ids = append(ids, fmt.Sprintf("acct-%d", i))
	}
	var accts []ledger.Account
	var funds []ledger.Transfer
	for _, id := range ids {
		accts = append(accts, ledger.Account{ID: id, Currency: "USD"})
		funds = append(funds, ledger.Transfer{ID: "fund-" + id, Debit: ledger.World, Credit: id, Amount: 1_000_000})
	}
	setupOK(t, ctx, func(ctx context.Context) ([]ledger.Result, error) { return cl.CreateAccounts(ctx, accts) })
	setupOK(t, ctx, func(ctx context.Context) ([]ledger.Result, error) { return cl.CreateTransfers(ctx, funds) })

	// Load: batches of transfers among the accounts, most across shards.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var batch []ledger.Transfer
				for k := range 8 {
					a, b := rng.IntN(len(ids)), rng.IntN(len(ids)-1)
					if b >= a {
						b++
					}
					batch = append(batch, ledger.Transfer{ID: fmt.Sprintf("w%d-%d-%d", w, i, k), Debit: ids[a], Credit: ids[b], Amount: int64(1 + rng.IntN(9))})
				}
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				cl.CreateTransfers(cctx, batch) // any answer will do: the backup is what is checked
				ccancel()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	dir := t.TempDir()
	first := filepath.Join(dir, "first.bak")
	start := time.Now()
	out1 := runBackup(t, ctx, c.proxy, first)
	took := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	var events uint64
	for _, s := range out1.Summary.Shards {
		events += s.Events
	}
	t.Logf("backup under load: %d events, %d bytes in %v; cut %v", events, out1.Summary.Bytes, took.Round(time.Millisecond), cutSeqs(out1.Summary.Header))
	// With every node up, the backup holds new sagas back while it takes
	// the cut, so none is in flight inside it.
	if h := out1.Summary.Header; h.InFlight != 0 {
		t.Fatalf("backup under load: %d sagas in flight at the cut (%s)", h.InFlight, h.Note)
	}

	// A damaged file: refused with one error, no data directory made.
	refuseDamaged(t, ctx, first, dir)

	// The new cluster: n1 restores, n2 and n3 join.
	r := startRestored(t, first)
	rc := client.New(r.proxy, client.WithTimeout(10*time.Second))
	// Every balance as at the cut (read at the cut's seq on both sides).
	// (@world, on every shard, is summed over shards and checked by audit.)
	for _, id := range ids {
		sh := ledger.ShardOf(id, shards)
		seq := out1.Summary.Header.Cut[sh].Seq
		want, err := cl.Account(ctx, id, client.ReadOpts{AtSeq: seq})
		if err != nil {
			t.Fatalf("source %s at seq %d: %v", id, seq, err)
		}
		got, err := rc.Account(ctx, id, client.ReadOpts{AtSeq: seq})
		if err != nil {
			t.Fatalf("restored %s at seq %d: %v", id, seq, err)
		}
		if got.Balance != want.Balance || got.DebitsPending != want.DebitsPending || got.CreditsPending != want.CreditsPending ||
			got.DebitsPosted != want.DebitsPosted || got.CreditsPosted != want.CreditsPosted {
			t.Fatalf("%s at seq %d: restored %+v, source %+v", id, seq, got, want)
		}
	}
	// The sagas in flight at the cut finish on the restored cluster.
	waitFor(t, 30*time.Second, "restored sagas to finish", func() bool {
		s, err := rc.Sagas(ctx, "in_flight", -1)
		return err == nil && len(s) == 0
	})
	for _, args := range [][]string{{"verify"}, {"audit"}} {
		if out, err := r.run(ctx, append(args, "--timeout", "60s")...); err != nil {
			t.Fatalf("tally %s on the restored cluster: %v\n%s", args[0], err, out)
		}
	}
	// The epoch is in the streams: the header and the progress lines.
	var sawEpoch uint64
	err := rc.StreamShard(ctx, 0, out1.Summary.Header.Cut[0].Seq, client.StreamOpts{}, func(it client.StreamItem) error {
		sawEpoch = it.Epoch
		return nil
	})
	if err != nil || sawEpoch != 1 {
		t.Fatalf("stream of the restored shard 0: epoch %d (%v), want 1", sawEpoch, err)
	}

	// A second backup of the restored cluster, with no saga in flight at
	// the first cut and no writes since, equals the first.
	second := filepath.Join(dir, "second.bak")
	out2 := runBackup(t, ctx, r.proxy, second, "--compare", first)
	if out2.Compare == nil || !out2.Compare.Prefix {
		t.Fatalf("second backup: %+v", out2.Compare)
	}
	if out2.Summary.Header.Epoch != 1 {
		t.Fatalf("second backup's epoch %d, want 1", out2.Summary.Header.Epoch)
	}
	t.Logf("second backup: equal %v, events beyond the first per shard %v", out2.Compare.Equal, out2.Compare.Extra)
	if !out2.Compare.Equal {
		t.Fatalf("the restored cluster's backup differs from the one it was restored from, with no saga in flight at the cut: %+v", out2.Compare)
	}
	// Once the drivers are done, a third backup equals the second.
	third := filepath.Join(dir, "third.bak")
	out3 := runBackup(t, ctx, r.proxy, third, "--compare", second)
	if !out3.Compare.Equal || out3.Summary.Content != out2.Summary.Content {
		t.Fatalf("third backup differs from the second: %+v", out3.Compare)
	}
}

func cutSeqs(h backup.Header) []uint64 {
	var out []uint64
	for _, p := range h.Cut {
		out = append(out, p.Seq)
	}
	return out
}

func setupOK(t *testing.T, ctx context.Context, fn func(ctx context.Context) ([]ledger.Result, error)) {
	t.Helper()
	waitFor(t, 30*time.Second, "a setup request", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		res, err := fn(cctx)
		if err != nil {
			return false
		}
		for _, r := range res {
			if r.Result != ledger.OK && r.Result != ledger.Exists {
				t.Fatalf("setup: %+v", r)
			}
		}
		return true
	})
}

// backupOut is what tally backup --json prints.
type backupOut struct {
	Summary backup.Summary `json:"summary"`
	Compare *backup.Diff   `json:"compare"`
}

func runBackup(t *testing.T, ctx context.Context, addr, file string, extra ...string) backupOut {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--addr", addr, "--json", "backup", file}, extra...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("tally backup %s: %v\n%s%s", file, err, b, stderr.String())
	}
	var out backupOut
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("tally backup --json: %v\n%s", err, b)
	}
	return out
}

// refuseDamaged starts a node on a truncated and on an altered copy of
// file: each must exit non-zero with one error line and leave no data.
func refuseDamaged(t *testing.T, ctx context.Context, file, dir string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), b...)
	flipped[len(flipped)/2] ^= 0x10
	for name, data := range map[string][]byte{"truncated": b[:len(b)*2/3], "altered": flipped} {
		bad := filepath.Join(dir, name+".bak")
		if err := os.WriteFile(bad, data, 0o600); err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(dir, name+"-data")
		ports, err := proc.FreePorts(2)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, bin, "server", "--id", "x1", "--data", data, "--bootstrap", "--restore", bad,
			"--raft", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--http", fmt.Sprintf("127.0.0.1:%d", ports[1]))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s backup: the node started or failed oddly: %v\n%s", name, err, out)
		}
		last := strings.TrimSpace(string(out))
		if i := strings.LastIndex(last, "\n"); i >= 0 {
			last = last[i+1:]
		}
		if !strings.HasPrefix(last, "tally: --restore") || !strings.Contains(last, "corrupt") {
			t.Fatalf("%s backup: the node said %q", name, last)
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s backup: data directory left behind (%v)", name, err)
		}
		t.Logf("%s backup refused: %s", name, last)
	}
}

// startRestored starts a cluster from the backup file on new ports.
func startRestored(t *testing.T, file string) *cluster {
	t.Helper()
	c, nodes, pp := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := nodes[0].Start("--bootstrap", "--restore", file); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		if err := n.Start("--join", nodes[0].HTTP); err != nil {
			t.Fatal(err)
		}
	}
	if err := pp.Start(); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		c.waitHTTP(n.http, "/readyz")
	}
	c.waitMembers()
	return c
}
