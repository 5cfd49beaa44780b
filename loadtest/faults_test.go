package loadtest_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/loadtest"
)

// These tests break things under a running server and check that it recovers and leaks
// nothing. Time bounds are generous on purpose (this is a 2-core machine shared with other
// tests); the measured times are logged.

// TestIntegrationServerKilled: a server killed with SIGKILL mid-load leaves nothing behind
// once the next server has started (its agents exit when their attach streams close, and
// the next server's start reaps what remains), while a live server's sandbox is untouched.
func TestIntegrationServerKilled(t *testing.T) {
	t.Parallel()
	bystander := startServer(t)
	bs := connect(t, bystander, loadtest.Streamable)
	mustCall(t, bs, "file_operation", map[string]any{"operation": "write", "file_path": "keep.txt", "content": "still here"})
	before := onlySandbox(t, bystander.PID())

	victim := startServer(t)
	ctx, stopLoad := context.WithCancel(t.Context())
	defer stopLoad()
	const sessions = 4
	var (
		wg     sync.WaitGroup
		loaded sync.WaitGroup // every session has had a call of the load succeed
		counts [sessions]loadCount
	)
	loaded.Add(sessions)
	for i := range sessions {
		s := connect(t, victim, loadtest.Streamable)
		mustCall(t, s, "python_executor", map[string]any{"code": "print('sandbox up')"})
		wg.Go(func() { counts[i] = hammer(ctx, s, sync.OnceFunc(loaded.Done)) })
	}
	allLoaded := make(chan struct{})
	go func() { loaded.Wait(); close(allLoaded) }()
	select { // calls are then in flight in every session
	case <-allLoaded:
	case <-time.After(time.Minute):
		t.Fatal("not every session had a call succeed within a minute")
	}
	// One sandbox is frozen first: its agent cannot exit when the server dies, so it stays
	// behind for the next server's start to reap.
	frozen := onlyOf(t, victim.PID(), sessions)
	if err := loadtest.PauseContainer(t.Context(), frozen.ID); err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	killed := time.Now()
	stopLoad()
	wg.Wait()
	for i, c := range counts {
		t.Logf("session %d on the killed server: %d calls succeeded before the kill, %d failed", i, c.ok, c.failed)
		if c.ok == 0 {
			t.Errorf("session %d made no successful call before the kill: the kill was not mid-load", i)
		}
	}

	selfExit := waitFor(t, 20*time.Second, "the killed server's agents exit by themselves", func() bool {
		list, err := loadtest.Sandboxes(t.Context(), victim.PID())
		return err == nil && len(list) == 1 && list[0].ID == frozen.ID
	})
	t.Logf("%d of the killed server's %d sandboxes were gone %s after the kill (their agents exited); the frozen one stays",
		sessions-1, sessions, selfExit.Round(time.Millisecond))

	successor := startServer(t)
	reaped := waitFor(t, 30*time.Second, "the successor reaps the frozen sandbox", func() bool {
		list, err := loadtest.Sandboxes(t.Context(), victim.PID())
		return err == nil && len(list) == 0
	})
	t.Logf("the successor's start reaped the frozen sandbox (%s after it answered, %s after the kill)",
		reaped.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))

	after := onlySandbox(t, bystander.PID())
	if after.ID != before.ID || after.State != "running" {
		t.Errorf("the live server's sandbox was touched: before %s (%s), after %s (%s)", before.ID[:12], before.State, after.ID[:12], after.State)
	}
	if got := mustCall(t, bs, "python_executor", map[string]any{"code": "print(open('keep.txt').read())"}); !strings.Contains(got, "still here") {
		t.Errorf("the live server's sandbox lost its file: %q", got)
	}
	ss := connect(t, successor, loadtest.Streamable)
	if got := mustCall(t, ss, "python_executor", map[string]any{"code": loadtest.DefaultCode}); !strings.Contains(got, loadtest.DefaultWant) {
		t.Errorf("the successor answered %q", got)
	}
}

// onlyOf returns one of the n sandbox containers of the server with that pid.
func onlyOf(t *testing.T, pid, n int) loadtest.Container {
	t.Helper()
	list, err := loadtest.Sandboxes(t.Context(), pid)
	if err != nil || len(list) != n {
		t.Fatalf("server %d has %d sandbox containers (%v), want %d", pid, len(list), err, n)
	}
	return list[0]
}

// loadCount counts a hammering session's calls.
type loadCount struct{ ok, failed int }

// hammer calls python in s, one call after another, until ctx ends; succeeded runs after
// each call that succeeds.
func hammer(ctx context.Context, s *loadtest.Session, succeeded func()) loadCount {
	var n loadCount
	for ctx.Err() == nil {
		if err := callOK(ctx, s, "python_executor", map[string]any{"code": "print('ok')"}); err != nil {
			n.failed++
		} else {
			n.ok++
			succeeded()
		}
	}
	return n
}

