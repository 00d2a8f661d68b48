//go:build plant_streamskip

package plant

// StreamSkip, when true, plants a bug: a resumed event stream skips the first event after its position.
const StreamSkip = true
