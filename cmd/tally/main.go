// Command tally is Tally's one binary: the server, the proxy, and the
// client commands that talk to a cluster through the proxy (or any node).
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"tally/client"
	"tally/secure"
)

// defaultAddr is the proxy of `make cluster`.
const defaultAddr = "127.0.0.1:8080"

// app holds the global flags every command shares. Commands read it in
// their RunE, after cobra has parsed the flags.
type app struct {
	// addr is the host:port of the proxy or a node (--addr, env TALLY_ADDR).
	addr string
	// json makes commands print the API's JSON answer instead of a table.
	json bool
	// timeout bounds each request a client command sends.
	timeout time.Duration
	// token is the bearer token sent with every request (--token, env
	// TALLY_TOKEN).
	token string
	// tlsCA is the CA that signs the cluster's certificates (--tls-ca,
	// env TALLY_TLS_CA); set, clients speak TLS.
	tlsCA string
	// tls is what clients speak TLS with: from tlsCA, or a node's own.
	tls *tls.Config
}

// client returns a client of the cluster at --addr.
func (a *app) client() *client.Client { return a.clientOf(a.addr) }

// clientOf returns a client of one node or proxy with the global timeout,
// TLS and token.
func (a *app) clientOf(addr string) *client.Client {
	return client.New(addr, client.WithTimeout(a.timeout), client.WithTLS(a.tls), client.WithToken(a.token))
}

// loadCA reads --tls-ca for the client commands, and TALLY_TOKEN.
func (a *app) loadCA() error {
	if a.token == "" {
		a.token = os.Getenv("TALLY_TOKEN")
	}
	if a.tlsCA == "" {
		return nil
	}
	t, err := secure.LoadTLS("", "", a.tlsCA)
	if err != nil {
		return err
	}
	a.tls = t.Client()
	return nil
}

func main() {
	// The first SIGINT or SIGTERM cancels the command's context so that it
	// can stop cleanly; stop() then restores the default, so a second one
	// kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := newRootCmd(&app{}).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tally:", err)
		os.Exit(1)
	}
}

// newRootCmd builds the whole command tree on a.
func newRootCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tally",
		Short: "A replicated double-entry ledger",
		Long: `Tally is a replicated, event-sourced, double-entry ledger.

Client commands talk to the proxy at --addr (default $TALLY_ADDR, else
` + defaultAddr + `). Amounts are integers in minor units (cents). Tables are
printed by default, the API's JSON with --json. On failure a command prints
one line on stderr and exits with status 1.`,
		Example: `  tally account create alice --currency USD
  tally deposit alice 10000
  tally transfer alice bob 2500 --id t-42
  tally balance alice
  tally --addr 127.0.0.1:8001 cluster status`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addr := os.Getenv("TALLY_ADDR")
	if addr == "" {
		addr = defaultAddr
	}
	f := cmd.PersistentFlags()
	f.StringVar(&a.addr, "addr", addr, "host:port of the proxy or a node (env TALLY_ADDR)")
	f.BoolVar(&a.json, "json", false, "print JSON instead of tables")
	f.DurationVar(&a.timeout, "timeout", 10*time.Second, "deadline of each request")
	// The token's default is read after parsing, so that --help never
	// prints a secret.
	f.StringVar(&a.token, "token", "", "bearer token sent with every request (env TALLY_TOKEN)")
	f.StringVar(&a.tlsCA, "tls-ca", os.Getenv("TALLY_TLS_CA"),
		"CA certificate that signs the cluster's certificates; set, clients speak TLS (env TALLY_TLS_CA)")
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error { return a.loadCA() }
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see %s --help)", err, c.CommandPath())
	})

	cmd.AddCommand(
		newServerCmd(a),
		newProxyCmd(a),
		newAccountCmd(a),
		newBalanceCmd(a),
		newDepositCmd(a),
		newWithdrawCmd(a),
		newTransferCmd(a),
		newHistoryCmd(a),
		newEventsCmd(a),
		newClusterCmd(a),
		newVerifyCmd(a),
		newSagasCmd(a),
		newConsumersCmd(a),
		newAuditCmd(a),
		newBenchCmd(a),
		newSinkCmd(a),
		newCertsCmd(a),
		newTokenCmd(a),
		newBackupCmd(a),
	)
	return cmd
}
