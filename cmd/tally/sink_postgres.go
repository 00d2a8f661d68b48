package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	pgsink "tally/sink/postgres"
)

type sinkPostgresOpts struct {
	sinkOpts
	dsn, schema string
	rebuild     bool
}

func newSinkPostgresCmd(a *app) *cobra.Command {
	o := &sinkPostgresOpts{}
	cmd := &cobra.Command{
		Use:   "postgres --dsn DSN --consumer NAME",
		Short: "Keep the accounts, transfers and events in PostgreSQL",
		Long: `Keep a view of the ledger in PostgreSQL: <schema>.accounts, .transfers,
.events, .daily_volume (posted transfers per currency and day) and
.offsets (where the view stands on each shard). Each batch is written in
one transaction with the offsets it reaches, and events at or below them
are skipped, so after any crash the view is exactly the fold of the log.
The schema is made on first use and checked on every start: one changed
by hand stops the sink with one line saying what differs.

The tables live in <schema>_v1, <schema>_v2, ... and <schema> holds views
of the current version. --rebuild replays the log from seq 0 into a new
version while readers keep reading the current one (a sink following it
may keep running), then points the views at the new version and drops the
old one in one transaction, and goes on following. It reads the log as
the consumer <NAME>.rebuild until the switch.`,
		Example: `  tally sink postgres --dsn postgres://tally@127.0.0.1:5432/ledger --consumer reports
  tally --addr 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003 sink postgres \
      --dsn 'host=db user=tally dbname=ledger' --consumer reports --schema books --metrics :9187
  tally sink postgres --dsn postgres://tally@127.0.0.1:5432/ledger --consumer reports --rebuild`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.dsn == "" {
				return fmt.Errorf("--dsn is required")
			}
			if o.rebuild {
				return rebuildPostgres(cmd.Context(), a, o, cmd.OutOrStdout())
			}
			t, err := pgsink.New(pgsink.Options{DSN: o.dsn, Schema: o.schema, Logger: sinkLogger()})
			if err != nil {
				return err
			}
			return runSink(cmd.Context(), a, &o.sinkOpts, t, cmd.OutOrStdout())
		},
	}
	addSinkFlags(cmd, &o.sinkOpts)
	f := cmd.Flags()
	f.StringVar(&o.dsn, "dsn", "", "PostgreSQL connection string, URL or key=value (required)")
	f.StringVar(&o.schema, "schema", "tally", "the schema readers query; the tables live in <schema>_vN")
	f.BoolVar(&o.rebuild, "rebuild", false, "rebuild the view from seq 0 into a new version, switch readers to it, then follow")
	return cmd
}

// rebuildSuffix names the consumer a rebuild reads the log as, so that
// the sink's own consumer (whose lag shows the current view's) is left
// as it is until the switch.
const rebuildSuffix = ".rebuild"

// rebuildPostgres fills a new version until it has caught up with the
// cluster and the current version, then follows the log as usual.
func rebuildPostgres(ctx context.Context, a *app, o *sinkPostgresOpts, out io.Writer) error {
	if o.consumer == "" {
		return fmt.Errorf("--consumer is required")
	}
	cl := a.clientOf(strings.Split(a.addr, ",")[0])
	st, err := cl.Cluster(ctx)
	if err != nil {
		return fmt.Errorf("read the cluster's applied seqs: %w", err)
	}
	catchUp := map[int]uint64{}
	for _, s := range st.Shards {
		catchUp[s.Shard] = s.AppliedSeq
	}
	t, err := pgsink.New(pgsink.Options{DSN: o.dsn, Schema: o.schema, Rebuild: true, CatchUp: catchUp, Logger: sinkLogger()})
	if err != nil {
		return err
	}
	build := o.sinkOpts
	build.consumer = o.consumer + rebuildSuffix
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-t.Switched():
			stop() // the rest of the stream goes to the now current version, then the sink restarts
		case <-bctx.Done():
		}
	}()
	err = runSink(bctx, a, &build, t, out)
	select {
	case <-t.Switched():
	default:
		if err == nil {
			err = fmt.Errorf("stopped before the rebuild switched; the next --rebuild starts it again")
		}
		return err
	}
	// An error after the switch (the stop that follows it, a failed last
	// batch) loses nothing: the sink below resumes from the view's offsets.
	if err := cl.DeleteConsumer(context.WithoutCancel(ctx), build.consumer); err != nil {
		fmt.Fprintf(os.Stderr, "tally: forget consumer %s: %v\n", build.consumer, err)
	}
	fmt.Fprintf(out, "rebuilt: readers of %s see the new version; following as %s\n", o.schema, o.consumer)
	if ctx.Err() != nil {
		return nil
	}
	t2, err := pgsink.New(pgsink.Options{DSN: o.dsn, Schema: o.schema, Logger: sinkLogger()})
	if err != nil {
		return err
	}
	return runSink(ctx, a, &o.sinkOpts, t2, out)
}

// sinkLogger tells what the target does (a schema made, a rebuild's
// switch) on stderr.
func sinkLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
