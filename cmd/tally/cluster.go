package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"tally/api/wire"
	"tally/client"
	"tally/internal/table"
	"tally/shard"
)

func newClusterCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Show and change the cluster's membership and leaders",
		Example: `  tally cluster status
  tally cluster join n4 127.0.0.1:7004 127.0.0.1:8004
  tally cluster leave n4
  tally cluster transfer-leader 0 n2`,
	}
	cmd.AddCommand(newClusterStatusCmd(a), newClusterJoinCmd(a), newClusterLeaveCmd(a), newClusterTransferLeaderCmd(a))
	return cmd
}

func newClusterStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show each shard's leader, voters and non-voters, and the nodes",
		Long: `Show each shard's leader and its replicas, voters and non-voters apart. A
replica reads NODE=STATE@APPLIED_SEQ, with ,lag=N when its applied Raft index
is N entries behind the leader's commit index. A non-voter is a joining node
still catching up: the shard's leader promotes it to voter once it is within
` + strconv.Itoa(shard.PromoteLag) + ` entries of the commit index.`,
		Example: `  tally cluster status
  tally --addr 127.0.0.1:8002 cluster status --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.client().Cluster(cmd.Context())
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			printCluster(cmd.OutOrStdout(), st)
			return nil
		},
	}
}

func printCluster(w io.Writer, st *client.ClusterStatus) {
	t := table.New(w)
	table.Row(t, "SHARD", "LEADER", "LEADER_HTTP", "APPLIED_SEQ", "COMMIT_INDEX", "VOTERS", "NONVOTERS")
	for _, s := range st.Shards {
		var voters, nonvoters []string
		for _, r := range s.Replicas {
			cell := fmt.Sprintf("%s=%s@%d", r.Node, orDash(r.State), r.AppliedSeq)
			if r.Lag > 0 {
				cell += fmt.Sprintf(",lag=%d", r.Lag)
			}
			if r.Suffrage == wire.Nonvoter {
				nonvoters = append(nonvoters, cell)
			} else {
				voters = append(voters, cell)
			}
		}
		table.Row(t, s.Shard, orDash(s.Leader), orDash(s.LeaderHTTP), s.AppliedSeq, s.CommitIndex,
			orDash(strings.Join(voters, " ")), orDash(strings.Join(nonvoters, " ")))
	}
	t.Flush()
	fmt.Fprintln(w)
	t = table.New(w)
	table.Row(t, "NODE", "HTTP", "RAFT")
	for _, n := range st.Nodes {
		table.Row(t, n.ID, orDash(n.HTTP), orDash(n.Raft))
	}
	t.Flush()
}

// printOK reports a membership change that answered {"ok": true}.
func printOK(cmd *cobra.Command, a *app, msg string) error {
	if a.json {
		return writeJSON(cmd.OutOrStdout(), map[string]bool{"ok": true})
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), msg)
	return err
}

func newClusterJoinCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "join ID RAFT_ADDR HTTP_ADDR",
		Short: "Add a node to every shard",
		Long: `Add a running node (started with tally server --join) to every shard's Raft
group. The request is forwarded to each shard's leader, which adds the node
as a non-voter and promotes it to voter once it has caught up. The command
returns when the node is a voter of every shard; if it times out first, the
node stays a non-voter until its leader promotes it. Joining again is
harmless.`,
		Example: `  tally cluster join n4 127.0.0.1:7004 127.0.0.1:8004`,
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client().Join(cmd.Context(), args[0], args[1], args[2]); err != nil {
				return fmt.Errorf("join %s: %w", args[0], err)
			}
			return printOK(cmd, a, args[0]+" joined")
		},
	}
}

func newClusterLeaveCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "leave ID",
		Short: "Remove a node from every shard",
		Long: `Remove a node from every shard's Raft group. A shard that the node leads
first hands its leadership to another voter, so no shard waits an election
timeout for a new leader.`,
		Example: `  tally cluster leave n4`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client().Leave(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("leave %s: %w", args[0], err)
			}
			return printOK(cmd, a, args[0]+" left")
		},
	}
}

func newClusterTransferLeaderCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leader SHARD [NODE]",
		Short: "Move a shard's leadership to another node",
		Long:  `Move a shard's leadership to NODE, or to any other voter when NODE is not given.`,
		Example: `  tally cluster transfer-leader 0 n2
  tally cluster transfer-leader 3`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			shard, err := strconv.Atoi(args[0])
			if err != nil || shard < 0 {
				return fmt.Errorf("shard %q must be a shard number", args[0])
			}
			to := ""
			if len(args) == 2 {
				to = args[1]
			}
			if err := a.client().TransferLeader(cmd.Context(), shard, to); err != nil {
				return fmt.Errorf("transfer leadership of shard %d: %w", shard, err)
			}
			if to == "" {
				to = "another voter"
			}
			return printOK(cmd, a, fmt.Sprintf("shard %d: leadership transferred to %s", shard, to))
		},
	}
}
