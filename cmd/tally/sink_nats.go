package main

import (
	"time"

	"github.com/spf13/cobra"

	natssink "tally/sink/nats"
)

type sinkNATSOpts struct {
	sinkOpts
	url, stream, prefix string
	dupWindow, ackWait  time.Duration
}

func newSinkNATSCmd(a *app) *cobra.Command {
	o := &sinkNATSOpts{}
	cmd := &cobra.Command{
		Use:   "nats --url URL --stream NAME --consumer NAME",
		Short: "Publish every event to a NATS JetStream stream",
		Long: `Publish every event, as the API's JSON, to the JetStream stream --stream on
the subject <prefix>.<shard>.<type>, with the header Nats-Msg-Id:
<shard>-<seq>. The stream is created when missing (subjects <prefix>.>,
file storage, the duplicate window of --duplicate-window); an existing one
must take <prefix>.>. Each batch is published asynchronously and the
consumer's offsets move only once JetStream acknowledged all of it. What
is sent again after a crash or an outage carries the same message ids and
JetStream drops it, as long as it comes within the stream's duplicate
window. While the server is unreachable the sink waits and retries,
saying why.`,
		Example: `  tally sink nats --url nats://127.0.0.1:4222 --stream LEDGER --consumer jetstream
  tally --addr 127.0.0.1:8001,127.0.0.1:8002 sink nats --url nats://127.0.0.1:4222 \
      --stream LEDGER --consumer jetstream --subject-prefix prod.tally --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := natssink.New(natssink.Config{URL: o.url, Stream: o.stream, Prefix: o.prefix,
				DuplicateWindow: o.dupWindow, AckWait: o.ackWait, Logger: sinkLogger()})
			if err != nil {
				return err
			}
			return runSink(cmd.Context(), a, &o.sinkOpts, t, cmd.OutOrStdout())
		},
	}
	addSinkFlags(cmd, &o.sinkOpts)
	f := cmd.Flags()
	f.StringVar(&o.url, "url", "nats://127.0.0.1:4222", "the NATS server (several separated by commas)")
	f.StringVar(&o.stream, "stream", "", "the JetStream stream to publish to, created when missing (required)")
	f.StringVar(&o.prefix, "subject-prefix", natssink.DefaultPrefix, "the subjects' first token(s): <prefix>.<shard>.<type>")
	f.DurationVar(&o.dupWindow, "duplicate-window", natssink.DefaultDuplicateWindow,
		"how long JetStream remembers a message id, when the sink creates the stream")
	f.DurationVar(&o.ackWait, "ack-wait", natssink.DefaultAckWait, "longest wait for JetStream to acknowledge a batch")
	return cmd
}
