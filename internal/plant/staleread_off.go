//go:build !plant_staleread

package plant

// StaleRead, when true, plants a bug: reads skip the leadership check.
const StaleRead = false
