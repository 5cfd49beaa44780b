package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

const (
	// rekillInterval is how often a killed tree is swept again while its main process has
	// not been reaped, in case something slipped through the first kill.
	rekillInterval = 100 * time.Millisecond
	// drainGrace bounds the wait for the output pipes to reach EOF once the whole tree is
	// dead. Only a process that escaped the tree can hold them open longer, and the result
	// must not wait for it.
	drainGrace = 200 * time.Millisecond
	// minStreamInterval keeps a careless request from turning streaming into a busy loop.
	minStreamInterval = 10 * time.Millisecond
	// defaultPath is searched when the environment has no PATH, as shells do.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

var errCancelled = errors.New("cancelled by request")

// command is a process the agent started for an exec request, foreground or background.
type command struct {
	argv      []string
	pid       int
	tree      *tree
	exited    <-chan syscall.WaitStatus
	started   time.Time
	forked    bool                      // from the resident interpreter (pyfork.go)
	reported  <-chan syscall.WaitStatus // a forked call's own report of its exit status
	status    *os.File                  // the read end of a forked call's status pipe
	afterHook func()                    // if set, called once the command has been answered

	stdout, stderr *stream       // nil for a background job, whose output is discarded
	stdin          *os.File      // the write end of the stdin pipe, if any
	pipes          []*os.File    // the read ends of the output pipes
	reading        atomic.Int32  // output pipes not yet at EOF (or closed)
	drained        chan struct{} // closed when reading reaches 0
}

// exec runs a foreground command to its end, or starts a background job. after, if not
// nil, is work to do once the result has been sent (forking the next spare, starting the
// resident interpreter), so that it does not delay the answer.
func (s *server) exec(ctx context.Context, id uint64, spec *wire.Exec) (res *wire.ExecResult, after func(), err error) {
	if spec == nil {
		return nil, nil, errorf(wire.CodeInvalid, "exec request %d has no exec field", id)
	}
	if spec.MaxOutputBytes < 0 || spec.TimeoutMS < 0 || spec.StreamIntervalMS < 0 {
		return nil, nil, errorf(wire.CodeInvalid, "max_output_bytes, timeout_ms and stream_interval_ms must not be negative")
	}
	if spec.Background {
		job, err := s.startJob(spec)
		return job, nil, err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := s.addRunning(id, cancel); err != nil {
		return nil, nil, err
	}
	defer s.removeRunning(id)

	// The sandbox's OOM-kill counter is read while the command starts, not before: a
	// process fills a memory limit one page fault at a time, which takes far longer.
	oomRead := make(chan oomCount, 1)
	go func() { oomRead <- readOOMKills() }()
	cmd, err := s.startForeground(spec)
	oomBefore := <-oomRead
	if err != nil {
		return nil, nil, err
	}
	liveTrees.add(cmd.tree, true)
	ending, status := s.waitForExit(ctx, id, cmd, spec)

	// Whatever the command left behind dies with it, even processes still holding its
	// output pipes, which is why this comes before waiting for the pipes to drain. The
	// tree's last scan serves the orphan sweep too.
	reaped, orphans := cmd.tree.end(s.reaper)
	if orphans > 0 {
		s.log.Info("killed orphans outside any command's tree", "count", orphans)
	}
	cmd.closeOutput(drainGrace)
	if spec.StreamIntervalMS > 0 {
		s.streamChunk(id, cmd, true)
	}

	res = &wire.ExecResult{
		PID:        cmd.pid,
		DurationMS: float64(time.Since(cmd.started).Microseconds()) / 1000,
		TimedOut:   ending == endTimedOut,
		Cancelled:  ending == endCancelled,
		Stopped:    ending == endCancelled && !errors.Is(context.Cause(ctx), errCancelled),
		Reaped:     reaped,
		Forked:     cmd.forked,
	}
	res.ExitCode, res.Signal = exitOf(status)
	var outTrunc, errTrunc bool
	var outOmitted, errOmitted int64
	res.Stdout, outTrunc, outOmitted = cmd.stdout.result()
	res.Stderr, errTrunc, errOmitted = cmd.stderr.result()
	res.Truncated = outTrunc || errTrunc
	res.OmittedBytes = outOmitted + errOmitted
	if oomBefore.known && ending == endExited && status.Signaled() && status.Signal() == syscall.SIGKILL {
		oomAfter := readOOMKills()
		res.OOMKilled = oomAfter.known && oomAfter.n > oomBefore.n
	}
	return res, afterAnswer(cmd), nil
}

// afterAnswer is the work left once cmd has been answered: closing its pipes, cmd's own
// afterHook, then killing a root that reported its exit and waits for it (and, should its
// report have been a lie, whatever it has started since the tree was killed).
func afterAnswer(cmd *command) func() {
	return func() {
		cmd.closePipes()
		if cmd.afterHook != nil {
			cmd.afterHook()
		}
		if cmd.tree.exiting {
			cmd.tree.exiting = false
			cmd.tree.kill()
		}
	}
}

// ending says why a command's main process ended.
type ending int

const (
	endExited    ending = iota // on its own (or killed by someone else)
	endTimedOut                // killed by the agent at its timeout
	endCancelled               // killed by the agent on OpCancel or shutdown
)

// waitForExit waits for cmd's main process, killing its tree at the timeout or on
// cancellation and streaming output meanwhile.
func (s *server) waitForExit(ctx context.Context, id uint64, cmd *command, spec *wire.Exec) (ending, syscall.WaitStatus) {
	var timeout, tick, rekill <-chan time.Time
	if spec.TimeoutMS > 0 {
		t := time.NewTimer(time.Until(cmd.started.Add(time.Duration(spec.TimeoutMS) * time.Millisecond)))
		defer t.Stop()
		timeout = t.C
	}
	if spec.StreamIntervalMS > 0 {
		t := time.NewTicker(max(time.Duration(spec.StreamIntervalMS)*time.Millisecond, minStreamInterval))
		defer t.Stop()
		tick = t.C
	}
	done := ctx.Done()
	why := endExited
	var rekillTicker *time.Ticker
	defer func() {
		if rekillTicker != nil {
			rekillTicker.Stop()
		}
	}()
	reported := cmd.reported
	kill := func(reason ending) {
		why = reason
		timeout, done = nil, nil // each fires once; afterwards only the exit matters
		reported = nil           // and only the kernel's word for it
		cmd.tree.kill()
		rekillTicker = time.NewTicker(rekillInterval)
		rekill = rekillTicker.C
	}
	for {
		select {
		case status := <-cmd.exited:
			return why, status
		case status := <-reported:
			// The call says it is exiting, its output closed: the kernel's tear-down of
			// the process is all that is left, and the tree kill that follows covers it.
			cmd.tree.exiting = true
			return why, status
		case <-timeout:
			kill(endTimedOut)
		case <-done:
			kill(endCancelled)
		case <-rekill:
			cmd.tree.kill()
		case <-tick:
			s.streamChunk(id, cmd, false)
		}
	}
}

// streamChunk sends the output produced since the previous chunk, if there is any.
func (s *server) streamChunk(id uint64, cmd *command, final bool) {
	out := &wire.Output{Stdout: cmd.stdout.takeChunk(final), Stderr: cmd.stderr.takeChunk(final)}
	if out.Stdout == "" && out.Stderr == "" {
		return
	}
	s.send(&wire.Response{ID: id, Kind: wire.KindOutput, Output: out})
}

func (s *server) addRunning(id uint64, cancel context.CancelCauseFunc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.running[id]; dup {
		return errorf(wire.CodeInvalid, "request %d is already running", id)
	}
	s.running[id] = cancel
	return nil
}

func (s *server) removeRunning(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.running, id)
}

// cancel kills the tree of the running exec request target; that request then answers
// with Cancelled set.
func (s *server) cancel(target uint64) error {
	s.mu.Lock()
	cancel, ok := s.running[target]
	s.mu.Unlock()
	if !ok {
		return errorf(wire.CodeNotFound, "no running exec request %d", target)
	}
	cancel(errCancelled)
	return nil
}

// startForeground starts a foreground command: forked from the resident interpreter when
// spec asks for it and one is ready (pyfork.go), else started. A call that could have been
// forked but was started starts the resident interpreter once its own process has exited.
func (s *server) startForeground(spec *wire.Exec) (*command, error) {
	if !forkable(spec) {
		return s.start(spec, true)
	}
	marker := newMarker()
	env, envErr := commandEnv(spec.Env, marker)
	dir, dirErr := s.workDir(spec.Dir)
	if envErr != nil || dirErr != nil {
		return s.start(spec, true)
	}
	path, err := lookPath(spec.Argv[0], env)
	if err != nil {
		return s.start(spec, true)
	}
	cmd, err := s.forks.start(spec, path, dir, env, marker)
	if !errors.Is(err, errNoFork) {
		return cmd, err
	}
	cmd, err = s.start(spec, true)
	if err == nil {
		cmd.afterHook = func() { s.forks.prepare(path, false) }
	}
	return cmd, err
}

// start starts spec's process in a session of its own, tagged with a fresh tree marker.
// With capture, its stdout and stderr are read into capped streams; without, they go to
// /dev/null.
func (s *server) start(spec *wire.Exec, capture bool) (*command, error) {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, errorf(wire.CodeInvalid, "exec needs a program in argv")
	}
	marker := newMarker()
	env, err := commandEnv(spec.Env, marker)
	if err != nil {
		return nil, err
	}
	dir, err := s.workDir(spec.Dir)
	if err != nil {
		return nil, err
	}
	path, err := lookPath(spec.Argv[0], env)
	if err != nil {
		return nil, err
	}
	cmd, child, err := newCommand(spec, capture)
	if err != nil {
		return nil, err
	}
	defer child.close()
	attr := &syscall.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []uintptr{child.stdin.Fd(), child.stdout.Fd(), child.stderr.Fd()},
		// A session of its own gives the command its own process group, so job-control
		// signals and group kills reach it and not the agent.
		Sys: &syscall.SysProcAttr{Setsid: true},
	}
	pid, exited, err := s.reaper.spawn(path, spec.Argv, attr)
	if err != nil {
		cmd.closePipes()
		return nil, &codedError{code: codeOf(err), err: fmt.Errorf("starting %s: %w", spec.Argv[0], err)}
	}
	cmd.run(pid, exited, marker, spec.Stdin)
	return cmd, nil
}

