package agent

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// The agent is PID 1 (or a child subreaper), so every orphan in the sandbox becomes its
// child and stays a zombie, holding a pid under the pids limit, until the agent waits for
// it. One goroutine therefore waits for any child at all, and hands the statuses of the
// processes the agent started to whoever is waiting for them. exec.Cmd.Wait cannot be used
// alongside it: the reaper would take its child's status first.
//
// The reaper is process-wide because wait4(-1) is: two of them would steal each other's
// children. Every Run in the process shares it.

// reaperSafetyPoll bounds how long a status can wait if a SIGCHLD were ever missed.
const reaperSafetyPoll = time.Second

type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus // by pid, for processes started through spawn
}

var sharedReaper = sync.OnceValue(func() *reaper {
	r := &reaper{waiters: make(map[int]chan syscall.WaitStatus)}
	sigchld := make(chan os.Signal, 1)
	// Subscribing before the first spawn means no exit can go unnoticed.
	signal.Notify(sigchld, syscall.SIGCHLD)
	go r.loop(sigchld)
	return r
})

// spawn starts a process and registers it for its exit status, which arrives on the
// returned channel. Starting and registering happen under the lock the reaper takes to hand
// out statuses, so a process that exits at once is never mistaken for an orphan.
func (r *reaper) spawn(path string, argv []string, attr *syscall.ProcAttr) (pid int, exited <-chan syscall.WaitStatus, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err = syscall.ForkExec(path, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

// adopt registers pid, a process another process forked that is (or is about to be)
// reparented to the agent, for its exit status, as spawn does for the agent's own. It waits
// until deadline for the agent to become pid's parent, and refuses a pid that has ended, is
// registered already, or is still not the agent's child by then.
func (r *reaper) adopt(pid int, deadline time.Time) (<-chan syscall.WaitStatus, error) {
	self := os.Getpid()
	for pause := time.Duration(0); ; pause = min(2*pause+50*time.Microsecond, 5*time.Millisecond) {
		ch, err := r.tryAdopt(pid, self)
		if ch != nil || err != nil {
			return ch, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("adopting process %d: it is not the agent's child", pid)
		}
		time.Sleep(pause)
	}
}

// tryAdopt registers pid if it is a live child of self. Holding the lock that reapAll takes
// to hand out statuses means pid cannot be reaped between the check and the registration
// without the check seeing it gone.
func (r *reaper) tryAdopt(pid, self int) (<-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.waiters[pid]; dup {
		return nil, fmt.Errorf("adopting process %d: it is registered already", pid)
	}
	p, ok := readProc(pid)
	if !ok || p.dead {
		return nil, fmt.Errorf("adopting process %d: it has ended", pid)
	}
	if p.ppid != self {
		return nil, nil
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	return ch, nil
}

// started reports whether pid is a process spawn started that has not yet been reaped.
func (r *reaper) started(pid int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.waiters[pid]
	return ok
}

func (r *reaper) loop(sigchld <-chan os.Signal) {
	poll := time.NewTicker(reaperSafetyPoll)
	defer poll.Stop()
	for {
		r.reapAll()
		select {
		case <-sigchld:
		case <-poll.C:
		}
	}
}

// reapAll collects every child that has exited. SIGCHLDs coalesce, so one signal may stand
// for many exits.
func (r *reaper) reapAll() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD: no children; 0: none has exited
			return
		}
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if ok {
			ch <- status // buffered: never blocks
		}
		// Otherwise an orphan: reaping it was the point, its status interests nobody.
	}
}
