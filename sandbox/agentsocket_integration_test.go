package sandbox_test

import (
	"os"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestIntegrationAgentSocket: on the local engine each agent serves the protocol on its own
// connection to the server; once it holds it, nothing is left to connect to, on the host or
// in the sandbox. Attach-only engines, and engines whose socket cannot be used, serve over
// attach.
func TestIntegrationAgentSocket(t *testing.T) {
	run := func(t *testing.T, sb *sandbox.AgentSandbox, argv ...string) sandbox.ExecResult {
		t.Helper()
		res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: argv, TimeoutMS: 10_000}, nil)
		if err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
		return res
	}
	transport := func(sb *sandbox.AgentSandbox) any { return sb.Info().Metadata["agent_transport"] }

	t.Run("socket", func(t *testing.T) {
		e := testenv.Engine(t)
		if e.AgentSocketBase() == "" {
			t.Skip("the engine is not on this host's unix socket")
		}
		sb := testenv.Sandbox(t, e, sandbox.Config{})
		if got := transport(sb); got != "socket" {
			t.Fatalf("agent_transport %v, want socket", got)
		}
		if left, err := os.ReadDir(e.AgentSocketBase()); err != nil || len(left) != 0 {
			t.Errorf("the sockets' directory holds %v (%v) once the agent connected; want nothing", left, err)
		}
		if res := run(t, sb, "ls", "-A", sandbox.AgentSocketDir); res.ExitCode != 0 || res.Stdout != "" {
			t.Errorf("%s in the sandbox: %+v; want an empty directory", sandbox.AgentSocketDir, res)
		}
		dial := "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(" + `"` + sandbox.AgentSocketPath + `"` + ")\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)\n"
		if res := run(t, sb, "python3", "-c", dial); res.Stdout != "FileNotFoundError\n" {
			t.Errorf("code in the sandbox dialling %s: %+v; want FileNotFoundError", sandbox.AgentSocketPath, res)
		}
		if res := run(t, sb, "echo", "hi"); res.Stdout != "hi\n" {
			t.Errorf("echo: %+v", res)
		}
	})

	t.Run("attach only", func(t *testing.T) {
		e := testenv.EngineWith(t, sandbox.DockerOptions{AttachOnly: true})
		sb := testenv.Sandbox(t, e, sandbox.Config{})
		if got := transport(sb); got != "attach" {
			t.Fatalf("agent_transport %v, want attach", got)
		}
		if res := run(t, sb, "echo", "hi"); res.Stdout != "hi\n" {
			t.Errorf("echo: %+v", res)
		}
	})

	t.Run("socket unusable", func(t *testing.T) {
		e := testenv.Engine(t)
		if e.AgentSocketBase() == "" {
			t.Skip("the engine is not on this host's unix socket")
		}
		restore := e.BreakAgentSockets()
		for i := range 2 { // the first falls back; the second, with sockets mended, keeps to attach
			if i == 1 {
				restore()
			}
			sb := testenv.Sandbox(t, e, sandbox.Config{})
			if got := transport(sb); got != "attach" {
				t.Fatalf("sandbox %d: agent_transport %v, want attach", i, got)
			}
			if res := run(t, sb, "echo", "hi"); res.Stdout != "hi\n" {
				t.Errorf("sandbox %d: echo: %+v", i, res)
			}
		}
	})
}
