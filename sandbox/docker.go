package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/internal/logcap"
)

// EngineOptions configures the connection to a Docker engine.
type EngineOptions struct {
	// AgentBinary is the static enclave-mcp executable injected as every sandbox's PID 1
	// (it runs as "enclave-mcp agent"). Empty means this process's own executable.
	AgentBinary string
	// Instance names this server process in every container's labels; empty means random.
	Instance string
	// ReadyTimeout bounds a sandbox's start until its agent answers; 0 means 30 s.
	ReadyTimeout time.Duration
	Logger       *slog.Logger
}

// Engine creates sandboxes on one Docker engine.
type Engine struct {
	cli          *client.Client
	log          *slog.Logger
	identity     Identity
	readyTimeout time.Duration
	host         HostSecurity // what the engine's host enforces (AppArmor), read once

	agent      *agentBinary
	agentMu    sync.Mutex
	agentReady bool

	closing   chan struct{}  // closed by Close: background removals stop retrying
	discards  sync.WaitGroup // background removals under way
	closeOnce sync.Once
}

// NewEngine connects to the engine named by the environment (DOCKER_HOST and friends), with
// the API version negotiated so that old engines (API 1.41) and new ones both work.
func NewEngine(ctx context.Context, opts EngineOptions) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.AgentBinary == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding own executable for the agent: %w", err)
		}
		opts.AgentBinary = self
	}
	agent, err := loadAgentBinary(opts.AgentBinary)
	if err != nil {
		return nil, err
	}
	if opts.Instance == "" {
		opts.Instance = NewID()
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("%w: creating docker client: %w", ErrEngine, err)
	}
	if _, err := cli.Ping(ctx); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("%w: no Docker engine answers at %s (start dockerd, or set DOCKER_HOST): %w", ErrEngine, cli.DaemonHost(), err)
	}
	info, err := cli.Info(ctx)
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("%w: reading the engine's security options: %w", ErrEngine, err)
	}
	return &Engine{cli: cli, log: opts.Logger, identity: selfIdentity(opts.Instance), readyTimeout: opts.ReadyTimeout, agent: agent, closing: make(chan struct{}),
		host: ParseSecurityOptions(info.SecurityOptions)}, nil
}

// Instance is the label value that marks this engine connection's containers.
func (e *Engine) Instance() string { return e.identity.ID }

// Client exposes the Docker client to the package's other files (images, doctor).
func (e *Engine) Client() *client.Client { return e.cli }

// Ping checks that the engine answers.
func (e *Engine) Ping(ctx context.Context) error {
	if _, err := e.cli.Ping(ctx); err != nil {
		return fmt.Errorf("%w: the Docker engine does not answer: %w", ErrEngine, err)
	}
	return nil
}

// Close releases the client's connections and stops background removals; it does not touch
// sandboxes. It may be called more than once.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() { close(e.closing) })
	e.discards.Wait()
	return e.cli.Close()
}

// NewID returns a short random id for a sandbox or server instance.
func NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CreateOptions says what sandbox to create.
type CreateOptions struct {
	Config Resolved
	Owner  string
	Type   Type
	// AgentArgs are appended to the agent's command line.
	AgentArgs []string
}

// Create creates and starts a sandbox and waits until its agent answers. On any failure the
// half-made container is removed before the error returns.
func (e *Engine) Create(ctx context.Context, opts CreateOptions) (*DockerSandbox, error) {
	sb, err := e.create(ctx, opts)
	if err != nil && errors.Is(err, errStart) && ctx.Err() == nil {
		// The agent volume may have been removed behind our back (by hand, or by another
		// server's clean-up while no container used it): check it again, then retry once.
		e.forgetAgentVolume()
		sb, err = e.create(ctx, opts)
	}
	return sb, err
}

// errStart marks a container that was created but did not start or never answered.
var errStart = errors.New("sandbox did not start")

