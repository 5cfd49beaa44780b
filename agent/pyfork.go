package agent

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// A Python call (wire.Exec.Fork) costs a fresh interpreter's start-up, and data-analysis
// code then pays for `import numpy, pandas` again on every call: hundreds of milliseconds
// against the few the agent needs. So the agent keeps a resident interpreter per sandbox,
// started once the first such call has been answered, that has imported the heavy modules
// the image has; each call runs in a process forked from it (forkserver.py). The call still gets a fresh
// process: nothing one call sets, imports or opens is seen by the next.
//
// The forked process must be indistinguishable from one the agent started, to everything
// downstream (timeouts, tree kills, output caps, exit statuses). The server forks an
// intermediate that forks the call's process and exits, so the call's process is the
// agent's child (the agent is PID 1 or a child subreaper) and the agent's reaper collects
// its status exactly as for any command; what happens to the server afterwards cannot touch
// a call in flight. The call's process waits for its script until the agent has adopted it,
// so it cannot end before the agent is ready for its status.
//
// The fork is done ahead of the call: the agent keeps one spare process per server, forked
// and adopted, waiting for its request, and forks the next one once the call has been
// answered. A call therefore pays for handing a script to a waiting process, and the fork
// (milliseconds for a large interpreter on a virtual machine) is only paid when calls come
// faster than the server forks. At the other end, the call reports its exit status on a
// pipe of its own just before it exits, its output already closed: the kernel's tear-down
// of a process that shares the interpreter's pages (milliseconds again) then happens after
// the answer, not before it.
//
// The server runs the same uid as the calls. They cannot read or write its memory (it is
// non-dumpable, as the agent is), but they can kill or stop it. Whatever state it is in, a
// call never fails for it: a server that is starting, dead, or slow to answer is passed by,
// and the agent starts the interpreter itself. A dead server is replaced on the next call;
// after maxForkFailures deaths or refusals in a row, the sandbox stops trying.

//go:embed forkserver.py
var forkServerScript string

const (
	// forkReadyWait bounds the server's start-up, its imports included.
	forkReadyWait = 60 * time.Second
	// forkReplyWait bounds how long a call waits for the server to report the forked pid.
	// Past it the server is presumed stopped or hung, killed, and the call started afresh.
	forkReplyWait = 2 * time.Second
	// maxForkFailures is how many failed servers in a row disable forking in a sandbox.
	maxForkFailures = 3
	// maxForkServerLog bounds what is kept of a server's stderr for the log.
	maxForkServerLog = 4 << 10
	// maxStatusBytes bounds what is read from a call's status pipe: "r", then "255\n".
	maxStatusBytes = 8
)

// lightServerVar in a resident interpreter's environment makes it a light one (forkserver.py).
const lightServerVar = "ENCLAVE_FORK_LIGHT=1"

// errNoFork says the call cannot be forked now; the caller starts the interpreter itself.
var errNoFork = errors.New("no resident interpreter ready")

// forkServers holds the resident interpreters, one per interpreter path.
type forkServers struct {
	log       *slog.Logger
	reaper    *reaper
	workspace string

	mu       sync.Mutex
	servers  map[string]*forkServer
	failures int  // servers in a row that died or misbehaved before a successful fork
	closed   bool // shutting down: start none
}

// forkServer is one resident interpreter.
type forkServer struct {
	pid   int
	light bool              // imports none of the heavy modules (wire.Warm.Light)
	env   map[string]string // its environment, which each call's request changes
	sock  *os.File          // the agent's end of the SOCK_SEQPACKET pair
	ready chan struct{}     // closed once the server has imported its modules
	dead  chan struct{}     // closed once the process has exited

	mu      sync.Mutex // held across a fork: one at a time, so replies come back in order
	spare   *spare     // forked ahead of the next call
	stopped bool       // killed by stop: fork nothing more

	upgrading bool // a full server is starting to take this light one's place; f.mu guards it
}

func newForkServers(log *slog.Logger, r *reaper, workspace string) *forkServers {
	return &forkServers{log: log, reaper: r, workspace: workspace, servers: map[string]*forkServer{}}
}

// forkable reports whether spec can be served by a fork: a Python script on stdin, whose
// environment sets nothing the interpreter reads at start-up (the resident one started
// without it).
func forkable(spec *wire.Exec) bool {
	if !spec.Fork || len(spec.Argv) != 2 || spec.Argv[1] != "-" {
		return false
	}
	for _, kv := range spec.Env {
		if strings.HasPrefix(kv, "PYTHON") {
			return false
		}
	}
	return true
}

