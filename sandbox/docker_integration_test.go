package sandbox_test

import (
	"os"
	"os/exec"
	"path/filepath"
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
	n, err := sandbox.ReapOrphansWith(t.Context(), live, func(pid int, start string) bool { return false }, dead.Instance())
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

// TestIntegrationAgentVolumeRemovedBehindOurBack: when the shared agent volume disappears
// (removed by hand, or by another server's clean-up), the next create notices and heals.
func TestIntegrationAgentVolumeRemovedBehindOurBack(t *testing.T) {
	testenv.RequireDocker(t)
	// A build of its own (trailing bytes change the hash, not the program), so removing its
	// volume cannot disturb tests running beside this one.
	data, err := os.ReadFile(testenv.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "enclave-mcp")
	if err := os.WriteFile(bin, append(data, []byte("\x00"+t.Name())...), 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := sandbox.NewDocker(t.Context(), sandbox.DockerOptions{AgentBinary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.AssertNoContainers(t, e) })

	first := testenv.Sandbox(t, e, sandbox.Config{})
	volume := first.Info().Metadata["agent_volume"].(string)
	if err := first.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("docker", "volume", "rm", volume).CombinedOutput(); err != nil {
		t.Fatalf("removing %s: %v %s", volume, err, out)
	}
	second := testenv.Sandbox(t, e, sandbox.Config{})
	res, err := second.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"true"}}, nil)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("sandbox after the volume was recreated: %v %+v", err, res)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "volume", "rm", volume).Run() })
}
