package notebook

import (
	"context"
	"crypto/rand"
	_ "embed" // the launcher script
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// launcherSource is written into every notebook sandbox before Jupyter starts: the image's
// root file system is read-only, so the launcher cannot live in it unless the image brings
// it, and a user's own Jupyter image does not.
//
//go:embed launch.py
var launcherSource string

// Where Jupyter's files go inside the sandbox: tmpfs, since the root file system is
// read-only. The workspace is left to the user's own files.
const (
	stateDir     = "/tmp/enclave-jupyter"
	launcherPath = "/tmp/enclave-launch.py"
	serverLog    = stateDir + "/server.log"
)

// DefaultPort is where Jupyter listens, on the sandbox's loopback.
const DefaultPort = 8888

// ErrServerGone marks a notebook sandbox whose Jupyter server stopped: the sandbox is
// dropped, and the next call gets a fresh one.
var ErrServerGone = errors.New("the notebook server in the sandbox stopped")

// Options configure notebook sandboxes.
type Options struct {
	// Command starts the notebook server inside the sandbox. Empty means the bundled
	// launcher, `python3 /tmp/enclave-launch.py` with jupyter_server flags for Port and the
	// workspace; it works with jupyter_server 1.x and 2.x. A custom command (for an image of
	// your own) must serve Jupyter's REST and kernel channels API on 127.0.0.1:Port, take its
	// token from JUPYTER_TOKEN, and keep running in the foreground.
	Command []string
	// Port is the server's port on the sandbox's loopback; zero means DefaultPort.
	Port int
	// KernelName is the kernel spec to start; empty means the server's default (python3).
	KernelName string
	// StartTimeout bounds the whole start, container to kernel; zero means 60 s.
	StartTimeout time.Duration
	Logger       *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// command is the server's command line for a sandbox whose workspace is workspace.
func (o Options) command(workspace string) []string {
	if len(o.Command) > 0 {
		return o.Command
	}
	return []string{
		"python3", launcherPath,
		"--ServerApp.ip=127.0.0.1",
		"--ServerApp.port=" + strconv.Itoa(o.Port),
		"--ServerApp.port_retries=0",
		"--ServerApp.open_browser=False",
		"--ServerApp.root_dir=" + workspace,
		"--ServerApp.log_level=WARN",
		// The server's own output throttle (made to protect browsers) would replace a
		// large output with a warning; enclave-mcp caps output itself, keeping head and tail.
		"--ServerApp.iopub_data_rate_limit=0",
		"--ServerApp.iopub_msg_rate_limit=0",
	}
}

// Startup is how long each stage of a notebook sandbox's start took.
type Startup struct {
	Container time.Duration // container created and its agent answering
	Server    time.Duration // Jupyter started until it answered
	Kernel    time.Duration // kernel created until it answered kernel_info
	Total     time.Duration // start to ready: a cell can run
}

// Sandbox is a notebook sandbox: a hardened container (a sandbox.AgentSandbox, so every
// other tool works in it too) running a Jupyter server on its own loopback, with one kernel
// whose state persists between cells.
type Sandbox struct {
	*sandbox.AgentSandbox
	opts       Options
	serverGone atomic.Bool

	mu        sync.RWMutex // guards what Reset replaces
	client    *Client
	kernel    *Kernel
	serverJob string // the Jupyter server's background job
	startup   Startup
	lastReset time.Duration
}

// current is the server connection and kernel in use; Reset replaces them.
func (s *Sandbox) current() (*Client, *Kernel) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.client, s.kernel
}

// Creator returns a sandbox.Creator for sandbox.TypeNotebook.
func Creator(b sandbox.Backend, opts Options) sandbox.Creator {
	return func(ctx context.Context, owner string, cfg sandbox.Resolved) (sandbox.Sandbox, error) {
		sb, err := Start(ctx, b, owner, cfg, opts)
		if err != nil {
			return nil, err // not a typed nil in an interface
		}
		return sb, nil
	}
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
	s := &Sandbox{AgentSandbox: sb, opts: opts}
	container := time.Since(begin)
	if err := s.launch(ctx); err != nil {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer rcancel()
		if cerr := sb.Close(rctx); cerr != nil {
			opts.Logger.Error("removing a notebook sandbox that failed to start", "sandbox", sb.ID(), "error", cerr)
		}
		return nil, fmt.Errorf("starting notebook sandbox %s: %w", sb.ID(), err)
	}
	s.startup.Container = container
	s.startup.Total = time.Since(begin)
	opts.Logger.Info("notebook sandbox ready", "sandbox", sb.ID(), "container", s.startup.Container,
		"server", s.startup.Server, "kernel", s.startup.Kernel, "total", s.startup.Total)
	return s, nil
}

// launch starts Jupyter in the sandbox, with a fresh token and empty state directories, and
// a kernel in it, and makes them the sandbox's current ones. On failure it leaves nothing
// open on the server side.
func (s *Sandbox) launch(ctx context.Context) error {
	opts := s.opts
	workspace := s.Config().WorkingDir
	for _, dir := range []string{"home", "runtime", "data", "config", "ipython", "matplotlib"} {
		if _, err := s.File(ctx, sandbox.FileRequest{Action: sandbox.FileMkdir, Path: path.Join(stateDir, dir), Mode: 0o700}); err != nil {
			return fmt.Errorf("preparing Jupyter's directories: %w", err)
		}
	}
	if _, err := s.File(ctx, sandbox.FileRequest{Action: sandbox.FileWrite, Path: launcherPath, Data: []byte(launcherSource)}); err != nil {
		return fmt.Errorf("writing the launcher: %w", err)
	}
	token, err := newToken()
	if err != nil {
		return err
	}
	env := []string{
		"JUPYTER_TOKEN=" + token,
		"HOME=" + stateDir + "/home",
		"JUPYTER_RUNTIME_DIR=" + stateDir + "/runtime",
		"JUPYTER_DATA_DIR=" + stateDir + "/data",
		"JUPYTER_CONFIG_DIR=" + stateDir + "/config",
		"IPYTHONDIR=" + stateDir + "/ipython",
		"MPLCONFIGDIR=" + stateDir + "/matplotlib",
		"ENCLAVE_JUPYTER_LOG=" + serverLog,
		// The debugger's start-up check prints a warning to every kernel's stderr.
		"PYDEVD_DISABLE_FILE_VALIDATION=1",
	}
	serverStart := time.Now()
	job, err := s.Exec(ctx, sandbox.ExecRequest{Argv: opts.command(workspace), Env: env, Dir: workspace, Background: true}, nil)
	if err != nil {
		return fmt.Errorf("starting the notebook server (%s): %w", strings.Join(opts.command(workspace), " "), err)
	}
	client := NewClient("127.0.0.1:"+strconv.Itoa(opts.Port), token, s.DialContext)
	if err := s.waitServer(ctx, client, job.JobID); err != nil {
		client.Close()
		return err
	}
	server := time.Since(serverStart)

	kernelStart := time.Now()
	kernel, err := StartKernel(ctx, client, opts.KernelName, opts.Logger.With("sandbox", s.ID()))
	if err != nil {
		client.Close()
		return fmt.Errorf("%w%s", err, s.serverLogTail())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client, s.kernel, s.serverJob = client, kernel, job.JobID
	s.startup.Server, s.startup.Kernel = server, time.Since(kernelStart)
	return nil
}

// serverPoll is how often the start polls for the server to listen.
const serverPoll = 20 * time.Millisecond

// waitServer polls until the server answers with our token, failing early when its job
// exits.
func (s *Sandbox) waitServer(ctx context.Context, client *Client, jobID string) error {
	for i := 0; ; i++ {
		err := client.Ping(ctx)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrServer):
			return fmt.Errorf("the notebook server refused the sandbox's token (does a custom command pass JUPYTER_TOKEN on?): %w", err)
		case ctx.Err() != nil:
			return fmt.Errorf("the notebook server did not answer in time: %w%s", ctx.Err(), s.serverLogTail())
		}
		if i%10 == 9 { // every ~200 ms: did the server die?
			jobs, jerr := s.Jobs(ctx)
			if jerr != nil {
				return fmt.Errorf("checking on the notebook server: %w", jerr)
			}
			for _, j := range jobs {
				if j.ID == jobID && !j.Running {
					return fmt.Errorf("the notebook server exited (code %d%s) before answering%s", j.ExitCode, strings.TrimSuffix(" "+j.Signal, " "), s.serverLogTail())
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(serverPoll):
		}
	}
}

// serverLogTail is the end of the server's log, to explain a failed start.
func (s *Sandbox) serverLogTail() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := s.File(ctx, sandbox.FileRequest{Action: sandbox.FileRead, Path: serverLog, MaxBytes: 1 << 20})
	if err != nil || len(res.Data) == 0 {
		return ""
	}
	text := strings.TrimSpace(string(res.Data))
	if len(text) > 2000 {
		text = "..." + text[len(text)-2000:]
	}
	return "; server log:\n" + text
}

func newToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating the notebook token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Execute runs code as the next cell in the sandbox's kernel (see Kernel.Execute).
func (s *Sandbox) Execute(ctx context.Context, code string, opts ExecOptions) (Result, error) {
	// The cell travels over a websocket, not through the agent's calls: hold the sandbox
	// busy so that idle expiry leaves it alone while the cell runs.
	release, err := s.Hold()
	if err != nil {
		return Result{}, err
	}
	defer release()
	_, kernel := s.current()
	res, err := kernel.Execute(ctx, code, opts)
	return res, s.checkServer(ctx, err)
}

// Interrupt stops the running cell, if any; the kernel keeps its state.
func (s *Sandbox) Interrupt(ctx context.Context) error {
	release, err := s.Hold()
	if err != nil {
		return err
	}
	defer release()
	_, kernel := s.current()
	return s.checkServer(ctx, kernel.Interrupt(ctx))
}

// Restart restarts the kernel, clearing its state.
func (s *Sandbox) Restart(ctx context.Context) error {
	release, err := s.Hold()
	if err != nil {
		return err
	}
	defer release()
	_, kernel := s.current()
	return s.checkServer(ctx, kernel.Restart(ctx))
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
// token, starts a new kernel. It costs a server and kernel start (about 2 s here); a new
// container would cost that plus the container's own start and removal.
func (s *Sandbox) Reset(ctx context.Context) error {
	release, err := s.Hold()
	if err != nil {
		return err
	}
	defer release()
	start := time.Now()
	client, kernel := s.current()
	s.mu.RLock()
	job := s.serverJob
	s.mu.RUnlock()
	kernel.Close()
	client.Close()
	if _, err := s.KillJob(ctx, job); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		return fmt.Errorf("stopping the notebook server: %w", err)
	}
	for _, p := range []string{stateDir, launcherPath} {
		_, err := s.File(ctx, sandbox.FileRequest{Action: sandbox.FileDelete, Path: p, Recursive: true})
		if err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			return fmt.Errorf("deleting the notebook server's state: %w", err)
		}
	}
	if err := s.launch(ctx); err != nil {
		return fmt.Errorf("restarting the notebook server: %w", err)
	}
	s.serverGone.Store(false)
	s.mu.Lock()
	s.lastReset = time.Since(start)
	s.mu.Unlock()
	s.opts.Logger.Debug("notebook sandbox reset", "sandbox", s.ID(), "took", time.Since(start))
	return nil
}

