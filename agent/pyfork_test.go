package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
)

// python runs script as python_executor does: `python3 -` with the script on stdin, forked
// from the resident interpreter when fork is set.
func python(script string, fork bool) wire.Exec {
	return wire.Exec{Argv: []string{"python3", "-"}, Stdin: []byte(script), Fork: fork, TimeoutMS: 20_000}
}

// forkReady waits until a call on a is served by the resident interpreter.
func forkReady(t *testing.T, a *testAgent) {
	t.Helper()
	testwait.Until(t, 60*time.Second, "a call forked from the resident interpreter", func() bool {
		return a.exec(python("pass", true)).Forked
	})
}

// TestForkedPythonBehavesAsStarted runs each script twice, started as `python3 -` and forked
// from the resident interpreter, and wants the same result from both, byte for byte.
func TestForkedPythonBehavesAsStarted(t *testing.T) {
	a := startAgent(t)
	if err := os.Mkdir(filepath.Join(a.workspace, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	forkReady(t, a)
	tests := []struct {
		name   string
		script string
		env    []string
		dir    string
		stdout string // "" means only that both agree
	}{
		{name: "print", script: "print(1)", stdout: "1\n"},
		{name: "exit code", script: "import sys; print('x'); sys.exit(3)", stdout: "x\n"},
		{name: "exit with a message", script: "import sys; sys.exit('bad input')"},
		{name: "exit none", script: "raise SystemExit"},
		{name: "exit code past 255", script: "import sys; sys.exit(258)"},
		{name: "exit from atexit", script: "import atexit, sys; atexit.register(sys.exit, 4)"},
		{name: "exception in atexit", script: "import atexit\nclass Bye:\n    def __repr__(self):\n        return 'Bye'\n    def __call__(self):\n        raise ValueError('late')\natexit.register(Bye())\nprint('x')", stdout: "x\n"},
		{name: "exit handlers see the unraisable hook", script: "import atexit, sys\nsys.unraisablehook = lambda a: print('hook', a.exc_type.__name__, a.exc_traceback is None)\natexit.register(sys.exit, 2)"},
		{name: "atexit cleared", script: "import atexit; atexit._clear(); raise SystemExit(5)"},
		{name: "stdout closed", script: "import sys; sys.stdout.close()"},
		{name: "broken stdout at exit", script: "import sys, os; print('x', end=''); os.close(1)"},
		{name: "traceback", script: "def f():\n    return 1/0\nprint('before')\nf()\n", stdout: "before\n"},
		{name: "chained traceback", script: "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('v') from e\n"},
		{name: "syntax error", script: "print(\n"},
		{name: "indentation error", script: "if True:\nprint(1)\n"},
		{name: "input at EOF", script: "input()"},
		{name: "stdin is at EOF", script: "import sys; print(repr(sys.stdin.read()))", stdout: "''\n"},
		{name: "keyboard interrupt", script: "raise KeyboardInterrupt"},
		{name: "killed by a signal", script: "import os; os.kill(os.getpid(), 9)"},
		{name: "argv, name and file", script: "import sys; print(sys.argv, __name__, __file__, sys.path[0] == '')",
			stdout: "['-'] __main__ <stdin> True\n"},
		{name: "globals", script: "print(sorted(globals()), __spec__, __loader__, __package__, __doc__, __cached__, __annotations__)"},
		{name: "environment", script: "import os; print(os.environ['GREETING'], 'ENCLAVE_EXEC_ID' in os.environ)",
			env: []string{"GREETING=hi there"}, stdout: "hi there True\n"},
		{name: "a child process sees the environment", script: "import subprocess; subprocess.run(['sh', '-c', 'echo $GREETING'])",
			env: []string{"GREETING=child"}, stdout: "child\n"},
		{name: "working directory", script: "import os; print(os.getcwd())", stdout: a.workspace + "\n"},
		{name: "relative working directory", script: "import os; print(os.getcwd())", dir: "sub", stdout: a.workspace + "/sub\n"},
		{name: "module from the workspace", script: "open('mod_x.py', 'w').write('V = 7\\n')\nimport mod_x; print(mod_x.V)", stdout: "7\n"},
		{name: "threads finish before exit", script: "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.05), print('late'))).start()", stdout: "late\n"},
		{name: "atexit runs", script: "import atexit; atexit.register(print, 'bye')", stdout: "bye\n"},
		{name: "unflushed output is written", script: "import sys; sys.stdout.write('no newline')", stdout: "no newline"},
		{name: "stderr and stdout", script: "import sys; print('out'); print('err', file=sys.stderr)", stdout: "out\n"},
		{name: "descriptors", script: "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd') if int(f) < 100))"},
		{name: "signal handlers", script: "import signal; print(signal.getsignal(signal.SIGCHLD), signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGPIPE))"},
		{name: "own session", script: "import os; print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())", stdout: "True True\n"},
		{name: "a forked child ends first", script: "import os, time\npid = os.fork()\nif pid == 0:\n    print('child')\nelse:\n    time.sleep(0.3)\n    print('parent')", stdout: "child\nparent\n"},
		{name: "waitpid works", script: "import os\npid = os.fork()\nif pid == 0: os._exit(5)\nprint(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))", stdout: "5\n"},
		{name: "leftover processes are killed and counted", script: "import subprocess\nfor _ in range(2): subprocess.Popen(['sleep', '30'])\nprint('started')", stdout: "started\n"},
		{name: "dumpable", script: "import ctypes; print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))", stdout: "1\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			started, forked := python(tc.script, false), python(tc.script, true)
			started.Env, forked.Env, started.Dir, forked.Dir = tc.env, tc.env, tc.dir, tc.dir
			want, got := a.exec(started), a.exec(forked)
			if !got.Forked {
				t.Fatalf("the call was not forked: %+v", got)
			}
			if got.Stdout != want.Stdout || got.Stderr != want.Stderr || got.ExitCode != want.ExitCode || got.Signal != want.Signal ||
				got.Reaped != want.Reaped {
				t.Errorf("forked: exit %d %q, %d left over\nstdout %q\nstderr %q\nstarted: exit %d %q, %d left over\nstdout %q\nstderr %q",
					got.ExitCode, got.Signal, got.Reaped, got.Stdout, got.Stderr, want.ExitCode, want.Signal, want.Reaped, want.Stdout, want.Stderr)
			}
			if tc.stdout != "" && got.Stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", got.Stdout, tc.stdout)
			}
		})
	}
}