// TestIntegrationContainerKilledMidCall: a sandbox container killed behind the server's back
// during a call fails that call with a message saying so, and the session's next call runs
// in a fresh sandbox.
func TestIntegrationContainerKilledMidCall(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	s := connect(t, srv, loadtest.Streamable)
	mustCall(t, s, "file_operation", map[string]any{"operation": "write", "file_path": "before.txt", "content": "x"})
	old := onlySandbox(t, srv.PID())

	type outcome struct {
		res loadtest.CallResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := call(t.Context(), s, "shell_executor", map[string]any{"command": "sleep 300", "timeout": 300})
		done <- outcome{res, err}
	}()
	waitFor(t, 20*time.Second, "sleep runs in the sandbox", func() bool { return running(t.Context(), old.ID, "sleep 300") })
	killed := time.Now()
	if err := loadtest.KillContainer(t.Context(), old.ID); err != nil {
		t.Fatal(err)
	}
	var got outcome
	select {
	case got = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the call did not return within 20 s of its container being killed")
	}
	t.Logf("the call returned %s after `docker kill` began: isError=%v %q", time.Since(killed).Round(time.Millisecond), got.res.IsError, got.res.Text)
	if got.err != nil {
		t.Fatalf("the call failed as a call, not as a tool result: %v", got.err)
	}
	if !got.res.IsError || !strings.Contains(got.res.Text, "not running") || !strings.Contains(got.res.Text, "fresh sandbox") {
		t.Errorf("want isError saying the sandbox is not running and the next call starts a fresh one; got isError=%v %q", got.res.IsError, got.res.Text)
	}

	if got := mustCall(t, s, "file_operation", map[string]any{"operation": "exists", "file_path": "before.txt"}); !strings.Contains(got, "does not exist") {
		t.Errorf("the fresh sandbox has the old one's file: %q", got)
	}
	if fresh := onlySandbox(t, srv.PID()); fresh.ID == old.ID {
		t.Errorf("the next call ran in the killed container %s", old.ID[:12])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	requireNoSandboxes(t, srv.PID())
}

// TestIntegrationClientVanishesMidCall: a client that dies during a call (its connections
// just close: no cancellation, no DELETE) gets its process killed and its sandbox removed;
// over SSE when the stream drops, over streamable HTTP at the latest after the idle TTL.
func TestIntegrationClientVanishesMidCall(t *testing.T) {
	t.Parallel()
	testenv.RequireDocker(t)
	const ttl = 3 * time.Second
	tests := []struct {
		transport loadtest.Transport
		// reapBound bounds the time from the disconnect until the sandbox is gone.
		reapBound time.Duration
	}{
		{loadtest.SSE, 10 * time.Second},
		{loadtest.Streamable, ttl + 15*time.Second},
	}
	for _, tc := range tests {
		t.Run(string(tc.transport), func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, "--session-ttl", ttl.String())
			s := connect(t, srv, tc.transport)
			mustCall(t, s, "shell_executor", map[string]any{"command": "echo ready"})
			sb := onlySandbox(t, srv.PID())
			go func() { // its outcome is nobody's: the client is dead by then
				_, _ = call(context.WithoutCancel(t.Context()), s, "shell_executor", map[string]any{"command": "sleep 300", "timeout": 300})
			}()
			waitFor(t, 20*time.Second, "sleep runs in the sandbox", func() bool { return running(t.Context(), sb.ID, "sleep 300") })

			s.Abort()
			// Well before the sleep (300 s) or the call's timeout could end it.
			killed := waitFor(t, 20*time.Second, "the call's process is killed", func() bool { return !running(t.Context(), sb.ID, "sleep 300") })
			reaped := waitFor(t, tc.reapBound, "the sandbox is removed", func() bool {
				list, err := loadtest.Sandboxes(t.Context(), srv.PID())
				return err == nil && len(list) == 0
			})
			t.Logf("%s: process gone %s after the disconnect, sandbox gone after %s (session TTL %s)",
				tc.transport, killed.Round(time.Millisecond), (killed + reaped).Round(time.Millisecond), ttl)

			again := connect(t, srv, tc.transport)
			mustCall(t, again, "shell_executor", map[string]any{"command": "echo still serving"})
		})
	}
}

// TestIntegrationGracefulShutdown: a server holding 10 sandboxes exits on SIGTERM or SIGINT
// and its sandboxes are all gone soon after (it hands their removal to the engine, which
// removes each once its agent has exited), in well under the 101 s the Python server takes.
func TestIntegrationGracefulShutdown(t *testing.T) {
	t.Parallel()
	testenv.RequireDocker(t)
	const sandboxes = 10
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			srv := startServer(t)
			var wg sync.WaitGroup
			errs := make([]error, sandboxes)
			for i := range sandboxes {
				s := connect(t, srv, loadtest.Streamable)
				wg.Go(func() { errs[i] = callOK(t.Context(), s, "shell_executor", map[string]any{"command": "true"}) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			if list, err := loadtest.Sandboxes(t.Context(), srv.PID()); err != nil || len(list) != sandboxes {
				t.Fatalf("have %d sandbox containers (%v), want %d", len(list), err, sandboxes)
			}

			start := time.Now()
			if err := srv.Signal(sig); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := srv.Wait(ctx); err != nil {
				t.Fatalf("after %s: %v", sig, err)
			}
			exited := time.Since(start)
			if n, err := loadtest.WaitSandboxes(ctx, srv.PID(), 0); err != nil {
				t.Fatalf("%d sandboxes left after %s: %v", n, sig, err)
			}
			gone := time.Since(start)
			t.Logf("%s with %d sandboxes: server exited after %s, every container gone after %s",
				sig, sandboxes, exited.Round(time.Millisecond), gone.Round(time.Millisecond))
			if gone > 10*time.Second {
				t.Errorf("shutdown took %s, want well under 10 s", gone)
			}
		})
	}
}
