package sandbox_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestIntegrationIdleSandbox: an idle sandbox is its agent alone. Commands that are not
// python_executor calls start no resident interpreter, and the agent's goroutines return to
// their idle count once the calls are answered, however many there were.
func TestIntegrationIdleSandbox(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	ctx := t.Context()

	processes := func() []string {
		t.Helper()
		res, err := sb.File(ctx, sandbox.FileRequest{Action: wire.FileList, Path: "/proc"})
		if err != nil {
			t.Fatalf("listing /proc: %v", err)
		}
		var pids []string
		for _, entry := range res.Entries {
			if _, err := strconv.Atoi(entry.Name); err == nil && entry.IsDir {
				pids = append(pids, entry.Name)
			}
		}
		return pids
	}
	if pids := processes(); len(pids) != 1 || pids[0] != "1" {
		t.Fatalf("a new sandbox runs processes %v, want only the agent (1)", pids)
	}
	idle, err := sb.AgentStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if idle.Goroutines <= 0 || idle.HeapBytes == 0 {
		t.Fatalf("agent stats %+v: want goroutines and a heap", idle)
	}

	for i := range 20 {
		res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo $0", strconv.Itoa(i)}, TimeoutMS: 10000}, nil)
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("exec %d: %v %+v", i, err, res)
		}
		// A python that is not a python_executor call (no Fork) runs and ends like any command.
		if i%10 == 0 {
			res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "-"}, Stdin: []byte("print(1)"), TimeoutMS: 10000}, nil)
			if err != nil || res.ExitCode != 0 || res.Stdout != "1\n" {
				t.Fatalf("python3 -: %v %+v", err, res)
			}
		}
	}
	if pids := processes(); len(pids) != 1 {
		t.Fatalf("after the calls, the sandbox runs processes %v, want only the agent", pids)
	}
	// A call's goroutine ends just after its answer is sent, so the count may lag it a moment.
	var now wire.AgentStats
	testwait.Until(t, 10*time.Second, "the agent's goroutines back to their idle count", func() bool {
		now, err = sb.AgentStats(ctx)
		return err == nil && now.Goroutines <= idle.Goroutines
	})
	t.Logf("idle agent: %d goroutines, %d bytes of live heap; after the calls: %+v", idle.Goroutines, idle.HeapBytes, now)
}
