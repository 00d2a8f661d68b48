package ledger

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestOpenAccounts(t *testing.T) {
	meta := func(n, size int) map[string]string {
		m := map[string]string{}
		for i := 0; i < n; i++ {
			m["k"+strconv.Itoa(i)] = strings.Repeat("v", size)
		}
		return m
	}
	for _, tc := range []struct {
		name string
		acc  Account
		code Code
	}{
		{"new", Account{ID: "carol", Currency: "USD"}, OK},
		{"new with metadata", Account{ID: "carol", Currency: "USD", Metadata: meta(MaxMetaKeys, 10)}, OK},
		{"new with braces", Account{ID: "carol{eu}", Currency: "POINTS"}, OK},
		{"same again", Account{ID: "alice", Currency: "USD", Metadata: map[string]string{"kyc": "ok"}}, Exists},
		{"other currency", Account{ID: "alice", Currency: "EUR", Metadata: map[string]string{"kyc": "ok"}}, ExistsWithDifferentFields},
		{"other flags", Account{ID: "alice", Currency: "USD", AllowNegative: true, Metadata: map[string]string{"kyc": "ok"}}, ExistsWithDifferentFields},
		{"other metadata", Account{ID: "alice", Currency: "USD"}, ExistsWithDifferentFields},
		{"empty id", Account{ID: "", Currency: "USD"}, InvalidID},
		{"reserved id", Account{ID: "@world", Currency: "USD"}, InvalidID},
		{"reserved clearing id", Account{ID: "@clearing:1", Currency: "USD"}, InvalidID},
		{"id with a slash", Account{ID: "a/b", Currency: "USD"}, InvalidID},
		{"id too long", Account{ID: strings.Repeat("a", 65), Currency: "USD"}, InvalidID},
		{"lowercase currency", Account{ID: "carol", Currency: "usd"}, CurrencyInvalid},
		{"empty currency", Account{ID: "carol", Currency: ""}, CurrencyInvalid},
		{"currency too long", Account{ID: "carol", Currency: "ABCDEFGHIJKLM"}, CurrencyInvalid},
		{"invalid currency before exists", Account{ID: "alice", Currency: "us"}, CurrencyInvalid},
		{"too many metadata keys", Account{ID: "carol", Currency: "USD", Metadata: meta(MaxMetaKeys+1, 1)}, MetadataInvalid},
		{"metadata too large", Account{ID: "carol", Currency: "USD", Metadata: meta(2, 600)}, MetadataInvalid},
		{"empty metadata key", Account{ID: "carol", Currency: "USD", Metadata: map[string]string{"": "x"}}, MetadataInvalid},
		{"balances set", Account{ID: "carol", Currency: "USD", CreditsPosted: 100}, InvalidRequest},
		{"closed set", Account{ID: "carol", Currency: "USD", Closed: true}, InvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 0, 1)
			res := h.exec(&Command{Kind: CmdOpenAccounts, Accounts: []Account{{ID: "alice", Currency: "USD", Metadata: map[string]string{"kyc": "ok"}}}})
			if res[0].Result != OK || res[0].Seq != 1 {
				t.Fatalf("open alice: %+v", res[0])
			}
			h.advance(time.Second)
			seq := h.st.Seq
			res = h.exec(&Command{Kind: CmdOpenAccounts, Accounts: []Account{tc.acc}})
			r := res[0]
			if r.Result != tc.code || r.ID != tc.acc.ID {
				t.Fatalf("got %+v, want %s", r, tc.code)
			}
			switch tc.code {
			case OK:
				a := h.acc(tc.acc.ID, tc.acc.Currency)
				if r.Seq != seq+1 || h.st.Seq != seq+1 || a.CreatedSeq != r.Seq || a.CreatedAt != int64(h.now) ||
					a.Currency != tc.acc.Currency || !sameMeta(a.Metadata, tc.acc.Metadata) || balOf(a) != (bal{}) || a.Closed {
					t.Fatalf("opened %+v, result %+v", a, r)
				}
				ev := h.st.events[len(h.st.events)-1]
				if ev.Type != AccountOpened || ev.Data.Account.ID != tc.acc.ID || len(ev.Balances) != 1 {
					t.Fatalf("event %+v", ev)
				}
			case Exists:
				if r.Seq != 1 || h.st.Seq != seq {
					t.Fatalf("exists: %+v, seq %d", r, h.st.Seq)
				}
			default:
				if h.st.Seq != seq {
					t.Fatalf("%s emitted an event", tc.code)
				}
			}
		})
	}
}

