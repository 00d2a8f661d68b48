package ledger

import (
	"fmt"
	"math/rand"
	"testing"
)

// benchEntry is one Raft entry as the batcher builds it under load: one
// command of n transfers between random accounts of a pool.
func benchEntry(r *rand.Rand, n, accounts, first int) Entry {
	c := Command{Kind: CmdTransfers, Transfers: make([]Transfer, n)}
	for i := range c.Transfers {
		d, k := r.Intn(accounts), 1+r.Intn(accounts-1)
		c.Transfers[i] = Transfer{ID: fmt.Sprintf("bench-1f3a9c-t%d", first+i),
			Debit: fmt.Sprintf("acct-%d", d), Credit: fmt.Sprintf("acct-%d", (d+k)%accounts), Amount: 1 + r.Int63n(100)}
	}
	return Entry{Time: 1_700_000_000_000_000_000, Commands: []Command{c}}
}

// BenchmarkEntryCodec encodes and decodes an entry of 1,000 transfers,
// the command encoding every replica decodes once per entry.
func BenchmarkEntryCodec(b *testing.B) {
	e := benchEntry(rand.New(rand.NewSource(1)), 1000, 1000, 0)
	buf := e.Encode(nil)
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for range b.N {
			buf = e.Encode(buf[:0])
		}
		b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "transfers/s")
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for range b.N {
			if _, err := DecodeEntry(buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "transfers/s")
	})
}

// BenchmarkExecute runs transfers against the in-memory balances (the
// balance cache the FSM keeps so that apply never reads a balance from
// disk), with 1,000 accounts and with 10 hot ones, sealing every event;
// no storage is involved.
func BenchmarkExecute(b *testing.B) {
	for _, accounts := range []int{1000, 10} {
		b.Run(fmt.Sprintf("accounts=%d", accounts), func(b *testing.B) {
			st := NewState(0, 1, nil)
			st.Begin(1, 1_700_000_000_000_000_000)
			open := Command{Kind: CmdOpenAccounts}
			fund := Command{Kind: CmdTransfers}
			for i := range accounts {
				id := fmt.Sprintf("acct-%d", i)
				open.Accounts = append(open.Accounts, Account{ID: id, Currency: "USD"})
				fund.Transfers = append(fund.Transfers, Transfer{ID: "fund-" + id, Debit: World, Credit: id, Amount: 1 << 40})
			}
			st.Execute(&open)
			st.Execute(&fund)
			st.Flush()
			r := rand.New(rand.NewSource(1))
			next := 0
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				e := benchEntry(r, 1000, accounts, next)
				next += 1000
				b.StartTimer()
				st.Begin(uint64(i+2), e.Time+Time(i))
				if res := st.Execute(&e.Commands[0]); res[999].Result != OK {
					b.Fatalf("transfer %s: %s", res[999].ID, res[999].Result)
				}
				st.Flush()
			}
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "transfers/s")
		})
	}
}
