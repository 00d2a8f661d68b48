package edge

import (
	"fmt"
	"testing"
)

func TestSplitKeepsRequestOrder(t *testing.T) {
	shards := []int{2, 0, 2, 1, 0, 2}
	got := fmt.Sprint(Split(len(shards), func(i int) int { return shards[i] }))
	if want := "[{2 [0 2 5]} {0 [1 4]} {1 [3]}]"; got != want {
		t.Fatalf("Split: %s, want %s", got, want)
	}
}