func TestOpenAccountsBatch(t *testing.T) {
	h := newHarness(t, 0, 1)
	res := h.exec(&Command{Kind: CmdOpenAccounts, Accounts: []Account{
		{ID: "a", Currency: "USD"}, {ID: "b", Currency: "EUR"}, {ID: "a", Currency: "USD"}, {ID: "a", Currency: "EUR"}, {ID: "", Currency: "USD"}}})
	if codes(res) != "ok ok exists exists_with_different_fields invalid_id" || res[2].Seq != res[0].Seq || h.st.Seq != 2 {
		t.Fatalf("batch: %s %+v", codes(res), res)
	}
}

func TestCloseAccount(t *testing.T) {
	h := newHarness(t, 0, 1)
	h.open("a", "USD", false)
	h.open("b", "USD", false)
	h.must(deposit("d", "a", 10))
	for _, tc := range []struct {
		id   string
		code Code
	}{
		{"ghost", AccountNotFound},
		{"", InvalidID},
		{World, InvalidID},
		{"@world/USD", InvalidID},
		{"a", OK},
		{"a", AccountClosed},
	} {
		seq := h.st.Seq
		r := h.close(tc.id)
		if r.Result != tc.code {
			t.Fatalf("close %q: %s, want %s", tc.id, r.Result, tc.code)
		}
		if (tc.code == OK) != (h.st.Seq == seq+1) || (tc.code == OK && r.Seq != h.st.Seq) {
			t.Fatalf("close %q: seq %d -> %d, result %+v", tc.id, seq, h.st.Seq, r)
		}
	}
	if a := h.acc("a", "USD"); !a.Closed || balOf(a) != (bal{0, 10, 0, 0}) {
		t.Fatalf("closed account %+v", a)
	}
	// A closed account keeps its money and takes no new transfers.
	for _, tr := range []Transfer{xfer("t1", "a", "b", 1), xfer("t2", "b", "a", 1), withdraw("t3", "a", 1), deposit("t4", "a", 1)} {
		if r := h.do(tr); r.Result != AccountClosed {
			t.Fatalf("%s: %s", tr.ID, r.Result)
		}
	}
}

