package notebook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

var (
	// ErrServerGone marks a notebook sandbox whose Jupyter server stopped with its container,
	// or, for a sandbox made by Start, at all: the sandbox is dropped, and the next call gets
	// a fresh one.
	ErrServerGone = errors.New("the notebook server in the sandbox stopped")
	// ErrServerStopped marks a sandbox made by Lazy whose Jupyter server stopped while the
	// sandbox lives on (it was killed, or ran out of memory): the sandbox and its files stay,
	// and the next kernel call starts a new server.
	ErrServerStopped = errors.New("the notebook server in the sandbox stopped; the next notebook call starts a " +
		"new one in the same sandbox (the kernel's variables and imports are lost, workspace files are kept)")
	// ErrStart marks a sandbox made by Lazy in which Jupyter could not start. The sandbox
	// stays usable for every other tool, and the next kernel call tries again.
	ErrStart = errors.New("the notebook server could not start in this sandbox")
)

// Startup is how long each stage of a notebook sandbox's start took.
type Startup struct {
	Container time.Duration // container created and its agent answering (zero for Lazy)
	Server    time.Duration // Jupyter started until it answered
	Kernel    time.Duration // kernel created until it answered kernel_info
	Total     time.Duration // start to ready: a cell can run
}

// Sandbox is a notebook sandbox: a hardened container (a sandbox.AgentSandbox, so every
// other tool works in it too) running a Jupyter server on its own loopback, with one kernel
// whose state persists between cells and the workspace as its working directory.
//
// Start makes one whose server runs from its creation (the REST API's docker_notebook type);
// Lazy turns a sandbox made for every tool (an MCP session's) into one whose server starts
// on the first kernel call (Execute, Interrupt, Restart), so that a session that never
// opens the notebook never pays for Jupyter.
type Sandbox struct {
	*sandbox.AgentSandbox
	opts Options
	// lazy: the server starts on the first kernel call, and one that stops is started
	// again by the next call; otherwise its end ends the sandbox (serverGone).
	lazy       bool
	serverGone atomic.Bool
	// life ends with Close: a start under way gives up.
	life    context.Context
	endLife context.CancelFunc

	startMu sync.Mutex
	start   *starting // the latest start; nil before the first, and after a lazy server stopped

	mu        sync.RWMutex // guards what a start, a Reset or a stopped server replaces
	client    *Client
	kernel    *Kernel
	serverJob string // the Jupyter server's background job
	startup   Startup
	lastReset time.Duration
}

// starting is one start of the server; done closes when it has finished, with err set
// before. Every kernel call that arrives while it runs waits for the same start.
type starting struct {
	done chan struct{}
	err  error
}

func newSandbox(sb *sandbox.AgentSandbox, opts Options, lazy bool) *Sandbox {
	life, end := context.WithCancel(context.Background())
	return &Sandbox{AgentSandbox: sb, opts: opts.withDefaults(), lazy: lazy, life: life, endLife: end}
}

// current is the server connection and kernel in use (nil before a lazy start).
func (s *Sandbox) current() (*Client, *Kernel) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.client, s.kernel
}

// Creator returns a sandbox.Creator for sandbox.TypeNotebook: sandboxes made by Start.
func Creator(b sandbox.Backend, opts Options) sandbox.Creator {
	return func(ctx context.Context, owner string, cfg sandbox.Resolved) (sandbox.Sandbox, error) {
		sb, err := Start(ctx, b, owner, cfg, opts)
		if err != nil {
			return nil, err // not a typed nil in an interface
		}
		return sb, nil
	}
}

// LazyCreator returns a sandbox.Creator of sandboxes of type typ on b, each made by Lazy: a
// plain sandbox at once, Jupyter on its first kernel call.
func LazyCreator(b sandbox.Backend, typ sandbox.Type, opts Options) sandbox.Creator {
	return func(ctx context.Context, owner string, cfg sandbox.Resolved) (sandbox.Sandbox, error) {
		sb, err := sandbox.Create(ctx, b, sandbox.CreateOptions{Config: cfg, Owner: owner, Type: typ})
		if err != nil {
			return nil, err
		}
		return Lazy(sb, opts), nil
	}
}

