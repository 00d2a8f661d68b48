package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"tally/proxy"
)

type proxyOpts struct {
	listen   string
	nodes    string
	logLevel string
	sec      secOpts
}

func newProxyCmd(a *app) *cobra.Command {
	o := &proxyOpts{}
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the proxy: one address that routes every request to its shard's leader",
		Long: `Run the proxy that clients talk to. It keeps a map of every shard's leader
(from GET /v1/cluster on the nodes, refreshed every second and after any
routing failure), sends each request straight to the leader of the shard
that owns it, splits a batch that spans shards and merges the results in
request order, and retries with the same ids after a leader change.

--nodes needs only one reachable node; the others are learned from it.
The proxy runs until SIGINT or SIGTERM, then finishes the requests in
flight and stops.`,
		Example: `  tally proxy --listen 127.0.0.1:8080 --nodes 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003
  tally --addr 127.0.0.1:8080 balance alice`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runProxy(cmd.Context(), a, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to serve clients on")
	f.StringVar(&o.nodes, "nodes", "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003",
		"comma-separated HTTP addresses of cluster nodes")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	o.sec.flags(f, false)
	return cmd
}

func runProxy(ctx context.Context, a *app, o *proxyOpts) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	sec, err := o.sec.load(a.tlsCA, []string{o.listen}, false, log)
	if err != nil {
		return err
	}
	var nodes []string
	for n := range strings.SplitSeq(o.nodes, ",") {
		if n = strings.TrimSpace(n); n != "" {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		return errors.New("--nodes: give at least one node address")
	}
	p, err := proxy.New(proxy.Config{Nodes: nodes, Logger: log, TLS: sec.client(), Guard: sec.guard, Token: a.token})
	if err != nil {
		return err
	}
	sec.watch(ctx, log)
	ln, err := sec.listen(o.listen)
	if err != nil {
		return errors.Join(fmt.Errorf("listen: %w", err), p.Close())
	}
	return errors.Join(p.Serve(ctx, ln), p.Close())
}
