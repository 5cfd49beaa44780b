package sandbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
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
		deadline := time.Now().Add(30 * time.Second)
		for w := warm(); w.Spare < 2 || w.Filling > 0; w = warm() {
			if time.Now().After(deadline) {
				t.Fatalf("the warm pool did not fill: %+v", w)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFull()

	ctx := t.Context()
	start := time.Now()
	a, err := m.Acquire(ctx, "session-a", sandbox.TypeDocker)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warm acquire took %s", took)
	if took > 100*time.Millisecond {
		t.Errorf("warm acquire took %s, want well under 100ms", took)
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

	start = time.Now()
	closed = true
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close of 2 sessions' sandboxes and 2 spares took %s", time.Since(start))
	testenv.AssertNoContainers(t, e)
}
