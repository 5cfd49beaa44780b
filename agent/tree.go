package agent

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Killing "the command" means killing everything it started, and no single kernel handle
// covers that: a process-group kill misses descendants that called setsid, and a descendant
// whose parent died is reparented to the agent, so parent links no longer lead back to the
// command. A tree is therefore the union of three tests, each catching what the others
// miss: parent ancestry, session and process group, and an environment marker that every
// descendant inherits unless it deliberately scrubs its environment.

// markerVar is the environment variable that tags every process of one command.
const markerVar = "ENCLAVE_EXEC_ID"

// treeIDs numbers trees; the agent's pid in the marker keeps agents in nested sandboxes
// (or tests) from claiming each other's processes.
var treeIDs atomic.Uint64

// tree identifies one command's processes. Its root runs in its own session, so the session
// and process group ids both equal root.
type tree struct {
	root    int
	marker  string // markerVar=<id>, or "" for a tree known only by root
	exiting bool   // root has reported its exit (pyfork.go) and waits to be killed
}

func newMarker() string {
	return fmt.Sprintf("%s=%d-%d", markerVar, os.Getpid(), treeIDs.Add(1))
}

// proc is what the agent needs from /proc/<pid>/stat.
type proc struct {
	pid, ppid, pgid, sid int
	start                uint64 // when it started, in clock ticks since boot
	dead                 bool   // a zombie (or dying): nothing left to kill
	stopped              bool   // stopped by a signal or a tracer
}

// readProcs lists the processes visible in /proc. Processes that vanish mid-scan are skipped.
// Every call scans /proc at least once, after its process has exited, on the way to its
// answer, where each system call costs several microseconds (a sandbox's CPU is cold after
// a wait): the directory and the files are read with plain system calls, half as many as
// the os package makes.
func readProcs() []proc {
	fd, err := unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	var names []string
	dirents := make([]byte, 8<<10)
	for {
		n, err := unix.Getdents(fd, dirents)
		if err != nil || n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(dirents[:n], -1, names)
	}
	unix.Close(fd)
	procs := make([]proc, 0, len(names))
	buf := make([]byte, procFileBuffer)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if p, ok := readProcInto(pid, buf); ok {
			procs = append(procs, p)
		}
	}
	return procs
}

// pidCursor reads the last pid the kernel gave out in the reader's pid namespace: the
// fifth field of /proc/loadavg. Pids go out in increasing order (until they wrap at
// pid_max), to threads as well as processes, and nothing in a sandbox can move the cursor
// otherwise (that takes CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE in the namespace's owner). So
// a cursor that still reads what it read after some process was created proves that no
// process or thread has been created since. The file stays open, for one pread per read.
type pidCursor struct {
	once sync.Once
	fd   int // -1 if /proc/loadavg cannot be opened
}

// read returns the cursor, or 0 if it cannot be read (a runtime whose /proc/loadavg says
// nothing of pids reads 0 too, or a number no pid will match).
func (c *pidCursor) read() int {
	c.once.Do(func() {
		fd, err := unix.Open("/proc/loadavg", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fd = -1
		}
		c.fd = fd
	})
	if c.fd < 0 {
		return 0
	}
	var buf [128]byte // "0.52 0.58 0.59 2/189 12345\n"
	n, err := unix.Pread(c.fd, buf[:], 0)
	if err != nil || n <= 0 {
		return 0
	}
	fields := bytes.Fields(buf[:n])
	if len(fields) < 5 {
		return 0
	}
	last, err := strconv.Atoi(string(fields[4]))
	if err != nil || last < 0 {
		return 0
	}
	return last
}

// procFileBuffer holds any /proc/PID/stat (about 300 bytes).
const procFileBuffer = 1 << 10

func readProc(pid int) (proc, bool) { return readProcInto(pid, make([]byte, procFileBuffer)) }

// readProcInto reads pid's /proc/PID/stat into buf: one open, read and close.
func readProcInto(pid int, buf []byte) (proc, bool) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return proc{}, false
	}
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil {
		return proc{}, false
	}
	data := buf[:n]
	// "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses, so
	// the fields start after the last ')'.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return proc{}, false
	}
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 20 {
		return proc{}, false
	}
	p := proc{pid: pid}
	state := fields[0]
	p.dead = len(state) > 0 && (state[0] == 'Z' || state[0] == 'X' || state[0] == 'x')
	p.stopped = len(state) > 0 && (state[0] == 'T' || state[0] == 't')
	p.ppid, _ = strconv.Atoi(string(fields[1]))
	p.pgid, _ = strconv.Atoi(string(fields[2]))
	p.sid, _ = strconv.Atoi(string(fields[3]))
	p.start, _ = strconv.ParseUint(string(fields[19]), 10, 64) // field 22 of proc_pid_stat(5)
	return p, true
}