func (e *Engine) create(ctx context.Context, opts CreateOptions) (*DockerSandbox, error) {
	if opts.Type == "" {
		opts.Type = TypeDocker
	}
	image := opts.Config.Image
	volume, err := e.ensureAgentVolume(ctx, image)
	if err != nil {
		return nil, err
	}
	id := NewID()
	cfg, host := containerSpec(specInput{
		ID: id, Instance: e.identity, Owner: opts.Owner, Kind: string(opts.Type),
		Config: opts.Config, AgentVolume: volume, AgentArgs: opts.AgentArgs, Host: e.host,
	})
	now := time.Now()
	s := &DockerSandbox{
		engine: e,
		id:     id,
		typ:    opts.Type,
		cfg:    opts.Config,
		owner:  opts.Owner,
		log:    e.log.With("sandbox", id),

		agentVolume: volume,
	}
	s.lifecycle = lifecycle{status: StatusInitializing, createdAt: now, updatedAt: now, lastUsed: now}

	// Not the caller's context: a create cancelled in flight may still happen on the engine,
	// leaving a container we would not know to remove.
	created, err := e.cli.ContainerCreate(context.WithoutCancel(ctx), cfg, host, nil, nil, containerName(id))
	if err != nil {
		if !errdefs.IsNotFound(err) { // an engine failing mid-create may still have made it
			e.discard(containerName(id))
		}
		return nil, e.createError(image, err)
	}
	s.containerID = created.ID
	if err := ctx.Err(); err != nil {
		e.discard(s.containerID)
		return nil, fmt.Errorf("creating sandbox: %w", err)
	}
	if err := s.start(ctx); err != nil {
		s.set(StatusError, err.Error())
		e.discard(s.containerID)
		return nil, fmt.Errorf("%w: %w", errStart, err)
	}
	s.set(StatusRunning, "")
	s.log.Debug("sandbox ready", "image", image, "took", time.Since(now))
	return s, nil
}

// Creator returns a Creator that makes sandboxes of type typ on this engine.
func (e *Engine) Creator(typ Type) Creator {
	return func(ctx context.Context, owner string, cfg Resolved) (Sandbox, error) {
		sb, err := e.Create(ctx, CreateOptions{Config: cfg, Owner: owner, Type: typ})
		if err != nil {
			return nil, err // not a typed nil in an interface
		}
		return sb, nil
	}
}

// createError explains a failed container create; a missing image gets the fix, not a hang
// on a registry that cannot be reached.
func (e *Engine) createError(image string, err error) error {
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("%w: image %q is not on the engine, and enclave-mcp never pulls images: build the defaults with `enclave-mcp images build` (%s), or load %q yourself: %w",
			ErrEngine, image, DefaultImage, image, err)
	}
	return fmt.Errorf("%w: creating container from %s: %w", ErrEngine, image, err)
}

// DockerSandbox is a Sandbox backed by one container on a Docker engine.
type DockerSandbox struct {
	lifecycle
	engine      *Engine
	id          string
	typ         Type
	cfg         Resolved
	owner       string
	containerID string
	agentVolume string
	log         *slog.Logger

	conn *agentConn
	// teardown closes the attach connection and the pipes it feeds, ending every goroutine
	// that serves them. It runs when the stream ends, when the agent connection fails,
	// and on Stop and Close.
	teardown func()
	ready    wire.Ready
	closeMu  sync.Mutex
	removed  bool
}

// start attaches to the container's stdio (before start, so no output is missed), starts it
// and waits for the agent's greeting.
func (s *DockerSandbox) start(ctx context.Context) error {
	cli := s.engine.cli
	hijack, err := cli.ContainerAttach(ctx, s.containerID, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		return fmt.Errorf("%w: attaching to sandbox %s: %w", ErrEngine, s.id, err)
	}
	// The engine multiplexes the agent's stdout and stderr on the one connection; StdCopy
	// splits them into two pipes, and blocks while either is not read. So both are read
	// until they end, whatever arrives, and teardown unblocks everything at once.
	stdoutR, stdoutW := io.Pipe()
	stderrR, stderrW := io.Pipe()
	s.teardown = sync.OnceFunc(func() {
		_ = hijack.Conn.Close()
		_ = stdoutR.Close() // the reader then sees io.ErrClosedPipe: "the stream closed"
		_ = stderrR.Close()
	})
	go func() {
		_, err := stdcopy.StdCopy(stdoutW, stderrW, hijack.Reader)
		if err == nil {
			err = io.EOF
		}
		stdoutW.CloseWithError(err)
		stderrW.CloseWithError(err)
		s.teardown()
	}()
	go s.drainAgentStderr(stderrR)
	s.conn = newAgentConn(attachStream{&hijack}, stdoutR, s.teardown, s.log)

	if err := cli.ContainerStart(ctx, s.containerID, container.StartOptions{}); err != nil {
		s.teardown()
		return fmt.Errorf("%w: starting sandbox %s: %w", ErrEngine, s.id, err)
	}
	rctx, cancel := context.WithTimeout(ctx, s.engine.readyTimeout)
	defer cancel()
	ready, err := s.conn.waitReady(rctx)
	if err != nil {
		hint := s.exitHint()
		s.teardown()
		return fmt.Errorf("starting sandbox %s: %w%s", s.id, err, hint)
	}
	s.ready = ready
	return nil
}

