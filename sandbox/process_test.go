package sandbox_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestProcessBackendLifecycle: a sandbox on the process backend runs commands in a
// workspace of its own, as an unprivileged uid when the tests run as root, and leaves
// nothing behind once closed.
func TestProcessBackendLifecycle(t *testing.T) {
	p := testenv.Process(t)
	sb := testenv.Sandbox(t, p, sandbox.Config{EnvVars: map[string]string{"GREETING": "hi"}})
	ws := sb.Config().WorkingDir
	if !strings.HasPrefix(ws, os.TempDir()) || filepath.Base(ws) != "workspace" {
		t.Fatalf("workspace %q: want a directory of the sandbox's own under the backend's root", ws)
	}
	res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"sh", "-c", `echo "$GREETING $(id -u) $PWD"; echo $ENCLAVE_MCP_TOKEN`}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantUID := "1000"
	if os.Geteuid() != 0 {
		wantUID = ""
	}
	if fields := strings.Fields(res.Stdout); len(fields) != 3 || fields[0] != "hi" || fields[2] != ws || (wantUID != "" && fields[1] != wantUID) {
		t.Errorf("stdout %q: want the config's variable, uid %s and the workspace %s, and no server variable", res.Stdout, wantUID, ws)
	}
	if _, err := sb.File(t.Context(), sandbox.FileRequest{Action: sandbox.FileWrite, Path: "a.txt", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ws, "a.txt")); err != nil {
		t.Errorf("the file written through the agent is not in the workspace: %v", err)
	}
	if os.Geteuid() == 0 {
		res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo x > /etc/enclave-process-test"}}, nil)
		if err != nil || res.ExitCode == 0 {
			os.Remove("/etc/enclave-process-test")
			t.Errorf("a sandbox of a root server wrote /etc: %+v %v", res, err)
		}
	}
	if err := sb.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(ws)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the sandbox's directory outlived Close: %v", err)
	}
}

// TestProcessBackendRefusesRoot: a root server will not run a sandbox as root.
func TestProcessBackendRefusesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only a root server switches uid")
	}
	p := testenv.Process(t)
	cfg, err := sandbox.Resolve(sandbox.Config{User: "0:0"}, sandbox.Policy{AllowRootUser: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = sandbox.Create(t.Context(), p, sandbox.CreateOptions{Config: cfg})
	if !errors.Is(err, sandbox.ErrInvalidConfig) || !strings.Contains(err.Error(), "will not run sandboxes as root") {
		t.Fatalf("err = %v, want a refusal to run as root", err)
	}
}

// TestProcessBackendReapsDeadServers: a dead server's sandbox directories are removed by
// the next server; a live one's are not.
func TestProcessBackendReapsDeadServers(t *testing.T) {
	p := testenv.Process(t)
	sb := testenv.Sandbox(t, p, sandbox.Config{})
	dir := filepath.Dir(sb.Config().WorkingDir)
	n, err := sandbox.ReapOrphansWith(context.Background(), p, func(int, string) bool { return true }, "")
	if err != nil || n != 0 {
		t.Fatalf("reaping with every server alive: %d, %v; want 0", n, err)
	}
	other, err := sandbox.NewProcess(sandbox.ProcessOptions{AgentBinary: testenv.Binary(t), Root: filepath.Dir(dir)})
	if err != nil {
		t.Fatal(err)
	}
	n, err = sandbox.ReapOrphansWith(context.Background(), other, func(int, string) bool { return false }, "")
	if err != nil || n != 1 {
		t.Fatalf("reaping a dead server's sandbox: %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead server's sandbox directory is still there: %v", err)
	}
}
