package fsm

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

// BenchmarkApplyBatch applies entries of one command with 1,000
// transfers between 1,000 funded accounts, as the leader's batcher builds
// them, handing Raft's batches of 1 or 8 entries to ApplyBatch.
func BenchmarkApplyBatch(b *testing.B) {
	const accounts, perEntry = 1000, 1000
	for _, entries := range []int{1, 8} {
		b.Run(fmt.Sprintf("entries=%d", entries), func(b *testing.B) {
			f := open(b, b.TempDir())
			setup := ledger.Entry{Time: t0, Commands: []ledger.Command{{Kind: ledger.CmdOpenAccounts}, {Kind: ledger.CmdTransfers}}}
			for i := range accounts {
				id := fmt.Sprintf("acct-%d", i)
				setup.Commands[0].Accounts = append(setup.Commands[0].Accounts, ledger.Account{ID: id, Currency: "USD"})
				setup.Commands[1].Transfers = append(setup.Commands[1].Transfers, xfer("fund-"+id, ledger.World, id, 1<<40))
			}
			f.ApplyBatch([]*raft.Log{entryLog(1, setup)})
			r := rand.New(rand.NewSource(1))
			index, n := uint64(1), 0
			batch := func() []*raft.Log {
				logs := make([]*raft.Log, entries)
				for i := range logs {
					c := ledger.Command{Kind: ledger.CmdTransfers, Transfers: make([]ledger.Transfer, perEntry)}
					for j := range c.Transfers {
						n++
						d, k := r.Intn(accounts), 1+r.Intn(accounts-1)
						c.Transfers[j] = xfer(fmt.Sprintf("t-%d", n), fmt.Sprintf("acct-%d", d), fmt.Sprintf("acct-%d", (d+k)%accounts), 1+r.Int63n(100))
					}
					index++
					logs[i] = entryLog(index, ledger.Entry{Time: t0 + ledger.Time(index), Commands: []ledger.Command{c}})
				}
				return logs
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				logs := batch()
				b.StartTimer()
				for _, resp := range f.ApplyBatch(logs) {
					if r := resp.(*Response).Results[0][perEntry-1]; r.Result != ledger.OK {
						b.Fatalf("transfer %s: %s", r.ID, r.Result)
					}
				}
			}
			b.ReportMetric(float64(b.N*entries*perEntry)/b.Elapsed().Seconds(), "transfers/s")
		})
	}
}

// BenchmarkDecodeEnvelope is the dispatch step apply adds to every entry:
// finding the kind and the payload of each form. It must not allocate.
func BenchmarkDecodeEnvelope(b *testing.B) {
	e := ledger.Entry{Time: t0, Commands: []ledger.Command{transfers(xfer("t", "a", "b", 1))}}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"bare-ledger", bareV1(e)},
		{"ledger", enveloped(&e)},
		{"node", EncodeNode("n1", "10.0.0.1:8080")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if k, _, err := decodeEnvelope(tc.data); err != nil || k == nil {
					b.Fatal(err)
				}
			}
		})
	}
}
