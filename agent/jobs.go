package agent

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// A background job is a command the agent starts and answers for at once: a server, a
// watcher, a long build. Its output goes to /dev/null (the model can redirect it to a file
// if it wants it). Unlike a foreground command, a job's leftovers are not killed when its
// main process exits, so `nohup server &` as a job keeps its server; the whole tree dies on
// OpKill or when the agent stops.

// jobKillWait bounds how long OpKill waits to report the job's exit status.
const jobKillWait = 2 * time.Second

type job struct {
	id  string
	cmd *command

	mu     sync.Mutex
	ended  bool
	status syscall.WaitStatus
	done   chan struct{} // closed when the main process has been reaped
}

func (s *server) startJob(spec *wire.Exec) (*wire.ExecResult, error) {
	cmd, err := s.start(spec, false)
	if err != nil {
		return nil, err
	}
	liveTrees.add(cmd.tree, false)
	s.mu.Lock()
	s.jobSeq++
	j := &job{id: "job-" + strconv.Itoa(s.jobSeq), cmd: cmd, done: make(chan struct{})}
	s.jobs[j.id] = j
	s.mu.Unlock()

	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		j.watch(time.Duration(spec.TimeoutMS) * time.Millisecond)
	}()
	s.log.Info("job started", "job", j.id, "pid", cmd.pid, "argv", spec.Argv)
	return &wire.ExecResult{PID: cmd.pid, JobID: j.id}, nil
}

// watch records the job's exit status, killing its tree if it outlives timeout (when
// positive).
func (j *job) watch(timeout time.Duration) {
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		select {
		case status := <-j.cmd.exited:
			j.mu.Lock()
			j.ended, j.status = true, status
			j.mu.Unlock()
			j.cmd.closePipes()
			close(j.done)
			return
		case <-deadline:
			deadline = nil
			j.cmd.tree.kill()
		}
	}
}

func (j *job) describe() wire.Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	d := wire.Job{ID: j.id, PID: j.cmd.pid, Argv: j.cmd.argv, Started: j.cmd.started, Running: !j.ended}
	if j.ended {
		d.ExitCode, d.Signal = exitOf(j.status)
	}
	return d
}

// listJobs describes every job started so far, in the order they were started.
func (s *server) listJobs() []wire.Job {
	s.mu.Lock()
	jobs := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		jobs = append(jobs, j)
	}
	s.mu.Unlock()
	slices.SortFunc(jobs, func(a, b *job) int { return jobNumber(a.id) - jobNumber(b.id) })
	list := make([]wire.Job, 0, len(jobs))
	for _, j := range jobs {
		list = append(list, j.describe())
	}
	return list
}

func jobNumber(id string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "job-"))
	return n
}

// killJob kills a job's whole tree, leftovers included, and reports how it ended.
func (s *server) killJob(id string) (wire.Job, error) {
	s.mu.Lock()
	j, ok := s.jobs[id]
	s.mu.Unlock()
	if !ok {
		return wire.Job{}, errorf(wire.CodeNotFound, "no job %q", id)
	}
	j.kill()
	select {
	case <-j.done:
	case <-time.After(jobKillWait):
		return wire.Job{}, fmt.Errorf("killing job %s: process %d has not exited", id, j.cmd.pid)
	}
	return j.describe(), nil
}

func (j *job) kill() {
	j.cmd.tree.kill()
	liveTrees.remove(j.cmd.tree)
}

// killAllJobs ends every job when the agent stops.
func (s *server) killAllJobs() {
	s.mu.Lock()
	jobs := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		jobs = append(jobs, j)
	}
	s.mu.Unlock()
	for _, j := range jobs {
		j.kill()
	}
	watched := make(chan struct{})
	go func() { s.watchers.Wait(); close(watched) }()
	select {
	case <-watched:
	case <-time.After(shutdownGrace):
		s.log.Warn("background jobs still not reaped at shutdown")
	}
}
