package sandbox_test

import (
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestIntegrationForkedPythonBehavesAsStarted runs scripts in the default image both ways,
// started as `python3 -` and forked from the resident interpreter that has imported numpy,
// pandas and matplotlib, and wants the same output and exit status from both. The cases are
// those where the forked call's exit skips steps it has no use for (forkserver.py, finish):
// the preloaded modules' exit handlers, given work by the script, must still run.
// agent/TestForkedPythonBehavesAsStarted covers the rest, on the host's Python.
//
// It runs them twice, from a full interpreter and from a light one (a reserve spare's, which
// imports nothing heavy until a call has).
func TestIntegrationForkedPythonBehavesAsStarted(t *testing.T) {
	e := testenv.Engine(t)
	for _, light := range []bool{false, true} {
		name := "full"
		if light {
			name = "light"
		}
		t.Run(name, func(t *testing.T) {
			sb := testenv.Sandbox(t, e, sandbox.Config{})
			if err := sb.WarmPython(t.Context(), light); err != nil {
				t.Fatal(err)
			}
			forkedBehavesAsStarted(t, sb)
		})
	}
}

func forkedBehavesAsStarted(t *testing.T, sb *sandbox.AgentSandbox) {
	ctx := t.Context()
	tests := []struct {
		name, script, stdout, stderr string
		env                          []string
	}{
		{name: "print", script: "print(1)", stdout: "1\n"},
		{name: "a logging handler is closed at exit",
			script: "import logging, sys\nclass H(logging.StreamHandler):\n    def close(self):\n        print('closed', file=sys.stderr)\n        super().close()\nlogging.getLogger().addHandler(H(sys.stdout))\nlogging.warning('w')",
			stdout: "w\n", stderr: "closed\n"},
		{name: "logging's last resort", script: "import logging; logging.warning('w')", stderr: "WARNING:root:w\n"},
		{name: "an open figure is destroyed at exit",
			script: "import matplotlib.pyplot as plt\nplt.figure()\nplt.get_current_fig_manager().destroy = lambda: print('destroyed')",
			stdout: "destroyed\n"},
		{name: "a thread is joined", script: "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()", stdout: "late\n"},
		{name: "an exit handler runs", script: "import atexit; atexit.register(print, 'bye')", stdout: "bye\n"},
		{name: "a preloaded module's exit handler unregistered", script: "import atexit, logging; atexit.unregister(logging.shutdown); print('x')", stdout: "x\n"},
		{name: "environment", script: "import os; print(os.environ['FOO'], 'ENCLAVE_REHEARSAL' in os.environ)", env: []string{"FOO=a\nb=c"}, stdout: "a\nb=c False\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var results [2]sandbox.ExecResult
			for i, fork := range []bool{false, true} {
				res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "-"}, Stdin: []byte(tc.script), Env: tc.env, Fork: fork, TimeoutMS: 20_000}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if res.Forked != fork {
					t.Fatalf("fork %v: the call was forked: %v", fork, res.Forked)
				}
				results[i] = res
			}
			started, forked := results[0], results[1]
			if started.Stdout != tc.stdout || started.Stderr != tc.stderr || started.ExitCode != 0 {
				t.Errorf("started: stdout %q stderr %q exit %d, want %q %q 0", started.Stdout, started.Stderr, started.ExitCode, tc.stdout, tc.stderr)
			}
			if forked.Stdout != started.Stdout || forked.Stderr != started.Stderr || forked.ExitCode != started.ExitCode {
				t.Errorf("forked: stdout %q stderr %q exit %d; started: %q %q %d", forked.Stdout, forked.Stderr, forked.ExitCode, started.Stdout, started.Stderr, started.ExitCode)
			}
		})
	}
}

// TestIntegrationLightInterpreterUpgrades: a light resident interpreter's calls are forked
// with none of the heavy modules imported; once a call imports numpy, a full interpreter
// takes its place, and the calls after it start with numpy imported already.
func TestIntegrationLightInterpreterUpgrades(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	ctx := t.Context()
	if err := sb.WarmPython(ctx, true); err != nil {
		t.Fatal(err)
	}
	preloaded := func() string {
		res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "-"}, Stdin: []byte("import sys; print('numpy' in sys.modules)"), Fork: true, TimeoutMS: 20_000}, nil)
		if err != nil || !res.Forked || res.ExitCode != 0 {
			t.Fatalf("forked call: %+v %v", res, err)
		}
		return res.Stdout
	}
	if got := preloaded(); got != "False\n" {
		t.Fatalf("a call from the light interpreter found numpy imported: %q", got)
	}
	res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "-"}, Stdin: []byte("import numpy; print(numpy.arange(3).sum())"), Fork: true, TimeoutMS: 60_000}, nil)
	if err != nil || !res.Forked || res.Stdout != "3\n" {
		t.Fatalf("the call importing numpy: %+v %v", res, err)
	}
	testwait.Until(t, 90*time.Second, "calls forked from a full interpreter, numpy imported", func() bool { return preloaded() == "True\n" })
}