// Lazy makes sb a notebook sandbox whose Jupyter server and kernel start on the first kernel
// call, in sb's workspace. Two first calls share one start. A start that fails is an error
// that wraps ErrStart (ErrClosed when the sandbox went meanwhile), names the image and says
// what to do; it leaves sb as it was for the other tools, and the next kernel call tries
// again. A server that stops later is started
// again by the next kernel call, in the same sandbox (ErrServerStopped).
func Lazy(sb *sandbox.AgentSandbox, opts Options) *Sandbox {
	return newSandbox(sb, opts, true)
}

// Start creates a notebook sandbox and returns once its kernel answers. On any failure the
// container is removed before the error returns.
func Start(ctx context.Context, b sandbox.Backend, owner string, cfg sandbox.Resolved, opts Options) (*Sandbox, error) {
	opts = opts.withDefaults()
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	sb, err := sandbox.Create(ctx, b, sandbox.CreateOptions{Config: cfg, Owner: owner, Type: sandbox.TypeNotebook})
	if err != nil {
		return nil, fmt.Errorf("starting notebook sandbox: %w", err)
	}
	s := newSandbox(sb, opts, false)
	container := time.Since(begin)
	if err := s.launch(ctx); err != nil {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer rcancel()
		if cerr := s.Close(rctx); cerr != nil {
			opts.Logger.Error("removing a notebook sandbox that failed to start", "sandbox", sb.ID(), "error", cerr)
		}
		return nil, fmt.Errorf("starting notebook sandbox %s: %w", sb.ID(), err)
	}
	done := &starting{done: make(chan struct{})}
	close(done.done)
	s.start = done
	s.mu.Lock()
	s.startup.Container = container
	s.startup.Total = time.Since(begin)
	st := s.startup
	s.mu.Unlock()
	opts.Logger.Info("notebook sandbox ready", "sandbox", sb.ID(), "container", st.Container,
		"server", st.Server, "kernel", st.Kernel, "total", st.Total)
	return s, nil
}

// ready returns the kernel, starting the server first when it has not started (Lazy). The
// start does not belong to the call: a caller that gives up stops waiting, and the start
// goes on for the next call.
func (s *Sandbox) ready(ctx context.Context) (*Kernel, error) {
	st := s.starting()
	select {
	case <-st.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the notebook server to start: %w", ctx.Err())
	}
	if st.err != nil {
		return nil, st.err
	}
	if _, k := s.current(); k != nil {
		return k, nil
	}
	// The server stopped, or a Reset cleared it, between the start and here.
	return nil, fmt.Errorf("%w: the notebook server was stopped while this call waited for it", ErrServerStopped)
}

// starting returns the start under way or done, or begins one: before the first start, and
// after a start that failed or a server that stopped.
func (s *Sandbox) starting() *starting {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if st := s.start; st != nil {
		select {
		case <-st.done:
			if st.err == nil || !s.lazy {
				return st
			}
		default:
			return st
		}
	}
	st := &starting{done: make(chan struct{})}
	s.start = st
	go func() {
		defer close(st.done)
		st.err = s.startServer()
	}()
	return st
}

// startServer starts Jupyter and its kernel in a sandbox made by Lazy.
func (s *Sandbox) startServer() error {
	ctx, cancel := context.WithTimeout(s.life, s.opts.StartTimeout)
	defer cancel()
	begin := time.Now()
	if err := s.launch(ctx); err != nil {
		if errors.Is(err, sandbox.ErrClosed) || s.life.Err() != nil {
			return fmt.Errorf("starting the notebook server: %w", err)
		}
		s.opts.Logger.Warn("the notebook server did not start", "sandbox", s.ID(), "image", s.Config().Image, "error", err)
		// The cause is text, not a wrapped error: the advice must reach the model whole,
		// and the cause's own kind (a timeout, a lost connection) would be mistaken for the
		// call's.
		return fmt.Errorf("%w (image %s): %v. The notebook tools need an image with python3, jupyter_server and "+
			"ipykernel, such as %s: name one as the sandbox image, or disable the notebook tools in tools_config. "+
			"The other tools keep working in this sandbox, and the next notebook call tries again",
			ErrStart, s.Config().Image, err, sandbox.DefaultNotebookImage)
	}
	s.mu.Lock()
	s.startup.Total = time.Since(begin)
	st := s.startup
	s.mu.Unlock()
	s.opts.Logger.Info("notebook server ready", "sandbox", s.ID(), "server", st.Server, "kernel", st.Kernel, "total", st.Total)
	return nil
}

