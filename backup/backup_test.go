package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"tally/ledger"
)

// shardLog returns n stored events of shard sh of shards: accounts
// opened, then transfers among them.
func shardLog(t *testing.T, sh, shards, n int) [][]byte {
	t.Helper()
	st := ledger.NewState(sh, shards, nil)
	var out [][]byte
	for i := 0; len(out) < n; i++ {
		st.Begin(uint64(i+1), ledger.Time(time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC).UnixNano()))
		var cmd ledger.Command
		if i == 0 {
			cmd = ledger.Command{Kind: ledger.CmdOpenAccounts, Accounts: []ledger.Account{
				{ID: tagged("a", sh, shards), Currency: "USD", AllowNegative: true},
				{ID: tagged("b", sh, shards), Currency: "USD"}}}
		} else {
			cmd = ledger.Command{Kind: ledger.CmdTransfers, Transfers: []ledger.Transfer{{ID: fmt.Sprintf("t%d", i),
				Debit: tagged("a", sh, shards), Credit: tagged("b", sh, shards), Amount: 5}}}
		}
		st.Execute(&cmd)
		for _, e := range st.Flush().Events {
			out = append(out, e.Raw)
		}
	}
	return out[:n]
}

func tagged(name string, sh, shards int) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s{%d}", name, i)
		if ledger.ShardOf(id, shards) == sh {
			return id
		}
	}
}

// file writes a backup of logs.
func file(t *testing.T, logs [][][]byte) ([]byte, Summary) {
	t.Helper()
	h := Header{Shards: len(logs), Epoch: 2, Created: time.Now().UTC()}
	for i, l := range logs {
		p := Point{Shard: i, Seq: uint64(len(l))}
		if len(l) > 0 {
			var e ledger.Event
			if err := ledger.DecodeEvent(l[len(l)-1], &e); err != nil {
				t.Fatal(err)
			}
			p.Head = e.Hash
		}
		h.Cut = append(h.Cut, p)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		for _, raw := range l {
			if err := w.Event(raw); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.EndShard(); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), sum
}

func TestFormatRoundTrip(t *testing.T) {
	logs := [][][]byte{shardLog(t, 0, 3, 40), shardLog(t, 1, 3, 0), shardLog(t, 2, 3, 7)}
	b, wrote := file(t, logs)
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var got [3][][]byte
	for {
		sh, raw, _, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[sh] = append(got[sh], raw)
	}
	for i := range logs {
		if len(got[i]) != len(logs[i]) {
			t.Fatalf("shard %d: %d events back, %d written", i, len(got[i]), len(logs[i]))
		}
		for j := range logs[i] {
			if !bytes.Equal(got[i][j], logs[i][j]) {
				t.Fatalf("shard %d event %d differs", i, j+1)
			}
		}
	}
	read := r.Summary()
	if read.Checksum != wrote.Checksum || read.Content != wrote.Content || read.Bytes != int64(len(b)) || read.Bytes != wrote.Bytes {
		t.Fatalf("summary read %+v, written %+v (%d bytes)", read, wrote, len(b))
	}
	for i, st := range read.Shards {
		if st != wrote.Shards[i] || st.Events != uint64(len(logs[i])) {
			t.Fatalf("shard %d: read %+v, written %+v", i, st, wrote.Shards[i])
		}
	}
	// The same events in another file (another epoch and time): the same
	// content, another checksum.
	h := read.Header
	h.Epoch, h.Created = 3, h.Created.Add(time.Hour)
	var again bytes.Buffer
	w, _ := NewWriter(&again, h)
	for _, l := range logs {
		for _, raw := range l {
			w.Event(raw)
		}
		w.EndShard()
	}
	sum2, err := w.Close()
	if err != nil || sum2.Content != wrote.Content || sum2.Checksum == wrote.Checksum {
		t.Fatalf("rewritten: content %s checksum %s (%v); first %s %s", sum2.Content, sum2.Checksum, err, wrote.Content, wrote.Checksum)
	}
}

func TestFormatRefusesDamage(t *testing.T) {
	logs := [][][]byte{shardLog(t, 0, 2, 20), shardLog(t, 1, 2, 20)}
	b, _ := file(t, logs)
	check := func(name string, data []byte) {
		t.Helper()
		_, err := Check(bytes.NewReader(data))
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: Check = %v, want ErrCorrupt", name, err)
		}
	}
	for _, n := range []int{0, 3, len(Magic) + 2, len(b) / 3, len(b) / 2, len(b) - 33, len(b) - 32, len(b) - 1} {
		check(fmt.Sprintf("truncated to %d of %d bytes", n, len(b)), b[:n])
	}
	check("a byte more", append(append([]byte(nil), b...), 0))
	// Every byte flipped in turn, one bit each: header, lengths, events,
	// end markers and trailer are all covered by some check.
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 1 << (i % 8)
		check(fmt.Sprintf("bit %d of byte %d flipped", i%8, i), c)
	}
	if _, err := Check(bytes.NewReader(b)); err != nil {
		t.Fatalf("the intact file: %v", err)
	}
}

func TestWriterRefusesWrongCounts(t *testing.T) {
	logs := [][][]byte{shardLog(t, 0, 1, 3)}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Shards: 1, Cut: []Point{{Shard: 0, Seq: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range logs[0] {
		w.Event(raw)
	}
	if err := w.EndShard(); err == nil {
		t.Fatal("EndShard after 3 of 4 events succeeded")
	}
	if _, err := w.Close(); err == nil {
		t.Fatal("Close with a shard not ended succeeded")
	}
	if _, err := NewWriter(&buf, Header{Shards: 2, Cut: []Point{{Shard: 0}}}); err == nil {
		t.Fatal("a header whose cut misses a shard was taken")
	}
}