// start runs spec in a process forked from the resident interpreter at path, in dir, with
// env, which holds the tree marker. errNoFork means it could not, this time (none is
// ready); the caller then starts spec itself, and calls prepare once that process has exited.
func (f *forkServers) start(spec *wire.Exec, path, dir string, env []string, marker string) (*command, error) {
	srv := f.server(path)
	if srv == nil {
		return nil, errNoFork
	}
	header := requestHeader(dir, srv.env, env)
	sp, err := f.take(srv)
	if err != nil {
		if !errors.Is(err, errNoFork) {
			f.fail(path, srv, err)
		}
		return nil, errNoFork
	}
	f.succeeded()

	// The script reaches the process through what would have been its stdin, after its
	// header; the process then takes /dev/null as stdin, where `python3 -` would be at EOF.
	started := time.Now()
	var imported atomic.Bool // the call imported a module a full server preloads
	reported, err := sp.handOver(slices.Concat([]byte(strconv.Itoa(len(header))+"\n"), header, spec.Stdin), &imported)
	if err != nil {
		f.log.Info("the spare process did not take its call; starting the interpreter instead", "pid", sp.pid, "err", err)
		sp.discard()
		return nil, errNoFork
	}
	cmd := &command{argv: spec.Argv, pipes: []*os.File{sp.stdout, sp.stderr}, forked: true,
		reported: reported, status: sp.status,
		// The next spare is forked once the call has been answered, so that the fork does
		// not compete with the call, or its answer, for the CPU; so is a light server's
		// replacement started once a call has shown it needs the heavy modules.
		afterHook: func() {
			if srv.light && imported.Load() {
				f.upgrade(path, srv)
			}
			go f.refill(path, srv)
		}}
	cmd.stdout, cmd.stderr = outputStreams(spec)
	cmd.run(sp.pid, sp.exited, marker, nil)
	cmd.started = started
	return cmd, nil
}

// requestHeader is the header of a call's request (forkserver.py): its directory, then how
// its environment env differs from the server's: KEY=VALUE to set, KEY to unset, all
// NUL-separated (no path or environment entry holds a NUL). A call's usually differs by its
// tree marker alone, which the process then applies in microseconds.
func requestHeader(dir string, server map[string]string, env []string) []byte {
	header := []byte(dir)
	kept := 0 // how many of server's variables env has
	for _, kv := range env {
		key, value, ok := strings.Cut(kv, "=")
		if !ok {
			continue // not a variable: Python's environment cannot hold it either
		}
		old, had := server[key]
		if had {
			kept++
		}
		if !had || old != value {
			header = append(append(header, 0), kv...)
		}
	}
	if kept < len(server) { // rare: the agent's own environment changed
		for key := range server {
			if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, key+"=") }) {
				header = append(append(header, 0), key...)
			}
		}
	}
	return header
}

// envMap is env as a map of variables.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if key, value, ok := strings.Cut(kv, "="); ok {
			m[key] = value
		}
	}
	return m
}

// handOver gives sp its request and waits until it has read it. Calls run as the same uid
// and may have killed or stopped the spare since it was forked, and a check of its state
// cannot see a signal still on its way: a spare that does not acknowledge its request within
// forkReplyWait is given up, and the call started afresh rather than lost. It returns where
// the call will report its exit status.
func (sp *spare) handOver(request []byte, imported *atomic.Bool) (<-chan syscall.WaitStatus, error) {
	acked, reported := watchStatus(sp.status, imported)
	deadline := time.Now().Add(forkReplyWait)
	sp.request.SetWriteDeadline(deadline)
	_, err := sp.request.Write(request)
	sp.request.Close()
	if err != nil {
		return nil, fmt.Errorf("writing its request: %w", err)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case ok := <-acked:
		if !ok {
			return nil, errors.New("it ended or wrote something else before reading its request")
		}
		return reported, nil
	case <-timer.C:
		return nil, errors.New("it did not read its request in time")
	}
}

