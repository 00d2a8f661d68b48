package ledger

import (
	"fmt"
	"testing"
)

// onShard returns the first of base{0}, base{1}, ... that shard of
// shards owns.
func onShard(base string, shard, shards int) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s{%d}", base, i)
		if ShardOf(id, shards) == shard {
			return id
		}
	}
}

// goldenEvents runs a fixed log on shard 0 of 2, beginning each entry
// with begin, and returns its events: every event type and every field
// of Data (metadata, a reference, an expiry, a peer shard, a note, a
// rejection's code) appears.
func goldenEvents(t testing.TB, begin func(st *State, index uint64, at Time)) []Event {
	t.Helper()
	st := NewState(0, 2, nil)
	a, b, c := onShard("a", 0, 2), onShard("b", 0, 2), onShard("c", 0, 2)
	far := onShard("far", 1, 2)
	at := Time(1_700_000_000_123_456_789)
	var out []Event
	step := func(cmds ...Command) {
		begin(st, uint64(len(out)+10), at)
		for i := range cmds {
			st.Execute(&cmds[i])
		}
		out = append(out, st.Flush().Events...)
		at += 1_500_000_001
	}
	step(Command{Kind: CmdOpenAccounts, Accounts: []Account{
		{ID: a, Currency: "USD", Metadata: map[string]string{"owner": "Zoë <z@x>", "tier": "gold"}},
		{ID: b, Currency: "USD", AllowNegative: true},
		{ID: c, Currency: "EUR"},
	}})
	step(Command{Kind: CmdTransfers, Transfers: []Transfer{
		{ID: "t1", Debit: World, Credit: a, Amount: 10_000, Reference: "invoice \"42\"", Metadata: map[string]string{"k": "v", "a": "b"}},
		{ID: "t2", Debit: a, Credit: b, Amount: 300, Pending: true, TimeoutSeconds: 1},
		{ID: "t3", Debit: a, Credit: b, Amount: 200, Pending: true},
		{ID: "t4", Debit: a, Credit: b, Amount: 100, Pending: true},
		{ID: "t5", Debit: a, Credit: c, Amount: 1},
	}})
	step(Command{Kind: CmdTransfers, Transfers: []Transfer{
		{ID: "t6", Debit: a, Credit: b, Amount: 150, PostPendingID: "t3"},
		{ID: "t7", Debit: a, Credit: b, VoidPendingID: "t4"},
		{ID: "t8", Debit: a, Credit: far, Amount: 25},
		{ID: "t9", Debit: a, Credit: far, Amount: 35},
	}})
	step(Command{Kind: CmdSagaResolve, Saga: []SagaStep{{Transfer: Transfer{ID: "t8"}, Outcome: OK, Note: "done by hand"}}},
		Command{Kind: CmdSagaResolve, Saga: []SagaStep{{Transfer: Transfer{ID: "t9"}, Outcome: CreditAccountNotFound}}},
		Command{Kind: CmdSagaCredit, Saga: []SagaStep{{Source: 1, Transfer: Transfer{ID: "s1", Debit: far, Credit: b, Amount: 7}, Currency: "USD"}}},
		Command{Kind: CmdSagaCredit, Saga: []SagaStep{{Source: 1, Transfer: Transfer{ID: "s2", Debit: far, Credit: c, Amount: 7}, Currency: "USD"}}},
		Command{Kind: CmdCloseAccount, AccountID: c})
	return out
}

// goldenJSON is the hash of each event of goldenEvents from entries of
// version 1, whose events are hashed over their JSON: computed by the
// build before the binary encoding existed, so logs of that time keep
// replaying to the hashes they have.
var goldenJSON = []string{
	"31c35c0bead469168cd8b48ca5a3c3411d8005e11fa9fd1072bf270e33c994a8", // 1 AccountOpened
	"8d7d375d7f6b59ae0212614058712ff712177ca3ee37c82ba7333dd884a9cbd5", // 2 AccountOpened
	"17ed2537328548494c2cf13c55be51ee65752218808d8bcdbefbd2570415c269", // 3 AccountOpened
	"849c2ff945aef232fff1dc58c70396e869522a06e36f081d04b6fa4328b17870", // 4 TransferPosted
	"7aaf63be43a036fd758290f5ca07b81a5d7b2bf7702f819c170543e267caa097", // 5 TransferPending
	"8deddac95e34126a9a27433bcb9adbad098b25d66554395908152e8e1616578e", // 6 TransferPending
	"326041ecad6d9fc6c180fc76dcdde8f64127d19b6809d62e6eac3fd05051fa1b", // 7 TransferPending
	"b98e2d4a9944a0dd4ad01069e7e99659fad6647544d53686a21abf29cbb3df0f", // 8 TransferRejected
	"62ee46f77f480d5d42ccbabe180566cd939de12bbcbdc15dd4eae71b151269d5", // 9 PendingExpired
	"573143c29966ffa07946dd79f7a20b00e92f31686546b045f3508db134b4200f", // 10 PendingPosted
	"b7f70ea84f9fd324b8451c2966823db2a596b707e21175dc2b73ae7357c781cc", // 11 PendingVoided
	"6666343b56b97fef0c2e81e8616094abe71a0b27311a043598bee2bc5b9254bd", // 12 SagaDebitHeld
	"68ab534302dbdb9f1f1e5e6aeb8cdd24f53e135a9af1a0ce154e6f16305af4f2", // 13 SagaDebitHeld
	"63c23898fd6f941344fd0522b383536e046f207830798875cb4c729e01422c44", // 14 SagaCompleted
	"4ab0d20f39a909579c369ccd5a840723f5475e68f6163fdb4451380252d9a233", // 15 SagaAborted
	"61a6a366be2387c1a36beb568da0b032d842f9aa8f1861fcd7d748c9026c5bfb", // 16 SagaCredited
	"222a92111c30e48d5923c937327ec5dc0b8c84522b3bc6063c90836956629a31", // 17 SagaCreditRejected
	"7c74575b45e905ff6d83fdd637b3ef66600c8bfdff598192ac1d6c10c76192f9", // 18 AccountClosed
}

