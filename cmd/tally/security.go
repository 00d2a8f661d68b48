package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/pflag"

	"tally/cluster"
	"tally/edge"
	"tally/node"
	"tally/secure"
)

// secOpts are the TLS and auth flags of the server and the proxy; --tls-ca
// is the global one (app.tlsCA), shared with client commands.
type secOpts struct {
	cert, key  string
	authFile   string
	secretFile string // server only
	insecure   bool
}

func (o *secOpts) flags(f *pflag.FlagSet, server bool) {
	f.StringVar(&o.cert, "tls-cert", "", "this process's certificate (PEM); with --tls-key and --tls-ca, serves TLS")
	f.StringVar(&o.key, "tls-key", "", "the private key of --tls-cert (PEM)")
	f.StringVar(&o.authFile, "auth-file", "", "bearer tokens and their roles (tally token create); none: no client authentication")
	f.BoolVar(&o.insecure, "insecure", false, "allow plaintext on a non-loopback address (never with --auth-file)")
	if server {
		f.StringVar(&o.secretFile, "cluster-secret-file", "",
			"a secret shared by the nodes, which proves a node to another when TLS is off")
	}
}

// security is what the flags amount to, checked.
type security struct {
	tls      *secure.TLS // nil: plaintext everywhere
	serve    bool        // this process serves TLS (it has a certificate)
	guard    *edge.Guard
	tokens   *secure.Tokens
	authFile string // what tokens were read from
	secret   secure.ClusterSecret
}

// load checks the flags against the addresses the process listens on and
// reads every file once, so that a bad certificate, an unreadable auth
// file or plaintext where it is not allowed stops the start with one
// error, before anything listens.
//
// A node with --tls-ca must have its own certificate too. A proxy with
// only --tls-ca reaches the nodes over TLS and serves plaintext itself
// (on loopback, or with --insecure).
func (o *secOpts) load(caFile string, addrs []string, server bool, log *slog.Logger) (*security, error) {
	s := &security{guard: &edge.Guard{Log: log}}
	var err error
	switch {
	case o.cert != "" || o.key != "":
		if s.tls, err = secure.LoadTLS(o.cert, o.key, caFile); err != nil {
			return nil, err
		}
		s.serve, s.guard.TLS = true, true
	case caFile != "" && server:
		return nil, errors.New("--tls-ca is set (or TALLY_TLS_CA) but --tls-cert and --tls-key are not: a node needs its own certificate")
	case caFile != "":
		if s.tls, err = secure.LoadTLS("", "", caFile); err != nil {
			return nil, err
		}
	}
	if o.secretFile != "" {
		if s.secret, err = secure.ReadClusterSecret(o.secretFile); err != nil {
			return nil, err
		}
		if !s.serve {
			s.guard.Secret = s.secret
		}
	}
	if o.authFile != "" {
		if s.tokens, err = secure.LoadTokens(o.authFile); err != nil {
			return nil, err
		}
		s.guard.Tokens, s.authFile = s.tokens, o.authFile
	}
	for _, a := range addrs {
		if s.serve || secure.Loopback(a) {
			continue
		}
		if o.authFile != "" {
			return nil, fmt.Errorf("%s is not a loopback address: tokens would cross the network in plaintext; give --tls-cert, --tls-key and --tls-ca", a)
		}
		if !o.insecure {
			return nil, fmt.Errorf("%s is not a loopback address: give --tls-cert, --tls-key and --tls-ca, or --insecure to serve plaintext", a)
		}
	}
	return s, nil
}

// listen opens addr, with TLS when the process has a certificate.
func (s *security) listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil || !s.serve {
		return ln, err
	}
	return tls.NewListener(ln, s.tls.HTTPServer()), nil
}

// client is the TLS configuration for calling nodes: nil without TLS.
func (s *security) client() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return s.tls.Client()
}

// watch reloads the auth file and the certificate when they change.
func (s *security) watch(ctx context.Context, log *slog.Logger) {
	if s.tokens != nil {
		go s.tokens.Watch(ctx, s.authFile, 2*time.Second, log)
	}
	if s.serve {
		go s.tls.Watch(ctx, 2*time.Second, log)
	}
}

// nodeIdentity checks that a node's certificate is a node's, for this
// node: a node that served another's certificate could act as that node.
// Without TLS or a cluster secret nothing proves a node, which is said
// once.
func (s *security) nodeIdentity(id string, log *slog.Logger) error {
	switch {
	case s.serve && !s.tls.IsNode():
		return fmt.Errorf("--tls-cert is not a node certificate (it needs OU=%s; tally certs init writes them)", secure.NodeUnit)
	case s.serve && s.tls.Name() != id:
		return fmt.Errorf("--tls-cert is node %q's certificate, not --id %q's", s.tls.Name(), id)
	case !s.serve && s.tokens != nil && s.secret == "":
		return errors.New("--auth-file without TLS needs --cluster-secret-file: nodes prove themselves to each other by it")
	case !s.serve && s.secret == "":
		log.Warn("no TLS and no cluster secret: anyone who reaches this node's HTTP port can call its internal routes")
	}
	return nil
}

// peerOptions prove this node to the others.
func (s *security) peerOptions() []node.PeerOption {
	if s.serve {
		return []node.PeerOption{node.PeerTLS(s.tls.Client())}
	}
	return []node.PeerOption{node.PeerSecret(string(s.secret))}
}

// raft is the Raft port's mutual TLS, nil without TLS.
func (s *security) raft() *cluster.TLS {
	if !s.serve {
		return nil
	}
	return &cluster.TLS{Server: s.tls.RaftServer(), Client: s.tls.RaftClient}
}
