package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// poolLeftover is something a hostile borrower leaves in a pooled sandbox, and how the next
// borrower of the same sandbox could find it.
type poolLeftover struct {
	name  string
	plant []sandbox.ExecRequest
	// present reports whether the leftover is still there, and what shows it.
	present func(t *testing.T, sb sandbox.Sandbox) (bool, string)
	// diesWithCall marks a spy the agent already kills when the call that started it ends:
	// it cannot be checked for before the reset, which must kill it all the same.
	diesWithCall bool
}

// processNamed finds live processes whose command line holds name, through the next
// borrower's own eyes: a shell listing /proc. The listing's command line holds no spy name.
func poolProcessNamed(name string) func(t *testing.T, sb sandbox.Sandbox) (bool, string) {
	return func(t *testing.T, sb sandbox.Sandbox) (bool, string) {
		t.Helper()
		out := poolRun(t, sb, `for d in /proc/[0-9]*; do s=$(cut -d' ' -f3 "$d/stat" 2>/dev/null); [ "$s" = Z ] && continue; printf '%s ' "${d#/proc/}"; tr '\0' ' ' < "$d/cmdline" 2>/dev/null; echo; done`)
		var hits []string
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, name) {
				hits = append(hits, line)
			}
		}
		return len(hits) > 0, strings.Join(hits, "; ")
	}
}

// shellSays runs check in the sandbox; the leftover is present when it prints "present".
func poolShellSays(check string) func(t *testing.T, sb sandbox.Sandbox) (bool, string) {
	return func(t *testing.T, sb sandbox.Sandbox) (bool, string) {
		t.Helper()
		out := poolRun(t, sb, check)
		return strings.Contains(out, "present"), strings.TrimSpace(out)
	}
}

// run executes script in sb and returns its stdout; a failure to run fails the test.
func poolRun(t *testing.T, sb sandbox.Sandbox, script string) string {
	t.Helper()
	res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"sh", "-c", script}, TimeoutMS: 20_000}, nil)
	if err != nil {
		t.Fatalf("running %q: %v", script, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("running %q: exit %d, stderr %q", script, res.ExitCode, res.Stderr)
	}
	return res.Stdout
}

func poolBG(script, name string) sandbox.ExecRequest {
	return sandbox.ExecRequest{Argv: []string{"sh", "-c", script, name}, Background: true}
}

func poolFG(script string) sandbox.ExecRequest {
	return sandbox.ExecRequest{Argv: []string{"sh", "-c", script}, TimeoutMS: 20_000}
}

// python runs a Python snippet in the foreground.
func poolPython(code string) sandbox.ExecRequest {
	return sandbox.ExecRequest{Argv: []string{"python3", "-c", code}, TimeoutMS: 20_000}
}

// spyLoop is a process that runs until killed; name makes it findable in /proc.
const spyLoop = `while :; do sleep 1; done`

// escape starts a spy named name from a foreground command through launcher (a prefix such
// as "setsid"), in a subshell that exits at once, so the spy is an orphan; the command waits
// until the spy has settled (its pid written) so that the test does not race its escape.
func escape(launcher, name string) sandbox.ExecRequest {
	pidfile := "/tmp/" + name + ".pid"
	return poolFG(`(` + launcher + ` sh -c 'echo $$ > ` + pidfile + `; ` + spyLoop + `' ` + name + ` &)
		until [ -s ` + pidfile + ` ]; do sleep 0.01; done`)
}

