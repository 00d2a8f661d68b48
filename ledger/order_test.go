package ledger

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// The result codes in types.go are listed in the order the checks run.
// This file keeps the two in step. A path is a run of checks that one
// command meets one after the other; for every pair of neighbours it has
// a command that fails both, and the earlier check must answer. So a
// reordering of the checks in the code fails a case here, and a
// reordering of the constants fails TestCodeListFollowsTheChecks, which
// reads the lists from types.go itself.

// step is one check of a path.
type step struct {
	code Code
	// again: the code was placed in the list by an earlier check (or by
	// another command's), so this step does not fix its place.
	again bool
	// both runs a command that fails this check and the previous step's
	// and returns the answer, which must be the previous step's code. The
	// first step of a path has none.
	name string
	both func(t *testing.T) Code
}

type path struct {
	name  string
	list  string // the const block it orders: its first constant
	steps []step
}

// Transfer steps; the fixture of codes_test.go is the usual state.
var (
	stepInvalidID = step{code: InvalidID}
	stepExists    = step{code: Exists, name: "a saga record's key as a transfer id, same fields",
		both: func(t *testing.T) Code { return sagaKeyAsID(t, 5) }}
	stepExistsDiff = step{code: ExistsWithDifferentFields, name: "a saga record's key as a transfer id, other fields",
		both: func(t *testing.T) Code { return sagaKeyAsID(t, 6) }}
	stepLinkedAfterExists = step{code: LinkedEventFailed, name: "a known id after the failing member of a chain",
		both: func(t *testing.T) Code {
			return second(t, fixture(t), linked(xfer("c1", "alice", "ghost", 1)), deposit("d-alice", "alice", 1000))
		}}
	stepLinkedAfterDiff = step{code: LinkedEventFailed, name: "a known id with other fields after the failing member of a chain",
		both: func(t *testing.T) Code {
			return second(t, fixture(t), linked(xfer("c1", "alice", "ghost", 1)), deposit("d-alice", "alice", 999))
		}}
	stepPartyID = step{code: InvalidID, again: true, name: "an invalid debit id after the failing member of a chain",
		both: func(t *testing.T) Code {
			return second(t, fixture(t), linked(xfer("c1", "alice", "ghost", 1)), xfer("c2", "a/b", "bob", 1))
		}}
	stepShape = step{code: InvalidRequest, name: "an invalid debit id and a timeout without pending",
		both: func(t *testing.T) Code { return fixture(t).do(timeout(xfer("t", "a/b", "bob", 1), 5)).Result }}
	stepRefLimit = step{code: LimitExceeded, name: "a timeout without pending and a long reference",
		both: func(t *testing.T) Code {
			return fixture(t).do(withRef(timeout(xfer("t", "alice", "bob", 1), 5), strings.Repeat("r", MaxReferenceLen+1))).Result
		}}
	stepAmount = step{code: AmountInvalid, name: "a long reference and a zero amount",
		both: func(t *testing.T) Code {
			return fixture(t).do(withRef(xfer("t", "alice", "bob", 0), strings.Repeat("r", MaxReferenceLen+1))).Result
		}}
	stepSameAccounts = step{code: AccountsMustBeDifferent, name: "a zero amount between one account",
		both: func(t *testing.T) Code { return fixture(t).do(xfer("t", "alice", "alice", 0)).Result }}
	stepWrongShard = step{code: WrongShard, name: "one account of another shard on both sides",
		both: func(t *testing.T) Code { s := newSpread(t); return s.h.do(xfer("t", s.far1, s.far1, 1)).Result }}
)

