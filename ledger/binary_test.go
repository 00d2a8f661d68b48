package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// texts are strings the random values draw from: empty, ASCII, JSON's
// escaped characters, multi-byte UTF-8 and long ones.
var texts = []string{"", "a", "acct-1", "@world", "USD", "café ✓", `quote " back \ slash`, "<tag> & </tag>",
	"line\nbreak\ttab", "\u2028\u2029", "emoji 🙂", strings.Repeat("x", 300), "\x00nul", "@clearing:3"}

func rtext(r *rand.Rand) string { return texts[r.Intn(len(texts))] }

func rint(r *rand.Rand) int64 {
	switch r.Intn(5) {
	case 0:
		return 0
	case 1:
		return math.MaxInt64 - r.Int63n(3)
	case 2:
		return math.MinInt64 + r.Int63n(3)
	case 3:
		return -r.Int63n(1000)
	}
	return r.Int63n(1 << uint(r.Intn(62)+1))
}

func rmeta(r *rand.Rand) map[string]string {
	switch r.Intn(4) {
	case 0:
		return nil
	case 1:
		return map[string]string{}
	}
	m := map[string]string{}
	for n := r.Intn(MaxMetaKeys) + 1; n > 0; n-- {
		m[rtext(r)] = rtext(r)
	}
	return m
}

func rtransfer(r *rand.Rand) *Transfer {
	return &Transfer{ID: rtext(r), Debit: rtext(r), Credit: rtext(r), Amount: rint(r), Pending: r.Intn(2) == 0,
		TimeoutSeconds: rint(r), PostPendingID: rtext(r), VoidPendingID: rtext(r), Linked: r.Intn(2) == 0,
		Reference: rtext(r), Metadata: rmeta(r)}
}

func raccount(r *rand.Rand) *Account {
	return &Account{ID: rtext(r), Currency: rtext(r), AllowNegative: r.Intn(2) == 0, Metadata: rmeta(r),
		Closed: r.Intn(2) == 0, DebitsPosted: rint(r), CreditsPosted: rint(r), DebitsPending: rint(r),
		CreditsPending: rint(r), CreatedSeq: uint64(rint(r)), CreatedAt: rint(r)}
}

// randomEvent sets each field of an event, and each of its data, at
// random, a field in two left at its zero value.
func randomEvent(r *rand.Rand, enc uint8) Event {
	e := Event{Shard: r.Intn(1 << 16), Seq: uint64(rint(r)), RaftIndex: uint64(rint(r)), Time: Time(rint(r)),
		Type: EventTypes[r.Intn(len(EventTypes))], Enc: enc}
	if r.Intn(10) == 0 {
		e.Type = EventType(rtext(r))
	}
	half := func() bool { return r.Intn(2) == 0 }
	d := &e.Data
	if half() {
		d.Account = raccount(r)
	}
	if half() {
		d.AccountID = rtext(r)
	}
	if half() {
		d.Transfer = rtransfer(r)
	}
	if half() {
		d.Result = Code(rtext(r))
	}
	if half() {
		d.PendingID = rtext(r)
	}
	if half() {
		d.Amount = rint(r)
	}
	if half() {
		d.Currency = rtext(r)
	}
	if half() {
		d.ExpiresAt = Time(rint(r))
	}
	if half() {
		p := int(rint(r) % (1 << 20))
		d.Peer = &p
	}
	if half() {
		d.Note = rtext(r)
	}
	e.Balances = []Balance{}
	for n := r.Intn(4); n > 0; n-- {
		e.Balances = append(e.Balances, Balance{Account: rtext(r), Currency: rtext(r), DebitsPosted: rint(r),
			CreditsPosted: rint(r), DebitsPending: rint(r), CreditsPending: rint(r), Balance: rint(r), Available: rint(r)})
	}
	r.Read(e.PrevHash[:])
	e.Seal()
	return e
}

