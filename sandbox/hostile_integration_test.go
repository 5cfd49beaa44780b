package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// These tests attack the agent's wire through the real path: real sandboxes on the real
// engine. From inside a sandbox, code must not reach the wire at all (issue 9's main
// finding); from outside (the test, as root on the engine's host, writes into the agent's
// stdio through /proc, which is what code inside could do before the agent was sealed), the
// server must survive any bytes on it: one sandbox ends, the others carry on.

// forgeCode is python_executor code that tries every way to the agent's stdio and memory:
// it writes forged results for requests 1..59 to every /proc/1/fd/* and /proc/1/task/*/fd/*,
// reads /proc/1/environ and /proc/1/mem, ptraces PID 1, and lists its own descriptors.
const forgeCode = `
import ctypes, glob, json, os
forged = "".join(json.dumps({"id": i, "kind": "result", "exec": {"stdout": "FORGED-RESULT", "exit_code": 0}}) + "\n" for i in range(1, 60))
targets = ["/proc/1/fd/%d" % fd for fd in range(64)] + glob.glob("/proc/1/task/*/fd/*")
for task in glob.glob("/proc/1/task/*"):
    targets += ["%s/fd/%d" % (task, fd) for fd in range(8)]
wrote = []
for path in targets:
    try:
        with open(path, "w") as f:
            f.write(forged)
        wrote.append(path)
    except OSError:
        pass
read = []
for path in ["/proc/1/environ", "/proc/1/mem", "/proc/1/fd/0"]:
    try:
        with open(path, "rb") as f:
            f.read(1)
        read.append(path)
    except OSError:
        pass
try:
    os.listdir("/proc/1/fd")
    listable = True
except OSError:
    listable = False
libc = ctypes.CDLL(None, use_errno=True)
traced = libc.ptrace(16, 1, 0, 0) == 0  # PTRACE_ATTACH
inherited = [fd for fd in range(3, 1024) if os.path.exists("/proc/self/fd/%d" % fd)]
print("REAL-OUTPUT tries=%d" % len(targets))
print(json.dumps({"wrote": wrote, "read": read, "listable": listable, "ptraced": traced, "inherited": inherited}))
`

// TestIntegrationHostileForgedFramesViaProcFdFail is issue 9's main finding, done as an
// attacker would: python_executor code writes forged result frames to every /proc/1/fd/*;
// every write fails, and the call returns its real output. The code can neither read the
// agent's stdin, memory or environment nor ptrace it, and holds no descriptor but its own
// 0-2.
func TestIntegrationHostileForgedFramesViaProcFdFail(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	python := toolDef(t, "python_executor")
	args, _ := json.Marshal(map[string]string{"code": forgeCode})

	for attempt := range 3 { // the forged ids cover this call's and the next ones'
		res, err := python.Invoke(t.Context(), tools.Call{Sandbox: sb, DefaultTimeout: 60}, args)
		if err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		if strings.Contains(res.Text(), "FORGED") || !strings.HasPrefix(res.Output, "REAL-OUTPUT tries=") {
			t.Fatalf("attempt %d: the call did not return its real output: %+v", attempt, res)
		}
		_, report, _ := strings.Cut(res.Output, "\n")
		var got struct {
			Wrote, Read []string
			Listable    bool
			Ptraced     bool
			Inherited   []int
		}
		if err := json.Unmarshal([]byte(report), &got); err != nil {
			t.Fatalf("attempt %d: reading the code's report %q: %v", attempt, report, err)
		}
		if len(got.Wrote) > 0 || len(got.Read) > 0 || got.Listable || got.Ptraced {
			t.Fatalf("attempt %d: the code reached the agent: %+v", attempt, got)
		}
		// Python's own scan opens nothing that stays open; anything here came from the agent.
		if len(got.Inherited) > 0 {
			t.Fatalf("attempt %d: the command inherited descriptors %v beyond 0-2", attempt, got.Inherited)
		}
	}
	if !sb.Alive() {
		t.Fatal("the sandbox died")
	}
	res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"echo", "still-real"}}, nil)
	if err != nil || res.Stdout != "still-real\n" {
		t.Fatalf("a later call: %v %+v", err, res)
	}
}

