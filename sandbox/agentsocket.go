package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// A sandbox on a local Docker engine speaks to the server over a unix socket of its own
// rather than over the engine's attach stream. Attach relays every message through dockerd
// and the container's shim, two processes and four copies each way; a call that takes 2 ms
// in the agent spent about as long again in that relay. The attach stream stays open, for
// the agent's log and as the engine's view of the container, but carries no protocol.
//
// Who can reach the socket. The server listens on a socket in a directory of its own
// (mode 0700 above it, so other users of the host cannot reach it), bind-mounts that one
// directory read-only at AgentSocketDir in the sandbox, and accepts exactly one connection:
// it then closes the listener and deletes the socket and its directory. The first
// connection is the agent's, because the agent is the container's first process and no
// code of the sandbox runs before the server holds that connection and asks for it (the
// server sends nothing until the agent has greeted it on this connection). Afterwards there
// is nothing to connect to: code in the sandbox sees an empty, deleted directory. The
// connection itself is the agent's descriptor, which commands neither inherit (it is
// close-on-exec) nor reach through /proc (the agent is non-dumpable, seal.go), as with its
// stdin and stdout before.
//
// When it is not used. Only an engine on this host's unix socket can mount a directory of
// this host. A server in a container beside the engine, or an engine behind a path the
// server cannot see, fails the first launch (the bind source does not exist there, or the
// agent cannot connect); the launch is then retried over attach, and attach is used from
// then on. Sandboxes with another runtime (gVisor) use attach: such runtimes confine host
// sockets differently.

// AgentSocketDir is where a sandbox sees the directory holding the server's socket while
// its agent connects; AgentSocketPath is the socket.
const (
	AgentSocketDir  = "/.enclave-link"
	AgentSocketPath = AgentSocketDir + "/agent.sock"
)

// maxSocketPath is the longest path a unix socket may have on Linux (sun_path, 108 bytes
// with its NUL).
const maxSocketPath = 107

// socketDirPrefix starts the name of every server's sockets directory in the temporary
// directory; the server's pid and its start time follow (socketDirOwner), so that a server
// that starts can remove those of servers that died without removing their own
// (reapSocketDirs).
const socketDirPrefix = "enclave-mcp-agents-"

func socketDirOwner(self Identity) string { return fmt.Sprintf("%d-%s", self.PID, self.PIDStart) }

// reapSocketDirs removes the sockets directories, in dir, of servers that no longer run on
// this host (alive reports whether pid with that start time does). Each holds nothing but
// the sockets of agents that never connected; a name of any other shape is left alone.
func reapSocketDirs(dir string, alive func(pid int, start string) bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		owner, ok := strings.CutPrefix(e.Name(), socketDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		fields := strings.Split(owner, "-")
		if len(fields) != 3 || fields[1] == "" {
			continue
		}
		pid, err := strconv.Atoi(fields[0])
		if err != nil || alive(pid, fields[1]) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// agentSockets makes the per-sandbox sockets of one Docker backend.
type agentSockets struct {
	base string      // a directory of this process's, mode 0700; "" when sockets are off
	why  string      // why base is "", for doctor
	off  atomic.Bool // set once a launch failed with a socket and worked over attach
}

// newAgentSockets prepares sockets for an engine at daemonHost: only for a unix socket
// (an engine on this host) and unless disabled. A directory that cannot be made turns them
// off, with the reason.
func newAgentSockets(daemonHost string, disabled bool, self Identity) *agentSockets {
	switch {
	case disabled:
		return &agentSockets{why: "attach only, as configured"}
	case !strings.HasPrefix(daemonHost, "unix://"):
		return &agentSockets{why: "the engine is not on this host (" + daemonHost + ")"}
	}
	base, err := os.MkdirTemp("", socketDirPrefix+socketDirOwner(self)+"-")
	if err != nil {
		return &agentSockets{why: fmt.Sprintf("making the sockets' directory: %v", err)}
	}
	if len(filepath.Join(base, NewID(), "agent.sock")) > maxSocketPath {
		_ = os.Remove(base)
		return &agentSockets{why: fmt.Sprintf("the temporary directory %s makes socket paths too long (set TMPDIR)", base)}
	}
	return &agentSockets{base: base}
}

// AgentTransport is how the next sandbox's agent will carry the protocol: "socket" (its own
// connection to this server) or "attach" (the engine's attach stream), and why not a socket.
// Sandboxes with another runtime than the engine's default use attach either way.
func (e *Docker) AgentTransport() (transport, why string) {
	switch {
	case e.sockets.enabled():
		return "socket", ""
	case e.sockets.off.Load():
		return "attach", "a launch with a socket failed and worked over attach"
	}
	return "attach", e.sockets.why
}

// enabled reports whether the next launch should use a socket.
func (s *agentSockets) enabled() bool { return s.base != "" && !s.off.Load() }

// disable turns sockets off for every later launch.
func (s *agentSockets) disable() { s.off.Store(true) }

// close removes the base directory and anything a failed launch left in it.
func (s *agentSockets) close() {
	if s.base != "" {
		_ = os.RemoveAll(s.base)
	}
}

// agentSocket is one sandbox's listening socket, until its agent connects.
type agentSocket struct {
	dir string // on this host; bind-mounted at AgentSocketDir
	ln  *net.UnixListener
}

// listen makes sandbox id's directory and socket. The directory and socket are open to
// every uid (the sandbox's user is the image's); the base directory keeps the host's
// other users out.
func (s *agentSockets) listen(id string) (*agentSocket, error) {
	dir := filepath.Join(s.base, id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("making the agent socket's directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask took away
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("making the agent socket's directory: %w", err)
	}
	path := filepath.Join(dir, "agent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("listening for the agent: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o666); err != nil {
		_ = ln.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("opening the agent socket to the sandbox's user: %w", err)
	}
	return &agentSocket{dir: dir, ln: ln}, nil
}

// close stops listening and removes the socket and its directory: nothing connects to it
// again. It may be called more than once.
func (a *agentSocket) close() {
	_ = a.ln.Close()
	_ = os.RemoveAll(a.dir)
}

// errAgentGone is the agent exiting before it connected.
var errAgentGone = errors.New("the agent exited before it connected")

// accept waits for the agent's connection until ctx ends, ended is closed (the container's
// attach stream ended: the agent is gone) or readyTimeout passes; then it closes the socket,
// whatever happened.
func (a *agentSocket) accept(ctx context.Context, ended <-chan struct{}) (*net.UnixConn, error) {
	defer a.close()
	type accepted struct {
		conn *net.UnixConn
		err  error
	}
	got := make(chan accepted, 1)
	go func() {
		c, err := a.ln.AcceptUnix()
		got <- accepted{c, err}
	}()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	var err error
	select {
	case r := <-got:
		if r.err == nil {
			return r.conn, nil
		}
		return nil, fmt.Errorf("accepting the agent's connection: %w", r.err)
	case <-ended:
		err = errAgentGone
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = fmt.Errorf("the agent did not connect within %s", readyTimeout)
	}
	_ = a.ln.Close() // the accept returns, with a connection that may have just arrived
	if r := <-got; r.err == nil {
		_ = r.conn.Close()
	}
	return nil, fmt.Errorf("waiting for the agent's connection: %w", err)
}

// socketStream is the write side of the agent's connection; Close half-closes it, so the
// agent sees EOF while its last responses can still arrive (as attachStream does).
type socketStream struct{ c *net.UnixConn }

func (s socketStream) Write(p []byte) (int, error) { return s.c.Write(p) }
func (s socketStream) Close() error                { return s.c.CloseWrite() }
