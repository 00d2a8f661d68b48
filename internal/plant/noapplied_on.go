//go:build plant_noapplied

package plant

// NoApplied, when true, plants a bug: the applied Raft index is not persisted with the state.
const NoApplied = true
