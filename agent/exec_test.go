package agent

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/internal/textcap"
)

func TestExecResults(t *testing.T) {
	a := startAgent(t)
	if err := os.Mkdir(filepath.Join(a.workspace, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		spec     wire.Exec
		stdout   string
		stderr   string
		exitCode int
		signal   string
	}{
		{name: "echo", spec: wire.Exec{Argv: sh("echo hello")}, stdout: "hello\n"},
		{name: "path lookup", spec: wire.Exec{Argv: []string{"echo", "a b", "$HOME"}}, stdout: "a b $HOME\n"},
		{name: "stderr", spec: wire.Exec{Argv: sh("echo oops >&2")}, stderr: "oops\n"},
		{name: "exit code", spec: wire.Exec{Argv: sh("exit 3")}, exitCode: 3},
		{name: "exit 124 is not a timeout", spec: wire.Exec{Argv: sh("exit 124")}, exitCode: 124},
		{name: "killed by a signal", spec: wire.Exec{Argv: sh("kill -9 $$")}, exitCode: -1, signal: "SIGKILL"},
		{name: "env", spec: wire.Exec{Argv: sh(`printf %s "$GREETING"`), Env: []string{"GREETING=hi there"}}, stdout: "hi there"},
		{name: "default dir is the workspace", spec: wire.Exec{Argv: []string{"pwd"}}, stdout: a.workspace + "\n"},
		{name: "relative dir", spec: wire.Exec{Argv: []string{"pwd"}, Dir: "sub"}, stdout: a.workspace + "/sub\n"},
		{name: "stdin", spec: wire.Exec{Argv: []string{"cat"}, Stdin: []byte("line 1\nzwei ü\x00\n")}, stdout: "line 1\nzwei ü\x00\n"},
		{name: "large stdin", spec: wire.Exec{Argv: []string{"cat"}, Stdin: []byte(strings.Repeat("x", 900_000))},
			stdout: strings.Repeat("x", 900_000)},
		{name: "no stdin reads /dev/null", spec: wire.Exec{Argv: []string{"cat"}}},
		{name: "marker in env", spec: wire.Exec{Argv: sh(`case "$ENCLAVE_EXEC_ID" in ?*) echo set;; esac`)}, stdout: "set\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := a.exec(tc.spec)
			if res.Stdout != tc.stdout || res.Stderr != tc.stderr {
				t.Errorf("stdout %q stderr %q, want %q %q", res.Stdout, res.Stderr, tc.stdout, tc.stderr)
			}
			if res.ExitCode != tc.exitCode || res.Signal != tc.signal {
				t.Errorf("exit %d signal %q, want %d %q", res.ExitCode, res.Signal, tc.exitCode, tc.signal)
			}
			if res.TimedOut || res.Cancelled || res.Truncated || res.OOMKilled {
				t.Errorf("unexpected flags: %+v", res)
			}
			if res.PID <= 0 {
				t.Errorf("pid %d", res.PID)
			}
		})
	}
}