// dockerPoolLeftovers is finding 4 of issue 9 for plain docker pools: what one borrower
// leaves behind in processes, files, shared memory and IPC. Each must be gone for the next.
var dockerPoolLeftovers = []poolLeftover{
	{
		name:    "background job that setsids and double-forks a spy, then ends",
		plant:   []sandbox.ExecRequest{poolBG(`setsid sh -c '`+spyLoop+`' spy-bg-ended &`, "planter")},
		present: poolProcessNamed("spy-bg-ended"),
	},
	{
		name:    "background job still running",
		plant:   []sandbox.ExecRequest{poolBG(spyLoop, "spy-bg-running")},
		present: poolProcessNamed("spy-bg-running"),
	},
	{
		name:         "foreground exec that setsids and double-forks a spy",
		plant:        []sandbox.ExecRequest{escape("setsid", "spy-fg-setsid")},
		present:      poolProcessNamed("spy-fg-setsid"),
		diesWithCall: true,
	},
	{
		name:         "foreground exec whose spy scrubs its environment",
		plant:        []sandbox.ExecRequest{escape("env -i setsid", "spy-fg-scrubbed")},
		present:      poolProcessNamed("spy-fg-scrubbed"),
		diesWithCall: true,
	},
	{
		// The spy takes the marker of a running background job's tree, which the agent's
		// orphan sweep spares; it outlives its own command and waits for the next borrower.
		name: "foreground exec whose spy forges a running job's marker",
		plant: []sandbox.ExecRequest{
			poolBG(`exec sleep 3600`, "marker-donor"),
			poolFG(`for e in /proc/[0-9]*/environ; do m=$(tr '\0' '\n' < "$e" 2>/dev/null | grep '^ENCLAVE_EXEC_ID='); [ -n "$m" ] && [ "$m" != "ENCLAVE_EXEC_ID=$ENCLAVE_EXEC_ID" ] && break; done
				(env -i "$m" setsid sh -c 'echo $$ > /tmp/forged.pid; ` + spyLoop + `' spy-fg-forged &)
				until [ -s /tmp/forged.pid ]; do sleep 0.01; done`),
		},
		present: poolProcessNamed("spy-fg-forged"),
	},
	{
		name:    "file beside an operator volume inside the workspace",
		plant:   []sandbox.ExecRequest{poolFG(`echo secret > /sandbox/spy && echo shared > /sandbox/data/in/by-borrower`)},
		present: poolShellSays(`test -e /sandbox/spy && echo present || echo absent`),
	},
	{
		name:    "file in /dev/shm",
		plant:   []sandbox.ExecRequest{poolFG(`echo secret > /dev/shm/spy-shm`)},
		present: poolShellSays(`test -e /dev/shm/spy-shm && echo present || echo absent`),
	},
	{
		name:    "tree in /tmp",
		plant:   []sandbox.ExecRequest{poolFG(`mkdir -p /tmp/spy/deep && echo secret > /tmp/spy/deep/file && chmod 000 /tmp/spy/deep`)},
		present: poolShellSays(`test -e /tmp/spy && echo present || echo absent`),
	},
	{
		// HOME is the workspace: a .pth in the user site directory runs in every Python.
		name: "user site .pth in HOME that runs in the next borrower's Python",
		plant: []sandbox.ExecRequest{poolFG(`d=$(python3 -c 'import site; print(site.getusersitepackages())') && mkdir -p "$d" &&
			echo "import os; open('/tmp/pth-ran', 'w').close()" > "$d/spy.pth"`)},
		present: poolShellSays(`python3 -c 'pass'; test -e /tmp/pth-ran && echo present || echo absent`),
	},
	{
		name:    "POSIX message queue",
		plant:   []sandbox.ExecRequest{poolPython(`import ctypes, os; rt = ctypes.CDLL("librt.so.1", use_errno=True); assert rt.mq_open(b"/spy-mq", os.O_CREAT | os.O_RDWR, 0o600, None) >= 0, ctypes.get_errno()`)},
		present: poolShellSays(`test -e /dev/mqueue/spy-mq && echo present || echo absent`),
	},
	{
		name:    "System V shared memory segment",
		plant:   []sandbox.ExecRequest{poolPython(`import ctypes; libc = ctypes.CDLL(None, use_errno=True); assert libc.shmget(0x5157, 4096, 0o1600) >= 0, ctypes.get_errno()`)},
		present: poolShellSays(`[ "$(awk 'NR > 1' /proc/sysvipc/shm | wc -l)" -gt 0 ] && echo present || echo absent`),
	},
}

