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

// TestIntegrationIdleSandbox: an idle sandbox is its agent alone, with either agent binary.
// Commands that are not python_executor calls start no resident interpreter, and the agent's
// goroutines return to their idle count once the calls are answered, however many there
// were. The agent built alone holds a small heap: the server's packages are not in it.
func TestIntegrationIdleSandbox(t *testing.T) {
	tests := []struct {
		name    string
		agent   func(testing.TB) string
		maxHeap uint64 // the idle agent's live heap at most; 0: no bound
	}{
		{"enclave-mcp as agent", testenv.Binary, 0},
		{"enclave-agent", testenv.AgentBinary, 256 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idleSandbox(t, testenv.EngineWith(t, sandbox.DockerOptions{AgentBinary: tt.agent(t)}), tt.maxHeap)
		})
	}
}

func idleSandbox(t *testing.T, e *sandbox.Docker, maxHeap uint64) {
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
	if maxHeap > 0 && idle.HeapBytes > maxHeap {
		t.Errorf("the idle agent's live heap is %d bytes, want at most %d", idle.HeapBytes, maxHeap)
	}

	// However many calls there were, the goroutines come back to the idle count, give or take
	// the collector's workers (one per P, started at the first collection, which an idle agent
	// may not have had yet) and the ping answering. A call's goroutine ends just after its
	// answer is sent, so the count may lag the answer a moment.
	bound := idle.Goroutines + idle.Procs + 1
	var now wire.AgentStats
	for round, calls := range []int{20, 40} {
		for i := range calls {
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
			t.Fatalf("after %d calls, the sandbox runs processes %v, want only the agent", calls, pids)
		}
		ok := testwait.Poll(10*time.Second, func() bool {
			now, err = sb.AgentStats(ctx)
			return err == nil && now.Goroutines <= bound
		})
		if !ok {
			t.Fatalf("round %d: the agent has %d goroutines after %d calls, want at most %d (idle %d, %d Ps)", round+1, now.Goroutines, calls, bound, idle.Goroutines, idle.Procs)
		}
	}
	t.Logf("idle agent: %d goroutines, %d bytes of live heap, %d Ps; after the calls: %+v", idle.Goroutines, idle.HeapBytes, idle.Procs, now)
}
