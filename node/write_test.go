package node

import (
	"net/http"
	"testing"

	"tally/edge"
)

// TestMerge: a batch's answer is the worst failure of its parts, and a
// 504 as soon as another part was applied, since the client must then
// retry with the same ids rather than take "nothing applied" at its word.
func TestMerge(t *testing.T) {
	unavailable := edge.Unavailable("no leader")
	unknown := edge.OutcomeUnknown("lost")
	bad := edge.Invalid("bad")
	tests := []struct {
		name   string
		errs   []*edge.Error
		status int // 0: nil
	}{
		{"every part applied", []*edge.Error{nil, nil}, 0},
		{"nothing applied", []*edge.Error{unavailable, unavailable}, http.StatusServiceUnavailable},
		{"one applied, one unavailable", []*edge.Error{nil, unavailable}, http.StatusGatewayTimeout},
		{"one applied, one refused", []*edge.Error{bad, nil}, http.StatusGatewayTimeout},
		{"unknown outranks unavailable", []*edge.Error{unavailable, unknown}, http.StatusGatewayTimeout},
		{"unavailable outranks a refusal", []*edge.Error{bad, unavailable}, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		got := Merge(tt.errs)
		switch {
		case tt.status == 0 && got != nil:
			t.Errorf("%s: %v, want nil", tt.name, got)
		case tt.status != 0 && (got == nil || got.Status != tt.status):
			t.Errorf("%s: %v, want status %d", tt.name, got, tt.status)
		}
	}
}
