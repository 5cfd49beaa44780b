package sandbox_test

import (
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

func TestIntegrationSandboxLifecycle(t *testing.T) {
	e := testenv.Engine(t)
	start := time.Now()
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	t.Logf("create to ready: %s", time.Since(start))

	if st := sb.Info().Status; st != sandbox.StatusRunning {
		t.Fatalf("status after create = %s, want running", st)
	}
	res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo hi; id -u"}, TimeoutMS: 5000}, nil)
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if res.ExitCode != 0 || res.Stdout != "hi\n1000\n" {
		t.Fatalf("exec result = %+v", res)
	}
}
