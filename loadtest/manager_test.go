package loadtest_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestIntegrationManagerCloseLeaksNothing: a Manager that created 10 sandboxes at once and
// is then closed leaves no container on the engine and no goroutine in the process (the
// agent streams' readers, the attach copiers and the janitor all end).
//
// Not parallel, on purpose: runtime.NumGoroutine counts the whole test process, and
// parallel tests only start once every sequential one has finished.
func TestIntegrationManagerCloseLeaksNothing(t *testing.T) {
	const sandboxes = 10
	engine := testenv.Engine(t)
	testenv.RequireImage(t, engine, sandbox.DefaultImage)
	// Let the connection the engine's ping opened settle, then count.
	engine.Close()
	before := settledGoroutines()

	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(engine, sandbox.TypeDocker)},
		// A janitor that ticks: it has a goroutine of its own to stop.
		IdleTTL: time.Hour,
	})
	var wg sync.WaitGroup
	errs := make([]error, sandboxes)
	for i := range sandboxes {
		wg.Go(func() {
			_, errs[i] = m.Acquire(t.Context(), fmt.Sprintf("owner-%d", i), sandbox.TypeDocker)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("creating sandboxes: %v", err)
		}
	}
	list, err := engine.ListManaged(t.Context(), engine.Instance())
	if err != nil || len(list) != sandboxes {
		t.Fatalf("the engine shows %d containers of this manager (%v), want %d", len(list), err, sandboxes)
	}
	during := runtime.NumGoroutine()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatalf("closing the manager: %v", err)
	}
	testenv.AssertNoContainers(t, engine)
	// Idle keep-alive connections to the engine hold two goroutines each; they belong to
	// the HTTP client, which outlives the manager, so they are closed before counting.
	engine.Close()

	// Wait for the count to come back down (connections being torn down still hold their
	// goroutines for a moment); then allow a little slack for the runtime's own.
	const slack = 2
	after := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); after > before && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		after = runtime.NumGoroutine()
	}
	t.Logf("goroutines: %d before, %d with %d sandboxes, %d after Close", before, during, sandboxes, after)
	if after > before+slack {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines leaked: %d before, %d after Close\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

// settledGoroutines counts goroutines once the count stops moving (goroutines of earlier
// work may still be finishing).
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}