// TestExecTimeoutKillsWholeTree runs commands that would create a marker file after two
// seconds, each hiding that work differently from a simple kill, and checks that a 300 ms
// timeout ends each promptly and that no marker appears. The cases run in parallel so the
// test waits once for all of them.
func TestExecTimeoutKillsWholeTree(t *testing.T) {
	a := startAgent(t)
	python := `python3 -c "import os, time; os.system('setsid sh -c \"sleep 2; touch %s\" &'); time.sleep(10)"`
	tests := []struct {
		name   string
		script string // %s is the marker file
		python bool
	}{
		{name: "direct", script: "sleep 2; touch %s"},
		{name: "background grandchild", script: "(sleep 2; touch %s) & wait"},
		{name: "setsid grandchild", script: "setsid sh -c 'sleep 2; touch %s' & sleep 10"},
		{name: "python os.system", script: python, python: true},
		{name: "ignores SIGTERM", script: "trap '' TERM; sleep 2; touch %s"},
		{name: "nohup", script: "nohup sh -c 'sleep 2; touch %s' >/dev/null 2>&1 & sleep 10"},
	}
	type outcome struct{ marker, tag string }
	outcomes := make(chan outcome, len(tests))
	t.Run("group", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				if tc.python {
					if _, err := exec.LookPath("python3"); err != nil {
						t.Skip("no python3")
					}
				}
				marker := filepath.Join(a.workspace, strings.ReplaceAll(tc.name, " ", "-"))
				tag := newTag()
				outcomes <- outcome{marker, tag}
				started := time.Now()
				res := a.exec(wire.Exec{Argv: sh(strings.ReplaceAll(tc.script, "%s", marker)), Env: []string{tag}, TimeoutMS: 300})
				elapsed := time.Since(started)
				t.Logf("result after %v", elapsed)
				if elapsed > 2*time.Second {
					t.Errorf("result after %v for a 300 ms timeout", elapsed)
				}
				if !res.TimedOut || res.Cancelled {
					t.Errorf("timed out %v cancelled %v, want a timeout", res.TimedOut, res.Cancelled)
				}
				if res.Signal != "SIGKILL" || res.ExitCode != -1 {
					t.Errorf("exit %d signal %q, want SIGKILL", res.ExitCode, res.Signal)
				}
				if left := tagged(tag); len(left) > 0 {
					t.Errorf("processes left after the result: %v", left)
				}
			})
		}
	})
	close(outcomes)
	time.Sleep(2500 * time.Millisecond)
	for o := range outcomes {
		if _, err := os.Stat(o.marker); err == nil {
			t.Errorf("%s was created: part of the tree survived the timeout", o.marker)
		}
		if left := tagged(o.tag); len(left) > 0 {
			t.Errorf("processes with %s alive: %v", o.tag, left)
		}
	}
}

// TestExecKillsLeftovers checks that what a command leaves running is killed when it exits,
// so the result comes at once instead of when the leftovers finish.
func TestExecKillsLeftovers(t *testing.T) {
	a := startAgent(t)
	tests := []struct {
		name   string
		script string
	}{
		{"background child", "sleep 100 &"},
		{"background child holding stdout", "echo hi; sleep 100 & echo bye"},
		{"nohup", "nohup sleep 100 >/dev/null 2>&1 &"},
		{"setsid double fork", "setsid sh -c 'sleep 100 & sleep 100' &"},
		{"scrubbed environment", "env -i AGENT_TEST_TAG=$AGENT_TEST_TAG setsid sleep 100 &"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tag := newTag()
			started := time.Now()
			res := a.exec(wire.Exec{Argv: sh(tc.script), Env: []string{tag}})
			if elapsed := time.Since(started); elapsed > 5*time.Second {
				t.Errorf("result after %v", elapsed)
			}
			if res.ExitCode != 0 || res.TimedOut {
				t.Errorf("result %+v", res)
			}
			if tc.name != "scrubbed environment" && res.Reaped < 1 {
				// A process without the marker is swept as an orphan, not counted.
				t.Errorf("reaped %d, want at least 1", res.Reaped)
			}
			if left := tagged(tag); len(left) > 0 {
				t.Errorf("processes left: %v", left)
			}
		})
	}
}

func TestExecCancel(t *testing.T) {
	a := startAgent(t)
	tag := newTag()
	id, ch := a.send(wire.Request{Op: wire.OpExec, Exec: &wire.Exec{
		Argv: sh("echo started; sleep 30 & sleep 30"), Env: []string{tag}, StreamIntervalMS: 10}})
	if first := <-ch; first.Kind != wire.KindOutput {
		t.Fatalf("want output first, got %+v", first)
	}
	if resp := a.call(wire.Request{Op: wire.OpCancel, Target: id}); resp.Kind != wire.KindResult {
		t.Fatalf("cancel: %+v", resp)
	}
	final, _ := a.await(ch)
	if final.Exec == nil || !final.Exec.Cancelled || final.Exec.Stopped || final.Exec.TimedOut || final.Exec.Signal != "SIGKILL" {
		t.Fatalf("cancelled exec answered %+v", final.Exec)
	}
	if left := tagged(tag); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
}

// TestExecStoppedByShutdown: a command killed because the agent is stopping (SIGTERM to the
// container, an engine restart) says so, unlike one cancelled on request.
func TestExecStoppedByShutdown(t *testing.T) {
	a := startAgent(t)
	_, ch := a.send(wire.Request{Op: wire.OpExec, Exec: &wire.Exec{Argv: sh("echo started; sleep 30"), StreamIntervalMS: 10}})
	if first := <-ch; first.Kind != wire.KindOutput {
		t.Fatalf("want output first, got %+v", first)
	}
	a.cancel() // what SIGTERM does to the agent's context
	final, _ := a.await(ch)
	if final.Exec == nil || !final.Exec.Cancelled || !final.Exec.Stopped {
		t.Fatalf("exec killed by shutdown answered %+v", final.Exec)
	}
}