func TestShards(t *testing.T) {
	const shards = 4
	h := newHarness(t, 2, shards)
	a, b := idOnShard(t, "a", 2, shards), idOnShard(t, "b", 2, shards)
	x, ghost := idOnShard(t, "x", 1, shards), idOnShard(t, "g", 2, shards)

	res := h.exec(&Command{Kind: CmdOpenAccounts, Accounts: []Account{{ID: a, Currency: "USD"}, {ID: b, Currency: "USD"}, {ID: x, Currency: "USD"}}})
	if codes(res) != "ok ok wrong_shard" || h.st.Seq != 2 {
		t.Fatalf("open: %s", codes(res))
	}
	for _, r := range res {
		if r.Shard != 2 {
			t.Fatalf("result names shard %d", r.Shard)
		}
	}
	h.must(deposit("d", a, 100))
	if at := TransferShard(&Transfer{Debit: World, Credit: a}, shards); at != 2 {
		t.Fatalf("a deposit to %s is decided on shard %d", a, at)
	}
	if at := TransferShard(&Transfer{Debit: x, Credit: a}, shards); at != 1 {
		t.Fatalf("a transfer from %s is decided on shard %d", x, at)
	}

	for _, tc := range []struct {
		name   string
		tr     Transfer
		code   Code
		logged bool
	}{
		{"credit on another shard starts a saga", xfer("t1", a, x, 1), OK, true},
		{"a saga checks its debit account", xfer("t2", ghost, x, 1), DebitAccountNotFound, true},
		{"a saga checks funds with holds", xfer("t3", a, x, 1000), InsufficientFunds, true},
		{"a pending transfer stays on one shard", func() Transfer { tr := xfer("t3p", a, x, 1); tr.Pending = true; return tr }(), CrossShardNotSupported, true},
		{"debit on another shard", xfer("t4", x, a, 1), WrongShard, false},
		{"deposit on another shard", deposit("t5", x, 1), WrongShard, false},
		{"withdrawal on another shard", withdraw("t6", x, 1), WrongShard, false},
		{"post on another shard", post("t7", "p", x, a, 0), WrongShard, false},
		{"void on another shard", void("t8", "p", x, a), WrongShard, false},
		{"deposit on this shard", deposit("t9", b, 1), OK, true},
		{"withdrawal on this shard", withdraw("t10", a, 1), OK, true},
		{"both on this shard", xfer("t11", a, b, 1), OK, true},
	} {
		seq := h.st.Seq
		res, evs := h.transfers(tc.tr)
		if res[0].Result != tc.code || res[0].Shard != 2 {
			t.Fatalf("%s: %+v, want %s", tc.name, res[0], tc.code)
		}
		if got := len(evs) == 1 && h.st.Seq == seq+1; got != tc.logged {
			t.Fatalf("%s: logged %v, want %v", tc.name, got, tc.logged)
		}
		if !tc.logged {
			if _, ok := h.st.Record(tc.tr.ID); ok {
				t.Fatalf("%s: a wrong-shard transfer was recorded", tc.name)
			}
			// Not recorded, so the same answer again.
			if r := h.do(tc.tr); r.Result != tc.code {
				t.Fatalf("%s again: %s", tc.name, r.Result)
			}
		}
	}

	// A chain must stay on one shard.
	res, _ = h.transfers(linked(xfer("c1", a, b, 1)), xfer("c2", a, x, 1))
	if codes(res) != "linked_event_failed cross_shard_not_supported" {
		t.Fatalf("chain to another shard: %s", codes(res))
	}
	res, _ = h.transfers(linked(xfer("c3", a, b, 1)), xfer("c4", x, a, 1))
	if codes(res) != "linked_event_failed wrong_shard" {
		t.Fatalf("chain from another shard: %s", codes(res))
	}
	h.wantBal(a, "USD", bal{2, 100, 1, 0}) // t1's saga holds 1
	h.wantBal(b, "USD", bal{0, 2, 0, 0})
}

func TestShardOf(t *testing.T) {
	// Placement must never change: these pin the hash.
	for id, want := range map[string]int{"alice": 3, "bob": 2, "dave": 0, "judy": 1, "erin": 3, "frank": 2} {
		if got := ShardOf(id, 4); got != want {
			t.Errorf("ShardOf(%q, 4) = %d, want %d", id, got, want)
		}
	}
	for _, n := range []int{-1, 0, 1} {
		if got := ShardOf("alice", n); got != 0 {
			t.Errorf("ShardOf(alice, %d) = %d", n, got)
		}
	}
	// The part in braces places the account.
	for _, shards := range []int{2, 3, 4, 8, 16, 100} {
		eu := ShardOf("eu", shards)
		for _, id := range []string{"alice{eu}", "bob{eu}", "{eu}", "x{eu}y", "{eu}{us}"} {
			if got := ShardOf(id, shards); got != eu {
				t.Errorf("ShardOf(%q, %d) = %d, want %d", id, shards, got, eu)
			}
		}
		// Empty or unclosed braces hash the whole id.
		for _, id := range []string{"alice{}", "alice{eu"} {
			if ShardOf(id, shards) != jump(fnv64(id), shards) {
				t.Errorf("ShardOf(%q, %d) does not hash the whole id", id, shards)
			}
		}
	}
	// Every shard is used and the result stays in range; growing the
	// cluster moves only a part of the ids (jump hash).
	counts := make([]int, 8)
	moved := 0
	for i := 0; i < 8000; i++ {
		id := "acct-" + strconv.Itoa(i)
		s := ShardOf(id, 8)
		if s < 0 || s >= 8 {
			t.Fatalf("ShardOf(%q, 8) = %d", id, s)
		}
		counts[s]++
		if ShardOf(id, 9) != s {
			moved++
		}
	}
	for s, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("shard %d holds %d of 8000 ids", s, n)
		}
	}
	if moved < 500 || moved > 1300 {
		t.Errorf("going from 8 to 9 shards moved %d of 8000 ids, want about 890", moved)
	}
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
