package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/enclave-mcp/enclave-mcp/egress"
)

// DockerOptions configures the connection to a Docker engine.
type DockerOptions struct {
	// AgentBinary is the static enclave-mcp executable injected as every sandbox's PID 1
	// (it runs as "enclave-mcp agent"). Empty means this process's own executable.
	AgentBinary string
	// Instance names this server process in every container's labels; empty means random.
	Instance string
	Logger   *slog.Logger
	// Egress serves the egress of sandboxes whose config has one; nil means a service with
	// the system's roots and resolver.
	Egress *egress.Service
	// AttachOnly keeps the protocol on the engine's attach stream even for an engine on this
	// host, where each agent otherwise connects to a socket of the server's (agentsocket.go).
	AttachOnly bool
}

// Docker is the Docker backend: it runs each sandbox as a hardened container on one engine.
type Docker struct {
	cli      *client.Client
	log      *slog.Logger
	identity Identity
	host     HostSecurity // what the engine's host enforces (AppArmor), read once
	egress   *egress.Service

	agent      *agentBinary
	sockets    *agentSockets // the agents' direct connections (agentsocket.go)
	agentMu    sync.Mutex
	agentReady bool

	closing   chan struct{}  // closed by Close: background removals stop retrying
	discards  sync.WaitGroup // background removals under way
	closeOnce sync.Once
}

