package testenv

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// SettleRSS frees what the Go runtime can give back, resets the kernel's record of this
// process's peak resident size (VmHWM) to the current one, and returns that size in bytes:
// the idle level a memory test measures PeakRSS against. It skips the test where the peak
// cannot be reset (Linux before 4.0).
func SettleRSS(t testing.TB) int64 {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	// Writing 5 to clear_refs resets VmHWM to VmRSS.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS to measure it: %v", err)
	}
	return procStatusBytes(t, "VmRSS")
}

// PeakRSS is the largest resident size of this process, in bytes, since SettleRSS: the
// kernel tracks it, so no sampling can miss a short spike.
func PeakRSS(t testing.TB) int64 {
	t.Helper()
	return procStatusBytes(t, "VmHWM")
}

// procStatusBytes reads a field of /proc/self/status given in kB, in bytes.
func procStatusBytes(t testing.TB, field string) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("reading %s from /proc/self/status: %v", field, err)
			}
			return kib << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
