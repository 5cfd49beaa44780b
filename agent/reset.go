package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// A pool lends one sandbox to borrower after borrower, and OpReset is what keeps them apart:
// it returns the sandbox to the state it started in, the agent alone with empty scratch
// directories. There is no record of "what was there before" to keep, on purpose: a
// sandbox holds nothing of value beyond the agent when it joins a pool, and a service the
// backend started (a notebook's Jupyter server) runs under the borrowers' uid, so any of
// them could have tampered with it (its memory is theirs to write through /proc/PID/mem);
// such a service is started afresh after the reset, never kept.
//
// Processes are killed by what they are, not by what they claim: every descendant of the
// agent dies, whatever session, group or environment marker it carries. As PID 1 the agent
// first sends SIGKILL to -1, which the kernel delivers to every other process of the
// namespace in one pass that no fork escapes; a rescan then confirms. The agent is the one
// process kept, and may be: it is sealed (seal.go), so no command could have reached its
// memory or its descriptors.

const (
	// resetKillWait bounds how long a reset waits for the processes it killed to die; one
	// still alive after it fails the reset (the pool then replaces the sandbox).
	resetKillWait = 5 * time.Second
	// maxResetDepth bounds how deep the reset descends into nested directories; a deeper
	// tree fails the reset rather than exhaust the agent's descriptors.
	maxResetDepth = 256
	// maxSysVIPCBytes bounds what the reset reads of one /proc/sysvipc listing.
	maxSysVIPCBytes = 4 << 20
)

// reset serves OpReset.
func (s *server) reset(req *wire.Reset) (*wire.ResetResult, error) {
	if req == nil {
		return nil, errorf(wire.CodeInvalid, "reset request has no reset field")
	}
	for _, dir := range req.Dirs {
		if strings.ContainsRune(dir, 0) || !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == "/" {
			return nil, errorf(wire.CodeInvalid, "reset: directory %q must be an absolute, clean path other than /", dir)
		}
	}
	if req.SysVIPC && os.Getpid() != 1 {
		return nil, errorf(wire.CodeInvalid, "reset: sysv_ipc needs the agent to be PID 1 of the sandbox; as PID %d the objects would be other programs'", os.Getpid())
	}
	start := time.Now()
	res := &wire.ResetResult{}
	s.forks.stop(true) // the next borrower gets a resident interpreter of its own
	if err := killAllButAgent(res, time.Now().Add(resetKillWait)); err != nil {
		return nil, err
	}
	res.JobsForgotten = s.forgetJobs()
	for _, dir := range req.Dirs {
		if err := emptyDir(dir, res); err != nil {
			return nil, err
		}
	}
	if req.SysVIPC {
		n, err := removeSysVIPC()
		res.IPCRemoved = n
		if err != nil {
			return nil, err
		}
	}
	res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	s.log.Info("sandbox reset", "killed", res.Killed, "removed", res.Removed, "ipc", res.IPCRemoved,
		"jobs", res.JobsForgotten, "ms", res.DurationMS)
	return res, nil
}

// killAllButAgent kills every descendant of the agent (in a sandbox, every process but the
// agent) and waits until none is alive, recording them in res.
func killAllButAgent(res *wire.ResetResult, deadline time.Time) error {
	self := os.Getpid()
	seen := make(map[int]bool)
	pause := time.Duration(0)
	for {
		victims := descendantsOf(self)
		if len(victims) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reset: %d processes still alive %s after SIGKILL (pids %v)", len(victims), resetKillWait, victims[:min(len(victims), 10)])
		}
		for _, pid := range victims {
			if !seen[pid] {
				seen[pid] = true
				res.Killed++
				if len(res.KilledNames) < wire.MaxResetReport {
					res.KilledNames = append(res.KilledNames, strconv.Itoa(pid)+" "+procName(pid))
				}
			}
		}
		if self == 1 {
			// Every process of the namespace but PID 1, atomically: none can fork out of it.
			_ = syscall.Kill(-1, syscall.SIGKILL)
		}
		for _, pid := range victims {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// Killed processes take a moment to become zombies, which the reaper collects.
		time.Sleep(pause)
		pause = min(pause+time.Millisecond, 10*time.Millisecond)
	}
}

// descendantsOf lists the live processes descending from pid. Orphans are reparented to the
// agent (PID 1, or a child subreaper), so nothing a command started escapes the list;
// processes entered from outside the sandbox (docker exec) are not the agent's and are not in it.
func descendantsOf(pid int) []int {
	procs := readProcs()
	parent := make(map[int]int, len(procs))
	for _, p := range procs {
		parent[p.pid] = p.ppid
	}
	var found []int
	for _, p := range procs {
		if !p.dead && p.pid != pid && descends(p.pid, pid, parent) {
			found = append(found, p.pid)
		}
	}
	return found
}

// procName is pid's command name (the kernel caps it at 15 bytes).
func procName(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(data))
}

