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

// TestIntegrationReapOrphans: a sandbox whose server died (its engine connection forgotten,
// its labels naming a process that no longer runs) is removed by the next server's reaping,
// while a live server's sandbox is left alone.
func TestIntegrationReapOrphans(t *testing.T) {
	dead := testenv.Engine(t)
	orphan := testenv.Sandbox(t, dead, sandbox.Config{RemoveOnExit: ptrFalse()})
	live := testenv.Engine(t)
	kept := testenv.Sandbox(t, live, sandbox.Config{})

	// Make the first server look dead: rewrite nothing, but run the reaper as a server on the
	// same host whose liveness check finds the orphan's owner gone.
	n, err := live.ReapOrphansWith(t.Context(), func(pid int, start string) bool { return false }, dead.Instance())
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("reaped %d containers, want 1", n)
	}
	if _, err := orphan.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"true"}}, nil); err == nil {
		t.Error("the orphan still answers after reaping")
	}
	res, err := kept.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"true"}}, nil)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("the live server's sandbox was touched: %v %+v", err, res)
	}
}

func ptrFalse() *bool { f := false; return &f }
