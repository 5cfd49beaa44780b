package session_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/fakejupyter"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

func TestMain(m *testing.M) {
	os.Exit(fakejupyter.Run(m)) // this binary is also the fake Jupyter of the session sandboxes below
}

// TestOneSandboxPerSession: wired as serve wires it (a SessionType creator that starts the
// notebook lazily), every tool of an MCP session runs in one sandbox on the process backend,
// the notebook's kernel (the fake Jupyter's) included: a file one tool writes, the others
// read, and a job started by one is listed by another. The REST face still offers only
// ms-enclave's types.
func TestOneSandboxPerSession(t *testing.T) {
	t.Parallel()
	b := testenv.Process(t)
	port := fakejupyter.FreePort(t)
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{session.SessionType: {EnvVars: fakejupyter.Env(port)}},
		Creators: map[sandbox.Type]sandbox.Creator{
			sandbox.TypeDocker:  sandbox.NewCreator(b, sandbox.TypeDocker),
			session.SessionType: notebook.LazyCreator(b, session.SessionType, notebook.Options{Command: fakejupyter.Command(t), Port: port}),
		},
	})
	core, err := session.New(session.Config{Manager: m, Tools: tools.All()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = core.Close(ctx)
		_ = m.Close(ctx)
	})
	caller := core.Caller("one-session")

	steps := []struct {
		name, tool string
		args       map[string]any
		want       string // in the output
	}{
		{"file_operation writes data.csv", "file_operation", map[string]any{"operation": "write", "file_path": "data.csv", "content": "a,b\n1,2\n"}, ""},
		{"the notebook reads it", "notebook_executor", map[string]any{"code": "read data.csv"}, "a,b\n1,2\n"},
		{"the notebook writes a file", "notebook_executor", map[string]any{"code": "write from_nb.txt written by the kernel"}, ""},
		{"shell_executor sees it", "shell_executor", map[string]any{"command": "cat from_nb.txt"}, "written by the kernel"},
		{"python_executor sees it", "python_executor", map[string]any{"code": "print(open('from_nb.txt').read())"}, "written by the kernel"},
		{"shell_executor starts a job", "shell_executor", map[string]any{"command": "sleep 300", "background": true}, "job-"},
		{"background_jobs lists it", "background_jobs", map[string]any{"action": "list"}, "sleep 300"},
		{"the kernel restarts in place", "notebook_restart", map[string]any{}, "kernel restarted"},
		{"and still sees the workspace", "notebook_executor", map[string]any{"code": "read data.csv"}, "a,b"},
	}
	for _, st := range steps {
		res, err := caller.Run(t.Context(), session.Call{Tool: st.tool, Args: st.args})
		if err != nil || !res.OK() || !strings.Contains(res.Output, st.want) {
			t.Fatalf("%s: %+v, %v; want success with %q in the output", st.name, res, err, st.want)
		}
	}
	list := m.List()
	if len(list) != 1 || list[0].Info().Type != session.SessionType {
		t.Fatalf("the session holds %d sandboxes (%v), want one of type %s", len(list), list, session.SessionType)
	}
	t.Cleanup(func() { _ = os.RemoveAll("/tmp/enclave-jupyter-" + list[0].ID()) }) // the process backend's /tmp is the host's
	if err := caller.End(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(m.List()); n != 0 {
		t.Errorf("%d sandboxes left after the session ended", n)
	}

	rest := core.Caller("rest")
	if _, err := rest.Create(t.Context(), session.SessionType, sandbox.Config{}); !errors.Is(err, sandbox.ErrInvalidConfig) {
		t.Errorf("REST create of the session type: %v, want ErrInvalidConfig", err)
	}
	if _, err := rest.InitializePool(t.Context(), 1, session.SessionType, nil); !errors.Is(err, sandbox.ErrInvalidConfig) {
		t.Errorf("REST pool of the session type: %v, want ErrInvalidConfig", err)
	}
	h, err := core.Health(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if types := h.SystemInfo["sandbox_types"].([]string); !slices.Equal(types, []string{string(sandbox.TypeDocker)}) {
		t.Errorf("health lists sandbox types %v, want ms-enclave's the manager has: [docker]", types)
	}
}