// transferPaths are the paths of a client transfer through Decide.
var transferPaths = []path{
	{name: "known id, then a plain transfer", list: "OK", steps: []step{
		stepInvalidID, stepExists, stepLinkedAfterExists, stepPartyID, stepShape, stepRefLimit, stepAmount,
		stepSameAccounts, stepWrongShard,
		{code: CrossShardNotSupported, name: "a pending transfer from another shard to a third",
			both: func(t *testing.T) Code { s := newSpread(t); return s.h.do(hold("t", s.far1, s.far2, 1, 0)).Result }},
		{code: DebitAccountNotFound, name: "a pending transfer from an unknown account to another shard",
			both: func(t *testing.T) Code { s := newSpread(t); return s.h.do(hold("t", s.ghost, s.far1, 1, 0)).Result }},
		{code: CreditAccountNotFound, name: "both accounts unknown",
			both: func(t *testing.T) Code { return fixture(t).do(xfer("t", "ghost", "ghost2", 1)).Result }},
		{code: AccountClosed, name: "from a closed account to an unknown one",
			both: func(t *testing.T) Code { return fixture(t).do(xfer("t", "shut", "ghost", 1)).Result }},
		{code: CurrencyMismatch, name: "from a closed USD account to an EUR one",
			both: func(t *testing.T) Code { return fixture(t).do(xfer("t", "shut", "carol", 1)).Result }},
		{code: LimitExceeded, again: true, name: "an overflowing credit in another currency",
			both: func(t *testing.T) Code { return fixture(t).do(xfer("t", "dave", "carol", maxAmt)).Result }},
		{code: InsufficientFunds, name: "an overflowing credit beyond the funds",
			both: func(t *testing.T) Code { return fixture(t).do(xfer("t", "bob", "alice", maxAmt)).Result }},
	}},
	{name: "known id with other fields", list: "OK", steps: []step{
		stepInvalidID, stepExistsDiff, stepLinkedAfterDiff, stepPartyID,
	}},
	{name: "post or void", list: "OK", steps: []step{
		stepSameAccounts, stepWrongShard,
		{code: PendingNotFound, name: "a post from another shard of an unknown pending id",
			both: func(t *testing.T) Code { s := newSpread(t); return s.h.do(post("t", "nope", s.far1, s.a, 0)).Result }},
		{code: PendingAlreadyResolved, name: "a post of a posted pending transfer naming other accounts",
			both: func(t *testing.T) Code { return fixture(t).do(post("t", "p-post", "alice", "dave", 0)).Result }},
		{code: AmountInvalid, again: true, name: "a second post, of more than was held",
			both: func(t *testing.T) Code { return fixture(t).do(post("t", "p-post", "alice", "bob", 21)).Result }},
		{code: AccountClosed, again: true, name: "a post to a closed account of more than was held",
			both: func(t *testing.T) Code { return fixture(t).do(post("t", "p-shut", "erin", "shut", 6)).Result }},
	}},
	{name: "post or void of an expired pending transfer", list: "OK", steps: []step{
		{code: PendingNotFound},
		{code: PendingExpired, name: "a post of an expired pending transfer naming other accounts",
			both: func(t *testing.T) Code { return fixture(t).do(post("t", "p-exp", "alice", "dave", 0)).Result }},
		{code: AmountInvalid, again: true, name: "a post of an expired pending transfer, of more than was held",
			both: func(t *testing.T) Code { return fixture(t).do(post("t", "p-exp", "alice", "bob", 31)).Result }},
	}},
	{name: "a saga's hold on its source shard", list: "OK", steps: []step{
		{code: AccountClosed},
		{code: LimitExceeded, again: true, name: "an overflowing hold from a closed account",
			both: func(t *testing.T) Code { s := newSpread(t); return s.h.do(xfer("t", s.shut, s.far1, maxAmt)).Result }},
		{code: InsufficientFunds, name: "an overflowing hold beyond the funds",
			both: func(t *testing.T) Code {
				s := newSpread(t)
				s.h.must(xfer("h1", s.a, s.far1, 10))
				return s.h.do(xfer("t", s.a, s.far1, maxAmt)).Result
			}},
	}},
	{name: "a saga's credit on its destination shard", list: "OK", steps: []step{
		{code: AccountClosed},
		{code: CurrencyMismatch, name: "an EUR credit to a closed USD account",
			both: func(t *testing.T) Code {
				p := newSagaPair(t)
				if r := p.d.close(p.b); r.Result != OK {
					t.Fatalf("close: %+v", r)
				}
				return p.step(p.d, CmdSagaCredit, SagaStep{Source: p.si, Transfer: xfer("x", p.a, p.b, 5), Currency: "EUR"}).Result
			}},
		{code: LimitExceeded, again: true, name: "an overflowing EUR credit to a USD account",
			both: func(t *testing.T) Code {
				p := newSagaPair(t)
				p.d.must(deposit("db", p.b, 1))
				return p.step(p.d, CmdSagaCredit, SagaStep{Source: p.si, Transfer: xfer("x", p.a, p.b, maxAmt), Currency: "EUR"}).Result
			}},
	}},
}

