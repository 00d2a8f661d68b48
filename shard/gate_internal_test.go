package shard

import (
	"testing"
	"time"
)

// Two backups' holds that overlap: the first one's release leaves the
// second's on.
func TestSagaHoldsAddUp(t *testing.T) {
	var g sagaGate
	g.hold(time.Second)
	g.hold(time.Second)
	g.release()
	if g.heldUntil.Load() == 0 {
		t.Fatal("the first release ended the second hold")
	}
	g.release()
	if g.heldUntil.Load() != 0 {
		t.Fatal("the gate is still held after both releases")
	}
}