// Execute runs code as the next cell in the sandbox's kernel (see Kernel.Execute).
func (s *Sandbox) Execute(ctx context.Context, code string, opts ExecOptions) (Result, error) {
	// The cell travels over a websocket, not through the agent's calls: hold the sandbox
	// busy so that idle expiry leaves it alone while the cell runs (or the server starts).
	release, err := s.Hold()
	if err != nil {
		return Result{}, err
	}
	defer release()
	kernel, err := s.ready(ctx)
	if err != nil {
		return Result{}, err
	}
	res, err := kernel.Execute(ctx, code, opts)
	return res, s.checkServer(ctx, kernel, err)
}

// Interrupt stops the running cell, if any; the kernel keeps its state.
func (s *Sandbox) Interrupt(ctx context.Context) error {
	release, err := s.Hold()
	if err != nil {
		return err
	}
	defer release()
	kernel, err := s.ready(ctx)
	if err != nil {
		return err
	}
	return s.checkServer(ctx, kernel, kernel.Interrupt(ctx))
}

// Restart restarts the kernel, clearing its state.
func (s *Sandbox) Restart(ctx context.Context) error {
	release, err := s.Hold()
	if err != nil {
		return err
	}
	defer release()
	kernel, err := s.ready(ctx)
	if err != nil {
		return err
	}
	return s.checkServer(ctx, kernel, kernel.Restart(ctx))
}

// Reset implements sandbox.Resetter: a pool that lends this sandbox to one borrower after
// another calls it between them, once its agent has killed every process but itself and
// emptied /tmp. Restarting only the kernel would not do: the Jupyter server runs under the
// borrowers' uid, so a borrower can start kernels through its API, leave children that
// carry its environment, write to its memory through /proc/PID/mem, and plant code in the
// IPython profile, HOME, and Jupyter's data and config directories under /tmp, all of which
// would reach the next borrower's kernel. Reset therefore starts everything afresh in the
// same container: the old server is stopped (if the pool's clean-up has not already done
// so), Jupyter's state directory and launcher are deleted, and a new server, with a new
// token, starts a new kernel (a sandbox made by Lazy starts it on its next kernel call
// instead). It costs a server and kernel start (about 2 s here); a new container would cost
// that plus the container's own start and removal.
func (s *Sandbox) Reset(ctx context.Context) error {
	release, err := s.Hold()
	if err != nil {
		return err
	}
	defer release()
	start := time.Now()
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if st := s.start; st != nil {
		select { // a lazy start under way finishes first, so that nothing of it survives
		case <-st.done:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the notebook server's start: %w", ctx.Err())
		}
	}
	s.dropServer(ctx)
	if err := s.clearState(ctx); err != nil {
		return err
	}
	if s.lazy {
		s.start = nil
	} else if err := s.launch(ctx); err != nil {
		return fmt.Errorf("restarting the notebook server: %w", err)
	}
	s.serverGone.Store(false)
	s.mu.Lock()
	s.lastReset = time.Since(start)
	s.mu.Unlock()
	s.opts.Logger.Debug("notebook sandbox reset", "sandbox", s.ID(), "took", time.Since(start))
	return nil
}

// dropServer closes the connection to the server and the kernel and stops the server's job.
func (s *Sandbox) dropServer(ctx context.Context) {
	s.mu.Lock()
	client, kernel, job := s.client, s.kernel, s.serverJob
	s.client, s.kernel, s.serverJob = nil, nil, ""
	s.mu.Unlock()
	if kernel != nil {
		kernel.Close()
	}
	if client != nil {
		client.Close()
	}
	s.stopJob(ctx, job)
}

// checkServer tells a failure of the notebook server itself from one the next call can
// recover from. kernel is the one the failed call used. A server that stopped ends a
// sandbox made by Start; in one made by Lazy it is dropped, and the next call starts another.
func (s *Sandbox) checkServer(ctx context.Context, kernel *Kernel, err error) error {
	if err == nil {
		return nil
	}
	if !s.AgentSandbox.Alive() {
		s.serverGone.Store(true)
		return fmt.Errorf("%w: %w", ErrServerGone, err)
	}
	client, current := s.current()
	if current != kernel || client == nil {
		return err // another call found the server gone and dropped it already
	}
	if !s.serverStopped(ctx, client) {
		return err // the server answers: only the connection was lost
	}
	tail := s.serverLogTail()
	if !s.lazy {
		s.serverGone.Store(true)
		return fmt.Errorf("%w: %w%s", ErrServerGone, err, tail)
	}
	s.startMu.Lock()
	if _, k := s.current(); k == kernel {
		s.dropServer(ctx)
		s.start = nil
	}
	s.startMu.Unlock()
	s.opts.Logger.Warn("the notebook server stopped; the next notebook call starts another", "sandbox", s.ID(), "error", err)
	// The cause is text: wrapped, a lost connection would read as one the next call recovers.
	return fmt.Errorf("%w (%v)%s", ErrServerStopped, err, tail)
}