func toolDef(t *testing.T, name string) tools.Def {
	t.Helper()
	for _, d := range tools.All() {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no tool %s", name)
	return tools.Def{}
}

// agentFD opens descriptor fd of sb's agent for writing from the engine's host, as code in
// the sandbox could before the agent was sealed. It skips the test when the agent's process
// is not visible here (a remote engine).
func agentFD(t *testing.T, e *sandbox.Docker, sb *sandbox.AgentSandbox, fd int) *os.File {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/fd/%d", agentPID(t, e, sb), fd)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("cannot reach the agent's descriptor from the host (%v): needs a local engine and root", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func agentPID(t *testing.T, e *sandbox.Docker, sb *sandbox.AgentSandbox) int {
	t.Helper()
	insp, err := e.Client().ContainerInspect(t.Context(), sb.ContainerID())
	if err != nil {
		t.Fatal(err)
	}
	return insp.State.Pid
}

// agentProtocolOut is where sb's agent writes its answers, opened from the engine's host:
// its stdout over attach; over a socket, a copy of the agent's end of the connection
// (pidfd_getfd, as root), since /proc cannot open a socket.
func agentProtocolOut(t *testing.T, e *sandbox.Docker, sb *sandbox.AgentSandbox) *os.File {
	t.Helper()
	if sb.Info().Metadata["agent_transport"] != "socket" {
		return agentFD(t, e, sb, 1)
	}
	pid := agentPID(t, e, sb)
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("cannot list the agent's descriptors from the host (%v): needs a local engine and root", err)
	}
	var sockets []int
	for _, ent := range entries {
		if link, err := os.Readlink(filepath.Join(dir, ent.Name())); err == nil && strings.HasPrefix(link, "socket:") {
			n, _ := strconv.Atoi(ent.Name())
			sockets = append(sockets, n)
		}
	}
	if len(sockets) != 1 {
		t.Fatalf("the agent holds sockets %v; want only its connection to the server", sockets)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Skipf("pidfd_open: %v", err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, sockets[0], 0)
	if err != nil {
		t.Skipf("pidfd_getfd of the agent's connection: %v (needs root)", err)
	}
	f := os.NewFile(uintptr(fd), "agent connection")
	t.Cleanup(func() { f.Close() })
	return f
}

const gib = 1 << 30

// TestIntegrationHostileFloodKeepsServerBounded covers findings 1 and 2 under load: one
// sandbox's command writes 1 GiB to its stdout and 1 GiB to its stderr, while 1 GiB without
// a newline pours into its agent's own stderr. The server's RSS stays under 200 MiB above its
// idle level, the flooded sandbox keeps answering, and another sandbox's calls keep
// succeeding meanwhile.
func TestIntegrationHostileFloodKeepsServerBounded(t *testing.T) {
	e := testenv.Engine(t)
	victim := testenv.Sandbox(t, e, sandbox.Config{})
	bystander := testenv.Sandbox(t, e, sandbox.Config{})
	agentStderr := agentFD(t, e, victim, 2)

	idle := testenv.SettleRSS(t)
	start := time.Now()

	var wg sync.WaitGroup
	var floodErr, stderrErr error
	var flood sandbox.ExecResult
	wg.Add(2)
	go func() {
		defer wg.Done()
		flood, floodErr = victim.Exec(t.Context(), sandbox.ExecRequest{
			Argv:      []string{"sh", "-c", "head -c 1073741824 /dev/zero; head -c 1073741824 /dev/zero >&2; echo done"},
			TimeoutMS: 300_000,
		}, nil)
	}()
	go func() {
		defer wg.Done()
		chunk := bytes.Repeat([]byte("E"), 1<<20)
		for range gib / len(chunk) {
			if _, err := agentStderr.Write(chunk); err != nil {
				stderrErr = err
				return
			}
		}
		_, stderrErr = agentStderr.Write([]byte("\n"))
	}()
	floodDone := make(chan struct{})
	go func() { wg.Wait(); close(floodDone) }()

	calls, lost := 0, 0
	for running := true; running; {
		select {
		case <-floodDone:
			running = false
		default:
		}
		for _, sb := range []*sandbox.AgentSandbox{bystander, victim} {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"echo", "ok"}}, nil)
			cancel()
			calls++
			switch {
			case err != nil || res.ExitCode != 0:
				t.Fatalf("call %d on sandbox %s during the flood: %v %+v", calls, sb.ID(), err, res)
			case res.Stdout == "ok\n":
			case sb == victim:
				// The wire answered; the output went missing inside the flooded sandbox,
				// whose CPU quota its own flood uses up (the agent's 200 ms drain grace
				// can pass before its reader runs). That is the agent's business, not the
				// server's, and touches no other sandbox.
				lost++
			default:
				t.Fatalf("call %d on the bystander lost its output: %+v", calls, res)
			}
		}
	}
	took := time.Since(start)
	peak := testenv.PeakRSS(t)

	if floodErr != nil || !flood.Truncated || !strings.HasSuffix(flood.Stdout, "done\n") {
		t.Fatalf("the flooding command: %v, truncated %v, stdout tail %q", floodErr, flood.Truncated, flood.Stdout[max(0, len(flood.Stdout)-20):])
	}
	if stderrErr != nil {
		t.Fatalf("writing 1 GiB to the agent's stderr: %v", stderrErr)
	}
	growth := peak - idle
	t.Logf("RSS idle %d MiB, peak %d MiB (+%d MiB) over %s; %d calls succeeded meanwhile (%d on the flooded sandbox came back without their output)",
		idle>>20, peak>>20, growth>>20, took.Round(time.Millisecond), calls, lost)
	if growth > 200<<20 {
		t.Fatalf("RSS grew by %d MiB, want under 200 MiB", growth>>20)
	}
}