func TestExecOutputCaps(t *testing.T) {
	a := startAgent(t)
	const smallCap = 64 << 10
	tests := []struct {
		name  string
		spec  wire.Exec
		limit int
		check func(t *testing.T, res wire.ExecResult)
	}{
		{
			name:  "20 MB keeps head and tail",
			spec:  wire.Exec{Argv: sh("printf START; head -c 20000000 /dev/zero | tr '\\0' a; printf END")},
			limit: wire.DefaultMaxOutputBytes,
			check: func(t *testing.T, res wire.ExecResult) {
				if !strings.HasPrefix(res.Stdout, "STARTaaa") || !strings.HasSuffix(res.Stdout, "aaaEND") {
					t.Errorf("head or tail lost: %q ... %q", res.Stdout[:10], res.Stdout[len(res.Stdout)-10:])
				}
				if !strings.Contains(res.Stdout, " bytes omitted ...]") {
					t.Error("no omission marker")
				}
				kept := int64(len(res.Stdout) - len(textcap.Marker(res.OmittedBytes)))
				if kept+res.OmittedBytes != 20_000_008 {
					t.Errorf("kept %d + omitted %d != 20000008", kept, res.OmittedBytes)
				}
			},
		},
		{
			name:  "yes until timeout",
			spec:  wire.Exec{Argv: []string{"yes"}, TimeoutMS: 500},
			limit: wire.DefaultMaxOutputBytes,
			check: func(t *testing.T, res wire.ExecResult) {
				if !res.TimedOut || !strings.HasPrefix(res.Stdout, "y\ny\n") {
					t.Errorf("timed out %v, stdout starts %q", res.TimedOut, res.Stdout[:min(10, len(res.Stdout))])
				}
			},
		},
		{
			name:  "control characters count as escapes",
			spec:  wire.Exec{Argv: sh(`head -c 1000000 /dev/zero | tr '\0' '\001'`), MaxOutputBytes: smallCap},
			limit: smallCap,
		},
		{
			name:  "html characters count as escapes",
			spec:  wire.Exec{Argv: sh(`head -c 1000000 /dev/zero | tr '\0' '<'`), MaxOutputBytes: smallCap},
			limit: smallCap,
		},
		{
			name:  "stderr is capped too",
			spec:  wire.Exec{Argv: sh(`head -c 1000000 /dev/zero >&2`), MaxOutputBytes: smallCap},
			limit: smallCap,
		},
		{
			name:  "multi-byte characters stay whole",
			spec:  wire.Exec{Argv: sh(`i=0; while [ $i -lt 30000 ]; do printf 'é€𝄞'; i=$((i+1)); done`), MaxOutputBytes: 1001},
			limit: 1001,
			check: func(t *testing.T, res wire.ExecResult) {
				if strings.ContainsRune(res.Stdout, utf8.RuneError) {
					t.Error("a character was cut")
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var before, after syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			res := a.exec(tc.spec)
			syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			// The agent's CPU time, with the race detector's overhead: generous, but far
			// below what a per-byte allocation would cost.
			if cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()); cpu > 3*time.Second {
				t.Errorf("the agent used %v of CPU", cpu)
			}
			if !res.Truncated || res.OmittedBytes <= 0 {
				t.Errorf("truncated %v omitted %d, want truncation", res.Truncated, res.OmittedBytes)
			}
			for _, out := range []string{res.Stdout, res.Stderr} {
				if !utf8.ValidString(out) {
					t.Error("output is not valid UTF-8")
				}
				encoded, _ := json.Marshal(out)
				if max := tc.limit + textcap.EncodedLen([]byte(textcap.Marker(res.OmittedBytes))) + 2; len(encoded) > max {
					t.Errorf("encoded output is %d bytes, over %d", len(encoded), max)
				}
			}
			whole, _ := json.Marshal(res)
			if len(whole) > 2_100_000 {
				t.Errorf("encoded result is %d bytes", len(whole))
			}
			if tc.check != nil {
				tc.check(t, res)
			}
		})
	}
}

