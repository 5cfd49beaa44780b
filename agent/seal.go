package agent

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// sealProcess makes the agent's protocol stream belong to the agent alone. The stream is
// the agent's stdin and stdout, or its connection to the server's socket (--connect); the
// commands it runs are untrusted and, in a sandbox, run under the agent's own uid. A
// dumpable process's descriptors are open to every process of its uid through /proc/PID/fd,
// so without this a command could open /proc/1/fd/1 and write answers the server would
// believe (or read /proc/1/fd/0, /proc/1/mem, /proc/1/environ, take a copy of the socket
// with pidfd_getfd, or ptrace the agent).
//
// Two ways close that door: a different uid for the agent than for the commands, or a
// non-dumpable agent. The agent is made non-dumpable (PR_SET_DUMPABLE 0). The kernel then
// owns its /proc/PID entries by root and allows /proc/PID/fd, mem, environ and ptrace only to
// callers with CAP_SYS_PTRACE, which nothing in a sandbox has: every capability is dropped
// and no-new-privileges keeps it that way. It costs nothing and needs no privilege. A uid
// switch would need the agent to keep CAP_SETUID (and CAP_SETGID) in a container that
// otherwise drops them all, which is exactly the power a compromised command should not find
// lying around, and would also change who owns the files commands write. The flag is reset
// by execve, so the commands the agent starts are dumpable as usual; only the agent is sealed.
//
// It also marks every descriptor above stderr close-on-exec, so that a command inherits only
// the stdin, stdout and stderr it is given. The agent's own files are close-on-exec already
// (Go opens them so); this covers whatever the container runtime handed PID 1.
func sealProcess() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("making the agent non-dumpable, which keeps commands off its protocol stream: %w", err)
	}
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	// Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: mark the open descriptors one by one.
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("listing the agent's descriptors to keep them from commands: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		// The directory's own descriptor is among them and is gone by now: EBADF is fine.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("marking descriptor %d close-on-exec: %w", fd, err)
		}
	}
	return nil
}