// exitHint describes why a container exited early, when it did.
func (s *DockerSandbox) exitHint() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	insp, err := s.engine.cli.ContainerInspect(ctx, s.containerID)
	if err != nil || insp.State == nil || insp.State.Running {
		return ""
	}
	return fmt.Sprintf(" (container exited with code %d%s)", insp.State.ExitCode, strings.TrimSuffix(" "+insp.State.Error, " "))
}

// stderrLineLimit is the most of one agent stderr line kept for the log; the rest of a
// longer line is read and dropped.
const stderrLineLimit = 4 << 10

// drainAgentStderr reads the agent's stderr until it ends, whatever arrives: a line of any
// length costs stderrLineLimit bytes, and lines reach the log as bounded prefixes under a
// rate limit. It must never stop early: a stderr left unread stalls StdCopy, and with it
// every answer on stdout.
func (s *DockerSandbox) drainAgentStderr(r io.Reader) {
	lines := bufio.NewReaderSize(r, stderrLineLimit)
	log := logcap.New(s.log, logcap.Options{})
	inLongLine := false // the head of the line under way was logged; its rest is dropped
	for {
		line, err := lines.ReadSlice('\n')
		if !inLongLine && len(line) > 0 {
			log.Log(slog.LevelDebug, "agent", "line", bytes.TrimSuffix(line, []byte("\n")))
		}
		inLongLine = errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !inLongLine {
			return
		}
	}
}

// attachStream is the write side of the hijacked attach connection; Close half-closes it,
// so the agent sees EOF on stdin while its last responses can still arrive.
type attachStream struct{ h *types.HijackedResponse }

func (a attachStream) Write(p []byte) (int, error) { return a.h.Conn.Write(p) }
func (a attachStream) Close() error                { return a.h.CloseWrite() }

// ID implements Sandbox.
func (s *DockerSandbox) ID() string { return s.id }

// ContainerID is the engine's id of the sandbox's container.
func (s *DockerSandbox) ContainerID() string { return s.containerID }

// Info implements Sandbox. Environment values are left out: they may hold secrets.
func (s *DockerSandbox) Info() Info {
	info := Info{ID: s.id, Type: s.typ, Image: s.cfg.Image, Owner: s.owner}
	errMsg := s.fill(&info)
	meta := map[string]any{
		"container_name": containerName(s.id),
		"working_dir":    s.cfg.WorkingDir,
		"memory_limit":   formatSize(s.cfg.MemoryBytes),
		"cpu_limit":      s.cfg.CPULimit,
		"pids_limit":     s.cfg.PidsLimit,
		"network":        s.cfg.NetworkEnabled,
		"user":           s.cfg.User,
		"agent_volume":   s.agentVolume,
	}
	if len(s.cfg.EnvVars) > 0 {
		names := make([]string, 0, len(s.cfg.EnvVars))
		for k := range s.cfg.EnvVars {
			names = append(names, k)
		}
		meta["env_var_names"] = names
	}
	if len(s.cfg.Notes) > 0 {
		meta["policy_notes"] = s.cfg.Notes
	}
	if errMsg != "" {
		meta["error"] = errMsg
	}
	info.Metadata = meta
	return info
}

// Config is the resolved config the sandbox runs with.
func (s *DockerSandbox) Config() Resolved { return s.cfg }

// Exec implements Sandbox.
func (s *DockerSandbox) Exec(ctx context.Context, req ExecRequest, onOutput func(Output)) (ExecResult, error) {
	if err := s.enter(); err != nil {
		return ExecResult{}, err
	}
	defer s.leave()
	resp, err := s.conn.call(ctx, wire.Request{Op: wire.OpExec, Exec: &req}, onOutput)
	if err != nil {
		return ExecResult{}, s.callError(err)
	}
	if resp.Exec == nil {
		return ExecResult{}, errors.New("agent answered exec without a result")
	}
	return *resp.Exec, nil
}