func TestExecInvalidUTF8(t *testing.T) {
	a := startAgent(t)
	res := a.exec(wire.Exec{Argv: sh(`printf '\377\376ok\303'; printf '\200' >&2`)})
	if !utf8.ValidString(res.Stdout) || !utf8.ValidString(res.Stderr) {
		t.Fatalf("invalid UTF-8: %q %q", res.Stdout, res.Stderr)
	}
	if res.Stdout != "\uFFFD\uFFFDok\uFFFD" || res.Stderr != "\uFFFD" {
		t.Errorf("stdout %q stderr %q", res.Stdout, res.Stderr)
	}
}

func TestExecStreaming(t *testing.T) {
	a := startAgent(t)
	_, ch := a.send(wire.Request{Op: wire.OpExec, Exec: &wire.Exec{
		Argv:             sh(`for i in 1 2 3 4; do echo out$i; echo err$i >&2; sleep 0.15; done`),
		StreamIntervalMS: 50,
	}})
	final, outputs := a.await(ch)
	if final.Exec == nil {
		t.Fatalf("final response %+v", final)
	}
	if len(outputs) < 2 {
		t.Errorf("%d output chunks before the result, want several", len(outputs))
	}
	var stdout, stderr strings.Builder
	for _, o := range outputs {
		stdout.WriteString(o.Stdout)
		stderr.WriteString(o.Stderr)
	}
	if stdout.String() != final.Exec.Stdout || stderr.String() != final.Exec.Stderr {
		t.Errorf("chunks %q %q differ from the result %q %q", stdout.String(), stderr.String(), final.Exec.Stdout, final.Exec.Stderr)
	}
	if final.Exec.Stdout != "out1\nout2\nout3\nout4\n" {
		t.Errorf("stdout %q", final.Exec.Stdout)
	}
}

func TestExecStreamingLargeOutput(t *testing.T) {
	a := startAgent(t)
	_, ch := a.send(wire.Request{Op: wire.OpExec, Exec: &wire.Exec{
		Argv:             sh(`head -c 3000000 /dev/zero | tr '\0' b; sleep 0.1; echo; echo end`),
		StreamIntervalMS: 20,
	}})
	final, outputs := a.await(ch)
	if final.Exec == nil || !final.Exec.Truncated || !strings.HasSuffix(final.Exec.Stdout, "bbb\nend\n") {
		t.Fatalf("final response %+v", final)
	}
	for _, o := range outputs {
		if encoded, _ := json.Marshal(o.Stdout); len(encoded) > streamChunkLimit+100 {
			t.Errorf("a chunk is %d bytes encoded", len(encoded))
		}
	}
}

func TestBackgroundJobs(t *testing.T) {
	a := startAgent(t)
	tag := newTag()
	started := a.exec(wire.Exec{Argv: sh("sleep 30 & sleep 30"), Env: []string{tag}, Background: true})
	if started.JobID != "job-1" || started.PID <= 0 {
		t.Fatalf("background exec answered %+v", started)
	}
	quick := a.exec(wire.Exec{Argv: sh("exit 7"), Background: true})

	// A foreground command ending must not take the job with it.
	a.exec(wire.Exec{Argv: sh("sleep 0.1 &")})
	jobs := a.call(wire.Request{Op: wire.OpJobs}).Jobs
	if len(jobs) != 2 || jobs[0].ID != "job-1" || !jobs[0].Running || jobs[0].PID != started.PID || jobs[0].Argv[2] != "sleep 30 & sleep 30" {
		t.Fatalf("jobs = %+v", jobs)
	}
	if !testwait.Poll(5*time.Second, func() bool {
		jobs := a.call(wire.Request{Op: wire.OpJobs}).Jobs
		return !jobs[1].Running && jobs[1].ExitCode == 7
	}) {
		t.Errorf("job %s never reported exit 7: %+v", quick.JobID, a.call(wire.Request{Op: wire.OpJobs}).Jobs)
	}
	if len(tagged(tag)) < 2 {
		t.Fatalf("job processes: %v", tagged(tag))
	}

	killed := a.call(wire.Request{Op: wire.OpKill, Job: "job-1"})
	if killed.Kind != wire.KindResult || len(killed.Jobs) != 1 || killed.Jobs[0].Running || killed.Jobs[0].Signal != "SIGKILL" {
		t.Fatalf("kill answered %+v", killed)
	}
	if left := tagged(tag); len(left) > 0 {
		t.Errorf("processes left after kill: %v", left)
	}
}

