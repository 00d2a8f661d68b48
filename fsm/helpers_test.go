package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"tally/ledger"
)

// t0 is the log time of the first generated entry.
const t0 = ledger.Time(1_700_000_000 * int64(time.Second))

// gen builds a seeded, realistic stream of Raft entries for one shard:
// accounts in two currencies (some allowed to go negative), deposits from
// @world, transfers that overdraw, pending transfers that are posted,
// voided or left to expire while the log time advances, retries with the
// same or changed fields, linked chains, closed accounts and node
// directory changes. The FSM decides every outcome; gen only remembers
// what it sent so that it can refer back to it. Every other entry of each
// kind is in the form written before the envelope, as a Raft log that
// spans an upgrade holds them.
type gen struct {
	r     *rand.Rand
	now   ledger.Time
	accts []ledger.Account
	sent  []ledger.Transfer
	pends []ledger.Transfer
	n     int
	bare  [2]bool // the next ledger, node entry is bare
}

func newGen(seed int64) *gen {
	return &gen{r: rand.New(rand.NewSource(seed)), now: t0}
}

// data returns the next n entries' data.
func (g *gen) data(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = g.next()
	}
	return out
}

func (g *gen) next() []byte {
	if g.r.Intn(4) == 0 {
		g.now += ledger.Time(g.r.Int63n(int64(8 * time.Second)))
	} else {
		g.now += ledger.Time(g.r.Int63n(int64(200 * time.Millisecond)))
	}
	if len(g.accts) > 0 && g.r.Intn(40) == 0 {
		id := fmt.Sprintf("node-%d", g.r.Intn(3))
		addr := ""
		if g.r.Intn(3) != 0 {
			addr = fmt.Sprintf("10.0.0.%d:8080", g.r.Intn(250))
		}
		g.bare[1] = !g.bare[1]
		if g.bare[1] {
			return bareNodeEntry(id, addr)
		}
		return EncodeNode(id, addr)
	}
	e := ledger.Entry{Time: g.now}
	if len(g.accts) == 0 || g.r.Intn(25) == 0 {
		e.Commands = append(e.Commands, g.open())
	}
	for n := 1 + g.r.Intn(3); n > 0; n-- {
		if g.r.Intn(80) == 0 {
			e.Commands = append(e.Commands, ledger.Command{Kind: ledger.CmdCloseAccount, AccountID: g.acct().ID})
			continue
		}
		e.Commands = append(e.Commands, g.transfers())
	}
	g.bare[0] = !g.bare[0]
	if g.bare[0] {
		return bareV1(e)
	}
	return enveloped(&e)
}

// enveloped is a ledger entry in the envelope, of the version e says (0:
// the current one).
func enveloped(e *ledger.Entry) []byte { return e.Encode(AppendHeader(nil, KindLedger)) }

// bareV1 is a ledger entry as leaders proposed it before the envelope and
// the binary event encoding: bare, of codec version 1, its events hashed
// and stored as JSON.
func bareV1(e ledger.Entry) []byte {
	e.Version = 1
	return e.Encode(nil)
}

// bareNodeEntry is a node directory entry as EncodeNode wrote it before the
// envelope: a 0xD1 byte, then the payload.
func bareNodeEntry(id, addr string) []byte { return appendNode([]byte{0xD1}, id, addr) }

// decodeLedger decodes data as a ledger entry in either form.
func decodeLedger(data []byte) (ledger.Entry, error) {
	k, p, err := decodeEnvelope(data)
	if err != nil {
		return ledger.Entry{}, err
	}
	if k.code != KindLedger {
		return ledger.Entry{}, fmt.Errorf("a %s entry", k.name)
	}
	return ledger.DecodeEntry(p)
}

func (g *gen) id(prefix string) string {
	g.n++
	return prefix + strconv.Itoa(g.n)
}