// childEnds are the standard descriptors a command's process gets. The agent closes its
// copies once the child has them, so that EOF on the output pipes means the child side is
// gone.
type childEnds struct {
	stdin, stdout, stderr *os.File
	open                  []*os.File
}

func (c *childEnds) close() {
	for _, f := range c.open {
		f.Close()
	}
}

// newCommand makes cmd's descriptors: stdin is a pipe when spec has input, else /dev/null;
// with capture, stdout and stderr are pipes into capped streams, else /dev/null. Nothing is
// left open on error.
func newCommand(spec *wire.Exec, capture bool) (*command, *childEnds, error) {
	cmd := &command{argv: spec.Argv}
	child := &childEnds{}
	fail := func(err error) (*command, *childEnds, error) {
		child.close()
		cmd.closePipes()
		return nil, nil, err
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s: %w", os.DevNull, err)
	}
	child.open = append(child.open, devNull)
	child.stdin, child.stdout, child.stderr = devNull, devNull, devNull
	if len(spec.Stdin) > 0 {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(fmt.Errorf("creating stdin pipe: %w", err))
		}
		child.stdin, cmd.stdin = r, w
		child.open = append(child.open, r)
	}
	if capture {
		cmd.stdout, cmd.stderr = outputStreams(spec)
		for _, target := range []**os.File{&child.stdout, &child.stderr} {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(fmt.Errorf("creating output pipe: %w", err))
			}
			*target = w
			cmd.pipes = append(cmd.pipes, r)
			child.open = append(child.open, w)
		}
	}
	return cmd, child, nil
}