// TestForkedCallsShareNothing: what one call changes in the interpreter is not seen by the
// next, and random numbers differ between calls.
func TestForkedCallsShareNothing(t *testing.T) {
	a := startAgent(t)
	forkReady(t, a)
	first := a.exec(python("import builtins, sys, random\nbuiltins.leak = 1\nsys.modules['leaked'] = sys\nsys.path.append('/leak')\n"+
		"f = open('/dev/null')\nprint(random.random())", true))
	second := a.exec(python("import builtins, sys, random\nprint(hasattr(builtins, 'leak'), 'leaked' in sys.modules, '/leak' in sys.path)\n"+
		"print(random.random())", true))
	if !first.Forked || !second.Forked || first.ExitCode != 0 || second.ExitCode != 0 {
		t.Fatalf("first %+v\nsecond %+v", first, second)
	}
	lines := strings.Split(strings.TrimSpace(second.Stdout), "\n")
	if len(lines) != 2 || lines[0] != "False False False" {
		t.Errorf("the second call sees the first's changes: %q", second.Stdout)
	}
	if len(lines) == 2 && strings.TrimSpace(first.Stdout) == lines[1] {
		t.Errorf("both calls drew the same random number %s", lines[1])
	}
}

// TestForkedCallLimits: timeouts and cancellation kill the forked call's whole tree, and
// output caps apply, as for a started process.
func TestForkedCallLimits(t *testing.T) {
	a := startAgent(t)
	forkReady(t, a)
	t.Run("timeout kills the tree", func(t *testing.T) {
		tag := newTag()
		spec := python(fmt.Sprintf("import subprocess, time\nsubprocess.Popen(['setsid', 'sleep', '30', %q])\ntime.sleep(30)", tag), true)
		spec.TimeoutMS = 300
		res := a.exec(spec)
		if !res.Forked || !res.TimedOut {
			t.Fatalf("forked %v, timed out %v: %+v", res.Forked, res.TimedOut, res)
		}
		if pids := tagged(tag); len(pids) > 0 {
			t.Errorf("processes left behind: %v", pids)
		}
	})
	t.Run("output cap", func(t *testing.T) {
		started, forked := python("print('x' * 100000)", false), python("print('x' * 100000)", true)
		started.MaxOutputBytes, forked.MaxOutputBytes = 1000, 1000
		want, got := a.exec(started), a.exec(forked)
		if !got.Forked || !got.Truncated || got.Stdout != want.Stdout || got.OmittedBytes != want.OmittedBytes {
			t.Errorf("forked %v truncated %v, %d bytes of stdout, %d omitted; started: %d bytes, %d omitted",
				got.Forked, got.Truncated, len(got.Stdout), got.OmittedBytes, len(want.Stdout), want.OmittedBytes)
		}
	})
	t.Run("large script", func(t *testing.T) {
		script := "x = 0\n" + strings.Repeat("x += 1\n", 100_000) + "print(x)"
		res := a.exec(python(script, true))
		if !res.Forked || res.Stdout != "100000\n" {
			t.Errorf("forked %v stdout %q stderr %.200q", res.Forked, res.Stdout, res.Stderr)
		}
	})
}