// normalEvent is e as a decoder gives it back: empty metadata is nil,
// balances are never nil, Raw is not part of it.
func normalEvent(e Event) Event {
	e.Raw = nil
	if e.Balances == nil {
		e.Balances = []Balance{}
	}
	if a := e.Data.Account; a != nil && len(a.Metadata) == 0 {
		c := *a
		c.Metadata = nil
		e.Data.Account = &c
	}
	if t := e.Data.Transfer; t != nil && len(t.Metadata) == 0 {
		c := *t
		c.Metadata = nil
		e.Data.Transfer = &c
	}
	return e
}

func TestEventBinaryRoundTrip(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	names := &Names{}
	for i := 0; i < 3000; i++ {
		e := randomEvent(r, EncBinary)
		if !bytes.Equal(e.Raw, e.AppendBinary(nil)) {
			t.Fatalf("event %d: Raw is not AppendBinary", i)
		}
		var got Event
		if err := DecodeEvent(e.Raw, &got); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := normalEvent(e); !reflect.DeepEqual(got, want) {
			t.Fatalf("event %d:\n got %+v\nwant %+v", i, got, want)
		}
		if !bytes.Equal(got.AppendBinary(nil), e.Raw) {
			t.Fatalf("event %d: decoded event encodes differently", i)
		}
		if !StoredHashOK(e.Raw, &got) || got.ComputeHash() != e.Hash {
			t.Fatalf("event %d: hash does not check", i)
		}
		for _, buf := range []*EventBuf{{}, {Names: names}} {
			for k := 0; k < 2; k++ { // the second decode reuses the room
				if err := buf.Decode(e.Raw); err != nil || !reflect.DeepEqual(buf.Event, got) {
					t.Fatalf("event %d: EventBuf decodes %+v, %v", i, buf.Event, err)
				}
			}
		}
	}
}

// TestEventJSONKeepsHash: a reader of the API gets an event's JSON and
// must be able to recompute its hash from it: every hashed field
// survives the JSON round trip, in both encodings.
func TestEventJSONKeepsHash(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for i := 0; i < 3000; i++ {
		enc := EncBinary
		if i%3 == 0 {
			enc = EncJSON
		}
		e := randomEvent(r, enc)
		b, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(b, []byte(`"enc":2`)); got != (enc == EncBinary) {
			t.Fatalf("event %d: JSON says enc %v: %s", i, got, b)
		}
		var back Event
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.Enc != enc || back.ComputeHash() != e.Hash {
			t.Fatalf("event %d (enc %d): hash from JSON %s, sealed %s\n%s", i, enc, back.ComputeHash(), e.Hash, b)
		}
		if enc == EncJSON && !bytes.Equal(b, e.Raw) {
			t.Fatalf("event %d: JSON stored form is not the API's JSON", i)
		}
	}
}

