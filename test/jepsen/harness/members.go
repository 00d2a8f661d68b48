package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"tally/test/jepsen/nemesis"
)

// The membership faults' view of the cluster: GET /v1/cluster, leave,
// and a node wiped and joined again.

// Bounds of a membership call.
const (
	memberCall    = 5 * time.Second
	memberTimeout = 60 * time.Second
)

// membersView is the part of GET /v1/cluster the membership faults read.
type membersView struct {
	Shards []struct {
		Shard    int    `json:"shard"`
		Leader   string `json:"leader"`
		Replicas []struct {
			Node     string `json:"node"`
			Suffrage string `json:"suffrage"`
			State    string `json:"state"`
			Lag      uint64 `json:"lag"`
		} `json:"replicas"`
	} `json:"shards"`
}

// Members asks the nodes in turn until one answers.
func (v faultView) Members(ctx context.Context) ([]nemesis.ShardMembers, error) {
	err := errors.New("no node answered")
	for _, n := range v.c.Nodes {
		var mv membersView
		if err = v.c.cl.getJSON(ctx, n.HTTP, "/v1/cluster", nil, 2*time.Second, &mv); err != nil {
			continue
		}
		out := make([]nemesis.ShardMembers, len(mv.Shards))
		for i, s := range mv.Shards {
			out[i] = nemesis.ShardMembers{Shard: s.Shard, Leader: s.Leader}
			for _, r := range s.Replicas {
				out[i].Replicas = append(out[i].Replicas, nemesis.Member{Node: r.Node, Voter: r.Suffrage == "voter",
					State: r.State, Lag: r.Lag})
			}
		}
		return out, nil
	}
	return nil, err
}

// Leave posts the leave to the other nodes in turn until one answers 200.
func (v faultView) Leave(ctx context.Context, node string) error {
	deadline := time.Now().Add(memberTimeout)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for _, n := range v.c.Nodes {
			if n.ID == node {
				continue
			}
			r := v.c.cl.do(ctx, http.MethodPost, n.HTTP, "/v1/cluster/leave", nil, map[string]string{"id": node}, 30*time.Second)
			if r.Err == nil && r.Status == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("via %s: %s", n.ID, r.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("leave %s: %s", node, last)
}

// Rejoin stops node (SIGTERM, SIGKILL after 10 s), empties its data
// directory (a mount point with root, so its entries, not itself) and
// starts it with --join through another node.
func (v faultView) Rejoin(ctx context.Context, node string) error {
	n := v.c.Node(node)
	if n == nil {
		return fmt.Errorf("no node %s", node)
	}
	n.ExpectDeath(true)
	defer n.ExpectDeath(false)
	n.Stop(10 * time.Second)
	entries, err := os.ReadDir(n.Data)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if e.Name() == "lost+found" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(n.Data, e.Name())); err != nil {
			return err
		}
	}
	via := ""
	for _, o := range v.c.Nodes {
		if o.ID != node && v.c.cl.healthy(ctx, o.HTTP) {
			via = o.HTTP
			break
		}
	}
	if via == "" {
		return errors.New("no other node answers to join through")
	}
	if err := n.Start("--join", via); err != nil {
		return err
	}
	return n.WaitReady(ctx, memberTimeout)
}
