package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tally/internal/table"
	"tally/secure"
)

func newCertsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "certs",
		Short:   "Make TLS certificates for a development cluster",
		Example: `  tally certs init --dir ./certs --nodes n1,n2,n3 --hosts 127.0.0.1,localhost`,
		Args:    cobra.NoArgs,
	}
	cmd.AddCommand(newCertsInitCmd(a), newCertsAddCmd(a))
	return cmd
}

func newCertsAddCmd(a *app) *cobra.Command {
	o := &certsOpts{}
	cmd := &cobra.Command{
		Use:   "add",
		Short: "Write certificates for more nodes, or renew a node's, with the CA of certs init",
		Long: `Write a certificate and key for each node of --nodes, signed by the CA in
--dir (ca.crt, ca.key, written by certs init): for a node about to join a
running cluster, or to renew a node's certificate. A node rereads its
--tls-cert and --tls-key within seconds of a change, so a renewed
certificate is served without a restart.`,
		Example: `  tally certs add --dir ./certs --nodes n4
  tally server --id n4 --tls-cert certs/n4.crt --tls-key certs/n4.key --tls-ca certs/ca.crt --join 127.0.0.1:8001 ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, err := secure.AddNodeCerts(o.dir, splitList(o.nodes), splitList(o.hosts), time.Now())
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), files)
			}
			return printCerts(cmd.OutOrStdout(), nil, files)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "certs", "directory of the CA (certs init)")
	f.StringVar(&o.nodes, "nodes", "", "comma-separated node ids")
	f.StringVar(&o.hosts, "hosts", "127.0.0.1,localhost,::1", "comma-separated host names and IPs the certificates are valid for")
	cmd.MarkFlagRequired("nodes")
	return cmd
}

type certsOpts struct {
	dir   string
	nodes string
	hosts string
}

func newCertsInitCmd(a *app) *cobra.Command {
	o := &certsOpts{}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a development CA and a certificate for every node and the proxy",
		Long: `Write a new CA (ca.crt, ca.key) into --dir, a certificate and key for each
node of --nodes (NAME.crt, NAME.key: valid for --hosts, as a server and as a
client of the other nodes, marked as a node of the cluster) and one for the
proxy (proxy.crt, proxy.key). Keys are written with mode 0600.

A node knows another node by a certificate this CA signed for a node; a
certificate of any other CA is refused on the API's internal routes and on
the Raft port. This is for development and tests: in production, use your
own CA and give each node a certificate with OU=tally-node and CN=its id.`,
		Example: `  tally certs init --dir ./certs --nodes n1,n2,n3
  tally server --id n1 --tls-cert certs/n1.crt --tls-key certs/n1.key --tls-ca certs/ca.crt ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, err := secure.InitCerts(o.dir, splitList(o.nodes), splitList(o.hosts), time.Now())
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), files)
			}
			return printCerts(cmd.OutOrStdout(), files, files.Nodes)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "certs", "directory to write into (must not hold a CA yet)")
	f.StringVar(&o.nodes, "nodes", "n1,n2,n3", "comma-separated node ids")
	f.StringVar(&o.hosts, "hosts", "127.0.0.1,localhost,::1", "comma-separated host names and IPs the certificates are valid for")
	return cmd
}

// printCerts prints the files written: the CA's and the proxy's when all
// is set (certs init), and each node's.
func printCerts(w io.Writer, all *secure.CertFiles, nodes map[string][2]string) error {
	t := table.New(w)
	table.Row(t, "FOR", "CERTIFICATE", "KEY")
	if all != nil {
		table.Row(t, "CA", all.CA, all.CAKey)
	}
	for _, n := range slices.Sorted(maps.Keys(nodes)) {
		table.Row(t, "node "+n, nodes[n][0], nodes[n][1])
	}
	if all != nil {
		table.Row(t, "proxy", all.Proxy[0], all.Proxy[1])
	}
	return t.Flush()
}

func splitList(s string) []string {
	var out []string
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func newTokenCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke the bearer tokens of an auth file",
		Long: `Manage the auth file that nodes and the proxy read with --auth-file. It
holds each token's name, role and SHA-256, never the token itself. Nodes
and the proxy reload it within seconds of a change.

Roles: read (balances, history, events, sagas, cluster status), write (also
accounts, transfers, consumer offsets), operator (also membership, saga
resolve, consumer reset and delete, backup, profiles).`,
		Example: `  tally token create ci --role write --auth-file ./auth.json
  tally token list --auth-file ./auth.json
  TALLY_TOKEN=tly_... tally transfer alice bob 100`,
		Args: cobra.NoArgs,
	}
	var file string
	cmd.PersistentFlags().StringVar(&file, "auth-file", "auth.json", "the auth file")
	var role string
	create := &cobra.Command{
		Use:     "create NAME --role ROLE",
		Short:   "Add a token and print its secret (shown once)",
		Example: `  tally token create ci --role write --auth-file ./auth.json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := secure.ParseRole(role)
			if err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			secret, err := secure.CreateToken(file, args[0], r, time.Now())
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"name": args[0], "role": r.String(), "token": secret})
			}
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "token %q (%s) added to %s; the secret above is not stored anywhere\n", args[0], r, file)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "read, write or operator")
	create.MarkFlagRequired("role")
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the tokens' names and roles",
		Example: `  tally token list --auth-file ./auth.json --json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := secure.ReadTokenFile(file)
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), f.Tokens)
			}
			t := table.New(cmd.OutOrStdout())
			table.Row(t, "NAME", "ROLE", "CREATED")
			for _, e := range f.Tokens {
				table.Row(t, e.Name, e.Role, e.Created.Format(time.RFC3339))
			}
			return t.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:     "revoke NAME",
		Short:   "Remove a token (nodes and the proxy refuse it within seconds)",
		Example: `  tally token revoke ci --auth-file ./auth.json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return secure.RevokeToken(file, args[0])
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