// forgetJobs drops every background job from the job list, so the next borrower sees none of
// the previous one's command lines. Their processes are dead by now; their ids are not reused.
func (s *server) forgetJobs() int {
	s.mu.Lock()
	jobs := s.jobs
	s.jobs = make(map[string]*job)
	s.mu.Unlock()
	for _, j := range jobs {
		liveTrees.remove(j.cmd.tree)
	}
	return len(jobs)
}

// emptyDir removes everything in dir but file systems mounted inside it, never following a
// symlink. A missing dir is empty already.
func emptyDir(dir string, res *wire.ResetResult) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fileError("resetting", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileError("resetting", dir, err)
	}
	e := emptier{dev: st.Dev, res: res}
	_, err = e.empty(f, dir, 0)
	return err
}

// emptier removes the content of directories on one file system.
type emptier struct {
	dev uint64 // the file system being emptied; an entry on another is a mount point
	res *wire.ResetResult
}

// empty removes dir's entries (dir is open as f) and reports whether it kept any: a mount
// point, or a directory holding one.
func (e *emptier) empty(f *os.File, dir string, depth int) (kept bool, err error) {
	fd := int(f.Fd())
	for {
		names, err := f.Readdirnames(1024)
		for _, name := range names {
			k, rerr := e.remove(fd, filepath.Join(dir, name), name, depth)
			if rerr != nil {
				return kept, rerr
			}
			kept = kept || k
		}
		if errors.Is(err, io.EOF) || (err == nil && len(names) == 0) {
			return kept, nil
		}
		if err != nil {
			return kept, fileError("resetting", dir, err)
		}
	}
}

// remove removes the entry name of the directory open as dirfd, a whole tree for a
// directory, and reports whether it had to keep it (a mount point, or holding one).
func (e *emptier) remove(dirfd int, path, name string, depth int) (kept bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fileError("resetting", path, err)
	}
	if st.Dev != e.dev {
		e.keep(path)
		return true, nil
	}
	flags := 0
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if depth+1 >= maxResetDepth {
			return false, errorf(wire.CodeTooLarge, "resetting: %s is nested more than %d directories deep", path, maxResetDepth)
		}
		// A borrower may have taken its own rights away (chmod 000); the agent, as the
		// owner, gives them back. It never follows a symlink here: name is a directory.
		if st.Mode&0o700 != 0o700 {
			_ = unix.Fchmodat(dirfd, name, 0o700, 0)
		}
		cfd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, fileError("resetting", path, err)
		}
		child := os.NewFile(uintptr(cfd), path)
		kept, err := e.empty(child, path, depth+1)
		child.Close()
		if err != nil || kept {
			return kept, err
		}
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(dirfd, name, flags); err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return false, nil
		case errors.Is(err, unix.EBUSY): // a mount point on the same device (a bind mount)
			e.keep(path)
			return true, nil
		}
		return false, fileError("resetting", path, err)
	}
	e.res.Removed++
	if depth == 0 && len(e.res.RemovedPaths) < wire.MaxResetReport {
		e.res.RemovedPaths = append(e.res.RemovedPaths, path)
	}
	return false, nil
}

func (e *emptier) keep(path string) {
	if len(e.res.KeptMounts) < wire.MaxResetReport {
		e.res.KeptMounts = append(e.res.KeptMounts, path)
	}
}

// removeSysVIPC removes every System V shared memory segment, message queue and semaphore
// set of the agent's IPC namespace, and returns how many it removed. Unlike files, these
// outlive every process that used them.
func removeSysVIPC() (int, error) {
	kinds := []struct {
		name string
		rm   func(id int) error
	}{
		{"shm", func(id int) error { _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); return err }},
		{"msg", msgRemove},
		{"sem", semRemove},
	}
	removed := 0
	for _, kind := range kinds {
		ids, err := sysvIDs("/proc/sysvipc/" + kind.name)
		if err != nil {
			return removed, err
		}
		for _, id := range ids {
			err := kind.rm(id)
			switch {
			case err == nil:
				removed++
			case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM): // gone already
			default:
				return removed, fmt.Errorf("resetting: removing System V %s %d: %w", kind.name, id, err)
			}
		}
	}
	return removed, nil
}

// msgRemove and semRemove are msgctl and semctl with IPC_RMID, which x/sys/unix does not wrap.
func msgRemove(id int) error {
	if _, _, errno := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), unix.IPC_RMID, 0); errno != 0 {
		return errno
	}
	return nil
}

func semRemove(id int) error {
	if _, _, errno := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_RMID, 0, 0, 0); errno != 0 {
		return errno
	}
	return nil
}

// sysvIDs reads the ids (the second column) of a /proc/sysvipc listing; a missing listing
// (a kernel without System V IPC) has none.
func sysvIDs(path string) ([]int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("resetting: reading %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSysVIPCBytes))
	if err != nil {
		return nil, fmt.Errorf("resetting: reading %s: %w", path, err)
	}
	lines := strings.Split(string(data), "\n")
	var ids []int
	for _, line := range lines[min(1, len(lines)):] { // the first line names the columns
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		if id, err := strconv.Atoi(fields[1]); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