// TestInvalidUTF8 is encoded as JSON shows it, so the hash still checks
// from the JSON, and the stored value decodes.
func TestInvalidUTF8(t *testing.T) {
	peer := 1
	e := Event{Seq: 1, Type: SagaCompleted, Enc: EncBinary, Data: Data{PendingID: "t", Peer: &peer, Note: "caf\xe9 \xff\xfe",
		Transfer: &Transfer{ID: "t", Metadata: map[string]string{"\xff": "a", "\xfe": "b", "k": "\xc3"}}}}
	e.Seal()
	var got Event
	if err := DecodeEvent(e.Raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Data.Note != "caf\uFFFD \uFFFD\uFFFD" || got.Data.Transfer.Metadata["k"] != "\uFFFD" || len(got.Data.Transfer.Metadata) != 2 {
		t.Fatalf("decoded %q %q", got.Data.Note, got.Data.Transfer.Metadata)
	}
	b, _ := json.Marshal(&e)
	var back Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.ComputeHash() != e.Hash {
		t.Fatalf("hash from JSON differs: %s", b)
	}
}

func TestEncodingOfVersion(t *testing.T) {
	if EncodingOf(1) != EncJSON || EncodingOf(2) != EncBinary || EncodingOf(EntryVersion) != EncBinary {
		t.Fatal("entry version 1 must give JSON events, 2 binary ones")
	}
	e := Event{Seq: 1, Type: AccountClosedEv, Enc: 7}
	if e.ComputeHash() != (Hash{}) || e.Canonical() != nil {
		t.Fatal("an unknown encoding has no hash")
	}
}

// TestEventLayoutIsStable pins the binary encoding byte by byte (the
// example in fsm/DESIGN.md), so that a change to it cannot pass unseen.
func TestEventLayoutIsStable(t *testing.T) {
	peer := 3
	e := Event{Shard: 1, Seq: 2, RaftIndex: 3, Time: 5, Type: SagaDebitHeld, Enc: EncBinary,
		Data:     Data{Transfer: &Transfer{ID: "t", Debit: "a", Credit: "b", Amount: 7, Pending: true, Metadata: map[string]string{"k": "v"}}, Currency: "USD", Peer: &peer},
		Balances: []Balance{{Account: "a", Currency: "USD", CreditsPosted: 10, DebitsPending: 7, Balance: 10, Available: 3}}}
	const want = "02" + "02" + "02" + "03" + "0a" + hexSagaDebitHeld + // version, shard 1, seq 2, index 3, time 5, type
		"c402" + // data fields: transfer (4) | currency (0x40) | peer (0x100)
		"0174" + "0161" + "0162" + "0e" + "01" + "00" + "00" + "00" + "00" + "01016b0176" + // transfer
		"03555344" + "06" + // currency, peer 3
		"01" + "0161" + "03555344" + "00" + "14" + "0e" + "00" + "14" + "06" // one balance
	if got := hex.EncodeToString(e.AppendCanonical(nil)); got != want {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
	e.Seal()
	if h := hashOf(Hash{}, mustHex(t, want)); e.Hash != h || e.ComputeHash() != h {
		t.Fatal("the hash is not SHA-256(prev_hash || canonical encoding)")
	}
	if !bytes.Equal(e.Raw, append(append(mustHex(t, want), e.PrevHash[:]...), e.Hash[:]...)) {
		t.Fatal("the stored form is not the canonical encoding and the hashes")
	}
}

const hexSagaDebitHeld = "0d" + "53616761446562697448656c64" // "SagaDebitHeld"

func TestRecordAndAccountRoundTrip(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	for i := 0; i < 2000; i++ {
		rec := Record{Transfer: *rtransfer(r), Result: Code(rtext(r)), Status: Status(rtext(r)), Seq: uint64(rint(r)),
			Time: rint(r), ExpiresAt: rint(r), ResolvedSeq: uint64(rint(r)), ResolvedBy: rtext(r), ResolvedAmount: rint(r)}
		if r.Intn(2) == 0 {
			rec.Saga = &Saga{Role: rtext(r), Peer: int(rint(r) % (1 << 20)), Currency: rtext(r), Step: rtext(r), Note: rtext(r)}
		}
		acc := *raccount(r)
		rb, ab := rec.AppendBinary(nil), acc.AppendBinary(nil)
		var gotR Record
		var gotA Account
		if err := DecodeRecord(rb, &gotR); err != nil {
			t.Fatal(err)
		}
		if err := DecodeAccount(ab, &gotA); err != nil {
			t.Fatal(err)
		}
		if len(rec.Transfer.Metadata) == 0 {
			rec.Transfer.Metadata = nil
		}
		if len(acc.Metadata) == 0 {
			acc.Metadata = nil
		}
		if !reflect.DeepEqual(gotR, rec) || !reflect.DeepEqual(gotA, acc) {
			t.Fatalf("round trip %d:\n%+v\n%+v\n%+v\n%+v", i, gotR, rec, gotA, acc)
		}
		if !bytes.Equal(gotR.AppendBinary(nil), rb) || !bytes.Equal(gotA.AppendBinary(nil), ab) {
			t.Fatalf("round trip %d re-encodes differently", i)
		}
		// The JSON form, as earlier builds stored them, reads the same.
		rj, _ := json.Marshal(&rec)
		aj, _ := json.Marshal(&acc)
		if err := DecodeRecord(rj, &gotR); err != nil || !reflect.DeepEqual(gotR, rec) {
			t.Fatalf("JSON record %d: %+v, %v", i, gotR, err)
		}
		if err := DecodeAccount(aj, &gotA); err != nil || !reflect.DeepEqual(gotA, acc) {
			t.Fatalf("JSON account %d: %+v, %v", i, gotA, err)
		}
	}
}

// TestDecodeBothForms: a stored JSON event (a version-1 entry's) decodes
// to the event it was, hashed over its JSON; a binary one likewise.
func TestDecodeBothForms(t *testing.T) {
	evs := goldenEvents(t, func(st *State, index uint64, at Time) { st.BeginEntry(index, at, 1) })
	evs = append(evs, goldenEvents(t, func(st *State, index uint64, at Time) { st.BeginEntry(index, at, 2) })...)
	for _, e := range evs {
		if e.Raw[0] == '{' != (e.Enc == EncJSON) {
			t.Fatalf("event %d of enc %d stored as %q", e.Seq, e.Enc, e.Raw[:1])
		}
		var got Event
		if err := DecodeEvent(e.Raw, &got); err != nil {
			t.Fatal(err)
		}
		if want := normalEvent(e); !reflect.DeepEqual(got, want) || !StoredHashOK(e.Raw, &got) {
			t.Fatalf("event %d:\n got %+v\nwant %+v", e.Seq, got, want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	peer := 1
	e := Event{Seq: 1, Type: SagaDebitHeld, Enc: EncBinary, Data: Data{Currency: "USD", Peer: &peer,
		Transfer: &Transfer{ID: "t", Metadata: map[string]string{"a": "1", "b": "2"}}}}
	e.Seal()
	good := e.Raw
	hashes := good[len(good)-hashesLen:]
	canon := good[:len(good)-hashesLen]
	with := func(c []byte) []byte { return append(append([]byte(nil), c...), hashes...) }
	replace := func(old, new string) []byte {
		c := bytes.Replace(canon, mustHex(t, old), mustHex(t, new), 1)
		if bytes.Equal(c, canon) {
			t.Fatalf("%s not in % x", old, canon)
		}
		return with(c)
	}
	for _, tc := range []struct {
		name string
		p    []byte
	}{
		{"empty", nil},
		{"unknown form", []byte{3, 0}},
		{"no hashes", canon},
		{"trailing byte", with(append(append([]byte(nil), canon...), 0))},
		{"long seq varint", replace("02000100", "0200810000")},
		{"unknown data field", replace("c402", "c40a")},
		{"metadata out of order", replace("01610131", "01630131")},
		{"invalid UTF-8", replace("0174", "01ff")},
		{"bad flags", replace("017400000000", "017400000004")},
		{"too many balances", with(append(canon[:len(canon)-1:len(canon)-1], 0x41))},
		{"balances beyond input", with(append(canon[:len(canon)-1:len(canon)-1], 5))},
		{"too large", append([]byte{2}, make([]byte, maxValue)...)},
		{"bad JSON", []byte(`{"seq":`)},
	} {
		var got Event
		if err := DecodeEvent(tc.p, &got); !errors.Is(err, ErrStored) {
			t.Errorf("%s: %v", tc.name, err)
		}
		var buf EventBuf
		if err := buf.Decode(tc.p); !errors.Is(err, ErrStored) {
			t.Errorf("%s (EventBuf): %v", tc.name, err)
		}
	}
	// Every field marked present must be set: otherwise two encodings
	// would hold one event. An empty event's data is its seventh byte.
	for _, bit := range []uint64{dAccountID, dResult, dPendingID, dAmount, dCurrency, dExpiresAt, dNote} {
		p := binary.AppendUvarint([]byte{EncBinary, 0, 0, 0, 0, 0}, bit)
		p = append(p, 0, 0) // the empty field, no balances
		p = append(p, make([]byte, hashesLen)...)
		var got Event
		if err := DecodeEvent(p, &got); !errors.Is(err, ErrStored) {
			t.Errorf("data field %#x present but empty: %v", bit, err)
		}
	}
	// A forged count costs no allocation beyond the input's.
	forged := with(append(canon[:len(canon)-1:len(canon)-1], 0x3f))
	allocs := testing.AllocsPerRun(100, func() {
		var got Event
		_ = DecodeEvent(forged, &got)
	})
	if allocs > 12 { // the event's string, its room and the error
		t.Fatalf("a forged count allocates %v times", allocs)
	}
}

// FuzzDecodeEvent: decoding never panics; what decodes from the binary
// form encodes back to the same bytes and holds its hash iff its
// ComputeHash does; what decodes from JSON re-encodes to a binary form
// that decodes to the same event.
func FuzzDecodeEvent(f *testing.F) {
	r := rand.New(rand.NewSource(4))
	for i := 0; i < 20; i++ {
		e := randomEvent(r, EncBinary)
		f.Add(e.Raw)
	}
	for _, e := range goldenEvents(f, func(st *State, index uint64, at Time) { st.BeginEntry(index, at, 1) })[:4] {
		f.Add(e.Raw)
	}
	f.Add([]byte{})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, p []byte) {
		var e Event
		err := DecodeEvent(p, &e)
		var buf EventBuf
		if berr := buf.Decode(p); (berr == nil) != (err == nil) {
			t.Fatalf("DecodeEvent %v, EventBuf %v", err, berr)
		}
		named := EventBuf{Names: &Names{}}
		if nerr := named.Decode(p); (nerr == nil) != (err == nil) || (err == nil && !reflect.DeepEqual(named.Event, e)) {
			t.Fatalf("DecodeEvent %v, EventBuf with names %v", err, nerr)
		}
		if err != nil {
			if !errors.Is(err, ErrStored) {
				t.Fatalf("error does not wrap ErrStored: %v", err)
			}
			return
		}
		if !reflect.DeepEqual(buf.Event, e) {
			t.Fatal("EventBuf decodes differently")
		}
		if e.Enc == EncJSON {
			if exceedsBounds(reflect.ValueOf(e)) {
				return // JSON holds what the binary form refuses
			}
			e.Enc = EncBinary
			p = e.AppendBinary(nil)
			if err := DecodeEvent(p, &e); err != nil {
				t.Fatalf("re-encoded JSON event does not decode: %v", err)
			}
		}
		if b := e.AppendBinary(nil); !bytes.Equal(b, p) {
			t.Fatalf("decoded event encodes to other bytes:\n% x\n% x", b, p)
		}
		if StoredHashOK(p, &e) != (e.ComputeHash() == e.Hash) {
			t.Fatal("StoredHashOK and ComputeHash disagree")
		}
	})
}

// exceedsBounds reports whether v holds a string, a map or a slice over
// the binary form's bounds.
func exceedsBounds(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		return v.Len() > maxStr
	case reflect.Pointer:
		return !v.IsNil() && exceedsBounds(v.Elem())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if exceedsBounds(v.Field(i)) {
				return true
			}
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return false
		}
		if v.Len() > maxBalances {
			return true
		}
		for i := 0; i < v.Len(); i++ {
			if exceedsBounds(v.Index(i)) {
				return true
			}
		}
	case reflect.Map:
		if v.Len() > MaxMetaKeys {
			return true
		}
		for it := v.MapRange(); it.Next(); {
			if exceedsBounds(it.Key()) || exceedsBounds(it.Value()) {
				return true
			}
		}
	}
	return false
}

// FuzzDecodeRecord: never panics; what decodes from the binary form
// encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add((&Record{Transfer: Transfer{ID: "t", Metadata: map[string]string{"k": "v"}}, Result: OK, Status: StatusPosted,
		Saga: &Saga{Role: RoleSource, Peer: 2, Step: StepHeld}}).AppendBinary(nil))
	f.Add((&Record{Transfer: Transfer{ID: "p", Pending: true}, Result: OK, Status: StatusPending, ExpiresAt: 9}).AppendBinary(nil))
	f.Add([]byte(`{"transfer":{"id":"t"},"result":"ok","status":"posted","seq":1,"time":0}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		var r Record
		if err := DecodeRecord(p, &r); err != nil {
			if !errors.Is(err, ErrStored) {
				t.Fatalf("error does not wrap ErrStored: %v", err)
			}
			return
		}
		if isJSON(p) && exceedsBounds(reflect.ValueOf(r)) {
			return
		}
		b := r.AppendBinary(nil)
		if !isJSON(p) && !bytes.Equal(b, p) {
			t.Fatalf("decoded record encodes to other bytes:\n% x\n% x", b, p)
		}
		var again Record
		if err := DecodeRecord(b, &again); err != nil || !bytes.Equal(again.AppendBinary(nil), b) {
			t.Fatalf("re-encoded record: %v", err)
		}
	})
}

// FuzzDecodeAccount: never panics; what decodes from the binary form
// encodes back to the same bytes.
func FuzzDecodeAccount(f *testing.F) {
	f.Add((&Account{ID: "a", Currency: "USD", AllowNegative: true, Metadata: map[string]string{"k": "v"}, CreditsPosted: 5}).AppendBinary(nil))
	f.Add([]byte(`{"id":"a","currency":"USD","allow_negative":false,"closed":true}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		var a Account
		if err := DecodeAccount(p, &a); err != nil {
			if !errors.Is(err, ErrStored) {
				t.Fatalf("error does not wrap ErrStored: %v", err)
			}
			return
		}
		if isJSON(p) && exceedsBounds(reflect.ValueOf(a)) {
			return
		}
		b := a.AppendBinary(nil)
		if !isJSON(p) && !bytes.Equal(b, p) {
			t.Fatalf("decoded account encodes to other bytes:\n% x\n% x", b, p)
		}
		var again Account
		if err := DecodeAccount(b, &again); err != nil || !bytes.Equal(again.AppendBinary(nil), b) {
			t.Fatalf("re-encoded account: %v", err)
		}
	})
}