// watchStatus reads what a forked call writes to its status pipe (forkserver.py): "r" once
// it has read its request, and "N\n", its exit status, just before it exits, so that the
// result need not wait for the kernel to tear the process down; "N+\n" also sets imported
// (a call from a light server imported a module a full one preloads). Past the "r" the
// bytes are the script's, which may lie: at most maxStatusBytes are read, anything but a
// status 0-255 is ignored (the agent then waits for the exit), and a lie only ends the call
// early, as exiting would, or starts a full server, as importing numpy would. acked gets
// true on the "r", false if the pipe ends or says anything else first.
func watchStatus(status *os.File, imported *atomic.Bool) (acked <-chan bool, reported <-chan syscall.WaitStatus) {
	ack, exit := make(chan bool, 1), make(chan syscall.WaitStatus, 1)
	go func() {
		var got []byte
		buf := make([]byte, maxStatusBytes)
		for len(got) < maxStatusBytes {
			n, err := status.Read(buf[:maxStatusBytes-len(got)])
			before := len(got)
			got = append(got, buf[:n]...)
			if before == 0 && len(got) > 0 {
				if got[0] != 'r' {
					break
				}
				ack <- true
			}
			if line, _, ok := bytes.Cut(got[min(len(got), 1):], []byte("\n")); ok {
				line, plus := bytes.CutSuffix(line, []byte("+"))
				if code, err := strconv.Atoi(string(line)); err == nil && code >= 0 && code <= 255 {
					imported.Store(plus)
					exit <- syscall.WaitStatus(code << 8) // as wait(2) encodes an exit
				}
				return
			}
			if err != nil {
				break
			}
		}
		if len(got) == 0 || got[0] != 'r' {
			ack <- false
		}
	}()
	return ack, exit
}

// spare is a process forked from a resident interpreter ahead of its call, waiting for its
// request: the call then pays for handing it the request, not for the fork.
type spare struct {
	pid            int
	exited         <-chan syscall.WaitStatus
	request        *os.File // the write end of the pipe it reads its request from
	stdout, stderr *os.File // the read ends of its output pipes
	status         *os.File // the read end of the pipe it reports its exit status to
}

// usable reports whether sp can still serve a call: calls run as the same uid and may have
// killed or stopped it.
func (sp *spare) usable() bool {
	select {
	case <-sp.exited:
		return false
	default:
	}
	p, ok := readProc(sp.pid)
	return ok && !p.dead && !p.stopped
}

// discard kills sp and closes its pipes.
func (sp *spare) discard() {
	syscall.Kill(sp.pid, syscall.SIGKILL)
	sp.closePipes()
}

func (sp *spare) closePipes() {
	sp.request.Close()
	sp.stdout.Close()
	sp.stderr.Close()
	sp.status.Close()
}

// take returns srv's spare, waiting for the one being forked if need be, or forks one now.
func (f *forkServers) take(srv *forkServer) (*spare, error) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.stopped {
		return nil, errNoFork
	}
	if sp := srv.spare; sp != nil {
		srv.spare = nil
		if sp.usable() {
			return sp, nil
		}
		sp.discard()
	}
	return f.fork(srv)
}

// refill forks srv's next spare unless it has one.
func (f *forkServers) refill(path string, srv *forkServer) {
	srv.mu.Lock()
	if srv.stopped || srv.spare != nil {
		srv.mu.Unlock()
		return
	}
	sp, err := f.fork(srv)
	srv.spare = sp
	srv.mu.Unlock()
	if err != nil {
		f.fail(path, srv, err)
	}
}

// server returns path's resident interpreter if it is ready, else nil.
func (f *forkServers) server(path string) *forkServer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if srv := f.servers[path]; srv != nil && !f.closed && srv.up() {
		return srv
	}
	return nil
}

// up reports whether srv has done its imports and not died since.
func (srv *forkServer) up() bool {
	select {
	case <-srv.dead:
		return false
	default:
	}
	select {
	case <-srv.ready:
		return true
	default:
		return false
	}
}

// prepare starts path's resident interpreter unless one is running or starting, or forking
// is disabled here, and gives a running one a spare if it has none. The agent calls it once
// a call that could have been forked, but was not, has been answered, so that the
// interpreter's imports do not compete with that call for the CPU, and on OpWarm. It reports
// whether an interpreter is running or starting.
func (f *forkServers) prepare(path string, light bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.failures >= maxForkFailures {
		return false
	}
	if srv := f.servers[path]; srv != nil {
		select {
		case <-srv.dead:
		case <-srv.ready:
			go f.refill(path, srv) // replaces a spare given up on, if that is why
			return true
		default:
			return true // starting
		}
	}
	srv, err := f.launch(path, light)
	if err != nil {
		f.failures++
		f.log.Warn("cannot start the resident Python interpreter; calls start their own", "python", path, "err", err)
		return false
	}
	f.servers[path] = srv
	return true
}