// NewDocker connects to the engine named by the environment (DOCKER_HOST and friends), with
// the API version negotiated so that old engines (API 1.41) and new ones both work.
func NewDocker(ctx context.Context, opts DockerOptions) (*Docker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	binary, err := agentOrSelf(opts.AgentBinary)
	if err != nil {
		return nil, err
	}
	opts.AgentBinary = binary
	agent, err := loadAgentBinary(opts.AgentBinary)
	if err != nil {
		return nil, err
	}
	if opts.Instance == "" {
		opts.Instance = NewID()
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
	identity := SelfIdentity(opts.Instance)
	sockets := newAgentSockets(cli.DaemonHost(), opts.AttachOnly, identity)
	if sockets.why != "" {
		opts.Logger.Debug("sandboxes use the engine's attach stream", "why", sockets.why)
	}
	return &Docker{cli: cli, log: opts.Logger, identity: identity, agent: agent, sockets: sockets, closing: make(chan struct{}),
		host: ParseSecurityOptions(info.SecurityOptions), egress: egressOrDefault(opts.Egress, opts.Logger)}, nil
}

// Instance is the label value that marks this engine connection's containers.
func (e *Docker) Instance() string { return e.identity.ID }

// Client exposes the Docker client to the package's other files (images, doctor).
func (e *Docker) Client() *client.Client { return e.cli }

// Ping checks that the engine answers.
func (e *Docker) Ping(ctx context.Context) error {
	if _, err := e.cli.Ping(ctx); err != nil {
		return fmt.Errorf("%w: the Docker engine does not answer: %w", ErrEngine, err)
	}
	return nil
}

// Close releases the client's connections and stops background removals; it does not touch
// sandboxes. It may be called more than once.
func (e *Docker) Close() error {
	e.closeOnce.Do(func() { close(e.closing) })
	e.discards.Wait()
	e.sockets.close()
	return e.cli.Close()
}

// NewID returns a short random id for a sandbox or server instance.
func NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var _ Backend = (*Docker)(nil)

// Name implements Backend.
func (e *Docker) Name() string { return "docker" }

// Identity implements Backend.
func (e *Docker) Identity() Identity { return e.identity }

func (e *Docker) logger() *slog.Logger { return e.log }

// Egress is the service that serves this backend's sandboxes' egress (its Stats are the
// metrics).
func (e *Docker) Egress() *egress.Service { return e.egress }

// Launch implements Backend: it creates the container, attaches to its stdio (before the
// start, so no output is missed), starts it and hands the agent's streams to ready.
func (e *Docker) Launch(ctx context.Context, spec Spec, ready func(Streams) error) (Launched, error) {
	direct := e.sockets.enabled() && spec.Config.Runtime == ""
	l, err := e.launch(ctx, spec, direct, ready)
	if err == nil || ctx.Err() != nil {
		return l, err
	}
	if errors.Is(err, errStart) {
		// The agent volume may have been removed behind our back (by hand, or by another
		// server's clean-up while no container used it): check it again before the retry.
		e.forgetAgentVolume()
	}
	if !direct && !errors.Is(err, errStart) {
		return l, err
	}
	// Retried once, over attach: with a socket, the engine may not see this host's files
	// (a server in a container beside it), and attach is then kept to if it works.
	l, retried := e.launch(ctx, spec, false, ready)
	if direct && retried == nil {
		e.sockets.disable()
		e.log.Warn("sandboxes use the engine's attach stream from now on: a launch with the agent connecting to the server's socket failed", "err", err)
	}
	return l, retried
}

// errStart marks a container that was created but did not start or never answered.
var errStart = errors.New("sandbox did not start")

func (e *Docker) launch(ctx context.Context, spec Spec, direct bool, ready func(Streams) error) (Launched, error) {
	image := spec.Config.Image
	volume, err := e.ensureAgentVolume(ctx, image)
	if err != nil {
		return Launched{}, err
	}
	in := specInput{ID: spec.ID, Labels: spec.Labels, Config: spec.Config, AgentVolume: volume, AgentArgs: spec.AgentArgs, Host: e.host}
	var sock *agentSocket
	if direct {
		if sock, err = e.sockets.listen(spec.ID); err != nil {
			return Launched{}, err
		}
		defer sock.close() // at once if the agent connected; else nothing connects later
		in.AgentSocketDir = sock.dir
	}
	cfg, host := containerSpec(in)
	// Not the caller's context: a create cancelled in flight may still happen on the engine,
	// leaving a container we would not know to remove.
	name := containerName(spec.ID)
	created, err := e.cli.ContainerCreate(context.WithoutCancel(ctx), cfg, host, nil, nil, name)
	if err != nil {
		if !errdefs.IsNotFound(err) { // an engine failing mid-create may still have made it
			e.discard(name)
		}
		return Launched{}, e.createError(image, err)
	}
	if err := ctx.Err(); err != nil {
		e.discard(created.ID)
		return Launched{}, fmt.Errorf("creating sandbox: %w", err)
	}
	streams, err := e.start(ctx, spec.ID, created.ID, sock)
	if err == nil {
		if err = ready(streams); err != nil {
			err = fmt.Errorf("%w%s", err, ExitHint(e, created.ID))
			streams.Teardown()
		}
	}
	if err != nil {
		e.discard(created.ID)
		return Launched{}, fmt.Errorf("%w: %w", errStart, err)
	}
	transport := "attach"
	if sock != nil {
		transport = "socket"
	}
	l := Launched{
		Ref:      created.ID,
		Streams:  streams,
		Metadata: map[string]any{"container_name": name, "agent_volume": volume, "agent_transport": transport},
		// AutoRemove: the engine removes the container once its PID 1, the agent, exits.
		RemovesOnExit: spec.Config.RemoveOnExit != nil && *spec.Config.RemoveOnExit,
	}
	l.Reset = ResetFor(spec.Config)
	return l, nil
}

// start attaches to the container's stdio and starts it. With sock, the protocol then moves
// to the agent's connection to it, and the attach stream carries only the agent's log.
func (e *Docker) start(ctx context.Context, id, containerID string, sock *agentSocket) (Streams, error) {
	hijack, err := e.cli.ContainerAttach(ctx, containerID, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		return Streams{}, fmt.Errorf("%w: attaching to sandbox %s: %w", ErrEngine, id, err)
	}
	// The engine multiplexes the agent's stdout and stderr on the one connection; demux
	// splits them into two pipes (stdout is dropped when the agent answers on its socket),
	// and blocks while either is not read. So both are read until they end, whatever
	// arrives, and teardown unblocks everything at once.
	stdoutR, stdoutW := io.Pipe()
	stderrR, stderrW := io.Pipe()
	var stdout io.Writer = stdoutW
	if sock != nil {
		stdout = io.Discard // the agent answers on its connection and writes nothing here
	}
	var conn *net.UnixConn // the agent's connection, once it has connected to sock
	var connMu sync.Mutex
	teardown := sync.OnceFunc(func() {
		_ = hijack.Conn.Close()
		_ = stdoutR.Close() // the reader then sees io.ErrClosedPipe: "the stream closed"
		_ = stderrR.Close()
		connMu.Lock()
		if conn != nil {
			_ = conn.Close()
		}
		connMu.Unlock()
	})
	ended := make(chan struct{}) // the attach stream ended: the agent is gone
	go func() {
		err := demux(stdout, stderrW, hijack.Reader)
		if err == nil {
			err = io.EOF
		}
		stdoutW.CloseWithError(err)
		stderrW.CloseWithError(err)
		close(ended)
		teardown()
	}()
	streams := Streams{Stdin: attachStream{&hijack}, Stdout: stdoutR, Stderr: stderrR, Teardown: teardown}
	if err := e.cli.ContainerStart(ctx, containerID, container.StartOptions{}); err != nil {
		teardown()
		return Streams{}, fmt.Errorf("%w: starting sandbox %s: %w", ErrEngine, id, err)
	}
	if sock == nil {
		return streams, nil
	}
	c, err := sock.accept(ctx, ended)
	if err != nil {
		teardown()
		return Streams{}, fmt.Errorf("starting sandbox %s: %w", id, err)
	}
	connMu.Lock()
	conn = c
	connMu.Unlock()
	select {
	case <-ended: // the stream ended while the connection arrived: teardown ran before it was known
		_ = c.Close()
	default:
	}
	streams.Stdin, streams.Stdout = socketStream{c}, c
	return streams, nil
}

// ExitHint describes why a backend's sandbox ended early, when it did, for a launch error:
// " (container exited with code N ...)", or "" while it runs or cannot be inspected.
func ExitHint(b Backend, ref string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := b.Inspect(ctx, ref)
	if err != nil || st.Running {
		return ""
	}
	return fmt.Sprintf(" (container exited with code %d%s)", st.ExitCode, strings.TrimSuffix(" "+st.Error, " "))
}

// createError explains a failed container create; a missing image gets the fix, not a hang
// on a registry that cannot be reached.
func (e *Docker) createError(image string, err error) error {
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("%w: image %q is not on the engine, and enclave-mcp never pulls images: build the defaults with `enclave-mcp images build` (%s), or load %q yourself: %w",
			ErrEngine, image, DefaultImage, image, err)
	}
	return fmt.Errorf("%w: creating container from %s: %w", ErrEngine, image, err)
}

