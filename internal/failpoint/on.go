//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Enabled reports whether this binary has failpoints.
const Enabled = true

// rereadEvery bounds how often the control file is read.
const rereadEvery = 50 * time.Millisecond

var (
	mu     sync.Mutex
	loaded time.Time
	points map[string]string
)

// value returns the value armed for name, or "".
func value(name string) string {
	path := os.Getenv("TALLY_FAILPOINTS")
	if path == "" {
		return ""
	}
	mu.Lock()
	defer mu.Unlock()
	if time.Since(loaded) > rereadEvery {
		loaded = time.Now()
		points = map[string]string{}
		// A missing or unreadable file arms nothing.
		if b, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
					points[k] = strings.TrimSpace(v)
				}
			}
		}
	}
	return points[name]
}

// Crash kills the process with SIGKILL, like kill -9, when name is armed
// with "crash": no deferred function runs and nothing is flushed.
func Crash(name string) {
	if value(name) != "crash" {
		return
	}
	fmt.Fprintf(os.Stderr, "failpoint %s: crashing\n", name)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// Err returns an error when name is armed with "error".
func Err(name string) error {
	if value(name) != "error" {
		return nil
	}
	return fmt.Errorf("failpoint %s: injected error", name)
}

// Int returns the integer armed for name, or 0.
func Int(name string) int {
	n, _ := strconv.Atoi(value(name))
	return n
}

// Duration returns the duration armed for name, or 0.
func Duration(name string) time.Duration {
	d, _ := time.ParseDuration(value(name))
	return d
}