// accountPaths are the paths of account commands.
var accountPaths = []path{
	{name: "open", list: "CurrencyInvalid", steps: []step{
		{code: InvalidID, again: true},
		{code: CurrencyInvalid, name: "an invalid id and currency",
			both: func(t *testing.T) Code { return openOne(t, fixture(t), Account{ID: "a/b", Currency: "usd"}) }},
		{code: MetadataInvalid, name: "an invalid currency and metadata",
			both: func(t *testing.T) Code {
				return openOne(t, fixture(t), Account{ID: "x", Currency: "usd", Metadata: bigMeta()})
			}},
		{code: InvalidRequest, again: true, name: "invalid metadata and a balance set",
			both: func(t *testing.T) Code {
				return openOne(t, fixture(t), Account{ID: "x", Currency: "USD", Metadata: bigMeta(), CreditsPosted: 1})
			}},
		{code: WrongShard, again: true, name: "closed set by the request, for another shard's account",
			both: func(t *testing.T) Code {
				s := newSpread(t)
				return openOne(t, s.h, Account{ID: s.far1, Currency: "USD", Closed: true})
			}},
	}},
	{name: "open of a known id", list: "CurrencyInvalid", steps: []step{
		{code: InvalidRequest, again: true},
		{code: Exists, again: true, name: "a known account, closed by the request",
			both: func(t *testing.T) Code {
				return openOne(t, fixture(t), Account{ID: "alice", Currency: "USD", Closed: true})
			}},
	}},
	{name: "close", list: "CurrencyInvalid", steps: []step{
		{code: InvalidID, again: true},
		{code: AccountNotFound, name: "a reserved id",
			both: func(t *testing.T) Code { return fixture(t).close(World).Result }},
	}},
}

func TestChecksRunInListedOrder(t *testing.T) {
	for _, p := range append(append([]path(nil), transferPaths...), accountPaths...) {
		for i := 1; i < len(p.steps); i++ {
			prev, s := p.steps[i-1], p.steps[i]
			t.Run(p.name+"/"+s.name, func(t *testing.T) {
				if got := s.both(t); got != prev.code {
					t.Fatalf("%s fails %s and %s: answered %s, want %s (the earlier check)",
						s.name, prev.code, s.code, got, prev.code)
				}
			})
		}
	}
}

