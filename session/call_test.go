package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/internal/fakesandbox"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// newCore is a core over fake sandboxes: what it checks is the call path, not the engine.
func newCore(t *testing.T, operator sandbox.ToolsConfig) (*session.Core, *fakesandbox.Factory) {
	t.Helper()
	f := &fakesandbox.Factory{}
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: f.Creator(sandbox.TypeDocker)},
	})
	core, err := session.New(session.Config{Manager: m, ToolOptions: operator})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = core.Close(ctx)
		_ = m.Close(ctx)
	})
	return core, f
}

// paths are the ways a face reaches the one call path: an MCP session's own sandbox, and a
// REST caller's sandbox named by id.
func paths(t *testing.T, core *session.Core) map[string]func(ctx context.Context, tool string, args any) (tools.Result, error) {
	t.Helper()
	rest := core.Caller("rest")
	id, err := rest.Create(t.Context(), sandbox.TypeDocker, sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]func(ctx context.Context, tool string, args any) (tools.Result, error){
		"session": func(ctx context.Context, tool string, args any) (tools.Result, error) {
			return core.Caller("mcp-session").Run(ctx, session.Call{Tool: tool, Args: args})
		},
		"sandbox id": func(ctx context.Context, tool string, args any) (tools.Result, error) {
			return rest.ExecuteTool(ctx, id, tool, args)
		},
	}
}

// Bad arguments are the same result on every path: status error, the tool's own message as
// the error text, metadata.invalid_arguments, and no process run.
func TestBadArgumentsAreOneResultOnEveryPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, tool string
		args       any
		want       string
		// checked by the handler, once the sandbox is picked, rather than by decoding
		late bool
	}{
		{"wrong type", "python_executor", json.RawMessage(`{"code": 1}`), `python_executor: parameter "code" must be a string, got number`, false},
		{"unknown parameter", "shell_executor", map[string]any{"command": "ls", "cmd": "ls"}, `unknown parameter "cmd"; valid parameters: command, timeout, background`, false},
		{"missing required", "python_executor", nil, `python_executor: missing required parameter "code"`, false},
		{"not an object", "python_executor", json.RawMessage(`[1]`), "arguments must be a JSON object, got an array", false},
		{"bad timeout", "shell_executor", map[string]any{"command": "ls", "timeout": -1}, "timeout must be a positive number of seconds", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			core, f := newCore(t, nil)
			texts := map[string]string{}
			for name, call := range paths(t, core) {
				res, err := call(t.Context(), tc.tool, tc.args)
				if err != nil {
					t.Fatalf("%s: %v, want a result", name, err)
				}
				if res.Status != tools.StatusError || res.ToolName != tc.tool || res.Metadata["invalid_arguments"] != true ||
					!strings.Contains(res.Error, tc.want) || res.Timestamp.IsZero() {
					t.Errorf("%s: %+v, want status error naming %q", name, res, tc.want)
				}
				texts[name] = res.Text()
			}
			if texts["session"] != texts["sandbox id"] {
				t.Errorf("the paths disagree:\n session:    %q\n sandbox id: %q", texts["session"], texts["sandbox id"])
			}
			for _, sb := range f.Created() {
				if n := len(sb.Execs()); n != 0 {
					t.Errorf("sandbox %s ran %d processes for refused arguments", sb.ID(), n)
				}
			}
			// Only the REST create made a sandbox: a session's typo costs no container.
			if n := len(f.Created()); n != 1 && !tc.late {
				t.Errorf("%d sandboxes created, want only the REST one", n)
			}
		})
	}
}

func TestCallRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, core *session.Core) error
		is   error
		says string
	}{
		{"unknown tool in a session", func(t *testing.T, core *session.Core) error {
			_, err := core.Caller("s").Run(t.Context(), session.Call{Tool: "rm_rf"})
			return err
		}, sandbox.ErrNotFound, `"rm_rf"`},
		{"unknown tool in a sandbox lists the available ones", func(t *testing.T, core *session.Core) error {
			c := core.Caller("rest")
			id, err := c.Create(t.Context(), "", sandbox.Config{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ExecuteTool(t.Context(), id, "rm_rf", nil)
			return err
		}, sandbox.ErrNotFound, "available: python_executor, shell_executor"},
		{"a tool the sandbox's tools_config leaves out", func(t *testing.T, core *session.Core) error {
			c := core.Caller("rest")
			id, err := c.Create(t.Context(), "", sandbox.Config{ToolsConfig: sandbox.ToolsConfig{"python_executor": {}}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ExecuteTool(t.Context(), id, "shell_executor", map[string]any{"command": "ls"})
			return err
		}, sandbox.ErrNotFound, "available: python_executor"},
		{"another owner's sandbox", func(t *testing.T, core *session.Core) error {
			id, err := core.Caller("alice").Create(t.Context(), "", sandbox.Config{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = core.Caller("mallory").ExecuteTool(t.Context(), id, "shell_executor", map[string]any{"command": "ls"})
			return err
		}, sandbox.ErrNotFound, "not found"},
		{"a stopped sandbox", func(t *testing.T, core *session.Core) error {
			c := core.Caller("rest")
			id, err := c.Create(t.Context(), "", sandbox.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Stop(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			_, err = c.ExecuteTool(t.Context(), id, "shell_executor", map[string]any{"command": "ls"})
			return err
		}, sandbox.ErrClosed, "is stopped; create a new one"},
		{"arguments that cannot be encoded", func(t *testing.T, core *session.Core) error {
			_, err := core.Caller("s").Run(t.Context(), session.Call{Tool: "shell_executor", Args: map[string]any{"command": func() {}}})
			return err
		}, api.ErrBadRequest, "encoding tool parameters"},
		{"an empty pool", func(t *testing.T, core *session.Core) error {
			_, err := core.Caller("rest").ExecuteInPool(t.Context(), "shell_executor", map[string]any{"command": "ls"}, time.Second)
			return err
		}, sandbox.ErrPoolEmpty, "initialize the pool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			core, _ := newCore(t, nil)
			err := tc.run(t, core)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want %v saying %q", err, tc.is, tc.says)
			}
		})
	}
}

// Two tools of one name would leave each path to pick its own: New refuses them.
func TestNewRefusesTwoToolsOfOneName(t *testing.T) {
	t.Parallel()
	m := sandbox.NewManager(sandbox.ManagerOptions{Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}}})
	defs := tools.All()
	_, err := session.New(session.Config{Manager: m, Tools: append(defs, defs[1])})
	if want := fmt.Sprintf("tool %q is in Config.Tools twice", defs[1].Name); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("New with %s twice: err = %v, want one saying %s", defs[1].Name, err, want)
	}
}

// The call is built the same way on every path: the tool's options (the operator's over
// the sandbox's), the sandbox's default timeout, and progress when the face asks for it.
func TestCallIsBuiltFromTheSandboxAndTheOperator(t *testing.T) {
	t.Parallel()
	core, f := newCore(t, sandbox.ToolsConfig{"shell_executor": {"max_output_bytes": float64(100)}})
	c := core.Caller("rest")
	id, err := c.Create(t.Context(), "", sandbox.Config{Timeout: 7, ToolsConfig: sandbox.ToolsConfig{
		"shell_executor":  {"max_output_bytes": float64(1 << 20), "shell": "/bin/bash"},
		"python_executor": {},
	}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.ExecuteTool(t.Context(), id, "shell_executor", map[string]any{"command": "echo hi"})
	if err != nil || !res.OK() || res.Output != "/bin/bash -c echo hi\n" {
		t.Fatalf("ExecuteTool = %+v, %v", res, err)
	}
	var progress []string
	res, err = core.Caller("s").Run(t.Context(), session.Call{
		Tool: "shell_executor", Args: map[string]any{"command": "echo hi"},
		Progress: func(o sandbox.Output) { progress = append(progress, o.Stdout) },
	})
	if err != nil || !res.OK() {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	created := f.Created()
	if len(created) != 2 {
		t.Fatalf("%d sandboxes, want the REST one and the session's", len(created))
	}
	for i, want := range []struct {
		timeoutMS int64
		maxOutput int
		streamed  bool
	}{
		{7000, 100, false}, // the sandbox's timeout; the operator's cap wins over the sandbox's
		{30000, 100, true}, // the default config's timeout; progress asked for
	} {
		execs := created[i].Execs()
		if len(execs) != 1 {
			t.Fatalf("sandbox %d ran %d processes, want 1", i, len(execs))
		}
		e := execs[0]
		if e.TimeoutMS != want.timeoutMS || e.MaxOutputBytes != want.maxOutput || (e.StreamIntervalMS > 0) != want.streamed {
			t.Errorf("sandbox %d ran %+v, want timeout %d ms, max output %d, streamed %v", i, e, want.timeoutMS, want.maxOutput, want.streamed)
		}
	}
	if len(progress) != 1 || progress[0] != "/bin/sh -c echo hi\n" {
		t.Errorf("progress = %q", progress)
	}
}

// A session's calls share its sandbox, and End removes it.
func TestSessionKeepsOneSandboxUntilEnd(t *testing.T) {
	t.Parallel()
	core, f := newCore(t, nil)
	s := core.Caller("s")
	for range 3 {
		if res, err := s.Run(t.Context(), session.Call{Tool: "shell_executor", Args: map[string]any{"command": "true"}}); err != nil || !res.OK() {
			t.Fatalf("Run = %+v, %v", res, err)
		}
	}
	created := f.Created()
	if len(created) != 1 || len(created[0].Execs()) != 3 {
		t.Fatalf("%d sandboxes for 3 calls of one session, want 1 running all 3", len(created))
	}
	if err := s.End(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := created[0].Info().Status; st != sandbox.StatusStopped {
		t.Errorf("after End the session's sandbox is %s, want it closed", st)
	}
	if n := core.Manager().Stats().Total; n != 0 {
		t.Errorf("the manager still tracks %d sandboxes after End", n)
	}
}