// TestForkedCallStatusReport: a forked call reports its exit status on a descriptor of its
// own just before it exits (forkserver.py), and the agent answers without waiting for the
// process's tear-down. The descriptor is reachable by the script, which may lie on it, close
// it or write garbage to it: the result is then what the script's own exit would have
// given, or the status it wrote (it ends the call, as exiting would), and nothing of the
// call is left running.
func TestForkedCallStatusReport(t *testing.T) {
	a := startAgent(t)
	forkReady(t, a)
	// The status descriptor is the highest the call has open.
	const statusFD = "max(int(f) for f in os.listdir('/proc/self/fd'))"
	tests := []struct {
		name   string
		script string
		exit   int
		stdout string
	}{
		{name: "reported", script: "print('x'); raise SystemExit(3)", exit: 3, stdout: "x\n"},
		{name: "a lie ends the call and kills the liar", script: "import os, time\nprint('lying', flush=True)\nos.write(" + statusFD + ", b'7\\n')\ntime.sleep(30)", exit: 7, stdout: "lying\n"},
		{name: "descriptor closed", script: "import os; os.close(" + statusFD + "); raise SystemExit(4)", exit: 4},
		{name: "garbage written", script: "import os; os.write(" + statusFD + ", b'nonsense' * 100); raise SystemExit(5)", exit: 5},
		{name: "the import mark after a status", script: "import os; os.write(" + statusFD + ", b'9+\\n'); raise SystemExit(2)", exit: 9},
		{name: "status out of range", script: "import os; os.write(" + statusFD + ", b'300\\n'); raise SystemExit(6)", exit: 6},
		{name: "descriptor not inherited", script: "import os, subprocess\nfd = " + statusFD + "\nsubprocess.run(['sh', '-c', f'echo 9 >&{fd}'])\nraise SystemExit(8)", exit: 8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tag := newTag()
			spec := python(tc.script, true)
			spec.Env = []string{tag}
			res := a.exec(spec)
			if !res.Forked || res.ExitCode != tc.exit || res.Signal != "" || res.TimedOut || res.Stdout != tc.stdout {
				t.Errorf("got forked %v exit %d %q timed out %v stdout %q stderr %.300q; want exit %d stdout %q",
					res.Forked, res.ExitCode, res.Signal, res.TimedOut, res.Stdout, res.Stderr, tc.exit, tc.stdout)
			}
			// The call's own process carries the tag in os.environ only, which /proc does
			// not show: it is checked by pid.
			testwait.Until(t, 5*time.Second, "no process of the call left", func() bool {
				p, alive := readProc(res.PID)
				return len(tagged(tag)) == 0 && (!alive || p.dead)
			})
		})
	}
}

// residentPIDs lists the agent's resident interpreter processes: the server, whose
// descriptor 3 is its socket, and the spares forked ahead of calls. The tests of this file
// run one agent at a time, and ask while no call runs. A call's process that has reported
// its exit and waits to be killed (its stdout closed) is neither.
func residentPIDs(t *testing.T) (server int, spares []int) {
	t.Helper()
	for _, p := range readProcs() {
		if p.ppid != os.Getpid() || p.dead || p.sid != p.pid {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/comm"); err != nil || !strings.HasPrefix(string(comm), "python3") {
			continue
		}
		fds := "/proc/" + strconv.Itoa(p.pid) + "/fd/"
		if fd3, err := os.Readlink(fds + "3"); err == nil && strings.HasPrefix(fd3, "socket:") {
			server = p.pid
		} else if _, err := os.Readlink(fds + "1"); err == nil {
			spares = append(spares, p.pid)
		}
	}
	return server, spares
}

// forkServerPID is the resident interpreter's pid.
func forkServerPID(t *testing.T) int {
	t.Helper()
	server, _ := residentPIDs(t)
	if server == 0 {
		t.Fatal("no resident interpreter among the agent's children")
	}
	return server
}

