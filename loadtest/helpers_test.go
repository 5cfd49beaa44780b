package loadtest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/loadtest"
)

// startServer starts `enclave-mcp serve --http` with extra serve flags. At the end of the
// test it is stopped, and none of its sandbox containers may remain; its log is printed
// when the test failed.
func startServer(t *testing.T, args ...string) *loadtest.Server {
	t.Helper()
	testenv.RequireDocker(t)
	var log syncbuf.Buffer
	srv, err := loadtest.StartServer(t.Context(), loadtest.ServerOptions{Binary: testenv.Binary(t), Args: args, Log: &log})
	if err != nil {
		t.Fatalf("starting server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = srv.Stop(ctx) // some tests have killed it already; what matters is what it left
		requireNoSandboxes(t, srv.PID())
		if t.Failed() {
			t.Logf("server %d's last log lines:\n%s", srv.PID(), log.Tail(40))
		}
	})
	return srv
}

// requireNoSandboxes fails the test when a container of the server with that pid remains
// (it waits a little: the engine removes asynchronously), and logs any other dead server's
// leftovers, which belong to other tests on this engine.
func requireNoSandboxes(t *testing.T, pid int) {
	t.Helper()
	// Not t.Context(): this also runs in cleanups, after it has ended.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if n, err := loadtest.WaitSandboxes(ctx, pid, 0); err != nil {
		t.Errorf("server %d left %d sandbox containers: %v", pid, n, err)
	}
	orphans, err := loadtest.Orphans(ctx)
	if err != nil {
		t.Errorf("listing orphans: %v", err)
	}
	for _, o := range orphans {
		t.Logf("note: container %s of dead server pid %d (%s) exists", o.Name, o.PID, o.State)
	}
}

// connect opens a session on srv, closed at the end of the test.
func connect(t *testing.T, srv *loadtest.Server, tr loadtest.Transport) *loadtest.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := loadtest.Connect(ctx, loadtest.SessionOptions{URL: srv.URL, Token: srv.Token, Transport: tr})
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// callTimeout bounds every call in these tests: a hang is a failure, never a stuck test.
const callTimeout = 60 * time.Second

// call makes one bounded tool call.
func call(ctx context.Context, s *loadtest.Session, tool string, args map[string]any) (loadtest.CallResult, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return s.Call(ctx, tool, args)
}

// callOK makes a call that has to succeed; it is safe in any goroutine.
func callOK(ctx context.Context, s *loadtest.Session, tool string, args map[string]any) error {
	res, err := call(ctx, s, tool, args)
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("%s failed: %s", tool, res.Text)
	}
	return nil
}

// mustCall makes a call that has to succeed and returns its text.
func mustCall(t *testing.T, s *loadtest.Session, tool string, args map[string]any) string {
	t.Helper()
	res, err := call(t.Context(), s, tool, args)
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	if res.IsError {
		t.Fatalf("%s failed: %s", tool, res.Text)
	}
	return res.Text
}

// onlySandbox returns the one sandbox container of the server with that pid.
func onlySandbox(t *testing.T, pid int) loadtest.Container {
	t.Helper()
	list, err := loadtest.Sandboxes(t.Context(), pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("server %d has %d sandbox containers, want 1: %v", pid, len(list), list)
	}
	return list[0]
}

// waitFor polls cond until it holds or the bound passes, and returns how long it took.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %s", what, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// running reports whether a process whose command line contains cmd runs in container id;
// a container that is gone runs nothing.
func running(ctx context.Context, id, cmd string) bool {
	procs, err := loadtest.ContainerProcesses(ctx, id)
	return err == nil && slices.ContainsFunc(procs, func(p string) bool { return strings.Contains(p, cmd) })
}
