package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"tally/client"
	"tally/internal/table"
)

// verifyReplica is what one replica of a shard answered.
type verifyReplica struct {
	Node   string               `json:"node"`
	HTTP   string               `json:"http"`
	Report *client.VerifyReport `json:"report,omitempty"`
	// Seconds is how long the replica took to answer, replay included,
	// and EventsPerSecond the events it replayed in that time.
	Seconds         float64 `json:"seconds,omitempty"`
	EventsPerSecond float64 `json:"events_per_second,omitempty"`
	// Hash is the replica's hash-chain value at the shard's MinSeq.
	Hash  string `json:"hash,omitempty"`
	Error string `json:"error,omitempty"`
	// hashErr is why Hash could not be read.
	hashErr string
}

// verifyShard is the verdict on one shard across its replicas.
type verifyShard struct {
	Shard int `json:"shard"`
	// MinSeq is the smallest applied seq over the replicas: the point at
	// which every replica's hash chain must agree.
	MinSeq   uint64          `json:"min_seq"`
	OK       bool            `json:"ok"`
	Problems []string        `json:"problems,omitempty"`
	Replicas []verifyReplica `json:"replicas"`
}

type verifyOutput struct {
	OK     bool          `json:"ok"`
	Shards []verifyShard `json:"shards"`
}

func newVerifyCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Replay every shard on every replica and compare them",
		Long: `For each shard, ask every replica listed by the cluster to replay its event log
from seq 1 and check the result against its stored state and hash chain. Then
compare the replicas: their hash chains must agree at the smallest seq they
have all applied, and replicas at the same seq must have the same state hash.

Exits with status 1 if any replica fails, cannot be reached, or disagrees.
Replaying a big log takes time: raise --timeout to match.`,
		Example: `  tally verify
  tally verify --timeout 5m --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.client().Cluster(cmd.Context())
			if err != nil {
				return fmt.Errorf("read cluster status: %w", err)
			}
			out := verifyCluster(cmd.Context(), a, st)
			if a.json {
				if err := writeJSON(cmd.OutOrStdout(), out); err != nil {
					return err
				}
			} else {
				printVerify(cmd.OutOrStdout(), out)
			}
			return verifyFailure(out)
		},
	}
}

// verifyCluster checks every shard; replicas are asked in parallel.
func verifyCluster(ctx context.Context, a *app, st *client.ClusterStatus) verifyOutput {
	httpOf := make(map[string]string, len(st.Nodes))
	for _, n := range st.Nodes {
		httpOf[n.ID] = n.HTTP
	}
	out := verifyOutput{OK: true, Shards: make([]verifyShard, len(st.Shards))}
	var wg sync.WaitGroup
	for i, s := range st.Shards {
		vs := &out.Shards[i]
		vs.Shard = s.Shard
		for _, r := range s.Replicas {
			addr := r.HTTP
			if addr == "" {
				addr = httpOf[r.Node]
			}
			vs.Replicas = append(vs.Replicas, verifyReplica{Node: r.Node, HTTP: addr})
		}
		if len(vs.Replicas) == 0 {
			// A status without replicas: every node should host the shard.
			for _, n := range st.Nodes {
				vs.Replicas = append(vs.Replicas, verifyReplica{Node: n.ID, HTTP: n.HTTP})
			}
		}
		wg.Go(func() { verifyShardReplicas(ctx, a, vs) })
	}
	wg.Wait()
	for _, vs := range out.Shards {
		out.OK = out.OK && vs.OK
	}
	if len(out.Shards) == 0 {
		out.OK = false
	}
	return out
}

// verifyShardReplicas fills in vs: each replica's replay, then the
// comparison of their hash chains at the smallest applied seq.
func verifyShardReplicas(ctx context.Context, a *app, vs *verifyShard) {
	forEachReplica(vs, func(r *verifyReplica) {
		start := time.Now()
		rep, err := a.clientOf(r.HTTP).Verify(ctx, vs.Shard)
		if err == nil {
			r.Seconds = time.Since(start).Seconds()
			if r.Seconds > 0 {
				r.EventsPerSecond = float64(rep.Events) / r.Seconds
			}
		}
		switch {
		case err != nil:
			r.Error = err.Error()
		case !rep.OK:
			r.Report, r.Error = rep, "replay failed: "+orDash(rep.Error)
		default:
			r.Report = rep
		}
	})
	for i, r := range vs.Replicas {
		if r.Error != "" {
			vs.Problems = append(vs.Problems, fmt.Sprintf("%s: %s", r.Node, r.Error))
			continue
		}
		if i == 0 || r.Report.AppliedSeq < vs.MinSeq {
			vs.MinSeq = r.Report.AppliedSeq
		}
	}
	if len(vs.Replicas) == 0 {
		vs.Problems = append(vs.Problems, "no replicas")
	}
	if len(vs.Problems) > 0 {
		return
	}
	vs.Problems = append(vs.Problems, compareStateHashes(vs)...)
	if vs.MinSeq > 0 {
		forEachReplica(vs, func(r *verifyReplica) {
			h, err := a.clientOf(r.HTTP).HashAt(ctx, vs.Shard, vs.MinSeq)
			if err != nil {
				r.hashErr = fmt.Sprintf("hash at seq %d: %v", vs.MinSeq, err)
				return
			}
			r.Hash = h.String()
		})
		vs.Problems = append(vs.Problems, compareHashes(vs)...)
	}
	vs.OK = len(vs.Problems) == 0
}

func forEachReplica(vs *verifyShard, f func(r *verifyReplica)) {
	var wg sync.WaitGroup
	for i := range vs.Replicas {
		r := &vs.Replicas[i]
		wg.Go(func() { f(r) })
	}
	wg.Wait()
}

// compareHashes reports replicas whose hash chain at MinSeq differs from
// the first replica's.
func compareHashes(vs *verifyShard) []string {
	var problems []string
	var first *verifyReplica
	for i := range vs.Replicas {
		r := &vs.Replicas[i]
		switch {
		case r.hashErr != "":
			if r.Error == "" {
				r.Error = r.hashErr
			}
			problems = append(problems, fmt.Sprintf("%s: %s", r.Node, r.hashErr))
		case first == nil:
			first = r
		case r.Hash != first.Hash:
			r.Error = "hash chain differs"
			problems = append(problems, fmt.Sprintf("hash chains differ at seq %d (%s has %s, %s has %s)",
				vs.MinSeq, first.Node, short(first.Hash), r.Node, short(r.Hash)))
		}
	}
	return problems
}

// compareStateHashes reports replicas that applied the same seq but hold
// different state: derived state must be a function of the log.
func compareStateHashes(vs *verifyShard) []string {
	var problems []string
	bySeq := map[uint64]*verifyReplica{}
	for i := range vs.Replicas {
		r := &vs.Replicas[i]
		if r.Report.StateHash == "" {
			continue
		}
		o, ok := bySeq[r.Report.AppliedSeq]
		if !ok {
			bySeq[r.Report.AppliedSeq] = r
			continue
		}
		if o.Report.StateHash != r.Report.StateHash {
			r.Error = "state hash differs"
			problems = append(problems, fmt.Sprintf("state differs at seq %d (%s has %s, %s has %s)",
				r.Report.AppliedSeq, o.Node, short(o.Report.StateHash), r.Node, short(r.Report.StateHash)))
		}
	}
	return problems
}

// short abbreviates a hex hash for a table.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return orDash(h)
}

func printVerify(w io.Writer, out verifyOutput) {
	t := table.New(w)
	table.Row(t, "SHARD", "NODE", "EVENTS", "EVENTS/S", "SEQ", "HEAD", "HASH@MIN_SEQ", "OK")
	for _, vs := range out.Shards {
		for _, r := range vs.Replicas {
			events, rate, seq, head := "-", "-", "-", "-"
			if r.Report != nil {
				events, seq, head = fmt.Sprint(r.Report.Events), fmt.Sprint(r.Report.AppliedSeq), short(r.Report.HeadHash)
			}
			if r.EventsPerSecond > 0 {
				rate = fmt.Sprintf("%.0f", r.EventsPerSecond)
			}
			ok := "ok"
			if r.Error != "" {
				ok = r.Error
			}
			hash := "-"
			if r.Hash != "" {
				hash = fmt.Sprintf("%s@%d", short(r.Hash), vs.MinSeq)
			}
			table.Row(t, vs.Shard, r.Node, events, rate, seq, head, hash, ok)
		}
	}
	t.Flush()
}

func verifyFailure(out verifyOutput) error {
	if out.OK {
		return nil
	}
	if len(out.Shards) == 0 {
		return errors.New("verify: the cluster lists no shards")
	}
	var problems []string
	for _, vs := range out.Shards {
		for _, p := range vs.Problems {
			problems = append(problems, fmt.Sprintf("shard %d: %s", vs.Shard, p))
		}
	}
	return fmt.Errorf("verify failed: %s", strings.Join(problems, "; "))
}
