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
			f.ApplyBatch([]*raft.Log{entryLog(1, fundedSetup(accounts))})
			r := rand.New(rand.NewSource(1))
			index, n := uint64(1), 0
			batch := func() []*raft.Log {
				logs := make([]*raft.Log, entries)
				for i := range logs {
					c := ledger.Command{Kind: ledger.CmdTransfers, Transfers: make([]ledger.Transfer, perEntry)}
					for j := range c.Transfers {
						n++
						c.Transfers[j] = randomPair(r, n, accounts)
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
