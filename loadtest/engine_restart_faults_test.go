//go:build faults

package loadtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/loadtest"
)

// This file stops the Docker engine under a running server. Every other test that uses the
// engine fails while it is down, so it builds only with -tags faults and runs on its own:
//
//	go test -tags faults -run EngineRestart -count=1 ./loadtest/

// outageBound bounds every call made while the engine is away: a call must fail, not hang.
const outageBound = 30 * time.Second

// clearFailure is what a failed call must say: the sandbox or the engine is gone.
var clearFailure = regexp.MustCompile(`(?i)not running|sandbox stopped|container engine|docker engine|cannot connect|connection refused`)

// TestIntegrationEngineRestart: the engine is stopped (SIGTERM) and started again under a
// server with live sessions. Calls during the outage fail at once with a message that says
// what is wrong, calls work again once the engine is back (the server is not restarted),
// and no sandbox is left behind.
func TestIntegrationEngineRestart(t *testing.T) {
	testenv.RequireDocker(t)
	srv := startServer(t)
	// Registered after startServer, so it runs before its cleanup: the server's own checks
	// need the engine, and so does every test after this one, whatever happened here.
	t.Cleanup(func() { ensureEngine(t) })

	const sessions = 4
	var all []*loadtest.Session
	for range sessions {
		s := connect(t, srv, loadtest.Streamable)
		mustCall(t, s, "file_operation", map[string]any{"operation": "write", "file_path": "old.txt", "content": "x"})
		all = append(all, s)
	}

	ctx, stopLoad := context.WithCancel(t.Context())
	defer stopLoad()
	logs := make([]*callLog, sessions)
	var wg sync.WaitGroup
	for i, s := range all {
		logs[i] = &callLog{}
		wg.Go(func() { logs[i].run(ctx, s) })
	}
	time.Sleep(500 * time.Millisecond) // calls are in flight

	pid, err := dockerdPID()
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("stopping dockerd: %v", err)
	}
	waitFor(t, 60*time.Second, "dockerd exits", func() bool { return gone(pid) })
	down := time.Now()
	time.Sleep(2 * time.Second) // a real outage: calls are made while nothing answers

	restartEngine(t)
	up := time.Now()
	recovered := waitFor(t, 60*time.Second, "every session has a successful call after the restart", func() bool {
		for _, l := range logs {
			if !l.succeededAfter(up) {
				return false
			}
		}
		return true
	})
	stopLoad()
	wg.Wait()
	t.Logf("dockerd took %s to stop, was down %s; after it answered again every session recovered within %s (%s after the stop)",
		down.Sub(stopped).Round(time.Millisecond), up.Sub(down).Round(time.Millisecond),
		recovered.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))

	checkOutageCalls(t, logs, stopped, up)
	// The containers the engine stopped on its way down must not linger beside the fresh ones.
	wctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if n, err := loadtest.WaitSandboxes(wctx, srv.PID(), sessions); err != nil {
		list, _ := loadtest.Sandboxes(t.Context(), srv.PID())
		t.Errorf("the server has %d sandbox containers after the restart, want %d (one per session): %v\n%+v", n, sessions, err, list)
	}
	for _, s := range all {
		if got := mustCall(t, s, "file_operation", map[string]any{"operation": "exists", "file_path": "old.txt"}); !strings.Contains(got, "does not exist") {
			t.Errorf("after the restart a session still sees its old sandbox's file: %q", got)
		}
	}
}

// checkOutageCalls asserts that every call returned on its own (no client-side deadline),
// that every failure came back as a tool result saying what is wrong, and that the outage
// was seen at all.
func checkOutageCalls(t *testing.T, logs []*callLog, from, to time.Time) {
	t.Helper()
	var total, failedInOutage int
	var slowest time.Duration
	messages := map[string]int{} // distinct failure messages, for the log
	for i, l := range logs {
		for _, c := range l.snapshot() {
			total++
			slowest = max(slowest, c.took)
			if c.err != nil {
				t.Errorf("session %d: a call at %s failed as a call (hang or transport), not as a tool result: %v", i, c.at.Format(time.StampMilli), c.err)
				continue
			}
			if !c.isError {
				continue
			}
			if c.at.After(from) && c.at.Before(to) {
				failedInOutage++
			}
			messages[c.text]++
			if !clearFailure.MatchString(c.text) {
				t.Errorf("session %d: unclear failure message: %q", i, c.text)
			}
		}
	}
	t.Logf("%d calls in all, %d failed during the outage, the slowest took %s", total, failedInOutage, slowest.Round(time.Millisecond))
	for msg, n := range messages {
		t.Logf("%4d x %q", n, msg)
	}
	if failedInOutage == 0 {
		t.Error("no call failed while the engine was down: the outage was not observed")
	}
	if slowest >= outageBound {
		t.Errorf("a call took %s: it hung on the missing engine", slowest)
	}
}

// callRecord is one call's outcome.
type callRecord struct {
	at      time.Time
	took    time.Duration
	isError bool
	text    string
	err     error
}

// callLog records a session's calls through the outage.
type callLog struct {
	mu    sync.Mutex
	calls []callRecord
}

// run calls python in s until ctx ends, pausing briefly between calls so that an engine
// that fails fast does not turn into a busy loop.
func (l *callLog) run(ctx context.Context, s *loadtest.Session) {
	for ctx.Err() == nil {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, outageBound)
		res, err := s.Call(cctx, "python_executor", map[string]any{"code": "print('ok')"})
		cancel()
		if ctx.Err() != nil {
			return // the run ended under this call; its outcome is no evidence
		}
		l.mu.Lock()
		l.calls = append(l.calls, callRecord{at: start, took: time.Since(start), isError: res.IsError, text: res.Text, err: err})
		l.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *callLog) snapshot() []callRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]callRecord(nil), l.calls...)
}

func (l *callLog) succeededAfter(t time.Time) bool {
	for _, c := range l.snapshot() {
		if c.at.After(t) && c.err == nil && !c.isError {
			return true
		}
	}
	return false
}

// dockerdPID finds the running dockerd.
func dockerdPID() (int, error) {
	data, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		return 0, fmt.Errorf("finding dockerd: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("parsing /var/run/docker.pid: %w", err)
	}
	comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil || strings.TrimSpace(string(comm)) != "dockerd" {
		return 0, fmt.Errorf("pid %d from /var/run/docker.pid is not dockerd (%q, %v)", pid, comm, err)
	}
	return pid, nil
}

// gone reports whether pid has exited (a zombie has, even if nobody has reaped it yet).
func gone(pid int) bool {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(data), ')')
	return i < 0 || strings.HasPrefix(strings.TrimSpace(string(data[i+1:])), "Z")
}

// restartEngine starts dockerd again with the project's own script, in a session of its
// own so that a Ctrl-C of the test does not reach it.
func restartEngine(t *testing.T) {
	t.Helper()
	if err := runEnsureDocker(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// ensureEngine makes sure an engine answers when the test ends, however it ended.
func ensureEngine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if exec.CommandContext(ctx, "docker", "info").Run() == nil {
		return
	}
	if err := runEnsureDocker(ctx); err != nil {
		t.Errorf("the engine is down after the test and could not be restarted: %v", err)
	}
}

func runEnsureDocker(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.RepoRoot(), "scripts", "ensure-docker.sh"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("scripts/ensure-docker.sh: %w\n%s", err, out)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("scripts/ensure-docker.sh: %w", ctx.Err())
	}
	return nil
}
