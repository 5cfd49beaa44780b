package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/enclave-mcp/enclave-mcp/egress"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcessWarning is logged when a Process backend starts, and is what the CLI says when it
// refuses one that was not explicitly allowed.
const ProcessWarning = "the process backend ISOLATES NOTHING: sandboxed code runs as a plain process on this host, " +
	"with the host's files, network and the server's privileges (less a uid switch when the server runs as root); " +
	"use it for development and tests, never for untrusted code"

// ProcessOptions configures a Process backend.
type ProcessOptions struct {
	// AgentBinary is the enclave-mcp executable run as each sandbox's agent ("enclave-mcp
	// agent"); empty means this process's own executable.
	AgentBinary string
	// Root holds one directory per sandbox (its workspace, its temporary files and its
	// labels); empty means enclave-mcp-process under the system's temporary directory.
	Root string
	// Instance names this server process in every sandbox's labels; empty means random.
	Instance string
	Logger   *slog.Logger
	// Egress serves the egress of sandboxes whose config has one; nil means a service with
	// the system's roots and resolver.
	Egress *egress.Service
}

// Process is the process backend: each sandbox is our agent run as a child process of the
// server, in a directory of its own. It exists for development and for tests that need real
// processes and files without a container engine (it starts in milliseconds), and it
// isolates nothing: see ProcessWarning. What the agent does (process trees killed on
// timeout, output caps, file operations, background jobs) behaves as on Docker; what the
// container adds (a private root file system, no network, memory, CPU and process limits,
// seccomp) is absent. When the server runs as root, the agent runs as the config's numeric
// user, so sandboxed code at least cannot write the host's system files.
type Process struct {
	agent    string
	root     string
	identity Identity
	log      *slog.Logger
	egress   *egress.Service

	mu    sync.Mutex
	procs map[string]*agentProcess // by ref (the sandbox id)
}

// agentProcess is one running agent.
type agentProcess struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process was waited for
	exit int
}

// labelsFile holds a sandbox's labels in its directory, for List and for reaping by a later
// server.
const labelsFile = "labels.json"

// NewProcess returns a process backend. It logs ProcessWarning: running it is a choice the
// operator must see.
func NewProcess(opts ProcessOptions) (*Process, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	binary, err := agentOrSelf(opts.AgentBinary)
	if err != nil {
		return nil, err
	}
	opts.AgentBinary = binary
	if opts.Root == "" {
		opts.Root = filepath.Join(os.TempDir(), "enclave-mcp-process")
	}
	// World-traversable, so a sandbox running as another uid reaches its own directory;
	// each sandbox's directory is private to it.
	if err := os.MkdirAll(opts.Root, 0o711); err != nil {
		return nil, fmt.Errorf("process backend: creating %s: %w", opts.Root, err)
	}
	agent, err := installAgent(opts.AgentBinary, opts.Root)
	if err != nil {
		return nil, err
	}
	if opts.Instance == "" {
		opts.Instance = NewID()
	}
	opts.Logger.Warn(ProcessWarning, "root", opts.Root)
	return &Process{agent: agent, root: opts.Root, identity: SelfIdentity(opts.Instance), log: opts.Logger,
		egress: egressOrDefault(opts.Egress, opts.Logger),
		procs:  map[string]*agentProcess{}}, nil
}

var _ Backend = (*Process)(nil)

// Name implements Backend.
func (p *Process) Name() string { return "process" }

// Identity implements Backend.
func (p *Process) Identity() Identity { return p.identity }

func (p *Process) logger() *slog.Logger { return p.log }

// Egress is the service that serves this backend's sandboxes' egress.
func (p *Process) Egress() *egress.Service { return p.egress }

// Instance is the label value that marks this backend's sandboxes.
func (p *Process) Instance() string { return p.identity.ID }

// Ping implements Backend: there is nothing to reach.
func (p *Process) Ping(context.Context) error { return nil }

// Close implements Backend; it leaves sandboxes alone.
func (p *Process) Close() error { return nil }

// Launch implements Backend: a directory for the sandbox, and the agent started in it with
// its stdio on pipes.
func (p *Process) Launch(ctx context.Context, spec Spec, ready func(Streams) error) (Launched, error) {
	if err := ctx.Err(); err != nil {
		return Launched{}, fmt.Errorf("creating sandbox: %w", err)
	}
	dir := filepath.Join(p.root, spec.ID)
	workspace := filepath.Join(dir, "workspace")
	tmp := filepath.Join(dir, "tmp")
	launched, err := p.launch(spec, dir, workspace, tmp, ready)
	if err != nil {
		p.kill(spec.ID)
		if rerr := removeTree(dir); rerr != nil {
			p.log.Error("removing a process sandbox that failed to start", "dir", dir, "error", rerr)
		}
		return Launched{}, err
	}
	return launched, nil
}

