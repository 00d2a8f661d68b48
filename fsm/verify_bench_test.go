package fsm

import (
	"context"
	"math/rand"
	"os"
	"runtime/metrics"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"tally/ledger"
)

// verifyBenchEvents is how many events BenchmarkVerify builds its shard
// with; TALLY_VERIFY_EVENTS overrides it (1000000 for the documented
// figure).
func verifyBenchEvents() int {
	if s := os.Getenv("TALLY_VERIFY_EVENTS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	return 200_000
}

// buildVerifyShard applies entries of 1,000 transfers among 1,000 funded
// accounts until the shard holds about n events: every tenth transfer
// carries a reference, every twentieth metadata, and a few are holds
// that later entries post.
func buildVerifyShard(b *testing.B, f *FSM, n int) {
	const accounts, perEntry = 1000, 1000
	f.ApplyBatch([]*raft.Log{entryLog(1, fundedSetup(accounts))})
	r := rand.New(rand.NewSource(1))
	index, k := uint64(1), 0
	var holds []string
	for _, seq := f.Applied(); seq < uint64(n); _, seq = f.Applied() {
		c := ledger.Command{Kind: ledger.CmdTransfers, Transfers: make([]ledger.Transfer, perEntry)}
		for j := range c.Transfers {
			k++
			t := randomPair(r, k, accounts)
			switch {
			case len(holds) > 0 && k%7 == 0:
				t.PostPendingID, t.Amount = holds[0], 0
				holds = holds[1:]
			case k%11 == 0:
				t.Pending = true
				holds = append(holds, t.ID)
			}
			if k%10 == 0 {
				t.Reference = "invoice " + t.ID
			}
			if k%20 == 0 {
				t.Metadata = map[string]string{"order": t.ID, "channel": "web"}
			}
			c.Transfers[j] = t
		}
		index++
		f.ApplyBatch([]*raft.Log{entryLog(index, ledger.Entry{Time: t0 + ledger.Time(index), Commands: []ledger.Command{c}})})
	}
}

// BenchmarkVerify replays a shard of verifyBenchEvents() events from seq
// 1, as `tally verify` does on each replica, and reports events/s. With
// TALLY_VERIFY_DIR the shard is kept there and built only when the
// directory holds none, so that a profile covers the replay alone and a
// shard built by one build can be verified by another.
func BenchmarkVerify(b *testing.B) {
	dir := os.Getenv("TALLY_VERIFY_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	f := open(b, dir)
	if _, seq := f.Applied(); seq == 0 {
		buildVerifyShard(b, f, verifyBenchEvents())
	}
	b.ReportAllocs()
	b.ResetTimer()
	var events uint64
	stop := make(chan struct{})
	peak := make(chan uint64)
	go watchHeap(stop, peak)
	cpu := cpuTime()
	for range b.N {
		rep, err := f.Verify(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		events += rep.Events
	}
	close(stop)
	b.ReportMetric(float64(<-peak)/(1<<20), "peak-heap-MiB")
	// On a machine shared with other work the wall time says little: the
	// CPU time the process spent (both goroutines and the collector) says
	// what the replay costs.
	cpu = cpuTime() - cpu
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu-s")
}

// cpuTime is the user and system time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// watchHeap sends the largest heap of live and not yet collected objects
// it saw, sampled every 5 ms until stop closes.
func watchHeap(stop <-chan struct{}, peak chan<- uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var top uint64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		metrics.Read(sample)
		top = max(top, sample[0].Value.Uint64())
		select {
		case <-stop:
			peak <- top
			return
		case <-tick.C:
		}
	}
}