// TestCodeListFollowsTheChecks reads the const blocks of types.go and
// checks that each path's steps, those that place a code, come in the
// order of its list, and that every code of a list is placed by a step.
func TestCodeListFollowsTheChecks(t *testing.T) {
	lists := codeLists(t)
	placed := map[string]map[Code]bool{}
	for _, p := range append(append([]path(nil), transferPaths...), accountPaths...) {
		list, ok := lists[p.list]
		if !ok {
			t.Fatalf("path %q: types.go has no const block of codes starting with %s", p.name, p.list)
		}
		pos := map[Code]int{}
		for i, c := range list {
			pos[c] = i
		}
		if placed[p.list] == nil {
			placed[p.list] = map[Code]bool{}
		}
		last, lastCode := -1, Code("")
		for _, s := range p.steps {
			if s.again {
				continue
			}
			i, ok := pos[s.code]
			switch {
			case !ok:
				t.Errorf("path %q: %s is checked here but is not in the list starting with %s", p.name, s.code, p.list)
			case i < last:
				t.Errorf("path %q: %s is checked after %s but listed before it", p.name, s.code, lastCode)
			default:
				last, lastCode = i, s.code
			}
			placed[p.list][s.code] = true
		}
	}
	for name, list := range lists {
		if placed[name] == nil {
			continue
		}
		for _, c := range list {
			if c != OK && !placed[name][c] {
				t.Errorf("%s is listed (block starting with %s) but no path checks it: add a step", c, name)
			}
		}
	}
	if l := lists["OK"]; len(l) == 0 || l[0] != OK {
		t.Errorf("the transfer codes must start with ok: %v", l)
	}
}

// codeLists returns the values of each const block of Code in types.go,
// in declaration order, by the name of the block's first constant.
func codeLists(t *testing.T) map[string][]Code {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "types.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]Code{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		var first string
		var codes []Code
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "Code" || len(v.Values) != 1 {
				continue
			}
			lit, ok := v.Values[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Fatalf("code %s is not a string literal", v.Names[0].Name)
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			if first == "" {
				first = v.Names[0].Name
			}
			codes = append(codes, Code(s))
		}
		if first != "" {
			out[first] = codes
		}
	}
	return out
}

// spread is shard 0 of 3 with a funded account, a closed one that has
// debits, an id of this shard that was never opened, and ids of the other
// two shards.
type spread struct {
	h                          *harness
	a, shut, ghost, far1, far2 string
}

func newSpread(t *testing.T) *spread {
	t.Helper()
	s := &spread{h: newHarness(t, 0, 3)}
	s.a, s.shut, s.ghost = idOnShard(t, "a", 0, 3), idOnShard(t, "s", 0, 3), idOnShard(t, "g", 0, 3)
	s.far1, s.far2 = idOnShard(t, "f", 1, 3), idOnShard(t, "f", 2, 3)
	s.h.open(s.a, "USD", false)
	s.h.open(s.shut, "USD", true)
	s.h.must(deposit("d-a", s.a, 100), withdraw("w-shut", s.shut, 1))
	if r := s.h.close(s.shut); r.Result != OK {
		t.Fatalf("close %s: %+v", s.shut, r)
	}
	return s
}

// sagaKeyAsID records a saga credit on its destination shard, then sends
// that shard a transfer whose id is the record's key (invalid: it starts
// with @) and whose amount is amount: the lookup would find the record.
func sagaKeyAsID(t *testing.T, amount int64) Code {
	t.Helper()
	p := newSagaPair(t)
	if r := p.credit(xfer("x1", p.a, p.b, 5)); r.Result != OK {
		t.Fatalf("credit: %+v", r)
	}
	return p.d.do(xfer(SagaKey(p.si, "x1"), p.a, p.b, amount)).Result
}

// second runs a batch and returns the answer to its second transfer.
func second(t *testing.T, h *harness, ts ...Transfer) Code {
	t.Helper()
	res, _ := h.transfers(ts...)
	return res[1].Result
}

func openOne(t *testing.T, h *harness, a Account) Code {
	t.Helper()
	return h.exec(&Command{Kind: CmdOpenAccounts, Accounts: []Account{a}})[0].Result
}

func timeout(t Transfer, s int64) Transfer { t.TimeoutSeconds = s; return t }

func bigMeta() map[string]string {
	m := map[string]string{}
	for i := 0; i <= MaxMetaKeys; i++ {
		m["k"+strconv.Itoa(i)] = "v"
	}
	return m
}