// outputStreams makes the capped streams a command's stdout and stderr are read into.
func outputStreams(spec *wire.Exec) (stdout, stderr *stream) {
	limit := spec.MaxOutputBytes
	if limit == 0 {
		limit = wire.DefaultMaxOutputBytes
	}
	streaming := spec.StreamIntervalMS > 0
	return newStream(limit, streaming), newStream(limit, streaming)
}

// run records that cmd's process pid has started, writes input to its stdin pipe (if it
// has one) and starts reading its output (if captured).
func (cmd *command) run(pid int, exited <-chan syscall.WaitStatus, marker string, input []byte) {
	cmd.pid, cmd.exited, cmd.started = pid, exited, time.Now()
	cmd.tree = &tree{root: pid, marker: marker}
	if cmd.stdin != nil {
		go func() {
			// A process that exits without reading its input makes this fail with EPIPE,
			// which is its business.
			cmd.stdin.Write(input)
			cmd.stdin.Close()
		}()
	}
	if cmd.stdout != nil {
		cmd.drained = make(chan struct{})
		cmd.reading.Store(2)
		go cmd.readInto(cmd.stdout, cmd.pipes[0])
		go cmd.readInto(cmd.stderr, cmd.pipes[1])
	}
}

// readInto copies one output pipe into its stream until EOF or until the pipe is closed
// under it.
func (c *command) readInto(dst *stream, src *os.File) {
	defer func() {
		if c.reading.Add(-1) == 0 {
			close(c.drained)
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		dst.Write(buf[:n])
		if err != nil {
			return
		}
	}
}

// closeOutput waits up to grace for the output pipes to reach EOF; pipes that do are
// closed after the answer (afterAnswer), each close a few system calls. Past grace, what
// the dead tree wrote is still read while the pipes hold any (a reader starved of CPU may
// lag behind), up to drainCatchUp more: only a process that escaped the tree can keep a
// pipe full that long. Then the pipes are closed, which ends the readers however things
// stand.
func (c *command) closeOutput(grace time.Duration) {
	if c.drained == nil {
		return // not captured
	}
	select {
	case <-c.drained: // the usual case: the tree is dead and its output read
		return
	default:
	}
	wait := time.NewTimer(grace)
	defer wait.Stop()
	catchUp := time.Now().Add(grace + drainCatchUp)
	for {
		select {
		case <-c.drained:
			return
		case <-wait.C:
			if c.pipesHoldData() && time.Now().Before(catchUp) {
				wait.Reset(5 * time.Millisecond)
				continue
			}
		}
		c.closePipes()
		<-c.drained
		return
	}
}

// drainCatchUp bounds how long past drainGrace output still in the pipes is read.
const drainCatchUp = 2 * time.Second

// pipesHoldData reports whether an output pipe has bytes its reader has not taken yet
// (TIOCINQ is FIONREAD on Linux).
func (c *command) pipesHoldData() bool {
	for _, f := range c.pipes {
		raw, err := f.SyscallConn()
		if err != nil {
			continue
		}
		n := 0
		_ = raw.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
		if n > 0 {
			return true
		}
	}
	return false
}

func (c *command) closePipes() {
	for _, f := range c.pipes {
		f.Close()
	}
	if c.status != nil {
		c.status.Close()
	}
	if c.stdin != nil {
		c.stdin.Close()
	}
}

// workDir resolves a request's working directory against the workspace and checks that it
// is a directory, which makes for a clearer error than the one exec would give.
func (s *server) workDir(dir string) (string, error) {
	dir = s.resolve(dir)
	info, err := os.Stat(dir)
	if err != nil {
		return "", fileError("using working directory", dir, err)
	}
	if !info.IsDir() {
		return "", errorf(wire.CodeNotDir, "using working directory %s: not a directory", dir)
	}
	return dir, nil
}

// resolve makes a request's path absolute and clean; empty means the workspace.
func (s *server) resolve(path string) string {
	if !filepath.IsAbs(path) {
		path = filepath.Join(s.workspace, path)
	}
	return filepath.Clean(path)
}

// commandEnv is the agent's environment with the request's entries and the tree marker
// applied over it, each key appearing once.
func commandEnv(extra []string, marker string) ([]string, error) {
	var env []string
	index := make(map[string]int)
	set := func(kv string) {
		key, _, _ := strings.Cut(kv, "=")
		if i, ok := index[key]; ok {
			env[i] = kv
			return
		}
		index[key] = len(env)
		env = append(env, kv)
	}
	for _, kv := range os.Environ() {
		set(kv)
	}
	for _, kv := range extra {
		if key, _, ok := strings.Cut(kv, "="); !ok || key == "" || strings.ContainsRune(kv, 0) {
			return nil, errorf(wire.CodeInvalid, "env entry %q is not KEY=VALUE", kv)
		}
		set(kv)
	}
	set(marker)
	return env, nil
}

// lookPath finds program the way a shell would, in the PATH of the command's environment.
// A name with a slash is used as is.
func lookPath(program string, env []string) (string, error) {
	if strings.Contains(program, "/") {
		return program, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "." // POSIX: an empty PATH entry means the current directory
		}
		candidate := filepath.Join(dir, program)
		if info, err := os.Stat(candidate); err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", errorf(wire.CodeNotFound, "program %q not found in PATH", program)
}

// exitOf reads an exit status the way the wire reports it.
func exitOf(status syscall.WaitStatus) (code int, signal string) {
	if status.Signaled() {
		return -1, signalName(status.Signal())
	}
	return status.ExitStatus(), ""
}

func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return "SIG" + strconv.Itoa(int(sig))
}

// oomCounterFiles hold the OOM-kill counter of the sandbox's memory cgroup: cgroup v2's
// first, then v1's. Inside a container /sys/fs/cgroup is the container's own cgroup.
var oomCounterFiles = []string{
	"/sys/fs/cgroup/memory.events",
	"/sys/fs/cgroup/memory/memory.oom_control",
}

// oomCount is how many processes the kernel's OOM killer has killed in the sandbox, if
// known.
type oomCount struct {
	n     int64
	known bool
}

// readOOMKills reads the sandbox's OOM-kill counter.
func readOOMKills() oomCount {
	n, ok := oomKills(oomCounterFiles)
	return oomCount{n, ok}
}

// oomKills reads the "oom_kill N" line of the first of files that has one.
func oomKills(files []string) (int64, bool) {
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		lines := bufio.NewScanner(bytes.NewReader(data))
		for lines.Scan() {
			if v, ok := strings.CutPrefix(lines.Text(), "oom_kill "); ok {
				if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					return n, true
				}
			}
		}
	}
	return 0, false
}
