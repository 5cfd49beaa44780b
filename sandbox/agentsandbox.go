package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/internal/logcap"
)

// readyTimeout bounds a sandbox's start, from launch until its agent answers.
const readyTimeout = 30 * time.Second

// CreateOptions says what sandbox to create.
type CreateOptions struct {
	Config Resolved
	Owner  string
	Type   Type
	// AgentArgs are appended to the agent's command line.
	AgentArgs []string
}

// Create launches a sandbox on b and returns once its agent answers. On any failure nothing
// of it remains on the backend when the error returns.
func Create(ctx context.Context, b Backend, opts CreateOptions) (*AgentSandbox, error) {
	if opts.Type == "" {
		opts.Type = TypeDocker
	}
	id := NewID()
	now := time.Now()
	s := &AgentSandbox{
		backend: b,
		id:      id,
		typ:     opts.Type,
		cfg:     opts.Config,
		owner:   opts.Owner,
		log:     backendLog(b).With("sandbox", id),
	}
	s.lifecycle = lifecycle{status: StatusInitializing, createdAt: now, updatedAt: now, lastUsed: now}
	if rules := opts.Config.Egress; rules != nil {
		proxy, err := egressService(b).NewProxy(id, *rules)
		if err != nil {
			return nil, fmt.Errorf("creating sandbox: %w", err)
		}
		s.egress = proxy
	}
	spec := Spec{ID: id, Labels: managedLabels(b.Identity(), id, opts.Owner, opts.Type), Config: opts.Config, AgentArgs: opts.AgentArgs}
	launched, err := b.Launch(ctx, spec, s.attach)
	if err != nil {
		if s.egress != nil {
			s.egress.Close()
		}
		return nil, err
	}
	s.ref, s.meta, s.reset, s.removesOnExit = launched.Ref, launched.Metadata, launched.Reset, launched.RemovesOnExit
	// The agent knows where its workspace is: on a backend that puts it somewhere else than
	// the config says (host processes), the agent's word wins.
	s.cfg.WorkingDir = s.ready.Workspace
	s.set(StatusRunning, "")
	if _, docker := b.(*Docker); docker && s.egress != nil {
		if err := s.installCABundle(ctx); err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = s.Close(cctx)
			return nil, fmt.Errorf("creating sandbox %s: %w", id, err)
		}
	}
	s.log.Debug("sandbox ready", "backend", b.Name(), "image", opts.Config.Image, "took", time.Since(now))
	return s, nil
}

