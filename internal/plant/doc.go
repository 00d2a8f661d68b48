// Package plant holds the switches of the bugs that `make jepsen-selftest`
// plants in the product to prove that the fault suite catches them. Every
// switch is a constant that is false unless the binary is built with its
// tag, so a normal build compiles the hooks away:
//
//	plant_staleread        StaleRead: linearizable reads skip the leadership check
//	plant_noidem           NoIdem: the state machine forgets earlier transfer ids
//	plant_noapplied        NoApplied: the applied Raft index is not written with the state
//	plant_nocompensation   NoSagaCompensation: a failed saga does not release its hold
//	plant_streamskip       StreamSkip: a resumed event stream skips the first event after its position
//
// Nothing outside the selftest may build with these tags.
package plant