// serverStopped tells, within serverCheckWait, whether the notebook server stopped or only
// a connection to it was lost. The connection's end can come before either sign of the
// server's (its port refusing, the agent reaping its job) on a loaded machine, so an answer
// that is neither is asked again.
func (s *Sandbox) serverStopped(ctx context.Context, client *Client) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serverCheckWait)
	defer cancel()
	for {
		perr := client.Ping(ctx)
		switch {
		case perr == nil:
			return false
		case errors.Is(perr, sandbox.ErrNotFound) || s.jobEnded(ctx):
			return true
		}
		select {
		case <-ctx.Done():
			return false // no answer either way: the server's process lives
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// serverCheckWait bounds serverStopped.
const serverCheckWait = 5 * time.Second

// jobEnded reports whether the server's background job is known to have ended.
func (s *Sandbox) jobEnded(ctx context.Context) bool {
	s.mu.Lock()
	id := s.serverJob
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	jobs, err := s.AgentSandbox.Jobs(ctx)
	if err != nil || id == "" {
		return false
	}
	for _, j := range jobs {
		if j.ID == id {
			return !j.Running
		}
	}
	return true // forgotten by the agent: long gone
}

// Alive reports whether the container and, for a sandbox made by Start, its notebook
// server are up; the manager replaces a sandbox that is not. A sandbox made by Lazy lives
// with its container: its server is started again when needed.
func (s *Sandbox) Alive() bool { return s.AgentSandbox.Alive() && !s.serverGone.Load() }

// Startup is how long the sandbox took to start, by stage; after a Reset, Server and Kernel
// are the restarted ones'. It is zero for a sandbox made by Lazy until its server started.
func (s *Sandbox) Startup() Startup {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.startup
}

// LastReset is how long the latest Reset took; zero before any.
func (s *Sandbox) LastReset() time.Duration {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastReset
}

// Info describes the sandbox, with the kernel and its start times; never the token.
func (s *Sandbox) Info() sandbox.Info {
	info := s.AgentSandbox.Info()
	s.mu.RLock()
	defer s.mu.RUnlock()
	meta := map[string]any{
		"started":       s.kernel != nil,
		"server_listen": "127.0.0.1 inside the sandbox, reached through the agent; no port is published",
	}
	if s.lazy {
		meta["starts"] = "on the first notebook call"
	}
	if s.kernel != nil {
		meta["kernel"] = s.kernel.Name()
		meta["kernel_id"] = s.kernel.ID()
		meta["start_ms"] = s.startup.Total.Milliseconds()
		meta["server_ms"] = s.startup.Server.Milliseconds()
		meta["kernel_ms"] = s.startup.Kernel.Milliseconds()
		if !s.lazy {
			meta["container_ms"] = s.startup.Container.Milliseconds()
		}
	}
	if s.lastReset > 0 {
		meta["last_reset_ms"] = s.lastReset.Milliseconds()
	}
	info.Metadata["notebook"] = meta
	return info
}

// Close ends the kernel connection and removes the sandbox; a start under way gives up.
func (s *Sandbox) Close(ctx context.Context) error { return s.end(ctx, s.AgentSandbox.Close) }

// HandOff is Close for a server that is exiting (sandbox.Sandbox.HandOff).
func (s *Sandbox) HandOff(ctx context.Context) error { return s.end(ctx, s.AgentSandbox.HandOff) }

// end ends the kernel connection and the sandbox, with Close or HandOff.
func (s *Sandbox) end(ctx context.Context, endSandbox func(context.Context) error) error {
	s.endLife()
	// The sandbox goes first: whatever a start under way waits for then fails at once.
	err := endSandbox(ctx)
	s.startMu.Lock()
	st := s.start
	s.startMu.Unlock()
	if st != nil {
		select {
		case <-st.done:
		case <-ctx.Done():
		}
	}
	_, kernel := s.current()
	if kernel != nil {
		kernel.Close()
	}
	client, _ := s.current()
	if client != nil {
		client.Close()
	}
	return err
}