// upgrade starts a full resident interpreter for path beside light, a light one a call of
// which imported a module the full one preloads, and puts it in light's place once it is
// ready; light serves the calls until then. A reset or shutdown meanwhile, or a failed
// start, leaves things as they are: the full one is killed, or never takes over.
func (f *forkServers) upgrade(path string, light *forkServer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.servers[path] != light || light.upgrading {
		return
	}
	full, err := f.launch(path, false)
	if err != nil {
		f.log.Warn("cannot start the full resident Python interpreter; the light one goes on", "python", path, "err", err)
		return
	}
	light.upgrading = true
	go func() {
		select {
		case <-full.ready:
		case <-full.dead:
			f.log.Warn("the full resident Python interpreter ended before it was ready; the light one goes on", "pid", full.pid)
			return
		}
		f.mu.Lock()
		current := !f.closed && f.servers[path] == light
		if current {
			f.servers[path] = full
		}
		f.mu.Unlock()
		old := light
		if !current {
			old = full
		}
		syscall.Kill(old.pid, syscall.SIGKILL)
		old.stop()
		f.log.Info("resident Python interpreter upgraded", "light", light.pid, "full", full.pid, "replaced", current)
	}()
}

// ready counts the resident interpreters ready to fork calls.
func (f *forkServers) ready() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, srv := range f.servers {
		if srv.up() {
			n++
		}
	}
	return n
}

// warm starts the resident interpreter for w.Python ahead of the first call (wire.OpWarm).
// An image without that program is no error: nothing starts, and the result says so.
func (s *server) warm(ctx context.Context, w *wire.Warm) *wire.WarmResult {
	if w == nil || w.Python == "" {
		return &wire.WarmResult{}
	}
	env, _ := commandEnv(nil, "")
	path, err := lookPath(w.Python, env)
	if err != nil {
		return &wire.WarmResult{}
	}
	if !s.forks.prepare(path, w.Light) {
		return &wire.WarmResult{}
	}
	res := &wire.WarmResult{Python: path}
	if w.Wait {
		res.Ready = s.forks.await(ctx, path, forkReadyWait)
	}
	return res
}

// await waits up to wait (or until ctx ends) for path's resident interpreter to be ready,
// and reports whether it is.
func (f *forkServers) await(ctx context.Context, path string, wait time.Duration) bool {
	f.mu.Lock()
	srv := f.servers[path]
	f.mu.Unlock()
	if srv == nil {
		return false
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-srv.ready:
		return true
	case <-srv.dead:
	case <-timer.C:
	case <-ctx.Done():
	}
	return false
}