// environHas reports whether the initial environment of p holds entry exactly. Processes
// whose environment cannot be read (gone, or not ours) do not.
//
// A process in the middle of an execve shows an empty environment until its new program's
// is in place, which is when a leftover that called setsid and is starting its next program
// would escape its tree (and a job's, be swept as an orphan). So for the agent's own
// children, the only ones this can matter for, an empty environment is read again a few
// times before it is believed; a child whose environment really is empty costs a few
// milliseconds per scan.
func environHas(p proc, entry string) bool {
	var data []byte
	for attempt := 0; ; attempt++ {
		var err error
		if data, err = os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/environ"); err != nil {
			return false
		}
		if len(data) > 0 {
			break
		}
		if p.ppid != os.Getpid() || attempt == emptyEnvironRereads {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	// Matching "\x00entry\x00" against "\x00environ" finds whole entries only, so marker
	// 1-2 does not match 1-23.
	framed := make([]byte, 0, len(data)+2)
	framed = append(append(append(framed, 0), data...), 0)
	return bytes.Contains(framed, []byte("\x00"+entry+"\x00"))
}

// emptyEnvironRereads bounds environHas's rereads of an empty environment.
const emptyEnvironRereads = 3

// members returns the live processes of t among procs, never the agent itself.
//
// Only a process that started no earlier than the root can be the root's descendant, so
// while the root is exiting (it has reported its exit and waits to be killed, so its pid is
// still its own), the environment of a process that started before it (the resident
// interpreter, other commands) is not read: the marker test costs a few system calls per
// process, cold, on the way to a forked call's answer. (Start times count clock ticks: a
// process started in the root's tick is read.)
func (t *tree) members(procs []proc) []int {
	self := os.Getpid()
	parent := make(map[int]int, len(procs))
	var rootStart uint64
	for _, p := range procs {
		parent[p.pid] = p.ppid
		if p.pid == t.root && t.exiting {
			rootStart = p.start
		}
	}
	var found []int
	for _, p := range procs {
		if p.dead || p.pid == self {
			continue
		}
		if p.pid == t.root || p.sid == t.root || p.pgid == t.root ||
			descends(p.pid, t.root, parent) ||
			(t.marker != "" && p.start >= rootStart && environHas(p, t.marker)) {
			found = append(found, p.pid)
		}
	}
	return found
}

// descends reports whether ancestor appears among pid's ancestors.
func descends(pid, ancestor int, parent map[int]int) bool {
	for range 4096 { // pid_max bounds real chains; this bounds a corrupt one
		ppid, ok := parent[pid]
		if !ok || ppid <= 0 || ppid == pid {
			return false
		}
		if ppid == ancestor {
			return true
		}
		pid = ppid
	}
	return false
}

// killRounds bounds how often kill rescans a tree that keeps producing processes.
const killRounds = 50

// kill SIGKILLs every process of t, rescanning until a scan finds none, so that processes
// forked while the kill was under way die too. It returns how many distinct processes it
// killed.
//
// A root that is exiting (it has reported its exit status) is left alone and not counted:
// it waits to be killed once the call has been answered (exec), so that its tear-down does
// not hold up the answer.
func (t *tree) kill() int {
	killed, _ := t.killAndScan()
	return killed
}

// end is the end of a foreground command whose main process has exited or reported its
// exit: it kills what is left of t, takes t off the live trees and sweeps orphans with the
// kill's last scan. It returns how many processes the kill and the sweep killed.
//
// Both need a scan of /proc, which costs a forked call about 0.15 ms on the way to its
// answer (a dozen system calls, each cold after the sandbox's wait), and finds nothing in
// the usual case: a script that started no process. So when the pid cursor proves that no
// process has been created since t's root, and nothing could have become an orphan since
// the last sweep (treeRegistry.endUnscanned), there is nothing to scan for and end scans
// nothing.
//
// The cursor is read once, first: every process created up to it is in the kill's scans,
// which come after, so it also marks what the sweep saw.
func (t *tree) end(r *reaper) (killed, orphans int) {
	through := liveTrees.cursor.read()
	if liveTrees.endUnscanned(t, through) {
		return 0, 0
	}
	killed, last := t.killAndScan()
	liveTrees.remove(t)
	return killed, sweepOrphans(r, last, through)
}

// killAndScan is kill, and also returns the scan that found nothing left of t (nil if
// none did), for sweepOrphans to use rather than scan again.
func (t *tree) killAndScan() (killed int, last []proc) {
	dead := make(map[int]bool)
	pause := time.Duration(0)
	for range killRounds {
		procs := readProcs()
		pids := t.members(procs)
		if t.exiting {
			pids = slices.DeleteFunc(pids, func(pid int) bool { return pid == t.root })
		}
		if len(pids) == 0 {
			last = procs
			break
		}
		// The group kill is atomic against forks within the group; the scan is not.
		syscall.Kill(-t.root, syscall.SIGKILL)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
			dead[pid] = true
		}
		// SIGKILLed processes take a moment to become zombies; rescanning at once would
		// only find them again.
		time.Sleep(pause)
		pause = min(pause+time.Millisecond, 10*time.Millisecond)
	}
	return len(dead), last
}

// liveTrees records the trees of the commands and jobs still running, process-wide for the
// same reason as the reaper: orphans are the process's, not one Run's.
var liveTrees = &treeRegistry{trees: make(map[*tree]bool)}

