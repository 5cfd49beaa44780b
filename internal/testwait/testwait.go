// Package testwait is the one wait-until helper of the project's tests: it polls a condition
// until it holds or a deadline passes, and fails the test with what it was waiting for. A test
// waits on a condition it can observe, never on a fixed sleep.
package testwait

import (
	"testing"
	"time"
)

// poll is how often the condition is checked: short next to the waits it serves (tens of
// milliseconds to seconds), long enough not to spin a core.
const poll = 5 * time.Millisecond

// Until calls cond until it returns true, failing t (Fatalf) if it has not within timeout.
// what names the awaited condition in the failure, e.g. "sandbox removed".
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for: %s", timeout, what)
	}
}

// Poll calls cond until it returns true or timeout passes, and says whether it held. It is for
// callers that report failure their own way (a goroutine that must not call t.Fatal).
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll)
	}
}
