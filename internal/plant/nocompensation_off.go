//go:build !plant_nocompensation

package plant

// NoSagaCompensation, when true, plants a bug: a saga that fails does not release its hold.
const NoSagaCompensation = false