// TestForkServerHostile: code in the sandbox that kills or stops the resident interpreter,
// or the spare process forked for the next call, makes no call fail; the calls after it
// work and are forked again, by processes other than the victim.
func TestForkServerHostile(t *testing.T) {
	for _, target := range []string{"server", "spare"} {
		for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP} {
			t.Run(target+" "+sig.String(), func(t *testing.T) {
				a := startAgent(t)
				forkReady(t, a)
				var victim int
				testwait.Until(t, 10*time.Second, "the resident interpreter and its spare", func() bool {
					server, spares := residentPIDs(t)
					if victim = server; target == "spare" && len(spares) == 1 {
						victim = spares[0]
					}
					return server != 0 && len(spares) == 1
				})
				if res := a.exec(wire.Exec{Argv: []string{"kill", "-" + strconv.Itoa(int(sig)), strconv.Itoa(victim)}}); res.ExitCode != 0 {
					t.Fatalf("kill %d: %+v", victim, res)
				}
				for range 3 {
					after := a.exec(python("print(6 * 7)", true))
					if after.Stdout != "42\n" || after.ExitCode != 0 || after.TimedOut {
						t.Fatalf("a call after it: %+v", after)
					}
				}
				forkReady(t, a)
				if server, spares := residentPIDs(t); server == victim || slices.Contains(spares, victim) {
					t.Errorf("%d is still in use", victim)
				}
			})
		}
	}
}

// TestForkServerGoneAtShutdownAndReset: the agent's shutdown leaves no resident interpreter,
// and a reset replaces it (the next borrower must not share one the last could have
// tampered with).
func TestForkServerGoneAtShutdownAndReset(t *testing.T) {
	a := startAgent(t)
	forkReady(t, a)
	before := forkServerPID(t)
	if r := a.call(wire.Request{Op: wire.OpReset, Reset: &wire.Reset{}}); r.Kind != wire.KindResult {
		t.Fatalf("reset: %+v", r)
	}
	if err := syscall.Kill(before, 0); err == nil {
		t.Errorf("resident interpreter %d survived the reset", before)
	}
	forkReady(t, a)
	after := forkServerPID(t)
	if after == before {
		t.Errorf("the same resident interpreter %d after the reset", after)
	}
	a.stop()
	if err := syscall.Kill(after, 0); err == nil {
		t.Errorf("resident interpreter %d survived the agent's shutdown", after)
	}
}

// TestWarm: OpWarm starts the resident interpreter ahead of any call, so that the very
// first call is forked, and says what it started; a program the image lacks starts
// nothing and is no error.
func TestWarm(t *testing.T) {
	a := startAgent(t)
	residents := func() int {
		r := a.call(wire.Request{Op: wire.OpPing})
		if r.Stats == nil {
			t.Fatalf("ping: %+v", r)
		}
		return r.Stats.ResidentPython
	}
	if n := residents(); n != 0 {
		t.Fatalf("%d resident interpreters before any call or warm-up", n)
	}
	for _, tc := range []struct{ python, want string }{{"no-such-python", ""}, {"", ""}} {
		r := a.call(wire.Request{Op: wire.OpWarm, Warm: &wire.Warm{Python: tc.python}})
		if r.Kind != wire.KindResult || r.Warm == nil || r.Warm.Python != tc.want {
			t.Errorf("warm %q: %+v, want a result naming %q", tc.python, r, tc.want)
		}
	}
	r := a.call(wire.Request{Op: wire.OpWarm, Warm: &wire.Warm{Python: "python3", Wait: true}})
	if r.Kind != wire.KindResult || r.Warm == nil || !strings.HasSuffix(r.Warm.Python, "/python3") || !r.Warm.Ready {
		t.Fatalf("warm python3: %+v", r)
	}
	if n := residents(); n != 1 {
		t.Fatalf("%d resident interpreters after the warm-up, want 1", n)
	}
	testwait.Until(t, 10*time.Second, "its spare forked", func() bool { _, spares := residentPIDs(t); return len(spares) == 1 })
	if res := a.exec(python("print(6 * 7)", true)); !res.Forked || res.Stdout != "42\n" {
		t.Errorf("the first call after the warm-up: forked %v, stdout %q", res.Forked, res.Stdout)
	}
}