func (p *Process) launch(spec Spec, dir, workspace, tmp string, ready func(Streams) error) (Launched, error) {
	for _, d := range []string{dir, workspace, tmp} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return Launched{}, fmt.Errorf("process backend: creating %s: %w", d, err)
		}
	}
	labels, err := json.Marshal(spec.Labels)
	if err != nil {
		return Launched{}, fmt.Errorf("process backend: encoding labels: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, labelsFile), labels, 0o600); err != nil {
		return Launched{}, fmt.Errorf("process backend: writing labels: %w", err)
	}
	cred, err := processCredential(spec.Config.User)
	if err != nil {
		return Launched{}, err
	}
	if cred != nil {
		for _, d := range []string{workspace, tmp} {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return Launched{}, fmt.Errorf("process backend: handing %s to uid %d: %w", d, cred.Uid, err)
			}
		}
		// The sandbox's own directory must be traversable by that uid.
		if err := os.Chmod(dir, 0o711); err != nil {
			return Launched{}, fmt.Errorf("process backend: %w", err)
		}
	}

	args := []string{"agent", "--workspace", workspace}
	if spec.Config.Egress != nil {
		// Any free port: host processes share the host's loopback. The agent's greeting
		// names the port (AgentSandbox.EgressAddr).
		args = append(args, "--egress-listen", "127.0.0.1:0")
	}
	args = append(args, spec.AgentArgs...)
	cmd := exec.Command(p.agent, args...)
	cmd.Dir = workspace
	cmd.Env = processEnv(spec.Config, workspace, tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,            // Stop kills the whole group
		Pdeathsig:  syscall.SIGKILL, // and so does the server's death
		Credential: cred,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return Launched{}, fmt.Errorf("process backend: %w", err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return Launched{}, fmt.Errorf("process backend: %w", err)
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		_ = stdoutR.Close()
		_ = stdoutW.Close()
		return Launched{}, fmt.Errorf("process backend: %w", err)
	}
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	teardown := sync.OnceFunc(func() {
		_ = stdin.Close()
		_ = stdoutR.Close()
		_ = stderrR.Close()
	})
	err = cmd.Start()
	_ = stdoutW.Close() // the child holds its own copies
	_ = stderrW.Close()
	if err != nil {
		teardown()
		return Launched{}, fmt.Errorf("process backend: starting the agent %s: %w", p.agent, err)
	}
	proc := &agentProcess{cmd: cmd, done: make(chan struct{})}
	p.mu.Lock()
	p.procs[spec.ID] = proc
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		proc.exit = cmd.ProcessState.ExitCode()
		if err != nil && proc.exit == 0 {
			proc.exit = -1
		}
		close(proc.done)
	}()
	streams := Streams{Stdin: stdin, Stdout: stdoutR, Stderr: stderrR, Teardown: teardown}
	if err := ready(streams); err != nil {
		teardown()
		return Launched{}, fmt.Errorf("%w%s", err, p.exitHint(proc))
	}
	// No Reset: the sandbox shares the host's /tmp, /dev/shm and IPC namespace, which no
	// reset could empty without touching the host's own; a pool replaces it instead.
	return Launched{Ref: spec.ID, Streams: streams, Metadata: map[string]any{"dir": dir, "pid": cmd.Process.Pid}}, nil
}

// exitHint says how the agent ended, when it has.
func (p *Process) exitHint(proc *agentProcess) string {
	select {
	case <-proc.done:
		return fmt.Sprintf(" (the agent exited with code %d)", proc.exit)
	case <-time.After(100 * time.Millisecond):
		return ""
	}
}

// installAgent copies the agent binary into root, named by its hash, readable and
// executable by every uid: the original may sit where a sandbox's uid cannot reach it.
func installAgent(binary, root string) (string, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return "", fmt.Errorf("process backend: reading the agent binary: %w", err)
	}
	sum := sha256.Sum256(data)
	path := filepath.Join(root, ".agent-"+hex.EncodeToString(sum[:8]))
	if st, err := os.Stat(path); err == nil && st.Size() == int64(len(data)) {
		return path, nil
	}
	tmp, err := os.CreateTemp(root, ".agent-*.tmp")
	if err != nil {
		return "", fmt.Errorf("process backend: installing the agent: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o755), os.Rename(tmp.Name(), path)); err != nil {
		return "", fmt.Errorf("process backend: installing the agent: %w", err)
	}
	return path, nil
}

