package edge

import (
	"fmt"

	"tally/api/wire"
	"tally/ledger"
)

// The checks of a batch's items, in the order a node and the proxy both
// run them, so that a batch with several faults gets the same answer from
// either: every item's own checks, then the chains, then (once the shard
// count is known) the shards of each chain.

// CheckTransfers checks every transfer of a batch, then its linked chains.
func CheckTransfers(ts []ledger.Transfer) *Error {
	for i := range ts {
		if p := ledger.CheckTransfer(&ts[i]); p != nil {
			return ItemError("transfers", i, p)
		}
	}
	if p := ledger.CheckChains(ts); p != nil {
		return ItemError("transfers", len(ts)-1, p)
	}
	return nil
}

// CheckChainShards refuses a linked chain whose members live on different
// shards (shards[i] is transfer i's): no shard could apply it all or
// nothing. The error names the first member off the chain's shard.
func CheckChainShards(ts []ledger.Transfer, shards []int) *Error {
	for i := 0; i+1 < len(ts); i++ {
		if ts[i].Linked && shards[i+1] != shards[i] {
			return ItemError("transfers", i+1, &ledger.Problem{Code: ledger.CrossShardNotSupported, Msg: fmt.Sprintf(
				"transfer %s is linked to %s but lives on shard %d, not %d: a linked chain must stay on one shard; place its accounts together with a {tag}",
				ts[i+1].ID, ts[i].ID, shards[i+1], shards[i])})
		}
	}
	return nil
}

// AccountOf is the account that a client's item asks to open.
func AccountOf(a *wire.AccountIn) ledger.Account {
	return ledger.Account{ID: a.ID, Currency: a.Currency, AllowNegative: a.AllowNegative, Metadata: a.Metadata}
}

// Accounts checks every account of a batch and returns them as the
// ledger opens them.
func Accounts(as []wire.AccountIn) ([]ledger.Account, *Error) {
	out := make([]ledger.Account, len(as))
	for i := range as {
		out[i] = AccountOf(&as[i])
		if p := ledger.CheckAccount(&out[i]); p != nil {
			return nil, ItemError("accounts", i, p)
		}
	}
	return out, nil
}

// CheckAccounts checks every account of a batch.
func CheckAccounts(as []wire.AccountIn) *Error {
	_, e := Accounts(as)
	return e
}

// Part is the slice of a batch that one shard owns, as indices into the
// request, in request order.
type Part struct {
	Shard int
	Idx   []int
}

// Split groups the n items of a batch by shard, in order of first
// appearance.
func Split(n int, shardOf func(i int) int) []Part {
	var parts []Part
	pos := map[int]int{}
	for i := 0; i < n; i++ {
		sh := shardOf(i)
		p, ok := pos[sh]
		if !ok {
			p = len(parts)
			pos[sh] = p
			parts = append(parts, Part{Shard: sh})
		}
		parts[p].Idx = append(parts[p].Idx, i)
	}
	return parts
}