// TestRequestHeader: a forked call's header carries its directory and only what its
// environment changes from the resident interpreter's.
func TestRequestHeader(t *testing.T) {
	server := []string{"PATH=/bin", "HOME=/sandbox", "LANG=C"}
	tests := []struct {
		name string
		env  []string
		want []string // after the directory, in any order
	}{
		{name: "the same", env: server},
		{name: "the marker added", env: append(slices.Clone(server), "ENCLAVE_EXEC_ID=1-2"), want: []string{"ENCLAVE_EXEC_ID=1-2"}},
		{name: "a value changed", env: []string{"PATH=/usr/bin", "HOME=/sandbox", "LANG=C"}, want: []string{"PATH=/usr/bin"}},
		{name: "an empty value", env: []string{"PATH=", "HOME=/sandbox", "LANG=C"}, want: []string{"PATH="}},
		{name: "a variable gone", env: []string{"PATH=/bin", "LANG=C"}, want: []string{"HOME"}},
		{name: "not a variable", env: append(slices.Clone(server), "JUNK"), want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fields := strings.Split(string(requestHeader("/sandbox/sub", envMap(server), tc.env)), "\x00")
			if fields[0] != "/sandbox/sub" {
				t.Fatalf("directory %q", fields[0])
			}
			got := fields[1:]
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("changes %q, want %q", got, want)
			}
		})
	}
}

// TestLightServerUpgrades: a light resident interpreter (wire.Warm.Light) imports none of
// the heavy modules and forks calls like a full one; once a call imports one of them, the
// agent starts a full interpreter, which then forks the calls in its place.
func TestLightServerUpgrades(t *testing.T) {
	a := startAgent(t)
	r := a.call(wire.Request{Op: wire.OpWarm, Warm: &wire.Warm{Python: "python3", Wait: true, Light: true}})
	if r.Kind != wire.KindResult || r.Warm == nil || !r.Warm.Ready {
		t.Fatalf("light warm-up: %+v", r)
	}
	light := forkServerPID(t)
	if !isLightServer(t, light) {
		t.Fatalf("server %d started by a light warm-up has no %s in its environment", light, lightServerVar)
	}
	for range 3 {
		res := a.exec(python("import sys; print(sorted(set(sys.modules) & {'numpy', 'pandas', 'matplotlib'}))", true))
		if !res.Forked || res.Stdout != "[]\n" {
			t.Fatalf("a call forked from the light server: forked %v, stdout %q, stderr %.300q", res.Forked, res.Stdout, res.Stderr)
		}
	}
	if now := forkServerPID(t); now != light {
		t.Fatalf("calls that imported no heavy module replaced the light server %d by %d", light, now)
	}
	// This host's python3 may lack numpy: the call puts a module of that name in place,
	// which is what the server's report looks for.
	res := a.exec(python("import sys, types; sys.modules['numpy'] = types.ModuleType('numpy'); print('ok')", true))
	if !res.Forked || res.Stdout != "ok\n" || res.ExitCode != 0 {
		t.Fatalf("the importing call: %+v", res)
	}
	var full int
	testwait.Until(t, 60*time.Second, "a full server in the light one's place", func() bool {
		full = forkServerPID(t)
		return full != light && syscall.Kill(light, 0) != nil
	})
	if isLightServer(t, full) {
		t.Errorf("the replacement %d is light too", full)
	}
	forkReady(t, a)
	if res := a.exec(python("print(6 * 7)", true)); !res.Forked || res.Stdout != "42\n" {
		t.Errorf("a call after the upgrade: forked %v, stdout %q", res.Forked, res.Stdout)
	}
}

// isLightServer reports whether resident interpreter pid was started light: its
// environment as the kernel keeps it from its start still names lightServerVar.
func isLightServer(t *testing.T, pid int) bool {
	t.Helper()
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatalf("reading the server's environment: %v", err)
	}
	return slices.Contains(strings.Split(string(env), "\x00"), lightServerVar)
}

// TestCallsLeaveNoDescriptors: a call's pipes are closed once it has been answered
// (afterAnswer), whether its output reached EOF on its own or a leftover process held it
// open: after calls of each kind, the agent holds as many descriptors as before them. The
// garbage collector is off meanwhile, since an unreachable os.File's finalizer would close
// what the agent forgot to.
func TestCallsLeaveNoDescriptors(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	a := startAgent(t)
	forkReady(t, a)
	open := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	settled := func() bool { _, spares := residentPIDs(t); return len(spares) == 1 }
	testwait.Until(t, 10*time.Second, "the spare forked", settled)
	before := open()
	calls := []wire.Exec{
		python("print(1)", true),
		python("import sys; sys.exit(3)", true),
		python("print(1)", false),
		{Argv: sh("echo hi; sleep 100 & echo bye"), Stdin: []byte("input")},
	}
	for range 5 {
		for _, spec := range calls {
			if res := a.exec(spec); res.TimedOut || res.Stdout == "" && res.ExitCode == 0 {
				t.Fatalf("%q: %+v", spec.Argv, res)
			}
		}
	}
	testwait.Until(t, 10*time.Second, "the agent's descriptors back to their number before the calls", func() bool {
		return settled() && open() <= before
	})
}
