package sandbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestIntegrationWarmPool: with a warm pool, a session's first sandbox comes from the pool
// in milliseconds and works; a second session gets another one; the pool refills; Close
// leaves no container behind.
func TestIntegrationWarmPool(t *testing.T) {
	e := testenv.Engine(t)
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(e, sandbox.TypeDocker)},
		Warm:     map[sandbox.Type]int{sandbox.TypeDocker: 2},
	})
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = m.Close(context.Background())
		}
	})
	warm := func() sandbox.WarmStats {
		for _, w := range m.Stats().Warm {
			if w.Type == sandbox.TypeDocker {
				return w
			}
		}
		return sandbox.WarmStats{}
	}
	waitFull := func() {
		t.Helper()
		testwait.Until(t, 30*time.Second, "the warm pool full", func() bool {
			w := warm()
			return w.Spare == 2 && w.Filling == 0
		})
	}
	waitFull()

	ctx := t.Context()
	a, err := m.Acquire(ctx, "session-a", sandbox.TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Exec(ctx, sandbox.ExecRequest{Argv: []string{"sh", "-c", "echo warm"}, TimeoutMS: 5000}, nil)
	if err != nil || res.ExitCode != 0 || res.Stdout != "warm\n" {
		t.Fatalf("exec in the pooled sandbox: %v %+v", err, res)
	}
	if _, err := m.GetOwned("session-a", a.ID()); err != nil {
		t.Errorf("the pooled sandbox is not recorded as session-a's: %v", err)
	}

	b, err := m.Acquire(ctx, "session-b", sandbox.TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID() == a.ID() {
		t.Fatal("two sessions got the same sandbox")
	}
	waitFull()
	if w := warm(); w.Hits != 2 || w.Misses != 0 {
		t.Errorf("warm stats = %+v, want 2 hits", w)
	}

	start := time.Now()
	closed = true
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close of 2 sessions' sandboxes and 2 spares took %s", time.Since(start))
	testenv.AssertNoContainers(t, e)
}

// TestIntegrationWarmPython: a pool whose WarmUp is WarmPython hands out spares whose
// resident Python interpreter was started before any call, so the session's very first
// python call is forked from it.
func TestIntegrationWarmPython(t *testing.T) {
	e := testenv.Engine(t)
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(e, sandbox.TypeDocker)},
		Warm:     map[sandbox.Type]int{sandbox.TypeDocker: 1},
		WarmUp:   sandbox.WarmPython,
	})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	testwait.Until(t, 90*time.Second, "a spare in the pool, warmed up", func() bool {
		w := m.Stats().Warm
		return len(w) == 1 && w[0].Spare == 1 && w[0].Warming == 0
	})
	ctx := t.Context()
	sb, err := m.Acquire(ctx, "session", sandbox.TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := sb.(*sandbox.AgentSandbox).AgentStats(ctx); err != nil || st.ResidentPython != 1 {
		t.Fatalf("the spare's agent: %v, %d resident interpreters, want 1", err, st.ResidentPython)
	}
	res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "-"}, Stdin: []byte("print(6 * 7)"), Fork: true, TimeoutMS: 20_000}, nil)
	if err != nil || res.ExitCode != 0 || res.Stdout != "42\n" || !res.Forked {
		t.Fatalf("the first call: %v %+v, want 42 from a forked process", err, res)
	}
}