func (g *gen) open() ledger.Command {
	c := ledger.Command{Kind: ledger.CmdOpenAccounts}
	for n := 2 + g.r.Intn(3); n > 0; n-- {
		if len(g.accts) > 0 && g.r.Intn(6) == 0 {
			// A retry of an earlier open, as it was or with changed flags.
			a := g.accts[g.r.Intn(len(g.accts))]
			if g.r.Intn(2) == 0 {
				a.AllowNegative = !a.AllowNegative
			}
			c.Accounts = append(c.Accounts, a)
			continue
		}
		a := ledger.Account{ID: g.id("acct-"), Currency: []string{"USD", "USD", "EUR"}[g.r.Intn(3)],
			AllowNegative: g.r.Intn(5) == 0}
		if g.r.Intn(4) == 0 {
			a.Metadata = map[string]string{"owner": a.ID, "tier": strconv.Itoa(g.r.Intn(3))}
		}
		g.accts = append(g.accts, a)
		c.Accounts = append(c.Accounts, a)
	}
	return c
}

func (g *gen) acct() ledger.Account { return g.accts[g.r.Intn(len(g.accts))] }

func (g *gen) transfers() ledger.Command {
	c := ledger.Command{Kind: ledger.CmdTransfers}
	for n := 1 + g.r.Intn(8); n > 0; n-- {
		if g.r.Intn(20) == 0 {
			// A linked chain; the last member closes it.
			k := 2 + g.r.Intn(2)
			for i := 0; i < k; i++ {
				t := g.plain(g.acct().ID, g.acct().ID, 1+g.r.Int63n(3000))
				t.Linked = i < k-1
				c.Transfers = append(c.Transfers, t)
			}
			continue
		}
		c.Transfers = append(c.Transfers, g.transfer())
	}
	return c
}

func (g *gen) plain(debit, credit string, amount int64) ledger.Transfer {
	t := ledger.Transfer{ID: g.id("t-"), Debit: debit, Credit: credit, Amount: amount}
	if g.r.Intn(6) == 0 {
		t.Reference = "invoice " + t.ID
	}
	if g.r.Intn(10) == 0 {
		t.Metadata = map[string]string{"k": t.ID}
	}
	g.sent = append(g.sent, t)
	return t
}

func (g *gen) transfer() ledger.Transfer {
	switch p := g.r.Intn(100); {
	case p < 20:
		return g.plain(ledger.World, g.acct().ID, 100+g.r.Int63n(10_000))
	case p < 25:
		return g.plain(g.acct().ID, ledger.World, 1+g.r.Int63n(2000))
	case p < 50:
		return g.plain(g.acct().ID, g.acct().ID, 1+g.r.Int63n(5000))
	case p < 65:
		t := g.plain(g.acct().ID, g.acct().ID, 1+g.r.Int63n(3000))
		t.Pending = true
		if g.r.Intn(4) != 0 {
			t.TimeoutSeconds = 1 + g.r.Int63n(5)
		}
		g.sent[len(g.sent)-1] = t
		g.pends = append(g.pends, t)
		return t
	case p < 82 && len(g.pends) > 0:
		pt := g.pends[g.r.Intn(len(g.pends))]
		t := g.plain(pt.Debit, pt.Credit, 0)
		switch g.r.Intn(3) {
		case 0:
			t.VoidPendingID = pt.ID
		case 1:
			t.PostPendingID = pt.ID
		default:
			t.PostPendingID, t.Amount = pt.ID, 1+g.r.Int63n(pt.Amount)
		}
		g.sent[len(g.sent)-1] = t
		return t
	case p < 95 && len(g.sent) > 0:
		// A client retry: the same request, or the same id with a change.
		t := g.sent[g.r.Intn(len(g.sent))]
		t.Linked = false
		if g.r.Intn(3) == 0 {
			t.Amount++
		}
		return t
	default:
		return g.plain(g.acct().ID, g.acct().ID, 1+g.r.Int63n(50_000))
	}
}

// logsOf wraps entry data as Raft command entries from index first on.
func logsOf(first uint64, data [][]byte) []*raft.Log {
	out := make([]*raft.Log, len(data))
	for i, d := range data {
		out[i] = &raft.Log{Index: first + uint64(i), Term: 1, Type: raft.LogCommand, Data: d}
	}
	return out
}

// entryLog is one Raft command entry carrying e.
func entryLog(index uint64, e ledger.Entry) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: enveloped(&e)}
}