func BenchmarkDecodeEvent(b *testing.B) {
	evs := goldenEvents(b, func(st *State, index uint64, at Time) { st.BeginEntry(index, at, 1) })
	bin := goldenEvents(b, func(st *State, index uint64, at Time) { st.BeginEntry(index, at, 2) })
	for _, tc := range []struct {
		name string
		raw  []byte
	}{{"json", evs[3].Raw}, {"binary", bin[3].Raw}, {"binary-names", bin[3].Raw}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf EventBuf
			if tc.name == "binary-names" {
				buf.Names = &Names{}
			}
			for range b.N {
				if err := buf.Decode(tc.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSeal(b *testing.B) {
	for _, v := range []byte{1, 2} {
		e := goldenEvents(b, func(st *State, index uint64, at Time) { st.BeginEntry(index, at, v) })[3]
		b.Run(map[byte]string{1: "json", 2: "binary"}[v], func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				e.Seal()
			}
		})
	}
}

// TestEventTypesInterned: every known type decodes to its constant.
func TestEventTypesInterned(t *testing.T) {
	for _, et := range EventTypes {
		if k, ok := knownType([]byte(et)); !ok || k != et {
			t.Errorf("%s", et)
		}
	}
	if _, ok := knownType([]byte("Other")); ok {
		t.Error("an unknown type is known")
	}
}
