package agent

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSealProcess: after sealing, the process is not dumpable (its /proc entries, fds
// included, are closed to processes of its uid), and a descriptor it holds without
// close-on-exec, as one inherited from a container runtime would be, is close-on-exec, so
// that no command inherits it. The end-to-end proof, from inside a real sandbox, is
// sandbox's TestIntegrationHostileForgedFramesViaProcFdFail.
func TestSealProcess(t *testing.T) {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY, 0) // deliberately without O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := sealProcess(); err != nil {
		t.Fatal(err)
	}
	dumpable, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil || dumpable != 0 {
		t.Fatalf("PR_GET_DUMPABLE = %d (%v), want 0", dumpable, err)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("descriptor %d flags %#x (%v): want FD_CLOEXEC", fd, flags, err)
	}
}
