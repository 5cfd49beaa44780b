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
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// launcherSource is written into every notebook sandbox before Jupyter starts: the image's
// root file system is read-only, so the launcher cannot live in it unless the image brings
// it, and a user's own Jupyter image does not.
//
//go:embed launch.py
var launcherSource string

// kernelConfig is IPython's configuration for every kernel: no SQLite history. The history
// database lives in the sandbox's /tmp, is never read back, costs a thread per kernel, and
// after an interrupt that lands between cells IPython reports a duplicate line number in it
// as an error inside the next cell's output. In and Out stay available in memory.
const kernelConfig = "c.HistoryManager.enabled = False\n"

// DefaultPort is where Jupyter listens, on the sandbox's loopback.
const DefaultPort = 8888

// Options configure notebook sandboxes.
type Options struct {
	// Command starts the notebook server inside the sandbox. Empty means the bundled
	// launcher, `python3 /tmp/enclave-launch-ID.py` with jupyter_server flags for Port and
	// the workspace; it works with jupyter_server 1.x and 2.x. A custom command (for an image
	// of your own) must serve Jupyter's REST and kernel channels API on 127.0.0.1:Port, take
	// its token from JUPYTER_TOKEN, and keep running in the foreground.
	Command []string
	// Port is the server's port on the sandbox's loopback; zero means DefaultPort.
	Port int
	// KernelName is the kernel spec to start; empty means the server's default (python3).
	KernelName string
	// StartTimeout bounds a start: for Start, container to kernel; for a sandbox made by
	// Lazy, server to kernel. Zero means 60 s.
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

// command is the server's command line for a sandbox whose workspace is workspace and whose
// launcher is at launcher.
func (o Options) command(workspace, launcher string) []string {
	if len(o.Command) > 0 {
		return o.Command
	}
	return []string{
		"python3", launcher,
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

// Where Jupyter's files go inside the sandbox: /tmp, which is tmpfs on Docker, since the root
// file system is read-only. The workspace is left to the user's own files. The names carry
// the sandbox's id because a backend that shares the host's /tmp (host processes) may run
// several notebook sandboxes at once.
func (s *Sandbox) stateDir() string     { return "/tmp/enclave-jupyter-" + s.ID() }
func (s *Sandbox) launcherPath() string { return "/tmp/enclave-launch-" + s.ID() + ".py" }
func (s *Sandbox) serverLog() string    { return s.stateDir() + "/server.log" }

// launch starts Jupyter in the sandbox, with a fresh token and its state directories, and a
// kernel in it, and makes them the sandbox's current ones, with the workspace as the
// working directory of both. On failure it leaves nothing running: the server it started
// is stopped, so that a later launch can take its port.
func (s *Sandbox) launch(ctx context.Context) error {
	opts := s.opts
	workspace := s.Config().WorkingDir
	for _, dir := range []string{"home", "runtime", "data", "config", "ipython", "ipython/profile_default", "matplotlib"} {
		if _, err := s.File(ctx, sandbox.FileRequest{Action: sandbox.FileMkdir, Path: path.Join(s.stateDir(), dir), Mode: 0o700}); err != nil {
			return fmt.Errorf("preparing Jupyter's directories: %w", err)
		}
	}
	if _, err := s.File(ctx, sandbox.FileRequest{Action: sandbox.FileWrite, Path: path.Join(s.stateDir(), "ipython/profile_default/ipython_kernel_config.py"), Data: []byte(kernelConfig)}); err != nil {
		return fmt.Errorf("writing the kernel's configuration: %w", err)
	}
	if len(opts.Command) == 0 {
		if _, err := s.File(ctx, sandbox.FileRequest{Action: sandbox.FileWrite, Path: s.launcherPath(), Data: []byte(launcherSource)}); err != nil {
			return fmt.Errorf("writing the launcher: %w", err)
		}
	}
	token, err := newToken()
	if err != nil {
		return err
	}
	state := s.stateDir()
	env := []string{
		"JUPYTER_TOKEN=" + token,
		"HOME=" + state + "/home",
		"JUPYTER_RUNTIME_DIR=" + state + "/runtime",
		"JUPYTER_DATA_DIR=" + state + "/data",
		"JUPYTER_CONFIG_DIR=" + state + "/config",
		"IPYTHONDIR=" + state + "/ipython",
		"MPLCONFIGDIR=" + state + "/matplotlib",
		"ENCLAVE_JUPYTER_LOG=" + s.serverLog(),
		// The debugger's start-up check prints a warning to every kernel's stderr.
		"PYDEVD_DISABLE_FILE_VALIDATION=1",
	}
	argv := opts.command(workspace, s.launcherPath())
	serverStart := time.Now()
	job, err := s.Exec(ctx, sandbox.ExecRequest{Argv: argv, Env: env, Dir: workspace, Background: true}, nil)
	if err != nil {
		return fmt.Errorf("starting the notebook server (%s): %w", strings.Join(argv, " "), err)
	}
	client := NewClient("127.0.0.1:"+strconv.Itoa(opts.Port), token, s.DialContext)
	fail := func(err error) error {
		client.Close()
		s.stopJob(ctx, job.JobID)
		return err
	}
	if err := s.waitServer(ctx, client, job.JobID); err != nil {
		return fail(err)
	}
	server := time.Since(serverStart)

	kernelStart := time.Now()
	kernel, err := StartKernel(ctx, client, opts.KernelName, opts.Logger.With("sandbox", s.ID()))
	if err != nil {
		return fail(fmt.Errorf("%w%s", err, s.serverLogTail()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client, s.kernel, s.serverJob = client, kernel, job.JobID
	s.startup.Server, s.startup.Kernel = server, time.Since(kernelStart)
	return nil
}

// stopJob kills the server's job, if it still runs, within a bounded wait of its own: it
// runs when ctx may be done already.
func (s *Sandbox) stopJob(ctx context.Context, id string) {
	if id == "" {
		return
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.KillJob(kctx, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		s.opts.Logger.Warn("stopping the notebook server", "sandbox", s.ID(), "job", id, "error", err)
	}
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
	res, err := s.File(ctx, sandbox.FileRequest{Action: sandbox.FileRead, Path: s.serverLog(), MaxBytes: 1 << 20})
	if err != nil || len(res.Data) == 0 {
		return ""
	}
	text := strings.TrimSpace(string(res.Data))
	if len(text) > 2000 {
		text = "..." + text[len(text)-2000:]
	}
	return "; server log:\n" + text
}

// clearState deletes the server's state directory and launcher.
func (s *Sandbox) clearState(ctx context.Context) error {
	for _, p := range []string{s.stateDir(), s.launcherPath()} {
		_, err := s.File(ctx, sandbox.FileRequest{Action: sandbox.FileDelete, Path: p, Recursive: true})
		if err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			return fmt.Errorf("deleting the notebook server's state: %w", err)
		}
	}
	return nil
}

func newToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating the notebook token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