// checkServer tells a failure of the notebook server itself, after which the sandbox is
// useless, from one the next call can recover from.
func (s *Sandbox) checkServer(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if !s.AgentSandbox.Alive() {
		s.serverGone.Store(true)
		return fmt.Errorf("%w: %w", ErrServerGone, err)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	client, _ := s.current()
	if perr := client.Ping(pctx); perr != nil && errors.Is(perr, sandbox.ErrNotFound) {
		s.serverGone.Store(true) // nothing listens any more
		return fmt.Errorf("%w: %w%s", ErrServerGone, err, s.serverLogTail())
	}
	return err
}

// Alive reports whether the container and its notebook server are up; the manager replaces
// a sandbox that is not.
func (s *Sandbox) Alive() bool { return s.AgentSandbox.Alive() && !s.serverGone.Load() }

// Startup is how long the sandbox took to start, by stage; after a Reset, Server and Kernel
// are the restarted ones'.
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
		"kernel":        s.kernel.Name(),
		"kernel_id":     s.kernel.ID(),
		"start_ms":      s.startup.Total.Milliseconds(),
		"container_ms":  s.startup.Container.Milliseconds(),
		"server_ms":     s.startup.Server.Milliseconds(),
		"kernel_ms":     s.startup.Kernel.Milliseconds(),
		"server_listen": "127.0.0.1 inside the sandbox, reached through the agent; no port is published",
	}
	if s.lastReset > 0 {
		meta["last_reset_ms"] = s.lastReset.Milliseconds()
	}
	info.Metadata["notebook"] = meta
	return info
}

// Close ends the kernel connection and removes the sandbox.
func (s *Sandbox) Close(ctx context.Context) error {
	client, kernel := s.current()
	kernel.Close()
	client.Close()
	return s.AgentSandbox.Close(ctx)
}
