package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"tally/test/jepsen/nemesis"
)

// The network: every process of a run lives in its own network namespace,
// attached by a veth pair to one Linux bridge that lives in a namespace of
// its own. Addresses come from 198.18.0.0/24 (RFC 2544 benchmarking
// space) and exist only inside those namespaces, so no packet of a run
// can reach or leave the machine. Partitions are nftables rules in the
// bridge namespace, applied and healed as one atomic `nft -f` transaction
// each; the one-shard Raft link fault uses rules in the cut node's own
// namespace (see shardLinkRules).

const (
	nsPrefix  = "tallyj-"
	bridgeNS  = nsPrefix + "br"
	harnessNS = nsPrefix + "h"
	nftTable  = "tallyj"
	subnet    = "198.18.0."
	raftPort  = 7000
	httpPort  = 8000
	proxyPort = 8080
)

// member is one namespace on the bridge.
type member struct {
	name string // node id, "proxy" or "harness"
	ns   string
	ip   string
	fd   int // an open handle on the namespace, for dialing from it
}

// Net is the run's private network.
type Net struct {
	members map[string]*member // by name
	order   []string
	log     func(format string, args ...any)
	// lastRules is the rule text installed in the bridge namespace.
	lastRules string
}

func run(args ...string) error {
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func output(args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Sweep removes what an earlier run that did not clean up left behind:
// processes inside namespaces named with our prefix, the namespaces, our
// loop mounts and loop devices. Only names with our prefix are touched.
func Sweep(logf func(string, ...any)) {
	names, _ := filepath.Glob("/var/run/netns/" + nsPrefix + "*")
	for _, p := range names {
		ns := filepath.Base(p)
		if out, err := output("ip", "netns", "pids", ns); err == nil {
			for _, f := range strings.Fields(out) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
					logf("sweep: killing stale process %d in %s", pid, ns)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	if len(names) > 0 {
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range names {
		ns := filepath.Base(p)
		logf("sweep: deleting stale namespace %s", ns)
		if err := run("ip", "netns", "del", ns); err != nil {
			logf("sweep: %v", err)
		}
	}
	sweepMounts(logf)
}

// NewNet builds the bridge and one namespace per member name.
func NewNet(names []string, logf func(string, ...any)) (*Net, error) {
	n := &Net{members: map[string]*member{}, log: logf}
	if err := n.setup(names); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func addrOf(i int) string { return subnet + strconv.Itoa(i) }

func (n *Net) setup(names []string) error {
	if err := run("ip", "netns", "add", bridgeNS); err != nil {
		return err
	}
	n.order = append(n.order, "bridge")
	n.members["bridge"] = &member{name: "bridge", ns: bridgeNS, fd: -1}
	steps := [][]string{
		{"ip", "-n", bridgeNS, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", bridgeNS, "link", "set", "br0", "up"},
		{"ip", "-n", bridgeNS, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	for i, name := range names {
		m := &member{name: name, ns: nsPrefix + name, ip: addrOf(10 + i), fd: -1}
		if name == "harness" {
			m.ns = harnessNS
		}
		n.members[name] = m
		n.order = append(n.order, name)
		peer := "v-" + name
		if len(peer) > 15 {
			peer = peer[:15]
		}
		steps := [][]string{
			{"ip", "netns", "add", m.ns},
			{"ip", "link", "add", "eth0", "netns", m.ns, "type", "veth", "peer", "name", peer, "netns", bridgeNS},
			{"ip", "-n", bridgeNS, "link", "set", peer, "master", "br0"},
			{"ip", "-n", bridgeNS, "link", "set", peer, "up"},
			{"ip", "-n", m.ns, "addr", "add", m.ip + "/24", "dev", "eth0"},
			{"ip", "-n", m.ns, "link", "set", "eth0", "up"},
			{"ip", "-n", m.ns, "link", "set", "lo", "up"},
		}
		for _, s := range steps {
			if err := run(s...); err != nil {
				return err
			}
		}
		fd, err := syscall.Open("/var/run/netns/"+m.ns, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open namespace %s: %w", m.ns, err)
		}
		m.fd = fd
	}
	// An empty rule set: the table and its chain exist from the start, so
	// every later change is one atomic replacement.
	if err := n.Apply(nil); err != nil {
		return err
	}
	return nil
}

// IP returns a member's address.
func (n *Net) IP(name string) string { return n.members[name].ip }

// NS returns a member's namespace.
func (n *Net) NS(name string) string { return n.members[name].ns }

// Close deletes every namespace the run made.
func (n *Net) Close() {
	for i := len(n.order) - 1; i >= 0; i-- {
		m := n.members[n.order[i]]
		if m.fd >= 0 {
			syscall.Close(m.fd)
		}
		if err := run("ip", "netns", "del", m.ns); err != nil {
			n.log("cleanup: %v", err)
		}
	}
	n.order = nil
}

// Dial connects from a member's namespace. The socket is created by a
// thread that joined the namespace and then exits with its goroutine, so
// no other goroutine ever runs in it; the connection keeps working from
// any thread.
func (n *Net) Dial(from string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	m := n.members[from]
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := checkAddr(addr); err != nil {
			return nil, err
		}
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			runtime.LockOSThread()
			// Never unlocked: the thread ends with this goroutine.
			if err := unix.Setns(m.fd, unix.CLONE_NEWNET); err != nil {
				ch <- res{nil, fmt.Errorf("setns %s: %v", m.ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// checkAddr refuses any destination outside loopback and the run's own
// subnet: the suite never sends a packet anywhere else.
func checkAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || !(ip.IsLoopback() || strings.HasPrefix(ip.String(), subnet)) {
		return fmt.Errorf("refusing to dial %s: only loopback and %s0/24 are allowed", addr, subnet)
	}
	return nil
}

// Probe reports whether a TCP connection from member from to addr opens
// within d.
func (n *Net) Probe(from, addr string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := n.Dial(from)(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Apply replaces the bridge's rule set with rules, atomically: the file
// given to nft flushes the table and adds the new rules in one
// transaction.
func (n *Net) Apply(rules []nemesis.Rule) error {
	var b strings.Builder
	fmt.Fprintf(&b, "table bridge %s {}\nflush table bridge %s\n", nftTable, nftTable)
	fmt.Fprintf(&b, "table bridge %s {\n\tchain filter {\n\t\ttype filter hook forward priority 0; policy accept;\n", nftTable)
	for _, r := range rules {
		from, to := n.members[r.From], n.members[r.To]
		if r.Percent > 0 && r.Percent < 100 {
			fmt.Fprintf(&b, "\t\tip saddr %s ip daddr %s numgen random mod 100 < %d counter drop\n", from.ip, to.ip, r.Percent)
		} else {
			fmt.Fprintf(&b, "\t\tip saddr %s ip daddr %s counter drop\n", from.ip, to.ip)
		}
	}
	b.WriteString("\t}\n}\n")
	if err := nft(bridgeNS, b.String()); err != nil {
		return err
	}
	n.lastRules = b.String()
	return nil
}

func nft(ns, rules string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft in %s: %v: %s\n%s", ns, err, strings.TrimSpace(string(out)), rules)
	}
	return nil
}

// Dropped returns the packets the bridge rules (or a node's shard-link
// rules, with ns) dropped so far.
func Dropped(ns, family string) (int64, error) {
	out, err := output("ip", "netns", "exec", ns, "nft", "list", "table", family, nftTable)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, " drop") {
			continue
		}
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "packets" {
				v, _ := strconv.ParseInt(f[i+1], 10, 64)
				total += v
			}
		}
	}
	return total, nil
}

// shardLinkRules are the nft rules of a node's own namespace that tell
// the shards' Raft connections apart. All shards share one Raft port, and
// every Raft connection starts with one byte naming its shard
// (cluster/mux.go). Bridge-family conntrack is not available in this
// kernel (no nf_conntrack_bridge), so the rules live in each node's
// namespace (inet family, where conntrack works): the first payload byte
// of a new connection to or from the Raft port stamps the connection's
// conntrack mark with shard+1, once, before any fault, for every
// connection of the run. A fault on shard k then drops the packets of
// every connection marked k+1, both ways, in the cut node's namespace
// only: its Raft traffic for every other shard, and the other nodes'
// shard k traffic with each other, flow on. Matching the first byte on
// every packet instead would also hit other shards' segments that happen
// to start with that byte.
func shardLinkRules(shards int, cut int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {}\nflush table inet %s\ntable inet %s {\n", nftTable, nftTable, nftTable)
	for _, hook := range []string{"input", "output"} {
		fmt.Fprintf(&b, "\tchain %s_ {\n\t\ttype filter hook %s priority 0; policy accept;\n", hook, hook)
		for k := 0; k < shards; k++ {
			fmt.Fprintf(&b, "\t\ttcp dport %d ct mark 0 @ih,0,8 %d ct mark set %d\n", raftPort, k, k+1)
		}
		if cut >= 0 {
			fmt.Fprintf(&b, "\t\tct mark %d counter drop\n", cut+1)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// SetShardLink installs the shard-link rules in a node's namespace,
// cutting shard cut (or none when cut < 0).
func (n *Net) SetShardLink(node string, shards, cut int) error {
	return nft(n.members[node].ns, shardLinkRules(shards, cut))
}