// attach speaks to a freshly launched agent over its stdio and waits for its greeting. A
// backend may call it again for a second launch after the first failed.
func (s *AgentSandbox) attach(st Streams) error {
	s.teardown = st.Teardown
	go drainAgentStderr(st.Stderr, s.log)
	s.conn = newAgentConn(st.Stdin, st.Stdout, st.Teardown, s.log)
	if s.egress != nil {
		s.conn.setAccept(s.egress.Serve)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	ready, err := s.conn.waitReady(ctx)
	if err != nil {
		return fmt.Errorf("starting sandbox %s: %w", s.id, err)
	}
	s.ready = ready
	return nil
}

// backendLog is the logger b was made with; a backend of another package logs nothing here.
func backendLog(b Backend) *slog.Logger {
	if l, ok := b.(interface{ logger() *slog.Logger }); ok {
		return l.logger()
	}
	return slog.New(slog.DiscardHandler)
}

// NewCreator returns a Creator that makes sandboxes of type typ on b.
func NewCreator(b Backend, typ Type) Creator {
	return func(ctx context.Context, owner string, cfg Resolved) (Sandbox, error) {
		sb, err := Create(ctx, b, CreateOptions{Config: cfg, Owner: owner, Type: typ})
		if err != nil {
			return nil, err // not a typed nil in an interface
		}
		return sb, nil
	}
}

// AgentSandbox is a Sandbox served by our agent on any backend.
type AgentSandbox struct {
	lifecycle
	backend Backend
	id      string
	typ     Type
	cfg     Resolved
	owner   string
	ref     string         // the backend's name for it
	meta    map[string]any // the backend's metadata
	reset   *wire.Reset    // how a pool returns it to its start; nil: it cannot
	// removesOnExit: the backend removes the sandbox once the agent exits (HandOff).
	removesOnExit bool
	log           *slog.Logger
	egress        *egress.Proxy // serves the sandbox's egress streams; nil without egress

	conn *agentConn
	// teardown closes the agent's streams, ending every goroutine that serves them. It runs
	// when the stream ends, when the agent connection fails, and on Stop and Close.
	teardown func()
	ready    wire.Ready
	closeMu  sync.Mutex
	removed  bool
}

// stderrLineLimit is the most of one agent stderr line kept for the log; the rest of a
// longer line is read and dropped.
const stderrLineLimit = 4 << 10

// drainAgentStderr reads the agent's stderr until it ends, whatever arrives: a line of any
// length costs stderrLineLimit bytes, and lines reach the log as bounded prefixes under a
// rate limit. It must never stop early: on Docker a stderr left unread stalls the stream
// that also carries every answer on stdout.
func drainAgentStderr(r interface{ Read([]byte) (int, error) }, logger *slog.Logger) {
	lines := bufio.NewReaderSize(r, stderrLineLimit)
	log := logcap.New(logger, logcap.Options{})
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

// ID implements Sandbox.
func (s *AgentSandbox) ID() string { return s.id }

// ContainerID is the backend's name for the sandbox: the container's id on Docker.
func (s *AgentSandbox) ContainerID() string { return s.ref }

// Backend is the backend the sandbox runs on.
func (s *AgentSandbox) Backend() Backend { return s.backend }

// Info implements Sandbox. Environment values are left out: they may hold secrets.
func (s *AgentSandbox) Info() Info {
	info := Info{ID: s.id, Type: s.typ, Image: s.cfg.Image, Owner: s.owner}
	errMsg := s.fill(&info)
	meta := map[string]any{
		"backend":      s.backend.Name(),
		"working_dir":  s.cfg.WorkingDir,
		"memory_limit": formatSize(s.cfg.MemoryBytes),
		"cpu_limit":    s.cfg.CPULimit,
		"pids_limit":   s.cfg.PidsLimit,
		"network":      s.cfg.NetworkEnabled,
		"user":         s.cfg.User,
	}
	maps.Copy(meta, s.meta)
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
	if r := s.EgressReport(); r != nil {
		meta["egress"] = r
	}
	if errMsg != "" {
		meta["error"] = errMsg
	}
	info.Metadata = meta
	return info
}

// Config is the resolved config the sandbox runs with; its WorkingDir is the agent's.
func (s *AgentSandbox) Config() Resolved { return s.cfg }

// Exec implements Sandbox.
func (s *AgentSandbox) Exec(ctx context.Context, req ExecRequest, onOutput func(Output)) (ExecResult, error) {
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
func (s *AgentSandbox) File(ctx context.Context, req FileRequest) (FileResult, error) {
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
func (s *AgentSandbox) Jobs(ctx context.Context) ([]Job, error) {
	resp, err := s.request(ctx, wire.Request{Op: wire.OpJobs})
	return resp.Jobs, err
}

// KillJob implements Sandbox.
func (s *AgentSandbox) KillJob(ctx context.Context, id string) (Job, error) {
	resp, err := s.request(ctx, wire.Request{Op: wire.OpKill, Job: id})
	if err != nil {
		return Job{}, err
	}
	if len(resp.Jobs) == 0 {
		return Job{ID: id}, nil
	}
	return resp.Jobs[0], nil
}

// AgentStats pings the agent and returns its own footprint (goroutines, heap).
func (s *AgentSandbox) AgentStats(ctx context.Context) (wire.AgentStats, error) {
	resp, err := s.request(ctx, wire.Request{Op: wire.OpPing})
	if err != nil {
		return wire.AgentStats{}, err
	}
	if resp.Stats == nil {
		return wire.AgentStats{}, errors.New("agent answered ping without its stats")
	}
	return *resp.Stats, nil
}

// WarmPython starts the sandbox's resident Python interpreter ahead of the first call
// (wire.OpWarm), so that call is forked from it instead of starting an interpreter, and
// returns once it has done its imports. A light one (wire.Warm.Light) imports none of the
// heavy modules until a call imports one of them. An image without python3 is not an error.
func (s *AgentSandbox) WarmPython(ctx context.Context, light bool) error {
	_, err := s.chore(ctx, wire.Request{Op: wire.OpWarm, Warm: &wire.Warm{Python: "python3", Wait: true, Light: light}})
	return err
}

// chore is a request the sandbox's user did not make, such as a warm-up: unlike request, it
// neither shows the sandbox busy nor counts as a use for its idle TTL.
func (s *AgentSandbox) chore(ctx context.Context, req wire.Request) (wire.Response, error) {
	if !s.Alive() {
		return wire.Response{}, ErrClosed
	}
	resp, err := s.conn.call(ctx, req, nil)
	if err != nil {
		return resp, s.callError(err)
	}
	return resp, nil
}

// request is a plain request/response exchange with the agent.
func (s *AgentSandbox) request(ctx context.Context, req wire.Request) (wire.Response, error) {
	if err := s.enter(); err != nil {
		return wire.Response{}, err
	}
	defer s.leave()
	return s.chore(ctx, req)
}

// callError marks the sandbox dead when its agent stream is gone, so the caller can replace it.
func (s *AgentSandbox) callError(err error) error {
	if errors.Is(err, ErrClosed) {
		s.set(StatusError, err.Error())
	}
	return err
}

// Alive reports whether the agent stream is still up.
func (s *AgentSandbox) Alive() bool { return s.conn != nil && s.conn.closeErr() == nil }

// Stop implements Sandbox: the agent gets EOF and kills everything, and the backend stops
// what is left. On Docker, with remove_on_exit (the default), the engine then removes it.
func (s *AgentSandbox) Stop(ctx context.Context) error {
	s.set(StatusStopping, "")
	s.disconnect()
	err := s.backend.Stop(ctx, s.ref)
	if err != nil {
		s.set(StatusError, err.Error())
		return fmt.Errorf("stopping sandbox %s: %w", s.id, err)
	}
	s.set(StatusStopped, "")
	return nil
}

// Close implements Sandbox. It returns once the sandbox is gone from its backend; a failed
// removal is retried by the next Close.
func (s *AgentSandbox) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.removed {
		return nil
	}
	s.set(StatusStopping, "")
	// Remove before closing the agent's stream: closed first, the agent would exit and a
	// backend's own clean-up (Docker's auto-removal) would race ours, and Close could
	// return while the sandbox still exists.
	err := s.backend.Remove(ctx, s.ref)
	// Even when the removal failed: the agent's streams must not outlive Close.
	s.disconnect()
	if err != nil {
		err = fmt.Errorf("removing sandbox %s: %w", s.id, err)
		s.set(StatusError, err.Error())
		return err
	}
	s.removed = true
	s.set(StatusStopped, "")
	return nil
}

// HandOff implements Sandbox. Where the backend removes the sandbox once its agent exits,
// closing the agent's stream is all it does: the agent kills every process and exits on
// the stream's end, and the engine removes the container, whether or not this server is
// still there (what the engine has not removed by the next server's start, that start
// reaps). The removal's cost, the kernel tearing down the container's cgroups, is then the
// engine's alone, after the server has gone.
func (s *AgentSandbox) HandOff(ctx context.Context) error {
	if !s.removesOnExit {
		return s.Close(ctx)
	}
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.removed {
		return nil
	}
	s.set(StatusStopping, "")
	s.disconnect()
	s.removed = true
	s.set(StatusStopped, "")
	return nil
}

// disconnect ends the agent's stream and everything that serves it, egress included.
func (s *AgentSandbox) disconnect() {
	if s.conn != nil {
		s.conn.close()
	}
	if s.teardown != nil {
		s.teardown()
	}
	if s.egress != nil {
		s.egress.Close()
	}
}
