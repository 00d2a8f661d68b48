package fsm

import (
	"fmt"
	"io"
	"math/rand"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

// BenchmarkSnapshotHistory measures a snapshot (the marker Persist
// writes) of a shard holding 1M and 5M events, the figure that must not
// grow with history, and once per size the full stream a follower that
// needs one gets, which is the state and does grow. Run it with
// go test ./fsm -run XXX -bench SnapshotHistory -benchtime 20x (a minute
// or two: it builds the states first).
func BenchmarkSnapshotHistory(b *testing.B) {
	const accounts, perEntry = 1000, 1000
	f := open(b, b.TempDir())
	f.ApplyBatch([]*raft.Log{entryLog(1, fundedSetup(accounts))})
	r := rand.New(rand.NewSource(1))
	index, n := uint64(1), 0
	apply := func(entries int) {
		for range entries {
			c := ledger.Command{Kind: ledger.CmdTransfers, Transfers: make([]ledger.Transfer, perEntry)}
			for j := range c.Transfers {
				n++
				c.Transfers[j] = randomPair(r, n, accounts)
			}
			index++
			f.ApplyBatch([]*raft.Log{entryLog(index, ledger.Entry{Time: t0 + ledger.Time(index), Commands: []ledger.Command{c}})})
		}
	}
	for _, events := range []int{1_000_000, 5_000_000} {
		start := time.Now()
		for {
			_, seq := f.Applied()
			if seq >= uint64(events) {
				break
			}
			apply(10)
		}
		b.Logf("built %d events in %v", events, time.Since(start).Round(time.Second))
		b.Run(fmt.Sprintf("events=%dM", events/1_000_000), func(b *testing.B) {
			var bytesOut int64
			for range b.N {
				b.StopTimer()
				apply(1) // something new to sync, as between two real snapshots
				snap, err := f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				var sink memSink
				b.StartTimer()
				if err := snap.Persist(&sink); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				snap.Release()
				bytesOut += int64(sink.Len())
				b.StartTimer()
			}
			b.ReportMetric(float64(bytesOut)/float64(b.N), "bytes/snapshot")
			b.StopTimer()
			snap, err := f.Snapshot()
			if err != nil {
				b.Fatal(err)
			}
			defer snap.Release()
			full := time.Now()
			var cw countingWriter
			cw.w = io.Discard
			if err := snap.(*snapshot).write(&cw); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(cw.n)/(1<<20), "full-MiB")
			b.ReportMetric(time.Since(full).Seconds(), "full-s")
		})
	}
}