// TestIntegrationPoolResetKeepsBorrowersApart is finding 4 of issue 9 on a docker pool: one
// borrower plants spies (processes that escape their command's tree, forge markers, or
// outlive their job), files in /dev/shm, /tmp and HOME, a POSIX message queue and a System V
// segment; the next borrower of the same sandbox finds none of them. An operator's volume
// mounted inside the workspace keeps its files: the reset never reaches into another file
// system.
func TestIntegrationPoolResetKeepsBorrowersApart(t *testing.T) {
	e := testenv.Engine(t)
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o777); err != nil { // the sandbox user is not root
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "operator.txt"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(e, sandbox.TypeDocker)},
		Policy:   sandbox.Policy{AllowHostMounts: true, AllowedHostPaths: []string{shared}},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	p := sandbox.NewPool(m, "pool-test", sandbox.TypeDocker)
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	ctx := t.Context()
	cfg := sandbox.Config{Volumes: map[string]sandbox.VolumeMount{shared: {Bind: "/sandbox/data/in", Mode: "rw"}}}
	if _, err := p.Grow(ctx, 1, cfg); err != nil {
		t.Fatal(err)
	}

	first, err := p.Borrow(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, lo := range dockerPoolLeftovers {
		for _, req := range lo.plant {
			res, err := first.Exec(ctx, req, nil)
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("planting %q: %v %+v", lo.name, err, res)
			}
		}
	}
	// Every leftover is really there before the hand-over, or the test would prove nothing.
	for _, lo := range dockerPoolLeftovers {
		if lo.diesWithCall {
			continue
		}
		ok := testwait.Poll(5*time.Second, func() bool { found, _ := lo.present(t, first); return found })
		if !ok {
			t.Fatalf("planting %q left nothing to find: the check cannot fail", lo.name)
		}
	}

	took := poolReturnAndWait(t, p, first)
	t.Logf("reset between borrowers took %s", took)

	second, err := p.Borrow(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Return(second)
	if second.ID() != first.ID() {
		t.Fatalf("the pool replaced the sandbox (%s -> %s) instead of resetting it", first.ID(), second.ID())
	}
	for _, lo := range dockerPoolLeftovers {
		t.Run(lo.name, func(t *testing.T) {
			if found, what := lo.present(t, second); found {
				t.Errorf("the next borrower finds it: %s", what)
			}
		})
	}
	t.Run("job list", func(t *testing.T) {
		jobs, err := second.Jobs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) != 0 {
			t.Errorf("the next borrower sees the previous one's jobs (their command lines may hold secrets): %+v", jobs)
		}
	})
	t.Run("operator volume left alone", func(t *testing.T) {
		for _, name := range []string{"operator.txt", "by-borrower"} {
			if _, err := os.Stat(filepath.Join(shared, name)); err != nil {
				t.Errorf("the reset reached into the operator's volume: %v", err)
			}
		}
		if out := poolRun(t, second, `ls /sandbox/data/in`); !strings.Contains(out, "operator.txt") {
			t.Errorf("the volume is no longer mounted in the sandbox: ls says %q", out)
		}
	})
	t.Run("the sandbox still works", func(t *testing.T) {
		if out := poolRun(t, second, `echo ok > /tmp/f && cat /tmp/f && echo x > /dev/shm/y && cat /dev/shm/y`); out != "ok\nx\n" {
			t.Errorf("output %q", out)
		}
	})
}

// returnAndWait gives sb back and waits until the pool has cleaned it; it returns how long
// that took.
func poolReturnAndWait(t *testing.T, p *sandbox.Pool, sb sandbox.Sandbox) time.Duration {
	t.Helper()
	start := time.Now()
	p.Return(sb)
	testwait.Until(t, 2*time.Minute, fmt.Sprintf("pooled sandbox %s cleaned and free again", sb.ID()), func() bool { return p.Free() == 1 })
	return time.Since(start)
}
