package cluster

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// The appends of 4 shards, each appending one 1 KiB entry at a time as a
// Raft loop with one entry in flight does, to a store per shard (as
// before) and to the shared store. b.N counts the entries of each shard.
func BenchmarkLogAppends(b *testing.B) {
	for _, bc := range []struct {
		shards int
		shared bool
	}{{1, false}, {1, true}, {4, false}, {4, true}} {
		shards, shared := bc.shards, bc.shared
		b.Run(fmt.Sprintf("shards=%d/shared=%v", shards, shared), func(b *testing.B) {
			dir := b.TempDir()
			stores := make([]raft.LogStore, shards)
			var commits func() uint64
			if shared {
				s, err := OpenSharedLog(filepath.Join(dir, "raft-log.db"), shards)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				for i := range stores {
					stores[i] = s.Shard(i)
				}
				commits = func() uint64 { return s.Stats().Commits }
			} else {
				for i := range stores {
					bs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, fmt.Sprintf("raft%d.db", i)), BoltOptions: boltOptions()})
					if err != nil {
						b.Fatal(err)
					}
					defer bs.Close()
					stores[i] = bs
				}
				commits = func() uint64 { return uint64(shards * b.N) }
			}
			data := make([]byte, 1024)
			b.ResetTimer()
			var wg sync.WaitGroup
			for i := range stores {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 1; n <= b.N; n++ {
						if err := stores[i].StoreLogs([]*raft.Log{{Index: uint64(n), Term: 1, Data: data}}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(shards*b.N)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(float64(shards*b.N)/float64(commits()), "appends/commit")
		})
	}
}
