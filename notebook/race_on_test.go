//go:build race

package notebook_test

// raceEnabled: this test binary runs under the race detector, which makes every byte a test
// moves several times dearer and adds its shadow memory to the process's RSS.
const raceEnabled = true
