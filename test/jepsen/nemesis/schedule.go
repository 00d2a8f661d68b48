package nemesis

import (
	"math/rand/v2"
	"slices"
	"time"
)

// Step is one scheduled fault.
type Step struct {
	Class   string        `json:"class"`
	At      time.Duration `json:"at"`    // offset from the start of the fault phase
	Hold    time.Duration `json:"hold"`  // how long it stays
	Shard   int           `json:"shard"` // the shard whose leader (or follower) is aimed at
	Node    int           `json:"node"`  // a node index for node faults not aimed by role
	Variant string        `json:"variant,omitempty"`
	Flip    bool          `json:"flip,omitempty"` // halves: the proxy sides with the minority
}

// Schedule builds a reproducible list of faults from a seed: when once is
// set (the CI profile) every class once in a seeded order, otherwise
// classes drawn at random until the duration is filled. The draws per
// step come in a fixed order (shard, node, flip, hold, variant), so the
// same seed and classes give the same schedule.
func Schedule(seed uint64, classes []string, once bool, duration, hold, gap time.Duration, shards int) []Step {
	rng := rand.New(rand.NewPCG(seed, 0x6a6570))
	var out []Step
	at := time.Duration(0)
	mk := func(class string) Step {
		s := Step{Class: class, At: at, Shard: rng.IntN(shards), Node: rng.IntN(3), Flip: rng.IntN(2) == 0}
		s.Hold = hold
		if !once {
			s.Hold = hold/2 + time.Duration(rng.Int64N(int64(hold)))
		}
		if f, ok := Lookup(class); ok {
			if v := f.Traits().Variants; len(v) > 0 {
				s.Variant = v[rng.IntN(len(v))]
			}
		}
		return s
	}
	if once {
		order := slices.Clone(classes)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, c := range order {
			out = append(out, mk(c))
			at += hold + gap
		}
		return out
	}
	for at < duration {
		out = append(out, mk(classes[rng.IntN(len(classes))]))
		at += hold + gap
	}
	return out
}