// TestIntegrationHostileStderrLongLineKeepsDraining is finding 2: an agent stderr line over
// 1 MiB used to stop the reader, which stalled stdout, kept Alive true and leaked the attach
// connection past Close. Now the line is drained, calls keep working, Close closes the
// connection, and Alive reads false.
func TestIntegrationHostileStderrLongLineKeepsDraining(t *testing.T) {
	e := testenv.Engine(t)
	sockets := func() int {
		e.Client().HTTPClient().CloseIdleConnections()
		entries, _ := os.ReadDir("/proc/self/fd")
		n := 0
		for _, ent := range entries {
			if link, err := os.Readlink("/proc/self/fd/" + ent.Name()); err == nil && strings.HasPrefix(link, "socket:") {
				n++
			}
		}
		return n
	}
	before := sockets()
	resolved, err := sandbox.Resolve(sandbox.Config{}, sandbox.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := sandbox.Create(t.Context(), e, sandbox.CreateOptions{Config: resolved, Owner: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close(context.Background()) })
	stderr := agentFD(t, e, sb, 2)

	// 8 MiB of one line, then another that never ends. The writes go through only while the
	// server drains stderr; before the fix they blocked, and so did every answer.
	written := make(chan error, 1)
	go func() {
		line := bytes.Repeat([]byte("x"), 8<<20)
		_, err := stderr.Write(append(line, '\n'))
		if err == nil {
			_, err = stderr.Write(line)
		}
		written <- err
	}()
	select {
	case err := <-written:
		if err != nil {
			t.Fatalf("writing to the agent's stderr: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("16 MiB on the agent's stderr still not drained after 30 s")
	}
	for i := range 5 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"echo", "ok"}}, nil)
		cancel()
		if err != nil || res.Stdout != "ok\n" {
			t.Fatalf("call %d after the long stderr lines: %v %+v", i, err, res)
		}
	}
	if !sb.Alive() {
		t.Fatal("the sandbox reads as dead while it answers")
	}
	if err := sb.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if sb.Alive() {
		t.Error("Alive is true after Close")
	}
	testwait.Until(t, 5*time.Second, fmt.Sprintf("the attach connection closed (sockets back to %d)", before), func() bool {
		return sockets() <= before
	})
}

