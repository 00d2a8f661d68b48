package ledger

import (
	"strings"
	"testing"
)

// books reads a harness's state the way an audit does.
func books(h *harness) ShardBooks {
	b := ShardBooks{Shard: h.st.Shard, Seq: h.st.Seq, Sums: map[string]string{}}
	for cur, s := range h.st.Sums() {
		b.Sums[cur] = s.String()
	}
	for _, k := range sortedKeys(h.st.Accounts) {
		if a := h.st.Accounts[k]; strings.HasPrefix(a.ID, ClearingPrefix) {
			b.Clearing = append(b.Clearing, *a)
		}
	}
	return b
}

func audit(p *sagaPair) AuditReport {
	r := []ShardBooks{books(p.s), books(p.d)}
	return CheckAudit(r, r)
}

func TestAuditThroughASaga(t *testing.T) {
	p := newSagaPair(t)
	tr := xfer("x1", p.a, p.b, 30)
	p.s.do(tr)
	if rep := audit(p); !rep.OK || rep.Currencies[0].InFlight != "30" || rep.Currencies[0].Net != "0" {
		t.Fatalf("after the hold: %+v", rep)
	}
	p.credit(tr)
	if rep := audit(p); !rep.OK || !rep.Consistent || rep.Currencies[0].Net != "-30" {
		t.Fatalf("after the credit: %+v", rep)
	}
	p.resolve("x1", OK)
	if rep := audit(p); !rep.OK || rep.Currencies[0].Net != "0" || rep.Currencies[0].InFlight != "0" {
		t.Fatalf("after completion: %+v", rep)
	}
}

func TestAuditCatchesTornSagas(t *testing.T) {
	// A credit with no saga behind it: money created on the destination.
	p := newSagaPair(t)
	p.credit(xfer("ghost", p.a, p.b, 5))
	if rep := audit(p); rep.OK || !strings.Contains(strings.Join(rep.Violations, ";"), "credited 5") {
		t.Fatalf("a credit without a hold passed: %+v", rep)
	}
	// A saga aborted after its credit: the credit stays, the hold is gone.
	p = newSagaPair(t)
	tr := xfer("x1", p.a, p.b, 30)
	p.s.do(tr)
	p.credit(tr)
	p.resolve("x1", SagaAbortedCode)
	if rep := audit(p); rep.OK {
		t.Fatalf("credit and abort passed: %+v", rep)
	}
	// A completion without a credit.
	p = newSagaPair(t)
	p.s.do(tr)
	p.resolve("x1", OK)
	if rep := audit(p); rep.OK {
		t.Fatalf("completion without credit passed: %+v", rep)
	}
	// A shard that does not sum to 0.
	p = newSagaPair(t)
	b := books(p.s)
	b.Sums["USD"] = "7"
	if rep := CheckAudit([]ShardBooks{b}, []ShardBooks{b}); rep.OK {
		t.Fatal("a shard summing to 7 passed")
	}
}
