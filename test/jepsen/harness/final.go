package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"tally/test/jepsen/check"
)

// quiesce waits until every shard has a leader, every replica of a shard
// has applied the same seq with the same chain head, and no saga is open.
// It reports whether that happened within d.
func quiesce(ctx context.Context, c *Cluster, poll *Poller, d time.Duration) bool {
	stable := 0
	return waitFor(d, func() bool {
		poll.Poll(ctx)
		if !poll.AllLed() {
			stable = 0
			return false
		}
		st := poll.States()
		for s := 0; s < c.Shards; s++ {
			var first *stateView
			for _, n := range c.Nodes {
				v, ok := st[fmt.Sprintf("%s/%d", n.ID, s)]
				if !ok || v.Pending != 0 {
					stable = 0
					return false
				}
				if first == nil {
					first = &v
				} else if v.AppliedSeq != first.AppliedSeq || v.HeadHash != first.HeadHash {
					stable = 0
					return false
				}
			}
		}
		stable++
		// Two agreeing rounds in a row, so a round caught between two
		// appends does not count.
		if stable < 2 {
			time.Sleep(300 * time.Millisecond)
			return false
		}
		return true
	})
}

// export reads every replica's state, its own verify and its whole event
// log, straight from each node, and writes them under dir.
func export(ctx context.Context, c *Cluster, dir string, quiesced bool) (*check.Final, error) {
	f := &check.Final{Shards: c.Shards, Quiesced: quiesced}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		for s := 0; s < c.Shards; s++ {
			rep := check.Replica{Node: n.ID, Shard: s}
			if err := exportReplica(ctx, c, n, &rep, dir); err != nil {
				rep.Err = err.Error()
			}
			f.Replicas = append(f.Replicas, rep)
		}
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "states.json"), b, 0o644); err != nil {
		return nil, err
	}
	return f, nil
}

func exportReplica(ctx context.Context, c *Cluster, n *Node, rep *check.Replica, dir string) error {
	s := rep.Shard
	var st check.StateView
	if err := c.cl.getJSON(ctx, n.HTTP, fmt.Sprintf("/v1/shards/%d/state", s), nil, 10*time.Second, &st); err != nil {
		return err
	}
	rep.State = &st
	var v check.VerifyView
	if err := c.cl.getJSON(ctx, n.HTTP, fmt.Sprintf("/v1/shards/%d/verify", s), nil, 60*time.Second, &v); err != nil {
		return err
	}
	rep.Verify = &v
	out, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-shard%d.events.jsonl", n.ID, s)))
	if err != nil {
		return err
	}
	defer out.Close()
	after := uint64(0)
	for {
		q := url.Values{"after": {fmt.Sprint(after)}, "limit": {"1000"}}
		r := c.cl.do(ctx, "GET", n.HTTP, fmt.Sprintf("/v1/shards/%d/events", s), q, nil, 30*time.Second)
		if r.Err != nil || r.Status != 200 {
			return fmt.Errorf("events of shard %d after %d: %s", s, after, r.String())
		}
		evs, _, err := check.ParseEvents(r.Body)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		for _, e := range evs {
			out.Write(append(append([]byte(nil), e.Raw...), '\n'))
		}
		rep.Events = append(rep.Events, evs...)
		last := evs[len(evs)-1].Seq
		if last <= after {
			return fmt.Errorf("events of shard %d: page after %d ends at %d", s, after, last)
		}
		after = last
	}
}

// diverged lists the shards whose replicas report different applied
// seqs or chain heads.
func diverged(f *check.Final) []int {
	var out []int
	first := map[int]*check.StateView{}
	bad := map[int]bool{}
	for _, r := range f.Replicas {
		if r.State == nil {
			continue
		}
		if o, ok := first[r.Shard]; !ok {
			first[r.Shard] = r.State
		} else if o.AppliedSeq != r.State.AppliedSeq || o.HeadHash != r.State.HeadHash {
			bad[r.Shard] = true
		}
	}
	for s := 0; s < f.Shards; s++ {
		if bad[s] {
			out = append(out, s)
		}
	}
	return out
}

// saveRaft copies the Raft directories (stable store, snapshots) of the
// given shards of every node, and each node's log store, shared by its
// shards, into dir.
func saveRaft(c *Cluster, shards []int, dir string, logf func(string, ...any)) {
	for _, n := range c.Nodes {
		if log := filepath.Join(n.Data, "raft-log.db"); fileExists(log) {
			if err := os.MkdirAll(filepath.Join(dir, n.ID), 0o755); err != nil {
				logf("save raft: %v", err)
			} else if err := run("cp", "-a", log, filepath.Join(dir, n.ID)); err != nil {
				logf("save raft: %v", err)
			}
		}
		for _, s := range shards {
			src := filepath.Join(n.Data, fmt.Sprintf("shard-%d", s), "raft")
			dst := filepath.Join(dir, n.ID, fmt.Sprintf("shard-%d", s))
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				logf("save raft: %v", err)
				continue
			}
			if err := run("cp", "-a", src, dst); err != nil {
				logf("save raft: %v", err)
			}
		}
	}
}

// LoadFinal reads an exported run back (for re-checking a stored run).
func LoadFinal(dir string) (*check.Final, error) {
	b, err := os.ReadFile(filepath.Join(dir, "states.json"))
	if err != nil {
		return nil, err
	}
	var f check.Final
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	for i := range f.Replicas {
		rep := &f.Replicas[i]
		if rep.Err != "" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%s-shard%d.events.jsonl", rep.Node, rep.Shard)))
		if err != nil {
			return nil, err
		}
		page := []byte(`{"events":[`)
		first := true
		for _, line := range splitLines(raw) {
			if !first {
				page = append(page, ',')
			}
			first = false
			page = append(page, line...)
		}
		page = append(page, "]}"...)
		evs, _, err := check.ParseEvents(page)
		if err != nil {
			return nil, err
		}
		rep.Events = evs
	}
	return &f, nil
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == '\n' {
			if i > start {
				out = append(out, b[start:i])
			}
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