// attachStream is the write side of the hijacked attach connection; Close half-closes it,
// so the agent sees EOF on stdin while its last responses can still arrive.
type attachStream struct{ h *types.HijackedResponse }

func (a attachStream) Write(p []byte) (int, error) { return a.h.Conn.Write(p) }
func (a attachStream) Close() error                { return a.h.CloseWrite() }

// Stop implements Backend: SIGKILL to the container; one that is gone or stopping already
// is not an error.
func (e *Docker) Stop(ctx context.Context, ref string) error {
	err := e.cli.ContainerKill(ctx, ref, "KILL")
	if err != nil && !errdefs.IsNotFound(err) && !errdefs.IsConflict(err) {
		return fmt.Errorf("%w: stopping container %.12s: %w", ErrEngine, ref, err)
	}
	return nil
}

// Remove implements Backend: it force-removes the container (SIGKILL, no grace period, so
// an image whose PID 1 would ignore SIGTERM costs nothing extra). Gone already is success;
// a removal the engine already has under way is waited for.
func (e *Docker) Remove(ctx context.Context, ref string) error {
	err := e.cli.ContainerRemove(ctx, ref, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil || errdefs.IsNotFound(err):
		return nil
	case !errdefs.IsConflict(err):
		return fmt.Errorf("%w: removing container %.12s: %w", ErrEngine, ref, err)
	}
	for {
		if _, err := e.cli.ContainerInspect(ctx, ref); errdefs.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("removing container %.12s: waiting for the engine's removal: %w", ref, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Inspect implements Backend.
func (e *Docker) Inspect(ctx context.Context, ref string) (State, error) {
	insp, err := e.cli.ContainerInspect(ctx, ref)
	if errdefs.IsNotFound(err) {
		return State{}, fmt.Errorf("container %.12s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return State{}, fmt.Errorf("%w: inspecting container %.12s: %w", ErrEngine, ref, err)
	}
	if insp.State == nil {
		return State{}, nil
	}
	return State{Running: insp.State.Running, ExitCode: insp.State.ExitCode, Error: insp.State.Error}, nil
}

// List implements Backend.
func (e *Docker) List(ctx context.Context, labels map[string]string) ([]Listed, error) {
	f := filters.NewArgs()
	for k, v := range labels {
		f.Add("label", k+"="+v)
	}
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("%w: listing sandboxes: %w", ErrEngine, err)
	}
	out := make([]Listed, len(list))
	for i, c := range list {
		out[i] = Listed{Ref: c.ID, Labels: c.Labels, State: c.State, Created: time.Unix(c.Created, 0)}
	}
	return out, nil
}

// ListManaged lists this package's containers on the engine, optionally only instance's.
func (e *Docker) ListManaged(ctx context.Context, instance string) ([]Listed, error) {
	labels := map[string]string{LabelManaged: "true"}
	if instance != "" {
		labels[LabelInstance] = instance
	}
	return e.List(ctx, labels)
}