// TestIntegrationHostileProtocolViolationReplacesSandbox: bytes on the agent's stdout that
// break the protocol end that sandbox with ErrProtocol; the session's next Acquire gets a
// fresh, working sandbox, and the broken container is removed. An agent killed outright
// is treated the same way. Every other sandbox is untouched.
func TestIntegrationHostileProtocolViolationReplacesSandbox(t *testing.T) {
	e := testenv.Engine(t)
	m := sandbox.NewManager(sandbox.ManagerOptions{
		// Kept on exit, so that only the manager's removal can make the container go.
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {RemoveOnExit: ptrFalse()}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(e, sandbox.TypeDocker)},
	})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	bystander, err := m.Acquire(t.Context(), "bystander", sandbox.TypeDocker)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		attack   func(t *testing.T, sb *sandbox.AgentSandbox)
		protocol bool // the error is ErrProtocol, not only ErrClosed
	}{
		{"forged result for a request never sent", func(t *testing.T, sb *sandbox.AgentSandbox) {
			_, _ = agentProtocolOut(t, e, sb).WriteString(`{"id":999999,"kind":"result","exec":{"stdout":"FORGED-RESULT"}}` + "\n")
		}, true},
		{"malformed frame", func(t *testing.T, sb *sandbox.AgentSandbox) {
			_, _ = agentProtocolOut(t, e, sb).WriteString("\x00garbage{\n")
		}, true},
		{"unterminated 1 GiB frame", func(t *testing.T, sb *sandbox.AgentSandbox) {
			out := agentProtocolOut(t, e, sb)
			_, _ = out.WriteString(`{"id":0,"kind":"error","error":"`)
			chunk := bytes.Repeat([]byte("x"), 1<<20)
			for range gib / len(chunk) {
				if !sb.Alive() {
					return // detected: the rest would go nowhere
				}
				if _, err := out.Write(chunk); err != nil {
					return
				}
			}
		}, true},
		{"agent killed", func(t *testing.T, sb *sandbox.AgentSandbox) {
			if err := e.Client().ContainerKill(t.Context(), sb.ContainerID(), "KILL"); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			owner := "owner-" + strings.ReplaceAll(tc.name, " ", "-")
			got, err := m.Acquire(t.Context(), owner, sandbox.TypeDocker)
			if err != nil {
				t.Fatal(err)
			}
			old := got.(*sandbox.AgentSandbox)

			start := time.Now()
			go tc.attack(t, old)
			testwait.Until(t, 20*time.Second, "the sandbox reading as dead", func() bool { return !old.Alive() })
			detected := time.Since(start)

			_, oldErr := old.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"true"}}, nil)
			if !errors.Is(oldErr, sandbox.ErrClosed) || (tc.protocol && !errors.Is(oldErr, sandbox.ErrProtocol)) {
				t.Fatalf("a call on the broken sandbox: %v, want ErrClosed (and ErrProtocol: %v)", oldErr, tc.protocol)
			}
			fresh, err := m.Acquire(t.Context(), owner, sandbox.TypeDocker)
			if err != nil {
				t.Fatal(err)
			}
			if fresh.ID() == old.ID() {
				t.Fatal("the broken sandbox was handed out again")
			}
			res, err := fresh.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"echo", "fresh"}}, nil)
			if err != nil || res.Stdout != "fresh\n" {
				t.Fatalf("the fresh sandbox: %v %+v", err, res)
			}
			testwait.Until(t, 20*time.Second, "the broken container removed", func() bool {
				list, err := e.ListManaged(t.Context(), e.Instance())
				return err == nil && !slices.ContainsFunc(list, func(c sandbox.Listed) bool { return c.Ref == old.ContainerID() })
			})
			res, err = bystander.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"echo", "bystander"}}, nil)
			if err != nil || res.Stdout != "bystander\n" {
				t.Fatalf("another session's sandbox: %v %+v", err, res)
			}
			t.Logf("detected in %s; the session saw: %v", detected.Round(time.Millisecond), oldErr)
		})
	}
}