func open(t testing.TB, dir string) *FSM {
	t.Helper()
	f, err := Open(Options{Dir: dir, Shard: 0, Shards: 1})
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// applyIn applies logs in batches of per entries and returns the
// responses of every entry.
func applyIn(f *FSM, logs []*raft.Log, per int) []interface{} {
	var out []interface{}
	for len(logs) > 0 {
		n := min(per, len(logs))
		out = append(out, f.ApplyBatch(logs[:n])...)
		logs = logs[n:]
	}
	return out
}

func status(t testing.TB, f *FSM) Status {
	t.Helper()
	s, err := f.Status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return s
}

func verify(t testing.TB, f *FSM) Report {
	t.Helper()
	rep, err := f.Verify(t.Context())
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

// results returns the per-item results of a response, failing on anything
// but a *Response.
func results(t testing.TB, resp interface{}) [][]ledger.Result {
	t.Helper()
	r, ok := resp.(*Response)
	if !ok {
		t.Fatalf("response %T %v, want *Response", resp, resp)
	}
	return r.Results
}

func sameResponses(t testing.TB, got, want []interface{}) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d responses, want %d", len(got), len(want))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("response %d differs:\n got %s\nwant %s", i, show(got[i]), show(want[i]))
		}
	}
}

func show(v interface{}) string {
	if r, ok := v.(*Response); ok && r != nil {
		return fmt.Sprintf("%+v", *r)
	}
	return fmt.Sprintf("%#v", v)
}

// memSink is a raft.SnapshotSink over a buffer.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
	failAfter         int // fail writes after this many bytes; 0: never
}

func (s *memSink) ID() string { return "mem" }

func (s *memSink) Write(p []byte) (int, error) {
	if s.failAfter > 0 && s.Len()+len(p) > s.failAfter {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}

func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

// snapshotOf returns the full snapshot stream of f's state now: what a
// follower receives.
func snapshotOf(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	defer snap.Release()
	var b bytes.Buffer
	if err := snap.(*snapshot).write(&b); err != nil {
		t.Fatalf("write snapshot: %v", err)
	}
	return b.Bytes()
}

// markerOf takes and persists a snapshot of f: a marker.
func markerOf(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatalf("persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed %v cancelled %v after a good persist", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// current reads the CURRENT file of an FSM directory.
func currentOf(t testing.TB, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "CURRENT"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// stateDirs lists the state-N directories of an FSM directory.
func stateDirs(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "state-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// withBadger opens the live state directory of a closed FSM with Badger
// and runs fn in a read-write transaction.
func withBadger(t testing.TB, dir string, fn func(txn *badger.Txn) error) {
	t.Helper()
	db, err := openDB(filepath.Join(dir, currentOf(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		db.Close()
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// codes counts the result codes of responses.
func codes(t testing.TB, resps []interface{}) map[ledger.Code]int {
	t.Helper()
	out := map[ledger.Code]int{}
	for _, r := range resps {
		if r == nil {
			continue
		}
		for _, rs := range results(t, r) {
			for _, x := range rs {
				out[x.Result]++
			}
		}
	}
	return out
}

// allEvents pages through the whole event log.
func allEvents(t testing.TB, f *FSM) []ledger.Event {
	t.Helper()
	var out []ledger.Event
	for {
		after := uint64(0)
		if len(out) > 0 {
			after = out[len(out)-1].Seq
		}
		page, err := f.Events(after, MaxPage)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
	}
}

// fundedSetup is an entry that opens accounts acct-0 to acct-(n-1) and
// funds each from @world, for the benchmarks.
func fundedSetup(n int) ledger.Entry {
	setup := ledger.Entry{Time: t0, Commands: []ledger.Command{{Kind: ledger.CmdOpenAccounts}, {Kind: ledger.CmdTransfers}}}
	for i := range n {
		id := fmt.Sprintf("acct-%d", i)
		setup.Commands[0].Accounts = append(setup.Commands[0].Accounts, ledger.Account{ID: id, Currency: "USD"})
		setup.Commands[1].Transfers = append(setup.Commands[1].Transfers, xfer("fund-"+id, ledger.World, id, 1<<40))
	}
	return setup
}

// randomPair is transfer t-k of 1 to 100 between two distinct accounts of
// fundedSetup(n).
func randomPair(r *rand.Rand, k, n int) ledger.Transfer {
	d, o := r.Intn(n), 1+r.Intn(n-1)
	return xfer(fmt.Sprintf("t-%d", k), fmt.Sprintf("acct-%d", d), fmt.Sprintf("acct-%d", (d+o)%n), 1+r.Int63n(100))
}
