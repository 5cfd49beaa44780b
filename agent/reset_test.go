package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
)

// These tests run OpReset with the agent in the test process, which is not PID 1: the reset
// then kills the agent's descendants (the processes its commands started, orphans included)
// rather than signalling -1, and empties temporary directories, never the host's /tmp. They
// must not run in parallel with other agent tests, whose processes are descendants too.

// alivePID reads the pid a spy wrote to file and reports whether that process lives.
func alivePID(t *testing.T, file string) (int, bool) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, false
	}
	p, ok := readProc(pid)
	return pid, ok && !p.dead
}

func (a *testAgent) reset(req *wire.Reset) wire.Response {
	a.t.Helper()
	return a.call(wire.Request{Op: wire.OpReset, Reset: req})
}

// TestResetKillsEveryProcessAndEmptiesDirs is finding 4 of issue 9 at the agent: a borrower's
// spies, however they hide from a command's tree (setsid, double fork, a scrubbed or forged
// environment marker, a job that ended), all die, and the scratch directories end up empty
// without the reset following a symlink out of them.
func TestResetKillsEveryProcessAndEmptiesDirs(t *testing.T) {
	a := startAgent(t)
	scratch := t.TempDir()  // stands for /tmp and /dev/shm
	evidence := t.TempDir() // outside the reset: pid files, and a symlink target that must survive
	keep := filepath.Join(evidence, "keep.txt")
	if err := os.WriteFile(keep, []byte("not the borrower's"), 0o644); err != nil {
		t.Fatal(err)
	}
	pidfile := func(name string) string { return filepath.Join(evidence, name+".pid") }
	spy := func(name string) string { return `'echo $$ > ` + pidfile(name) + `; exec sleep 1000'` }

	donor := a.exec(wire.Exec{Argv: sh("exec sleep 1000"), Background: true})
	spies := []struct {
		name string
		spec wire.Exec
	}{
		{"job-setsid-double-fork", wire.Exec{Argv: sh(`setsid sh -c ` + spy("job-setsid-double-fork") + ` &`), Background: true}},
		{"job-running", wire.Exec{Argv: sh(`echo $$ > ` + pidfile("job-running") + `; exec sleep 1000`), Background: true}},
		{"exec-forged-marker", wire.Exec{Argv: sh(`m=$(tr '\0' '\n' < /proc/` + strconv.Itoa(donor.PID) + `/environ | grep '^ENCLAVE_EXEC_ID=')
			(env -i "$m" setsid sh -c ` + spy("exec-forged-marker") + ` &)
			until [ -s ` + pidfile("exec-forged-marker") + ` ]; do sleep 0.01; done`)}},
	}
	for _, s := range spies {
		if res := a.exec(s.spec); res.ExitCode != 0 {
			t.Fatalf("starting spy %s: %+v", s.name, res)
		}
		if !testwait.Poll(5*time.Second, func() bool { _, ok := alivePID(t, pidfile(s.name)); return ok }) {
			t.Fatalf("spy %s is not running before the reset: the test would prove nothing", s.name)
		}
	}

	files := []string{
		filepath.Join(a.workspace, "a.txt"),
		filepath.Join(a.workspace, ".local/lib/python3/site-packages/spy.pth"),
		filepath.Join(scratch, "deep", strings.Repeat("d/", 40), "f"),
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	locked := filepath.Join(a.workspace, "locked")
	if err := os.MkdirAll(filepath.Join(locked, "inner"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		os.Chmod(locked, 0), // the borrower takes its own rights away
		os.Symlink(keep, filepath.Join(scratch, "link-to-file")),
		os.Symlink(evidence, filepath.Join(scratch, "link-to-dir")),
		syscall.Mkfifo(filepath.Join(scratch, "fifo"), 0o600),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	resp := a.reset(&wire.Reset{Dirs: []string{a.workspace, scratch, filepath.Join(scratch, "missing")}})
	if resp.Kind != wire.KindResult || resp.Reset == nil {
		t.Fatalf("reset: %+v", resp)
	}
	res := resp.Reset
	t.Logf("reset: %+v", *res)

	t.Run("processes", func(t *testing.T) {
		for _, s := range append(spies, struct {
			name string
			spec wire.Exec
		}{name: "marker donor"}) {
			if s.name == "marker donor" {
				if p, ok := readProc(donor.PID); ok && !p.dead {
					t.Errorf("background job %d survived", donor.PID)
				}
				continue
			}
			if pid, alive := alivePID(t, pidfile(s.name)); alive {
				t.Errorf("spy %s (pid %d) survived the reset", s.name, pid)
			}
		}
		if res.Killed < len(spies)+1 || len(res.KilledNames) == 0 {
			t.Errorf("reset reports %d killed (%v), want at least %d", res.Killed, res.KilledNames, len(spies)+1)
		}
	})
	t.Run("files", func(t *testing.T) {
		for _, dir := range []string{a.workspace, scratch} {
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) != 0 {
				t.Errorf("%s after the reset: %v, %v; want it there and empty", dir, entries, err)
			}
		}
		if data, err := os.ReadFile(keep); err != nil || string(data) != "not the borrower's" {
			t.Errorf("the reset followed a symlink out of its directories: %q, %v", data, err)
		}
		// a.txt; .local, lib, python3, site-packages, spy.pth; locked, inner; deep, 40 d, f;
		// two links and a fifo.
		if want := 1 + 5 + 2 + 42 + 3; res.Removed != want {
			t.Errorf("reset reports %d removed, want %d: %v", res.Removed, want, res.RemovedPaths)
		}
		for _, top := range []string{filepath.Join(a.workspace, "a.txt"), filepath.Join(scratch, "link-to-dir")} {
			if !contains(res.RemovedPaths, top) {
				t.Errorf("removed paths %v lack %s", res.RemovedPaths, top)
			}
		}
	})
	t.Run("jobs", func(t *testing.T) {
		if res.JobsForgotten != 3 {
			t.Errorf("forgot %d jobs, want 3", res.JobsForgotten)
		}
		if jobs := a.call(wire.Request{Op: wire.OpJobs}); len(jobs.Jobs) != 0 {
			t.Errorf("the job list still shows %+v", jobs.Jobs)
		}
		next := a.exec(wire.Exec{Argv: sh("exec sleep 1000"), Background: true})
		if next.JobID == donor.JobID {
			t.Errorf("a job id was reused after the reset: %s", next.JobID)
		}
	})
	t.Run("the agent still serves", func(t *testing.T) {
		if got := a.exec(wire.Exec{Argv: sh("echo ok")}); got.Stdout != "ok\n" {
			t.Errorf("exec after the reset: %+v", got)
		}
	})
}

// TestResetRefusesBadRequests: a reset request that names no directories safely, or asks
// for System V IPC clean-up outside a sandbox's own namespace, is refused with what is wrong.
func TestResetRefusesBadRequests(t *testing.T) {
	a := startAgent(t)
	deep := filepath.Join(t.TempDir(), "deep")
	if err := os.MkdirAll(filepath.Join(deep, strings.Repeat("d/", maxResetDepth+4)), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  *wire.Reset
		code wire.Code
		want string
	}{
		{"no reset field", nil, wire.CodeInvalid, "no reset field"},
		{"relative dir", &wire.Reset{Dirs: []string{"tmp"}}, wire.CodeInvalid, `"tmp" must be an absolute, clean path`},
		{"root", &wire.Reset{Dirs: []string{"/"}}, wire.CodeInvalid, "other than /"},
		{"unclean dir", &wire.Reset{Dirs: []string{"/tmp/../etc"}}, wire.CodeInvalid, "clean path"},
		{"sysv ipc outside a sandbox", &wire.Reset{SysVIPC: true}, wire.CodeInvalid, "needs the agent to be PID 1"},
		{"tree too deep", &wire.Reset{Dirs: []string{deep}}, wire.CodeTooLarge, "nested more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := a.reset(tc.req)
			if resp.Kind != wire.KindError || resp.Code != tc.code || !strings.Contains(resp.Error, tc.want) {
				t.Errorf("got %s %s %q, want error %s containing %q", resp.Kind, resp.Code, resp.Error, tc.code, tc.want)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