// processCredential is the uid and gid the agent runs as: the config's numeric user when
// the server is root, so sandboxed code is not; otherwise the server's own (nil).
func processCredential(user string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	uid, gid, ok := NumericUser(user)
	if !ok {
		return nil, fmt.Errorf("%w: the process backend running as root needs a numeric user \"uid:gid\", got %q", ErrInvalidConfig, user)
	}
	u, err1 := strconv.ParseUint(uid, 10, 32)
	g, err2 := strconv.ParseUint(gid, 10, 32)
	if err1 != nil || err2 != nil || u == 0 {
		return nil, fmt.Errorf("%w: the process backend will not run sandboxes as root (user %q)", ErrInvalidConfig, user)
	}
	return &syscall.Credential{Uid: uint32(u), Gid: uint32(g), Groups: []uint32{}}, nil
}

// processEnv is the agent's environment: a fixed minimum, the config's variables, and a
// workspace home and temporary directory of its own. Nothing of the server's environment
// (its tokens) is passed on.
func processEnv(cfg Resolved, workspace, tmp string) []string {
	env := map[string]string{
		"PATH":   "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG":   "C.UTF-8",
		"HOME":   workspace,
		"TMPDIR": tmp,
	}
	for k, v := range cfg.EnvVars {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// Stop implements Backend: the agent has had its stdin closed and kills its process trees;
// what is left of its process group after a short grace is killed.
func (p *Process) Stop(ctx context.Context, ref string) error {
	p.mu.Lock()
	proc := p.procs[ref]
	p.mu.Unlock()
	if proc == nil {
		return nil
	}
	select {
	case <-proc.done:
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
	}
	p.kill(ref)
	select {
	case <-proc.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stopping process sandbox %s: %w", ref, ctx.Err())
	}
}

// kill SIGKILLs a sandbox's process group.
func (p *Process) kill(ref string) {
	p.mu.Lock()
	proc := p.procs[ref]
	p.mu.Unlock()
	if proc != nil && proc.cmd.Process != nil {
		_ = syscall.Kill(-proc.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Remove implements Backend: the processes stopped, then the sandbox's directory removed.
func (p *Process) Remove(ctx context.Context, ref string) error {
	if err := validRef(ref); err != nil {
		return err
	}
	if err := p.Stop(ctx, ref); err != nil {
		return err
	}
	p.mu.Lock()
	delete(p.procs, ref)
	p.mu.Unlock()
	if err := removeTree(filepath.Join(p.root, ref)); err != nil {
		return fmt.Errorf("removing process sandbox %s: %w", ref, err)
	}
	return nil
}

// validRef refuses a ref that is not a plain directory name under the root.
func validRef(ref string) error {
	if ref == "" || ref == "." || ref == ".." || strings.ContainsRune(ref, '/') {
		return fmt.Errorf("process sandbox %q: %w", ref, ErrNotFound)
	}
	return nil
}

// removeTree removes dir, first making every directory in it writable by its owner: code
// in the sandbox may have left directories it made read-only.
func removeTree(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// Inspect implements Backend.
func (p *Process) Inspect(_ context.Context, ref string) (State, error) {
	if err := validRef(ref); err != nil {
		return State{}, err
	}
	p.mu.Lock()
	proc := p.procs[ref]
	p.mu.Unlock()
	if proc != nil {
		select {
		case <-proc.done:
			return State{ExitCode: proc.exit}, nil
		default:
			return State{Running: true}, nil
		}
	}
	if _, err := os.Stat(filepath.Join(p.root, ref)); err != nil {
		return State{}, fmt.Errorf("process sandbox %s: %w", ref, ErrNotFound)
	}
	return State{}, nil // left by another server: its agent died with it
}

// List implements Backend: the sandbox directories under the root whose labels match.
func (p *Process) List(_ context.Context, labels map[string]string) ([]Listed, error) {
	entries, err := os.ReadDir(p.root)
	if err != nil {
		return nil, fmt.Errorf("process backend: listing %s: %w", p.root, err)
	}
	var out []Listed
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(p.root, e.Name(), labelsFile)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // not a sandbox, or one being made
		}
		var found map[string]string
		if err != nil || json.Unmarshal(data, &found) != nil {
			continue
		}
		if !hasLabels(found, labels) {
			continue
		}
		l := Listed{Ref: e.Name(), Labels: found, State: "exited"}
		if st, err := os.Stat(path); err == nil {
			l.Created = st.ModTime()
		}
		if st, _ := p.Inspect(context.Background(), e.Name()); st.Running {
			l.State = "running"
		}
		out = append(out, l)
	}
	return out, nil
}

// hasLabels reports whether have carries every label of want.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