// launch starts a server for path; f.mu is held.
func (f *forkServers) launch(path string, light bool) (*forkServer, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating the socket pair: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("setting the socket non-blocking: %w", err)
	}
	sock, theirs := os.NewFile(uintptr(fds[0]), "forkserver"), os.NewFile(uintptr(fds[1]), "forkserver-child")
	defer theirs.Close()
	// The script goes in on stdin, as a call's does, so that the server and every process
	// forked from it show the command line of a call: `python3 -`.
	scriptR, scriptW, err := os.Pipe()
	if err != nil {
		sock.Close()
		return nil, err
	}
	defer scriptR.Close()
	logR, logW, err := os.Pipe()
	if err != nil {
		sock.Close()
		scriptW.Close()
		return nil, err
	}
	defer logW.Close()
	env, _ := commandEnv(nil, "")
	env = env[:len(env)-1] // without the marker: the server is in no command's tree
	serverEnv := env
	if light {
		serverEnv = append(slices.Clip(env), lightServerVar) // the server removes it at once
	}
	pid, exited, err := f.reaper.spawn(path, []string{path, "-"}, &syscall.ProcAttr{
		Dir:   f.workspace,
		Env:   serverEnv,
		Files: []uintptr{scriptR.Fd(), logW.Fd(), logW.Fd(), theirs.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		sock.Close()
		scriptW.Close()
		logR.Close()
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	go func() { scriptW.WriteString(forkServerScript); scriptW.Close() }()
	srv := &forkServer{pid: pid, light: light, env: envMap(env), sock: sock, ready: make(chan struct{}), dead: make(chan struct{})}
	stderr := make(chan string, 1)
	go func() { stderr <- readCapped(logR, maxForkServerLog); logR.Close() }()
	go func() {
		status := <-exited
		close(srv.dead)
		sock.Close()
		srv.stop()
		code, sig := exitOf(status)
		f.log.Info("resident Python interpreter ended", "pid", pid, "exit_code", code, "signal", sig, "stderr", <-stderr)
	}()
	go func() {
		started := time.Now()
		buf := make([]byte, 16)
		sock.SetReadDeadline(started.Add(forkReadyWait))
		n, err := sock.Read(buf)
		if err != nil || string(buf[:n]) != "ready" {
			f.fail(path, srv, fmt.Errorf("waiting for it to start: %q, %v", buf[:n], err))
			return
		}
		f.log.Info("resident Python interpreter ready", "pid", pid, "light", light, "ms", time.Since(started).Milliseconds())
		close(srv.ready)
		f.refill(path, srv)
	}()
	return srv, nil
}

// fork asks srv for a process, adopts it and returns it as a spare, waiting for its
// request; srv.mu is held.
func (f *forkServers) fork(srv *forkServer) (*spare, error) {
	var mine, theirs []*os.File // pipe ends: the agent's, and those sent to the process
	closeAll := func(files []*os.File) {
		for _, file := range files {
			file.Close()
		}
	}
	for range 5 { // stdout, stderr, request, report, status
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(mine)
			closeAll(theirs)
			return nil, fmt.Errorf("creating pipes: %w", err)
		}
		if len(mine) == 2 { // the request pipe: the process reads it
			r, w = w, r
		}
		mine, theirs = append(mine, r), append(theirs, w)
	}
	sp := &spare{stdout: mine[0], stderr: mine[1], request: mine[2], status: mine[4]}
	report := mine[3]
	defer report.Close()
	fail := func(err error) (*spare, error) {
		sp.closePipes()
		return nil, err
	}
	// Until the process is adopted it is nobody's, and an orphan sweep would kill it.
	liveTrees.hold()
	defer liveTrees.release()
	err := sendFDs(srv.sock, []byte("c"), theirs...)
	closeAll(theirs) // the server and the process have their own copies now
	if err != nil {
		return fail(fmt.Errorf("sending the call: %w", err))
	}
	// The intermediate writes the pid and exits; EOF means every copy of the pipe is closed.
	report.SetReadDeadline(time.Now().Add(forkReplyWait))
	reply := readCapped(report, 32)
	pid, err := strconv.Atoi(strings.TrimSpace(reply))
	if err != nil || pid <= 1 {
		return fail(fmt.Errorf("reading the forked pid: got %q", reply))
	}
	if sp.exited, err = f.reaper.adopt(pid, time.Now().Add(forkReplyWait)); err != nil {
		return fail(err)
	}
	sp.pid = pid
	return sp, nil
}

// sendFDs sends msg with files attached over sock.
func sendFDs(sock *os.File, msg []byte, files ...*os.File) error {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	raw, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	err = raw.Write(func(fd uintptr) bool {
		sendErr = unix.Sendmsg(int(fd), msg, unix.UnixRights(fds...), nil, 0)
		return !errors.Is(sendErr, unix.EAGAIN)
	})
	if err != nil {
		return err
	}
	return sendErr
}

// readCapped reads r to EOF (or error, or its deadline), keeping at most max bytes.
func readCapped(r *os.File, max int) string {
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if len(out) < max {
			out = append(out, buf[:min(n, max-len(out))]...)
		}
		if err != nil {
			return string(out)
		}
	}
}

// fail kills srv after it misbehaved and counts the failure; the next call starts another.
func (f *forkServers) fail(path string, srv *forkServer, err error) {
	syscall.Kill(srv.pid, syscall.SIGKILL)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.servers[path] == srv {
		f.log.Warn("resident Python interpreter failed; replacing it", "pid", srv.pid, "err", err)
		delete(f.servers, path)
		f.failures++
	}
}

func (f *forkServers) succeeded() {
	f.mu.Lock()
	f.failures = 0
	f.mu.Unlock()
}

// stop kills every server. With reopen, later calls start new ones (a reset: the next
// borrower must not share a server the last one could have tampered with); without, none
// starts again (shutdown).
func (f *forkServers) stop(reopen bool) {
	f.mu.Lock()
	servers := f.servers
	f.servers = map[string]*forkServer{}
	f.closed = !reopen
	f.failures = 0
	f.mu.Unlock()
	for _, srv := range servers {
		syscall.Kill(srv.pid, syscall.SIGKILL)
		srv.stop()
		<-srv.dead
	}
}

// stop makes srv fork nothing more and kills its spare: a server that ends takes its spare
// with it, or it would wait for a request forever.
func (srv *forkServer) stop() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.stopped = true
	if srv.spare != nil {
		srv.spare.discard()
		srv.spare = nil
	}
}