type treeRegistry struct {
	mu         sync.Mutex
	trees      map[*tree]bool // value: a foreground command, as opposed to a job
	foreground int
	// swept is the pid cursor read before the scan of the last sweep, if that sweep ran
	// and nothing since could have left an orphan unseen by it (a sweep skipped while
	// busy, a job's end, orphans killed); else 0. See endUnscanned.
	swept  int
	cursor pidCursor
}

func (r *treeRegistry) add(t *tree, foreground bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trees[t] = foreground
	if foreground {
		r.foreground++
	}
}

// remove takes t off the live trees. A job's tree ends without a sweep, and a process
// that escaped it (setsid, its marker scrubbed) may be an orphan now that the job no
// longer accounts for it, so the next sweep must scan.
func (r *treeRegistry) remove(t *tree) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if foreground, ok := r.trees[t]; ok {
		delete(r.trees, t)
		if foreground {
			r.foreground--
		} else {
			r.swept = 0
		}
	}
}

// endUnscanned reports whether t, a foreground command's tree whose root has reported its
// exit, can end without a scan, and if so takes it off the live trees as having been
// swept. cursor is the pid cursor, read now. That holds when:
//   - t is the only live tree, and no process is being handed over (hold): no other command
//     or job has processes that could be, or become, orphans;
//   - the pid cursor reads t's root: no process or thread has been created since the root,
//     so t has no other member (members: a process that joined the root's session or group,
//     descends from it, or carries its marker and started after it) and none of its
//     processes can have escaped it;
//   - the last sweep scanned with the cursor two before the root (the resident interpreter's
//     intermediate process and the root are all that were created since) and nothing has
//     happened since that the next sweep must look for (swept is not 0).
//
// Every process alive now was then alive at that sweep, which found no orphan, when no tree
// was live (t did not exist, and a tree that ended since would have reset swept or swept
// again, moving it past the root); so every process is still one the agent started, or a
// descendant of one that no tree could have lost. The cursor could also have come back to
// the same value by wrapping at pid_max, which takes every pid of the namespace (tens of
// thousands of forks) between the end of the last call and its successor's report; nothing
// in the sandbox runs then but the last call's exiting root, killed as soon as its call is
// answered. The sweep this replaces now counts as made, up to the root.
func (r *treeRegistry) endUnscanned(t *tree, cursor int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !t.exiting || len(r.trees) != 1 || !r.trees[t] || r.foreground != 1 || r.swept == 0 ||
		r.swept+2 != t.root || cursor != t.root {
		return false
	}
	delete(r.trees, t)
	r.foreground--
	r.swept = t.root
	return true
}

// sweptThrough records a sweep that ran on a scan made with the cursor at through, or, with
// through 0, that one was skipped or cannot vouch for what it saw (endUnscanned).
func (r *treeRegistry) sweptThrough(through int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.swept = through
}

// hold counts one more foreground command before its tree is known: a process being handed
// to the agent (pyfork.go) is nobody's until it is, and the orphan sweep must wait.
func (r *treeRegistry) hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.foreground++
}

// release undoes hold.
func (r *treeRegistry) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.foreground--
}

// snapshot returns the live trees, or nothing if a foreground command is running: while one
// is, an orphan may be its own and the sweep must not run.
func (r *treeRegistry) snapshot() (trees []*tree, busy bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.foreground > 0 {
		return nil, true
	}
	for t := range r.trees {
		trees = append(trees, t)
	}
	return trees, false
}

// owns reports whether p belongs to one of trees by group, session or marker. (Ancestry is
// no use here: an orphan's ancestry has already been lost.)
func owns(trees []*tree, p proc) bool {
	for _, t := range trees {
		if p.sid == t.root || p.pgid == t.root || (t.marker != "" && environHas(p, t.marker)) {
			return true
		}
	}
	return false
}

// sweepOrphans kills the agent's children that no command or job accounts for: processes
// that escaped their command's tree (scrubbed the marker from their environment, called
// setsid, and double-forked) and were reparented to the agent. It does nothing while a
// command runs, since such a process might be that command's. It returns how many processes
// it killed. procs is a scan of /proc just made, after the pid cursor read through, or nil
// to make one.
func sweepOrphans(r *reaper, procs []proc, through int) int {
	trees, busy := liveTrees.snapshot()
	if busy {
		liveTrees.sweptThrough(0)
		return 0
	}
	if procs == nil {
		through = liveTrees.cursor.read()
		procs = readProcs()
	}
	self := os.Getpid()
	killed := 0
	for _, p := range procs {
		if p.ppid != self || p.dead || r.started(p.pid) || owns(trees, p) {
			continue
		}
		orphan := tree{root: p.pid}
		killed += orphan.kill()
	}
	// A sweep that killed orphans may have orphaned their descendants meanwhile (the kill
	// takes whole trees, but a scan is not atomic): the next one scans.
	if killed > 0 {
		liveTrees.sweptThrough(0)
	} else {
		liveTrees.sweptThrough(through)
	}
	return killed
}