// File implements Sandbox.
func (s *DockerSandbox) File(ctx context.Context, req FileRequest) (FileResult, error) {
	resp, err := s.request(ctx, wire.Request{Op: wire.OpFile, File: &req})
	if err != nil {
		return FileResult{}, err
	}
	if resp.File == nil {
		return FileResult{}, errors.New("agent answered a file operation without a result")
	}
	return *resp.File, nil
}

// Jobs implements Sandbox.
func (s *DockerSandbox) Jobs(ctx context.Context) ([]Job, error) {
	resp, err := s.request(ctx, wire.Request{Op: wire.OpJobs})
	return resp.Jobs, err
}

// KillJob implements Sandbox.
func (s *DockerSandbox) KillJob(ctx context.Context, id string) (Job, error) {
	resp, err := s.request(ctx, wire.Request{Op: wire.OpKill, Job: id})
	if err != nil {
		return Job{}, err
	}
	if len(resp.Jobs) == 0 {
		return Job{ID: id}, nil
	}
	return resp.Jobs[0], nil
}

// request is a plain request/response exchange with the agent.
func (s *DockerSandbox) request(ctx context.Context, req wire.Request) (wire.Response, error) {
	if err := s.enter(); err != nil {
		return wire.Response{}, err
	}
	defer s.leave()
	resp, err := s.conn.call(ctx, req, nil)
	if err != nil {
		return resp, s.callError(err)
	}
	return resp, nil
}

// callError marks the sandbox dead when its agent stream is gone, so the caller can replace it.
func (s *DockerSandbox) callError(err error) error {
	if errors.Is(err, ErrClosed) {
		s.set(StatusError, err.Error())
	}
	return err
}

// Alive reports whether the agent stream is still up.
func (s *DockerSandbox) Alive() bool { return s.conn != nil && s.conn.closeErr() == nil }

// Stop implements Sandbox: the agent gets EOF and kills everything, and the container exits.
// With remove_on_exit (the default) the engine then removes it.
func (s *DockerSandbox) Stop(ctx context.Context) error {
	s.set(StatusStopping, "")
	if s.conn != nil {
		s.conn.close()
	}
	err := s.engine.cli.ContainerKill(ctx, s.containerID, "KILL")
	if s.teardown != nil {
		s.teardown()
	}
	if err != nil && !errdefs.IsNotFound(err) && !errdefs.IsConflict(err) {
		s.set(StatusError, err.Error())
		return fmt.Errorf("%w: stopping sandbox %s: %w", ErrEngine, s.id, err)
	}
	s.set(StatusStopped, "")
	return nil
}

// Close implements Sandbox. It returns once the container is gone; a failed removal is
// retried by the next Close.
func (s *DockerSandbox) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.removed {
		return nil
	}
	s.set(StatusStopping, "")
	// Remove before closing the agent's stream: closed first, the agent would exit and the
	// engine's auto-removal would race ours, and Close could return while the container
	// still exists.
	err := s.remove(ctx)
	if s.conn != nil {
		s.conn.close()
	}
	if s.teardown != nil {
		// Even when the removal failed: the attach connection must not outlive Close.
		s.teardown()
	}
	if err != nil {
		s.set(StatusError, err.Error())
		return err
	}
	s.removed = true
	s.set(StatusStopped, "")
	return nil
}

// remove force-removes the container: SIGKILL, no grace period, so an image whose PID 1
// would ignore SIGTERM costs nothing extra. Gone already is success; a removal the engine
// already has under way is waited for.
func (s *DockerSandbox) remove(ctx context.Context) error {
	cli := s.engine.cli
	err := cli.ContainerRemove(ctx, s.containerID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil || errdefs.IsNotFound(err):
		return nil
	case !errdefs.IsConflict(err):
		return fmt.Errorf("%w: removing sandbox %s: %w", ErrEngine, s.id, err)
	}
	for {
		if _, err := cli.ContainerInspect(ctx, s.containerID); errdefs.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("removing sandbox %s: waiting for the engine's removal: %w", s.id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ListManaged lists this package's containers on the engine, optionally only instance's.
func (e *Engine) ListManaged(ctx context.Context, instance string) ([]container.Summary, error) {
	f := filters.NewArgs(filters.Arg("label", LabelManaged+"=true"))
	if instance != "" {
		f.Add("label", LabelInstance+"="+instance)
	}
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("%w: listing sandboxes: %w", ErrEngine, err)
	}
	return list, nil
}
