package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tally/ledger"
	"tally/test/proc"
)

// TestSecurity runs a three-node cluster and its proxy with TLS everywhere
// and bearer tokens, all set up through the CLI as an operator would
// (certs init, token create), and checks what the security promises on
// the real binary: the walkthrough works with tokens; plaintext, missing,
// unknown, too weak and revoked credentials get nothing; only a node of
// the cluster reaches the internal routes and the Raft port; and a bad
// security flag or file stops a start at once with one line on stderr.
func TestSecurity(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts processes")
	}
	e := &secEnv{t: t, shards: 4}
	if !t.Run("setup", e.setup) {
		t.FailNow()
	}
	t.Run("walkthrough", e.walkthrough)
	t.Run("plaintext", e.plaintext)
	t.Run("authn-authz", e.authz)
	t.Run("internal", e.internal)
	t.Run("forged-cert", e.forged)
	t.Run("bad-start", e.badStart)
	t.Run("revoke", e.revoke)
	t.Run("add-node", e.addNode)
}

// secEnv is the secured cluster the subtests share.
type secEnv struct {
	t         *testing.T
	dir       string
	certs     string // the cluster's certificates (certs init)
	forgedDir string // another CA's, from a second certs init
	ca        string
	auth      string
	pool      *x509.CertPool
	shards    int
	tok       map[string]string // token name -> secret

	nodes     []*proc.Node
	proxy     *proc.Proc
	proxyAddr string

	// Accounts of the walkthrough: alice and carol share a shard, other
	// is on another one.
	other string
}

// Tokens made in setup: name -> role.
var secTokens = [][2]string{
	{"reader", "read"}, {"writer", "write"}, {"admin", "operator"}, {"proxy", "read"}, {"ci", "write"},
}

// secCmd runs the tally binary with args, the TALLY_ variables of the
// test's environment replaced by env, and returns its stdout, stderr and
// exit status (-1: it did not exit on its own within 20s).
func secCmd(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(secEnviron(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ctx.Err() != nil {
		code = -1
	} else if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run tally %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// secEnviron is the test's environment without TALLY_ variables.
func secEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TALLY_") {
			out = append(out, kv)
		}
	}
	return out
}

// cli runs a client command against the proxy with the CA and token in
// the environment, as the README shows.
func (e *secEnv) cli(t *testing.T, token string, args ...string) (string, string, int) {
	t.Helper()
	env := []string{"TALLY_TLS_CA=" + e.ca}
	if token != "" {
		env = append(env, "TALLY_TOKEN="+token)
	}
	return secCmd(t, env, append([]string{"--addr", e.proxyAddr}, args...)...)
}

