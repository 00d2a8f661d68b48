package nemesis

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestEveryFaultHasAUniqueName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z]+(-[a-z]+)*$`)
	seen := map[string]bool{}
	for _, f := range All() {
		name := f.Name()
		if !valid.MatchString(name) {
			t.Errorf("fault name %q is not lowercase words joined by dashes", name)
		}
		if seen[name] {
			t.Errorf("two faults are called %q", name)
		}
		seen[name] = true
		if g, ok := Lookup(name); !ok || g.Name() != name {
			t.Errorf("Lookup(%q) does not find it", name)
		}
	}
	if len(seen) == 0 {
		t.Fatal("no fault is registered")
	}
}

func TestParse(t *testing.T) {
	got, err := Parse("kill-leader, halves")
	if err != nil || !reflect.DeepEqual(got, []string{"kill-leader", "halves"}) {
		t.Errorf("Parse = %v, %v", got, err)
	}
	if got, err := Parse(""); got != nil || err != nil {
		t.Errorf("Parse(\"\") = %v, %v; want all (nil)", got, err)
	}
	if _, err := Parse("kill-leader,kill-everything"); err == nil {
		t.Error("an unknown class was accepted")
	}
}

// Without root a run applies the process family only and is partial;
// the failpoint family also needs a failpoints build.
func TestAvailability(t *testing.T) {
	noRoot := Env{Failpoints: true}
	want := []string{"kill-leader", "kill-follower", "pause-leader", "pause-follower", "slow-node", "proxy-kill", "proxy-pause"}
	if got := Available(nil, noRoot); !reflect.DeepEqual(got, want) {
		t.Errorf("without root: %v, want %v", got, want)
	}
	if !Partial(noRoot) || Partial(Env{Root: true}) {
		t.Error("a run is partial exactly when it lacks root")
	}
	if got := Available(nil, Env{Root: true, Failpoints: true}); !reflect.DeepEqual(got, Defaults()) {
		t.Errorf("root and failpoints: %v, want every default class", got)
	}
	for _, opt := range []string{"membership", "rolling-restart", "backup"} {
		if slices.Contains(Defaults(), opt) || !reflect.DeepEqual(Available([]string{opt}, Env{}), []string{opt}) {
			t.Errorf("%s must run only when named", opt)
		}
	}
	un := Unavailable(Env{Root: true})
	if len(un) != 2 || !errors.Is(un["fsync-error"], ErrNeedsFailpoints) || !errors.Is(un["crash-point"], ErrNeedsFailpoints) {
		t.Errorf("root without failpoints: unavailable %v", un)
	}
	if got := Available([]string{"halves", "kill-leader", "no-such"}, noRoot); !reflect.DeepEqual(got, []string{"kill-leader"}) {
		t.Errorf("a chosen list without root: %v", got)
	}
}

func TestScheduleIsReproducible(t *testing.T) {
	all := Names()
	a := Schedule(42, all, true, 0, 4*time.Second, 2*time.Second, 4)
	if !reflect.DeepEqual(a, Schedule(42, all, true, 0, 4*time.Second, 2*time.Second, 4)) {
		t.Fatal("the same seed gave two schedules")
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s.Class]++
	}
	for _, c := range all {
		if seen[c] != 1 {
			t.Errorf("the CI schedule has %s %d times", c, seen[c])
		}
	}
	r1 := Schedule(7, all, false, 10*time.Minute, 4*time.Second, 2*time.Second, 4)
	r2 := Schedule(7, all, false, 10*time.Minute, 4*time.Second, 2*time.Second, 4)
	if !reflect.DeepEqual(r1, r2) || len(r1) < 50 {
		t.Fatalf("random schedule: %d faults, reproducible %v", len(r1), reflect.DeepEqual(r1, r2))
	}
	if reflect.DeepEqual(r1, Schedule(8, all, false, 10*time.Minute, 4*time.Second, 2*time.Second, 4)) {
		t.Fatal("two seeds gave the same schedule")
	}
}

// Seeds printed by earlier runs (and pinned in make jepsen-regress) must
// keep their schedules: these digests are of schedules made before the
// faults moved behind one interface. A change here means the registry's
// order or the draws per step changed.
func TestSchedulesOfOldSeeds(t *testing.T) {
	digest := func(v []Step) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", sha256.Sum256(b))[:16]
	}
	for _, c := range []struct {
		name string
		s    []Step
		want string
	}{
		{"ci seed 42", Schedule(42, Defaults(), true, 0, 4*time.Second, 2*time.Second, 4), "14dbd02bc5d12afa"},
		{"random seed 7", Schedule(7, Defaults(), false, 10*time.Minute, 4*time.Second, 2*time.Second, 4), "f0f3b6c30b18a9e4"},
		{"regress seed 5004", Schedule(5004, []string{"pause-leader", "pause-follower", "crash-point", "kill-follower"},
			false, 4*time.Minute, 4*time.Second, 2*time.Second, 4), "bd76850dc49bf01c"},
	} {
		if got := digest(c.s); got != c.want {
			t.Errorf("%s: schedule digest %s, want %s", c.name, got, c.want)
		}
	}
}

// Every registered class, run by the runner against a simulated cluster,
// must be injected, verified and healed: the plumbing between the
// interface, the runner and each family, without root.
func TestEveryFaultIsVerifiedAndHealed(t *testing.T) {
	c := newFakeCluster(4)
	r, err := NewRunner(c, c, filepath.Join(t.TempDir(), "nemesis.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	sched := Schedule(1, Names(), true, 0, 30*time.Millisecond, 0, 4)
	ws := r.Run(context.Background(), time.Now(), time.Now().Add(time.Minute), sched, nil)
	if len(ws) != len(registry) {
		t.Fatalf("%d windows, want %d", len(ws), len(registry))
	}
	for _, w := range ws {
		if w.Err != "" || !w.Verified || !w.HealVerified || w.Target == "" {
			t.Errorf("%s", w.Line(w.Start))
		}
		if f, _ := Lookup(w.Fault.Class); f.Traits().Leader != (w.LeaderChanged != nil) || w.LeaderChanged != nil && !*w.LeaderChanged {
			t.Errorf("leader check: %s", w.Line(w.Start))
		}
		if w.Fault.Class == "backup" && (w.Backup == nil || len(w.Backup.Cut) != 4 || w.Backup.Cut[3].Seq != 13 || w.Backup.File == "") {
			t.Errorf("the backup window did not record its file and cut: %+v", w.Backup)
		}
	}
	r.HealAll(context.Background())
	for _, name := range members(c) {
		if p := c.procs[name]; !p.Running() || p.Stopped() {
			t.Errorf("%s is not running after HealAll", name)
		}
	}
}

// fakeCluster simulates the members, the bridge, the disks, the
// failpoint files and the leader view. Safe for concurrent use.
type fakeCluster struct {
	shards int
	procs  map[string]*fakeProc

	mu     sync.Mutex
	rules  []Rule
	shard  map[string]int // node -> cut shard
	disks  map[string]*fakeDisk
	term   uint64
	leader string
	gone   map[string]bool // nodes that left every shard
}

func newFakeCluster(shards int) *fakeCluster {
	c := &fakeCluster{shards: shards, procs: map[string]*fakeProc{}, shard: map[string]int{}, disks: map[string]*fakeDisk{}, leader: "n1", term: 1, gone: map[string]bool{}}
	for _, n := range []string{"n1", "n2", "n3", proxy} {
		c.procs[n] = &fakeProc{running: true, pid: 100}
		if n != proxy {
			c.disks[n] = &fakeDisk{free: 1 << 30}
			c.shard[n] = -1
		}
	}
	return c
}

func (c *fakeCluster) Shards() int           { return c.shards }
func (c *fakeCluster) Nodes() []string       { return []string{"n1", "n2", "n3"} }
func (c *fakeCluster) Proc(name string) Proc { return c.procs[name] }
func (c *fakeCluster) Net() Network          { return c }
func (c *fakeCluster) Disk(node string) Disk { return c.disks[node] }
func (c *fakeCluster) Healthy(_ context.Context, name string) bool {
	p := c.procs[name]
	return p.Running() && !p.Stopped()
}

func (c *fakeCluster) Restart(_ context.Context, name string) error {
	p := c.procs[name]
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running, p.stopped = true, false
	p.pid++
	return nil
}

func (c *fakeCluster) Members(context.Context) ([]ShardMembers, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ShardMembers, c.shards)
	for i := range out {
		out[i].Shard = i
		for _, n := range c.Nodes() {
			if c.gone[n] {
				continue
			}
			if out[i].Leader == "" {
				out[i].Leader = n
			}
			out[i].Replicas = append(out[i].Replicas, Member{Node: n, Voter: true, State: "follower"})
		}
	}
	return out, nil
}

func (c *fakeCluster) Leave(_ context.Context, node string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gone[node] = true
	return nil
}

func (c *fakeCluster) Rejoin(ctx context.Context, node string) error {
	c.mu.Lock()
	delete(c.gone, node)
	c.mu.Unlock()
	return c.Restart(ctx, node)
}

// Backup writes a file whose summary names one point per shard.
func (c *fakeCluster) Backup(_ context.Context, name string) (string, []byte, error) {
	return "/store/" + name, c.backupSummary("/store/" + name), nil
}

func (c *fakeCluster) InspectBackup(_ context.Context, path string) ([]byte, error) {
	return c.backupSummary(path), nil
}

func (c *fakeCluster) backupSummary(path string) []byte {
	var cut []string
	for s := range c.shards {
		cut = append(cut, fmt.Sprintf(`{"shard":%d,"seq":%d,"head":"%064x"}`, s, 10+s, s))
	}
	return []byte(fmt.Sprintf(`{"file":%q,"summary":{"header":{"shards":%d,"epoch":0,"cut":[%s],"in_flight":0},"bytes":100,"content_sha256":"%064x"}}`,
		path, c.shards, strings.Join(cut, ","), 7))
}

// SetFailpoints trips an armed failpoint at once: the node stops.
func (c *fakeCluster) SetFailpoints(node, content string) error {
	if strings.Contains(content, " crash") || strings.Contains(content, " error") {
		return c.procs[node].Kill()
	}
	return nil
}

func (c *fakeCluster) Apply(rules []Rule) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rules = slices.Clone(rules)
	return nil
}

func (c *fakeCluster) CutShard(node string, shard int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shard[node] = shard
	return nil
}

func (c *fakeCluster) Probe(from, to string, _ time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.rules {
		if r.Percent == 0 && (r.From == from && r.To == to || r.From == to && r.To == from) {
			return false
		}
	}
	return true
}

func (c *fakeCluster) BridgeDropped() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(len(c.rules) * 10), nil
}

func (c *fakeCluster) ShardDropped(node string) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shard[node] >= 0 {
		return 5, nil
	}
	return 0, nil
}

// The leader view: every poll while a fault is in force moves the
// leadership on, so that leader-targeted faults see a change.
func (c *fakeCluster) Poll(context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.term++
	c.leader = fmt.Sprintf("n%d", 1+c.term%3)
}

func (c *fakeCluster) Leader(int) (string, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader, c.term
}

func (c *fakeCluster) AllLed() bool                       { return true }
func (c *fakeCluster) Applied(string, int) (uint64, bool) { return 1, true }

type fakeProc struct {
	mu               sync.Mutex
	running, stopped bool
	pid              int
}

func (p *fakeProc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return 0
	}
	return p.pid
}

func (p *fakeProc) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running, p.stopped = false, false
	return nil
}

func (p *fakeProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return errors.New("not running")
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	case syscall.SIGTERM:
		p.running, p.stopped = false, false
	}
	return nil
}

func (p *fakeProc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}

func (p *fakeProc) Stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

func (p *fakeProc) WaitExit(time.Duration) bool { return !p.Running() }
func (p *fakeProc) ExpectDeath(bool)            {}

type fakeDisk struct {
	mu   sync.Mutex
	free int64
}

func (d *fakeDisk) Fill() (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.free = 0
	return 0, nil
}

func (d *fakeDisk) Drain() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.free = 1 << 30
	return nil
}

func (d *fakeDisk) Free() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.free
}
