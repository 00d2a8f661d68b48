//go:build !failpoints

package failpoint

import "time"

// Enabled reports whether this binary has failpoints.
const Enabled = false

// Crash does nothing without the failpoints tag.
func Crash(string) {}

// Err returns nil without the failpoints tag.
func Err(string) error { return nil }

// Int returns 0 without the failpoints tag.
func Int(string) int { return 0 }

// Duration returns 0 without the failpoints tag.
func Duration(string) time.Duration { return 0 }
