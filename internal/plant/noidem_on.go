//go:build plant_noidem

package plant

// NoIdem, when true, plants a bug: the state machine ignores earlier records of a transfer id.
const NoIdem = true