// TestBackgroundJobKeepsLeftovers checks that a job's own leftovers (a daemon it started)
// live on after its main process exits, and die with OpKill.
func TestBackgroundJobKeepsLeftovers(t *testing.T) {
	a := startAgent(t)
	tag := newTag()
	a.exec(wire.Exec{Argv: sh("sleep 30 &"), Env: []string{tag}, Background: true})
	if !testwait.Poll(5*time.Second, func() bool {
		jobs := a.call(wire.Request{Op: wire.OpJobs}).Jobs
		return len(jobs) == 1 && !jobs[0].Running
	}) {
		t.Fatal("job did not end")
	}
	a.exec(wire.Exec{Argv: []string{"true"}}) // sweeps orphans that belong to no job
	if len(tagged(tag)) != 1 {
		t.Fatalf("the job's daemon did not survive: %v", tagged(tag))
	}
	a.call(wire.Request{Op: wire.OpKill, Job: "job-1"})
	if left := tagged(tag); len(left) > 0 {
		t.Errorf("processes left after kill: %v", left)
	}
}

// TestNoZombies runs many short commands that leave children behind and checks that the
// agent reaps every one of them.
func TestNoZombies(t *testing.T) {
	a := startAgent(t)
	scripts := []string{"true", "sleep 0.01 &", "(true &) ; true", "setsid true &", "exit 1"}
	var pending []<-chan wire.Response
	for i := range 60 {
		_, ch := a.send(wire.Request{Op: wire.OpExec, Exec: &wire.Exec{Argv: sh(scripts[i%len(scripts)])}})
		pending = append(pending, ch)
	}
	for _, ch := range pending {
		if final, _ := a.await(ch); final.Kind != wire.KindResult {
			t.Errorf("exec answered %+v", final)
		}
	}
	zombies := func() (n int) {
		for _, p := range readProcs() {
			if p.ppid == os.Getpid() && p.dead {
				n++
			}
		}
		return n
	}
	if !testwait.Poll(5*time.Second, func() bool { return zombies() == 0 }) {
		t.Errorf("%d zombie children left", zombies())
	}
}

func TestOOMKills(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	v2 := write("memory.events", "low 0\nhigh 0\nmax 12\noom 4\noom_kill 3\noom_group_kill 0\n")
	v1 := write("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name  string
		files []string
		n     int64
		ok    bool
	}{
		{"cgroup v2", []string{v2, v1}, 3, true},
		{"cgroup v1", []string{missing, v1}, 2, true},
		{"none", []string{missing}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if n, ok := oomKills(tc.files); n != tc.n || ok != tc.ok {
				t.Errorf("oomKills = %d %v, want %d %v", n, ok, tc.n, tc.ok)
			}
		})
	}
}

func TestBackgroundJobTimeout(t *testing.T) {
	a := startAgent(t)
	tag := newTag()
	a.exec(wire.Exec{Argv: sh("sleep 30 & sleep 30"), Env: []string{tag}, Background: true, TimeoutMS: 200})
	if !testwait.Poll(5*time.Second, func() bool {
		jobs := a.call(wire.Request{Op: wire.OpJobs}).Jobs
		return len(jobs) == 1 && !jobs[0].Running && jobs[0].Signal == "SIGKILL"
	}) {
		t.Fatalf("job not killed at its timeout: %+v", a.call(wire.Request{Op: wire.OpJobs}).Jobs)
	}
	if left := tagged(tag); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
}

// TestPipesHoldData: closeOutput keeps reading past its grace while a pipe still holds
// what the dead tree wrote; that check must see bytes in a pipe, and none once read.
func TestPipesHoldData(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	c := &command{pipes: []*os.File{r}}
	if c.pipesHoldData() {
		t.Fatal("an empty pipe reported data")
	}
	if _, err := w.Write([]byte("left behind")); err != nil {
		t.Fatal(err)
	}
	if !c.pipesHoldData() {
		t.Fatal("a pipe holding 11 bytes reported none")
	}
	buf := make([]byte, 64)
	if _, err := r.Read(buf); err != nil {
		t.Fatal(err)
	}
	if c.pipesHoldData() {
		t.Fatal("a pipe read empty still reported data")
	}
}
