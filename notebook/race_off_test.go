//go:build !race

package notebook_test

// raceEnabled: this test binary runs under the race detector (see race_on_test.go).
const raceEnabled = false