// goldenBinary is the hash of each event of goldenEvents from entries of
// version 2, hashed over the binary encoding. A change to that encoding
// changes these: it needs a new entry version, never an edit here.
var goldenBinary = []string{
	"a128bdc1feb7b939b810e0623da1960c7dd243f13dfc5ca251fd7f5c53662689", // 1 AccountOpened
	"4455bb44fd4627c7c7cc5121a004fd052c52e563ca1151ee05cf764fd2a0f64b", // 2 AccountOpened
	"9e5590b0eb8ac4a37e2aad5dc51de0d41b5c9e4b69147fb61a8eb2c0b323395f", // 3 AccountOpened
	"fa6a266ce82dfd6463e58ded53c9ee500900805ec044fc6f42690bebb538c8af", // 4 TransferPosted
	"02f77ba5138bc57e678b53446b6c6838741f4fa4894713cbf6204ee2e69c6b19", // 5 TransferPending
	"5725c5da7b65a954324da8e7f84257325eff8621324d562b20c871a6ce9ab506", // 6 TransferPending
	"d478d47be8e8438ae07a61b23c4f32e3967368343eca3af1abb2c497f9ad2ebf", // 7 TransferPending
	"cee18485a685405ef86503421967cedc29d340616989889176c7fe4b84171cf4", // 8 TransferRejected
	"efe39fa60af7bb1463a868f51ff3fb605f63403ff688350e22ee9bd6b8022021", // 9 PendingExpired
	"3f1480550c9b21596f1c9b42a874a00b591f8ba1649080c01a37dc0acb11c83e", // 10 PendingPosted
	"4e68a0614a1c2345ad2027a52349f2bbaf9407f1546baf445337328a99ce73de", // 11 PendingVoided
	"04ccde4d32a5c4b566e0b13111c187709014592f1044d76ce5c8a0787f2b497b", // 12 SagaDebitHeld
	"fc401a7fcd4f59567d7ff5daef6bbf55a4b5b4d66c6f66458f55c20876786d30", // 13 SagaDebitHeld
	"83910863736a86d2f2808a6ef3a2d8b96ab66c7737975c86670691181597699b", // 14 SagaCompleted
	"673199cd36a04aae30493c2f37af5384756d80605320ca83879321d9cf6d5933", // 15 SagaAborted
	"24ede6c1dd6a363f695aae35b0f03c6974a9b06892710a49a324f3f3bce766ba", // 16 SagaCredited
	"16cd77501e3417561a010f69a6cbfc95256071b660d7f18fe3f59e0eadb3424d", // 17 SagaCreditRejected
	"d53ae7867be47a766c16431bd031417aaa498ee2e3f59b959bc5ee84fa00b496", // 18 AccountClosed
}

func TestGoldenHashesV2(t *testing.T) {
	evs := goldenEvents(t, func(st *State, index uint64, at Time) { st.BeginEntry(index, at, 2) })
	checkGolden(t, evs, goldenBinary)
	// Begin proposes the current version.
	checkGolden(t, goldenEvents(t, func(st *State, index uint64, at Time) { st.Begin(index, at) }), goldenBinary)
}

func TestGoldenHashesV1(t *testing.T) {
	evs := goldenEvents(t, func(st *State, index uint64, at Time) { st.BeginEntry(index, at, 1) })
	checkGolden(t, evs, goldenJSON)
}

func checkGolden(t *testing.T, evs []Event, want []string) {
	t.Helper()
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d", len(evs), len(want))
	}
	for i, e := range evs {
		if e.Hash.String() != want[i] || e.ComputeHash() != e.Hash {
			t.Errorf("event %d (%s): hash %s, recomputed %s, want %s", e.Seq, e.Type, e.Hash, e.ComputeHash(), want[i])
		}
	}
}