// mustCLI is cli that fails the test unless the command succeeds.
func (e *secEnv) mustCLI(t *testing.T, token string, args ...string) string {
	t.Helper()
	out, errOut, code := e.cli(t, token, args...)
	if code != 0 {
		t.Fatalf("tally %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// httpsReady is a Ready probe over TLS: GET https://addr+path answers 200.
func httpsReady(hc *http.Client, addr, path string) func(ctx context.Context) bool {
	return proc.URLReady(hc, "https://"+addr+path)
}

// client returns an HTTPS client that trusts the cluster's CA and shows
// cert, if any. It opens a new connection for every request, so that a
// request is judged by the certificate given here.
func (e *secEnv) client(cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: e.pool}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
}

// keyPair loads a certificate and key that certs init wrote.
func (e *secEnv) keyPair(t *testing.T, dir, name string) *tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// answer is one HTTP answer, or the error that stood for it.
type answer struct {
	status int
	body   []byte
	err    error
}

func (a answer) String() string {
	if a.err != nil {
		return "error: " + a.err.Error()
	}
	b := bytes.TrimSpace(a.body)
	if len(b) > 300 {
		b = append(b[:300:300], "..."...)
	}
	return fmt.Sprintf("%d %s", a.status, b)
}

// secDo sends one request through hc with token as its bearer credential.
func secDo(hc *http.Client, method, url, token, contentType string, body []byte) answer {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return answer{err: err}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: b, err: err}
}

// wantError checks that a is the API's error answer with status and code.
func wantError(t *testing.T, what string, a answer, status int, code string) {
	t.Helper()
	if a.err != nil || a.status != status {
		t.Errorf("%s: got %s, want %d %s", what, a, status, code)
		return
	}
	var env struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(a.body, &env); err != nil || env.Error == nil || env.Error.Code != code || env.Error.Message == "" {
		t.Errorf("%s: body %s, want {\"error\":{\"code\":%q,\"message\":...}}", what, bytes.TrimSpace(a.body), code)
	}
}

// wantNo2xx checks that a is no success: a broken connection or an error
// status.
func wantNo2xx(t *testing.T, what string, a answer) {
	t.Helper()
	if a.err == nil && a.status/100 == 2 {
		t.Errorf("%s: got %s, want no success", what, a)
	}
}

func secWait(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *secEnv) setup(t *testing.T) {
	e.dir = e.t.TempDir() // the parent's: it outlives this subtest
	e.certs = filepath.Join(e.dir, "certs")
	e.forgedDir = filepath.Join(e.dir, "forged")
	e.ca = filepath.Join(e.certs, "ca.crt")
	e.auth = filepath.Join(e.dir, "auth.json")

	// Certificates: the cluster's, and another CA's with the same names
	// and one more node, for the forgeries.
	for _, c := range []struct{ dir, nodes string }{{e.certs, "n1,n2,n3"}, {e.forgedDir, "n1,n2,n3,n4"}} {
		out, errOut, code := secCmd(t, nil, "certs", "init", "--dir", c.dir, "--nodes", c.nodes)
		if code != 0 {
			t.Fatalf("certs init --dir %s: exit %d: %s%s", c.dir, code, out, errOut)
		}
		for _, f := range append(strings.Split(c.nodes, ","), "ca", "proxy") {
			if _, err := os.Stat(filepath.Join(c.dir, f+".crt")); err != nil {
				t.Fatalf("certs init wrote no %s.crt: %v\n%s", f, err, out)
			}
		}
	}
	if _, _, code := secCmd(t, nil, "certs", "init", "--dir", e.certs); code == 0 {
		t.Error("a second certs init into a directory that has a CA succeeded")
	}
	pem, err := os.ReadFile(e.ca)
	if err != nil {
		t.Fatal(err)
	}
	e.pool = x509.NewCertPool()
	if !e.pool.AppendCertsFromPEM(pem) {
		t.Fatal("ca.crt holds no certificate")
	}

	// Tokens: the secret on stdout, once.
	e.tok = map[string]string{}
	for _, nr := range secTokens {
		out, errOut, code := secCmd(t, nil, "token", "create", nr[0], "--role", nr[1], "--auth-file", e.auth)
		secret := strings.TrimSpace(out)
		if code != 0 || !strings.HasPrefix(secret, "tly_") || strings.Contains(secret, "\n") {
			t.Fatalf("token create %s: exit %d, stdout %q, stderr %q", nr[0], code, out, errOut)
		}
		e.tok[nr[0]] = secret
	}
	if b, err := os.ReadFile(e.auth); err != nil || bytes.Contains(b, []byte(e.tok["admin"])) {
		t.Fatalf("the auth file holds a secret (or does not read: %v)", err)
	}
	if fi, err := os.Stat(e.auth); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("auth file mode %v (%v), want no access for group and others", fi.Mode(), err)
	}
	if out, _, code := secCmd(t, nil, "token", "create", "reader", "--role", "write", "--auth-file", e.auth); code == 0 {
		t.Errorf("token create of a name the file has: exit 0, stdout %q", out)
	}
	if _, _, code := secCmd(t, nil, "token", "create", "boss", "--role", "node", "--auth-file", e.auth); code == 0 {
		t.Error("token create --role node: exit 0")
	}
	if _, _, code := secCmd(t, nil, "token", "revoke", "nobody", "--auth-file", e.auth); code == 0 {
		t.Error("token revoke of a name the file does not have: exit 0")
	}
	out, _, code := secCmd(t, nil, "token", "list", "--auth-file", e.auth)
	if code != 0 || !strings.Contains(out, "reader") || !strings.Contains(out, "operator") || strings.Contains(out, "tly_") {
		t.Errorf("token list: exit %d\n%s", code, out)
	}

	// The cluster: three nodes with TLS and tokens, and the proxy.
	ports, err := proc.FreePorts(7)
	if err != nil {
		t.Fatal(err)
	}
	probe := e.client(nil)
	noEnv := []string{"TALLY_TOKEN=", "TALLY_TLS_CA=", "TALLY_ADDR="}
	for i := range 3 {
		id := fmt.Sprintf("n%d", i+1)
		n := proc.NewNode(bin, id, fmt.Sprintf("127.0.0.1:%d", ports[3+i]), fmt.Sprintf("127.0.0.1:%d", ports[i]),
			filepath.Join(e.dir, id), filepath.Join(e.dir, id+".log"),
			"--tls-cert", filepath.Join(e.certs, id+".crt"), "--tls-key", filepath.Join(e.certs, id+".key"),
			"--tls-ca", e.ca, "--auth-file", e.auth)
		n.Ready = httpsReady(probe, n.HTTP, "/healthz")
		n.Env = noEnv
		e.nodes = append(e.nodes, n)
	}
	e.proxyAddr = fmt.Sprintf("127.0.0.1:%d", ports[6])
	var addrs []string
	for _, n := range e.nodes {
		addrs = append(addrs, n.HTTP)
	}
	e.proxy = &proc.Proc{Name: "proxy", Bin: bin, LogPath: filepath.Join(e.dir, "proxy.log"), Env: noEnv,
		Args: []string{"proxy", "--listen", e.proxyAddr, "--nodes", strings.Join(addrs, ","),
			"--tls-cert", filepath.Join(e.certs, "proxy.crt"), "--tls-key", filepath.Join(e.certs, "proxy.key"),
			"--tls-ca", e.ca, "--auth-file", e.auth, "--token", e.tok["proxy"]},
		Ready: httpsReady(probe, e.proxyAddr, "/healthz")}
	e.t.Cleanup(e.stop)
	ctx := context.Background()
	if err := proc.StartCluster(ctx, e.nodes, e.proxy, e.shards, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range proc.Procs(e.nodes, e.proxy) {
		if err := p.WaitReady(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range e.nodes {
		secWait(t, 30*time.Second, n.ID+" /readyz over TLS", func() bool { return httpsReady(probe, n.HTTP, "/readyz")(ctx) })
	}
	secWait(t, 60*time.Second, "three replicas of every shard with a leader, seen by every node", func() bool {
		for _, n := range e.nodes {
			if !e.fullMembership(n.HTTP) {
				return false
			}
		}
		return true
	})
}

// fullMembership reports whether the node at addr sees three nodes, and
// three replicas and a leader in every shard.
func (e *secEnv) fullMembership(addr string) bool {
	st, ok := e.clusterOf(addr)
	if !ok || len(st.Shards) != e.shards || len(st.Nodes) != 3 {
		return false
	}
	for _, s := range st.Shards {
		if s.Leader == "" || len(s.Replicas) != 3 {
			return false
		}
	}
	return true
}

type secCluster struct {
	Shards []struct {
		Shard      int    `json:"shard"`
		Leader     string `json:"leader"`
		AppliedSeq uint64 `json:"applied_seq"`
		Replicas   []struct {
			Node     string `json:"node"`
			Raft     string `json:"raft"`
			Suffrage string `json:"suffrage"`
		} `json:"replicas"`
	} `json:"shards"`
	Nodes []struct {
		ID string `json:"id"`
	} `json:"nodes"`
}

// clusterOf reads GET /v1/cluster at addr with the read token.
func (e *secEnv) clusterOf(addr string) (*secCluster, bool) {
	a := secDo(e.client(nil), "GET", "https://"+addr+"/v1/cluster", e.tok["reader"], "", nil)
	if a.err != nil || a.status != 200 {
		return nil, false
	}
	var st secCluster
	if err := json.Unmarshal(a.body, &st); err != nil {
		return nil, false
	}
	return &st, true
}

// stop ends every process and shows the logs of a failed test.
func (e *secEnv) stop() {
	proc.StopAll(10*time.Second, proc.Procs(e.nodes, e.proxy)...)
	if !e.t.Failed() {
		return
	}
	for _, p := range proc.Procs(e.nodes, e.proxy) {
		b, _ := os.ReadFile(p.LogPath)
		if len(b) > 6144 {
			b = b[len(b)-6144:]
		}
		e.t.Logf("---- %s log (last 6 KiB) ----\n%s", p.Name, b)
	}
}

// balance reads an account's balance through the proxy's API.
func (e *secEnv) balance(t *testing.T, id string) int64 {
	t.Helper()
	a := secDo(e.client(nil), "GET", "https://"+e.proxyAddr+"/v1/accounts/"+id, e.tok["reader"], "", nil)
	if a.err != nil || a.status != 200 {
		t.Fatalf("balance of %s: %s", id, a)
	}
	var v struct {
		Balance int64 `json:"balance"`
	}
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("balance of %s: %v", id, err)
	}
	return v.Balance
}

// cliBalance reads an account's balance with `tally balance --json`.
func (e *secEnv) cliBalance(t *testing.T, token, id string) int64 {
	t.Helper()
	out := e.mustCLI(t, token, "--json", "balance", id)
	var v struct {
		ID      string `json:"id"`
		Balance int64  `json:"balance"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.ID != id {
		t.Fatalf("balance %s --json: %v\n%s", id, err, out)
	}
	return v.Balance
}

// walkthrough is the README's, with tokens, through the proxy and the CLI.
func (e *secEnv) walkthrough(t *testing.T) {
	r, w, op := e.tok["reader"], e.tok["writer"], e.tok["admin"]
	if ledger.ShardOf("alice", e.shards) != ledger.ShardOf("carol", e.shards) {
		t.Logf("note: alice and carol are on different shards (%d, %d)", ledger.ShardOf("alice", e.shards), ledger.ShardOf("carol", e.shards))
	}
	e.other = "dave"
	for i := 0; ledger.ShardOf(e.other, e.shards) == ledger.ShardOf("alice", e.shards); i++ {
		e.other = fmt.Sprintf("dave%d", i)
	}
	for _, id := range []string{"alice", "carol", e.other} {
		e.mustCLI(t, w, "account", "create", id, "--currency", "USD")
	}
	e.mustCLI(t, w, "deposit", "alice", "10000")
	e.mustCLI(t, w, "transfer", "alice", "carol", "2500", "--id", "t-1")
	out := e.mustCLI(t, w, "transfer", "alice", e.other, "500", "--id", "x-1")
	t.Logf("cross-shard transfer alice (shard %d) -> %s (shard %d): %s", ledger.ShardOf("alice", e.shards), e.other,
		ledger.ShardOf(e.other, e.shards), strings.TrimSpace(out))

	// The CLI without a token, and a read token writing, are refused.
	if out, errOut, code := e.cli(t, "", "balance", "alice"); code == 0 || !strings.Contains(errOut, "unauthenticated") {
		t.Errorf("balance without a token: exit %d, stdout %q, stderr %q; want unauthenticated", code, out, errOut)
	}
	if out, errOut, code := e.cli(t, r, "deposit", "alice", "1"); code == 0 || !strings.Contains(errOut, "forbidden") {
		t.Errorf("deposit with a read token: exit %d, stdout %q, stderr %q; want forbidden", code, out, errOut)
	}

	if b := e.cliBalance(t, r, "alice"); b != 7000 {
		t.Errorf("balance alice = %d, want 7000", b)
	}
	if b := e.cliBalance(t, op, "carol"); b != 2500 {
		t.Errorf("balance carol = %d, want 2500", b)
	}
	secWait(t, 15*time.Second, e.other+" credited 500 by the saga", func() bool { return e.cliBalance(t, r, e.other) == 500 })

	for _, tok := range []string{"reader", "admin"} {
		if out, errOut, code := e.cli(t, e.tok[tok], "verify"); code != 0 {
			t.Errorf("verify with the %s token: exit %d\n%s%s", tok, code, out, errOut)
		}
		out, errOut, code := e.cli(t, e.tok[tok], "--json", "audit")
		var rep ledger.AuditReport
		if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || len(rep.Seqs) != e.shards {
			t.Errorf("audit with the %s token: exit %d\n%s%s", tok, code, out, errOut)
		}
	}
}

// plaintext: HTTP to a TLS port gets no answer that says yes.
func (e *secEnv) plaintext(t *testing.T) {
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, addr := range []string{e.nodes[0].HTTP, e.nodes[2].HTTP, e.proxyAddr} {
		for _, path := range []string{"/healthz", "/v1/accounts/alice"} {
			a := secDo(plain, "GET", "http://"+addr+path, e.tok["admin"], "", nil)
			wantNo2xx(t, "plaintext GET "+addr+path, a)
			if a.err == nil && a.status != http.StatusBadRequest {
				t.Errorf("plaintext GET %s%s: %s, want a broken connection or 400", addr, path, a)
			}
			t.Logf("plaintext GET %s%s: %s", addr, path, a)
		}
		a := secDo(plain, "POST", "http://"+addr+"/v1/transfers", e.tok["admin"], "application/json",
			[]byte(`{"transfers":[{"id":"plain-1","debit":"alice","credit":"carol","amount":1}]}`))
		wantNo2xx(t, "plaintext POST "+addr+"/v1/transfers", a)
	}
	// The same over TLS answers: the refusal above is the plaintext's.
	if a := secDo(e.client(nil), "GET", "https://"+e.nodes[0].HTTP+"/healthz", "", "", nil); a.err != nil || a.status != 200 {
		t.Errorf("GET /healthz over TLS without a token: %s, want 200 (it is public)", a)
	}
	if b := e.balance(t, "alice"); b != 7000 {
		t.Errorf("balance alice = %d after plaintext attempts, want 7000", b)
	}
}

// authz: no token, an unknown one, one too weak.
func (e *secEnv) authz(t *testing.T) {
	hc := e.client(nil)
	n1, n2 := "https://"+e.nodes[0].HTTP, "https://"+e.nodes[1].HTTP
	px := "https://" + e.proxyAddr
	for _, base := range []string{n1, n2, px} {
		wantError(t, "no token at "+base, secDo(hc, "GET", base+"/v1/accounts/alice", "", "", nil), 401, "unauthenticated")
		wantError(t, "no token POST at "+base, secDo(hc, "POST", base+"/v1/transfers", "", "application/json",
			[]byte(`{"transfers":[{"id":"anon-1","debit":"alice","credit":"carol","amount":1}]}`)), 401, "unauthenticated")
		wantError(t, "unknown token at "+base, secDo(hc, "GET", base+"/v1/accounts/alice",
			"tly_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "", nil), 401, "unauthenticated")
		wantError(t, "garbage token at "+base, secDo(hc, "GET", base+"/v1/accounts/alice", "letmein", "", nil), 401, "unauthenticated")
		// A token's name is not its secret.
		wantError(t, "token name as secret at "+base, secDo(hc, "GET", base+"/v1/accounts/alice", "admin", "", nil), 401, "unauthenticated")
		wantError(t, "no token GET /metrics at "+base, secDo(hc, "GET", base+"/metrics", "", "", nil), 401, "unauthenticated")
		if a := secDo(hc, "GET", base+"/healthz", "", "", nil); a.err != nil || a.status != 200 {
			t.Errorf("GET /healthz at %s without a token: %s, want 200", base, a)
		}
		if a := secDo(hc, "GET", base+"/v1/accounts/alice", e.tok["reader"], "", nil); a.err != nil || a.status != 200 {
			t.Errorf("GET alice with the read token at %s: %s, want 200", base, a)
		}

		// A read token writing.
		id := "ro-" + strings.TrimPrefix(base, "https://")
		a := secDo(hc, "POST", base+"/v1/transfers", e.tok["reader"], "application/json",
			[]byte(`{"transfers":[{"id":"`+id+`","debit":"alice","credit":"carol","amount":100}]}`))
		wantError(t, "read token POST /v1/transfers at "+base, a, 403, "forbidden")
		wantError(t, "read token POST /v1/accounts at "+base, secDo(hc, "POST", base+"/v1/accounts", e.tok["reader"],
			"application/json", []byte(`{"accounts":[{"id":"mallory","currency":"USD"}]}`)), 403, "forbidden")
		if a := secDo(hc, "GET", px+"/v1/transfers/"+id, e.tok["reader"], "", nil); a.err != nil || a.status != 404 {
			t.Errorf("the refused transfer %s: GET answered %s, want 404", id, a)
		}

		// A write token on operator routes.
		wantError(t, "write token resolve at "+base, secDo(hc, "POST", base+"/v1/sagas/x-1/resolve", e.tok["writer"],
			"application/json", []byte(`{"note":"mine"}`)), 403, "forbidden")
		wantError(t, "write token pprof at "+base, secDo(hc, "GET", base+"/debug/pprof/", e.tok["writer"], "", nil), 403, "forbidden")
		wantError(t, "write token join at "+base, secDo(hc, "POST", base+"/v1/cluster/join", e.tok["writer"],
			"application/json", []byte(`{"id":"n9","raft":"127.0.0.1:1","http":"127.0.0.1:2"}`)), 403, "forbidden")
		wantError(t, "read token pprof at "+base, secDo(hc, "GET", base+"/debug/pprof/", e.tok["reader"], "", nil), 403, "forbidden")
	}
	// Every read route needs a token, everywhere; every write route more
	// than read, every operator route more than write.
	reads := []string{"/v1/cluster", "/v1/cluster/local", "/v1/sagas", "/v1/audit", "/v1/shards/0/state",
		"/v1/shards/0/audit", "/v1/shards/0/events", "/v1/events", "/v1/shards/0/verify", "/v1/shards/0/hash?seq=1",
		"/v1/consumers", "/v1/consumers/x", "/v1/transfers/t-1", "/v1/accounts/alice/history", "/debug/pprof/profile?seconds=1"}
	type call struct{ method, path, body, token string }
	strong := []call{
		{"POST", "/v1/accounts/alice/close", `{}`, "reader"},
		{"PUT", "/v1/consumers/x/offsets/0", `{"seq":1}`, "reader"},
		{"DELETE", "/v1/consumers/x", "", "writer"},
		{"POST", "/v1/consumers/x/reset", `{"to":"start"}`, "writer"},
		{"POST", "/v1/cluster/leave", `{"id":"n3"}`, "writer"},
		{"POST", "/v1/cluster/transfer-leader", `{"shard":0}`, "writer"},
		{"GET", "/debug/pprof/trace?seconds=1", "", "writer"},
	}
	for _, base := range []string{n1, px} {
		for _, path := range reads {
			wantError(t, "no token GET "+path+" at "+base, secDo(hc, "GET", base+path, "", "", nil), 401, "unauthenticated")
		}
		for _, c := range strong {
			var body []byte
			if c.body != "" {
				body = []byte(c.body)
			}
			wantError(t, c.token+" token "+c.method+" "+c.path+" at "+base,
				secDo(hc, c.method, base+c.path, e.tok[c.token], "application/json", body), 403, "forbidden")
		}
	}
	if !e.fullMembership(e.nodes[0].HTTP) {
		t.Error("membership changed after refused operator calls")
	}

	// The operator may: the 403s above are the role's.
	if a := secDo(hc, "GET", n1+"/debug/pprof/", e.tok["admin"], "", nil); a.err != nil || a.status != 200 {
		t.Errorf("operator GET /debug/pprof/ at n1: %s, want 200", a)
	}
	for _, id := range []string{"alice", "carol"} {
		want := map[string]int64{"alice": 7000, "carol": 2500}[id]
		if b := e.balance(t, id); b != want {
			t.Errorf("balance %s = %d after refused writes, want %d", id, b, want)
		}
	}
	a := secDo(hc, "GET", px+"/v1/transfers/x-1", e.tok["reader"], "", nil)
	if a.err != nil || a.status != 200 || !bytes.Contains(a.body, []byte(`"posted"`)) {
		t.Errorf("x-1 after a refused resolve: %s, want posted", a)
	}
}

// internalSnapshot is what must not change when an internal call is
// refused: alice's balance and every shard's applied seq, on every node.
func (e *secEnv) internalSnapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "alice=%d ", e.balance(t, "alice"))
	for _, n := range e.nodes {
		for s := range e.shards {
			a := secDo(e.client(nil), "GET", fmt.Sprintf("https://%s/v1/shards/%d/state", n.HTTP, s), e.tok["reader"], "", nil)
			var st struct {
				AppliedSeq uint64 `json:"applied_seq"`
				HeadHash   string `json:"head_hash"`
			}
			if a.err != nil || a.status != 200 || json.Unmarshal(a.body, &st) != nil {
				t.Fatalf("state of shard %d at %s: %s", s, n.ID, a)
			}
			fmt.Fprintf(&b, "%s/%d=%d:%.8s ", n.ID, s, st.AppliedSeq, st.HeadHash)
		}
	}
	return b.String()
}

// internal: only a node's certificate reaches /v1/internal/.
func (e *secEnv) internal(t *testing.T) {
	sh := ledger.ShardOf("alice", e.shards)
	// A real command in the log's encoding: a deposit of a million into
	// alice, which any node would run.
	body := func(id, to string) []byte {
		return (&ledger.Entry{Commands: []ledger.Command{{Kind: ledger.CmdTransfers,
			Transfers: []ledger.Transfer{{ID: id, Debit: ledger.World, Credit: to, Amount: 1_000_000}}}}}).Encode(nil)
	}
	url := func(n *proc.Node) string { return fmt.Sprintf("https://%s/v1/internal/commands?shard=%d", n.HTTP, sh) }
	const octets = "application/octet-stream"
	before := e.internalSnapshot(t)

	plain, proxyCert := e.client(nil), e.client(e.keyPair(t, e.certs, "proxy"))
	for i, n := range e.nodes {
		for _, tok := range []string{"writer", "admin"} {
			a := secDo(plain, "POST", url(n), e.tok[tok], octets, body(fmt.Sprintf("evil-%s-%d", tok, i), "alice"))
			wantError(t, fmt.Sprintf("%s token on %s's internal route", tok, n.ID), a, 403, "forbidden")
		}
		wantError(t, "no credential on "+n.ID+"'s internal route", secDo(plain, "POST", url(n), "", octets,
			body(fmt.Sprintf("evil-anon-%d", i), "alice")), 403, "forbidden")
		// The proxy's certificate is the CA's, but not a node's.
		wantError(t, "proxy certificate on "+n.ID+"'s internal route", secDo(proxyCert, "POST", url(n), "", octets,
			body(fmt.Sprintf("evil-proxycert-%d", i), "alice")), 403, "forbidden")
		wantError(t, "proxy certificate and operator token on "+n.ID+"'s internal route", secDo(proxyCert, "POST", url(n),
			e.tok["admin"], octets, body(fmt.Sprintf("evil-proxycert-op-%d", i), "alice")), 403, "forbidden")
		wantError(t, "operator token on "+n.ID+"'s internal local", secDo(plain, "POST",
			"https://"+n.HTTP+"/v1/internal/local", e.tok["admin"], "application/json", []byte(`{}`)), 403, "forbidden")
	}
	// The proxy does not pass internal routes on.
	wantNo2xx(t, "operator token on the proxy's internal route", secDo(plain, "POST",
		fmt.Sprintf("https://%s/v1/internal/commands?shard=%d", e.proxyAddr, sh), e.tok["admin"], octets, body("evil-px", "alice")))

	time.Sleep(500 * time.Millisecond)
	if after := e.internalSnapshot(t); after != before {
		t.Errorf("refused internal calls changed the ledger:\nbefore %s\nafter  %s", before, after)
	}
	for _, id := range []string{"evil-writer-0", "evil-admin-1", "evil-proxycert-2"} {
		if a := secDo(plain, "GET", "https://"+e.proxyAddr+"/v1/transfers/"+id, e.tok["reader"], "", nil); a.status != 404 {
			t.Errorf("GET /v1/transfers/%s after its refusal: %s, want 404", id, a)
		}
	}

	// The control: the same call with a node's certificate is taken, so
	// the refusals above are the guard's and not a bad body's. It credits
	// an account of its own, on the same shard.
	ctl := "ctl"
	for i := 0; ledger.ShardOf(ctl, e.shards) != sh; i++ {
		ctl = fmt.Sprintf("ctl%d", i)
	}
	e.mustCLI(t, e.tok["writer"], "account", "create", ctl, "--currency", "USD")
	nodeCert := e.client(e.keyPair(t, e.certs, "n2"))
	a := secDo(nodeCert, "POST", url(e.nodes[0]), "", octets, body("ctl-deposit", ctl))
	if a.err != nil || a.status != 200 || !bytes.Contains(a.body, []byte(`"posted"`)) {
		t.Errorf("n2's certificate on n1's internal route: %s, want 200 posted", a)
	}
	if b := e.balance(t, ctl); b != 1_000_000 {
		t.Errorf("balance %s = %d after the node's internal deposit, want 1000000", ctl, b)
	}
	if b := e.balance(t, "alice"); b != 7000 {
		t.Errorf("balance alice = %d, want 7000", b)
	}
}

// raftProbe opens a TLS connection to a Raft port with cert, names group
// 0, and reports nil if the port keeps the connection (the read times
// out: Raft waits for an RPC), else how it was dropped.
func (e *secEnv) raftProbe(addr string, cert *tls.Certificate) error {
	tc := &tls.Config{RootCAs: e.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, tc)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(1500 * time.Millisecond))
	if _, err := c.Write([]byte{0}); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	var b [1]byte
	_, err = c.Read(b[:])
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return nil
	}
	if err == nil {
		return errors.New("the port sent a byte")
	}
	return fmt.Errorf("read: %w", err)
}

// forged: a certificate of another CA makes no node.
func (e *secEnv) forged(t *testing.T) {
	forgedN4, forgedN1 := e.keyPair(t, e.forgedDir, "n4"), e.keyPair(t, e.forgedDir, "n1")
	join := []byte(`{"id":"n4","raft":"127.0.0.1:1","http":"127.0.0.1:2"}`)
	for _, n := range e.nodes {
		for name, cert := range map[string]*tls.Certificate{"n4": forgedN4, "n1": forgedN1} {
			a := secDo(e.client(cert), "POST", "https://"+n.HTTP+"/v1/cluster/join", "", "application/json", join)
			wantNo2xx(t, "join with a forged "+name+" certificate at "+n.ID, a)
			t.Logf("join with a forged %s certificate at %s: %s", name, n.ID, a)
			a = secDo(e.client(cert), "POST", fmt.Sprintf("https://%s/v1/internal/commands?shard=0", n.HTTP), "",
				"application/octet-stream", []byte{2, 0, 0})
			wantNo2xx(t, "internal call with a forged "+name+" certificate at "+n.ID, a)
		}
	}
	for _, n := range e.nodes {
		st, ok := e.clusterOf(n.HTTP)
		if !ok || !e.fullMembership(n.HTTP) {
			t.Errorf("membership at %s after forged joins: %+v", n.ID, st)
			continue
		}
		for _, s := range st.Shards {
			for _, r := range s.Replicas {
				if r.Node == "n4" {
					t.Errorf("shard %d has a replica n4 at %s", s.Shard, n.ID)
				}
			}
		}
	}

	// The Raft port: only a node of this cluster.
	genuine, proxyCert := e.keyPair(t, e.certs, "n2"), e.keyPair(t, e.certs, "proxy")
	for _, n := range e.nodes {
		if err := e.raftProbe(n.Raft, genuine); err != nil {
			t.Errorf("Raft port of %s with n2's genuine certificate: dropped (%v); the probe cannot tell", n.ID, err)
		}
		for name, cert := range map[string]*tls.Certificate{"forged n4": forgedN4, "forged n1": forgedN1,
			"proxy (the CA's, not a node's)": proxyCert, "no": nil} {
			if err := e.raftProbe(n.Raft, cert); err == nil {
				t.Errorf("Raft port of %s kept a connection with %s certificate", n.ID, name)
			} else {
				t.Logf("Raft port of %s with %s certificate: %v", n.ID, name, err)
			}
		}
	}
	// The cluster still works after the attempts.
	if b := e.balance(t, "alice"); b != 7000 {
		t.Errorf("balance alice = %d, want 7000", b)
	}
}

// badStart: a bad flag or file stops a start with one line on stderr,
// before anything is created.
func (e *secEnv) badStart(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := func(name string) string { return filepath.Join(e.certs, name) }
	tlsOf := func(cert, key string) []string {
		return []string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", e.ca}
	}
	n1TLS := tlsOf(c("n1.crt"), c("n1.key"))
	badCert := write("bad.crt", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
	notPEM := write("junk.crt", "this is not a certificate\n")
	badJSON := write("bad.json", `{"tokens": [{"name": "x", `)
	badRole := write("role.json", `{"tokens":[{"name":"x","role":"admin","sha256":"`+strings.Repeat("ab", 32)+`","created":"2026-01-01T00:00:00Z"}]}`)
	unknownField := write("field.json", `{"tokens":[], "users": []}`)
	authDir := filepath.Join(dir, "authdir")
	os.Mkdir(authDir, 0o700)

	type tc struct {
		name string
		args []string // after the addresses
		addr string   // the HTTP address; "" for a loopback one
		want string   // in the stderr line
	}
	cases := []tc{
		{"malformed cert", tlsOf(badCert, c("n1.key")), "", "--tls-cert"},
		{"cert not PEM", tlsOf(notPEM, c("n1.key")), "", "--tls-cert"},
		{"key of another cert", tlsOf(c("n1.crt"), c("n2.key")), "", "--tls-cert"},
		{"cert of another CA", tlsOf(filepath.Join(e.forgedDir, "n1.crt"), filepath.Join(e.forgedDir, "n1.key")), "", "not signed by"},
		{"CA of another cluster", []string{"--tls-cert", c("n1.crt"), "--tls-key", c("n1.key"), "--tls-ca", filepath.Join(e.forgedDir, "ca.crt")}, "", "not signed by"},
		{"proxy cert as node cert", tlsOf(c("proxy.crt"), c("proxy.key")), "", "not a node certificate"},
		{"another node's cert", tlsOf(c("n2.crt"), c("n2.key")), "", "n2"},
		{"missing CA file", []string{"--tls-cert", c("n1.crt"), "--tls-key", c("n1.key"), "--tls-ca", filepath.Join(dir, "nope.crt")}, "", "--tls-ca"},
		{"CA without own cert", []string{"--tls-ca", e.ca}, "", "--tls-cert"},
		{"cert without key", []string{"--tls-cert", c("n1.crt"), "--tls-ca", e.ca}, "", "--tls-key"},
		{"missing auth file", append(n1TLS, "--auth-file", filepath.Join(dir, "nope.json")), "", "auth file"},
		{"auth file is a directory", append(n1TLS, "--auth-file", authDir), "", "auth file"},
		{"auth file bad JSON", append(n1TLS, "--auth-file", badJSON), "", "auth file"},
		{"auth file unknown role", append(n1TLS, "--auth-file", badRole), "", `"admin"`},
		{"auth file unknown field", append(n1TLS, "--auth-file", unknownField), "", "auth file"},
		{"plaintext on 0.0.0.0", nil, "0.0.0.0", "--insecure"},
		{"auth file plaintext on 0.0.0.0 even with --insecure", []string{"--auth-file", e.auth, "--insecure",
			"--cluster-secret-file", write("secret", "0123456789abcdef0123\n")}, "0.0.0.0", "plaintext"},
		{"auth file without TLS or cluster secret", []string{"--auth-file", e.auth}, "", "--cluster-secret-file"},
		{"short cluster secret", []string{"--cluster-secret-file", write("short", "abc\n")}, "", "cluster secret"},
	}
	if os.Geteuid() != 0 {
		unreadable := write("unreadable.json", "{\"tokens\":[]}")
		os.Chmod(unreadable, 0)
		cases = append(cases, tc{"unreadable auth file", append(n1TLS, "--auth-file", unreadable), "", "auth file"})
	}
	check := func(t *testing.T, what string, stdout, stderr string, code int, want string) {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		switch {
		case code == -1:
			t.Errorf("%s: still running after 20s (killed); stderr:\n%s", what, stderr)
		case code == 0:
			t.Errorf("%s: exit 0", what)
		case len(lines) != 1 || !strings.HasPrefix(lines[0], "tally: ") || !strings.Contains(lines[0], want):
			t.Errorf("%s: exit %d, stderr %q; want one line \"tally: ...%s...\"", what, code, stderr, want)
		default:
			t.Logf("%s: exit %d: %s", what, code, lines[0])
		}
		if stdout != "" {
			t.Errorf("%s: stdout %q", what, stdout)
		}
	}
	for i, k := range cases {
		ports, err := proc.FreePorts(2)
		if err != nil {
			t.Fatal(err)
		}
		host := "127.0.0.1"
		if k.addr != "" {
			host = k.addr
		}
		data := filepath.Join(dir, fmt.Sprintf("data%d", i))
		args := append([]string{"server", "--id", "n1", "--data", data, "--bootstrap",
			"--raft", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--http", fmt.Sprintf("%s:%d", host, ports[1])}, k.args...)
		stdout, stderr, code := secCmd(t, nil, args...)
		check(t, "server: "+k.name, stdout, stderr, code, k.want)
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("server: %s: the data directory %s exists (%v)", k.name, data, err)
		}
	}

	// The proxy refuses the same.
	proxyCases := []tc{
		{"proxy: auth file bad JSON", []string{"--tls-cert", c("proxy.crt"), "--tls-key", c("proxy.key"), "--tls-ca", e.ca, "--auth-file", badJSON}, "", "auth file"},
		{"proxy: key of another cert", []string{"--tls-cert", c("proxy.crt"), "--tls-key", c("n1.key"), "--tls-ca", e.ca}, "", "--tls-cert"},
		{"proxy: cert of another CA", []string{"--tls-cert", filepath.Join(e.forgedDir, "proxy.crt"), "--tls-key", filepath.Join(e.forgedDir, "proxy.key"), "--tls-ca", e.ca}, "", "not signed by"},
		{"proxy: plaintext on 0.0.0.0", nil, "0.0.0.0", "--insecure"},
		{"proxy: auth file plaintext on 0.0.0.0 with --insecure", []string{"--auth-file", e.auth, "--insecure"}, "0.0.0.0", "plaintext"},
	}
	for _, k := range proxyCases {
		ports, err := proc.FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		host := "127.0.0.1"
		if k.addr != "" {
			host = k.addr
		}
		args := append([]string{"proxy", "--listen", fmt.Sprintf("%s:%d", host, ports[0]), "--nodes", e.nodes[0].HTTP}, k.args...)
		stdout, stderr, code := secCmd(t, nil, args...)
		check(t, k.name, stdout, stderr, code, k.want)
	}
}

// revoke: a revoked token stops working everywhere within seconds, and
// the others keep working.
func (e *secEnv) revoke(t *testing.T) {
	ci := e.tok["ci"]
	hc := e.client(nil)
	bases := []string{"https://" + e.proxyAddr}
	for _, n := range e.nodes {
		bases = append(bases, "https://"+n.HTTP)
	}
	for _, b := range bases {
		if a := secDo(hc, "GET", b+"/v1/accounts/alice", ci, "", nil); a.err != nil || a.status != 200 {
			t.Fatalf("the ci token before its revocation at %s: %s", b, a)
		}
	}
	e.mustCLI(t, ci, "deposit", "carol", "1", "--id", "ci-before")

	// A stream opened with the token, at a node and through the proxy,
	// must end once the token is revoked, not run on for ever.
	streamEnded := map[string]chan error{}
	for _, b := range bases[:2] {
		req, err := http.NewRequest("GET", b+"/v1/shards/0/events?follow=true", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+ci)
		resp, err := hc.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("a stream with the ci token at %s: %v %v", b, err, resp)
		}
		done := make(chan error, 1)
		streamEnded[b] = done
		go func() {
			defer resp.Body.Close()
			_, err := io.Copy(io.Discard, resp.Body)
			done <- err
		}()
	}

	start := time.Now()
	if out, errOut, code := secCmd(t, nil, "token", "revoke", "ci", "--auth-file", e.auth); code != 0 {
		t.Fatalf("token revoke ci: exit %d: %s%s", code, out, errOut)
	}
	if out, _, _ := secCmd(t, nil, "token", "list", "--auth-file", e.auth); strings.Contains(out, "ci ") {
		t.Errorf("token list still shows ci:\n%s", out)
	}
	refused := map[string]time.Duration{}
	deadline := start.Add(8 * time.Second)
	for len(refused) < len(bases) && time.Now().Before(deadline) {
		for _, b := range bases {
			if _, ok := refused[b]; ok {
				continue
			}
			if a := secDo(hc, "GET", b+"/v1/accounts/alice", ci, "", nil); a.err == nil && a.status == 401 {
				wantError(t, "revoked token at "+b, a, 401, "unauthenticated")
				refused[b] = time.Since(start)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, b := range bases {
		d, ok := refused[b]
		switch {
		case !ok:
			t.Errorf("the revoked token is still taken at %s %s after the revocation", b, time.Since(start).Round(time.Millisecond))
		case d > 5*time.Second:
			t.Errorf("the revoked token was refused at %s only after %s, want within 5s", b, d.Round(time.Millisecond))
		default:
			t.Logf("revoked token refused at %s after %s", b, d.Round(time.Millisecond))
		}
	}
	if out, errOut, code := e.cli(t, ci, "deposit", "carol", "1", "--id", "ci-after"); code == 0 || !strings.Contains(errOut, "unauthenticated") {
		t.Errorf("deposit with the revoked token: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if a := secDo(hc, "POST", bases[0]+"/v1/transfers", ci, "application/json",
		[]byte(`{"transfers":[{"id":"ci-after2","debit":"alice","credit":"carol","amount":1}]}`)); a.status != 401 {
		t.Errorf("POST /v1/transfers with the revoked token: %s, want 401", a)
	}
	// The other tokens, the proxy's own among them, still work.
	for _, b := range bases {
		if a := secDo(hc, "GET", b+"/v1/accounts/carol", e.tok["reader"], "", nil); a.err != nil || a.status != 200 {
			t.Errorf("the read token after another's revocation at %s: %s", b, a)
		}
	}
	for b, done := range streamEnded {
		select {
		case <-done:
			t.Logf("the ci token's stream at %s ended %s after the revocation", b, time.Since(start).Round(time.Millisecond))
		case <-time.After(10 * time.Second):
			t.Errorf("the ci token's stream at %s still runs %s after the revocation", b, time.Since(start).Round(time.Millisecond))
		}
	}
	e.mustCLI(t, e.tok["writer"], "transfer", "carol", "alice", "1", "--id", "after-revoke")
	if b := e.balance(t, "carol"); b != 2500 {
		t.Errorf("balance carol = %d, want 2500 (2500 + 1 before the revocation - 1 after)", b)
	}

	// An auth file that stops reading keeps the tokens loaded before.
	good, err := os.ReadFile(e.auth)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.auth, []byte(`{"tokens": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	secWait(t, 10*time.Second, "every node and the proxy to log that the broken auth file does not read", func() bool {
		for _, p := range proc.Procs(e.nodes, e.proxy) {
			if b, _ := os.ReadFile(p.LogPath); !bytes.Contains(b, []byte("auth file changed but does not read")) {
				return false
			}
		}
		return true
	})
	for _, b := range bases {
		if a := secDo(hc, "GET", b+"/v1/accounts/carol", e.tok["reader"], "", nil); a.err != nil || a.status != 200 {
			t.Errorf("the read token while the auth file is broken, at %s: %s, want 200", b, a)
		}
		if a := secDo(hc, "GET", b+"/v1/accounts/carol", ci, "", nil); a.status != 401 {
			t.Errorf("the revoked token while the auth file is broken, at %s: %s, want 401", b, a)
		}
	}
	if err := os.WriteFile(e.auth, good, 0o600); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := e.cli(t, e.tok["admin"], "--json", "audit")
	var rep ledger.AuditReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK {
		t.Errorf("final audit: exit %d\n%s%s", code, out, errOut)
	}
}

// addNode: a fourth node with a certificate from certs add joins the TLS
// cluster and becomes a voter of every shard; a renewed certificate
// (certs add again) is served without a restart.
func (e *secEnv) addNode(t *testing.T) {
	if out, errOut, code := secCmd(t, nil, "certs", "add", "--dir", e.certs, "--nodes", "n4"); code != 0 {
		t.Fatalf("certs add n4: exit %d: %s%s", code, out, errOut)
	}
	ports, err := proc.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	n4 := proc.NewNode(bin, "n4", fmt.Sprintf("127.0.0.1:%d", ports[1]), fmt.Sprintf("127.0.0.1:%d", ports[0]),
		filepath.Join(e.dir, "n4"), filepath.Join(e.dir, "n4.log"),
		"--tls-cert", filepath.Join(e.certs, "n4.crt"), "--tls-key", filepath.Join(e.certs, "n4.key"),
		"--tls-ca", e.ca, "--auth-file", e.auth)
	n4.Ready = httpsReady(e.client(nil), n4.HTTP, "/healthz")
	n4.Env = []string{"TALLY_TOKEN=", "TALLY_TLS_CA=", "TALLY_ADDR="}
	t.Cleanup(func() { proc.StopAll(10*time.Second, n4.Proc) })
	if err := n4.Start("--join", e.nodes[0].HTTP); err != nil {
		t.Fatal(err)
	}
	secWait(t, 60*time.Second, "n4 a voter of every shard", func() bool {
		st, ok := e.clusterOf(e.nodes[0].HTTP)
		if !ok {
			return false
		}
		for _, s := range st.Shards {
			voter := false
			for _, r := range s.Replicas {
				voter = voter || (r.Node == "n4" && r.Suffrage == "voter")
			}
			if !voter {
				return false
			}
		}
		return true
	})

	n2 := e.nodes[1]
	if out, errOut, code := secCmd(t, nil, "certs", "add", "--dir", e.certs, "--nodes", "n2"); code != 0 {
		t.Fatalf("certs add n2: exit %d: %s%s", code, out, errOut)
	}
	secWait(t, 10*time.Second, "n2 to reload its certificate", func() bool {
		b, _ := os.ReadFile(n2.LogPath)
		return strings.Contains(string(b), "certificate reloaded")
	})
	// The renewed certificate is the one n2 now serves.
	want, err := tls.LoadX509KeyPair(filepath.Join(e.certs, "n2.crt"), filepath.Join(e.certs, "n2.key"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", n2.HTTP, &tls.Config{RootCAs: e.pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	served := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if served.SerialNumber.Cmp(want.Leaf.SerialNumber) != 0 {
		t.Fatalf("n2 serves certificate %v, the renewed one is %v", served.SerialNumber, want.Leaf.SerialNumber)
	}
	e.mustCLI(t, e.tok["writer"], "transfer", "alice", "carol", "1", "--id", "after-renewal")
}
