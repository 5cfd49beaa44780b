package sandbox_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// gated wraps a real sandbox: its Close says it started, then waits for the gate.
type gated struct {
	sandbox.Sandbox
	started chan<- string
	gate    <-chan struct{}
}

func (g gated) Close(ctx context.Context) error {
	g.started <- g.ID()
	<-g.gate
	return g.Sandbox.Close(ctx)
}

// listed counts the engine's containers of e's instance, by label.
func listed(t *testing.T, e *sandbox.Docker) int {
	t.Helper()
	list, err := e.ListManaged(context.Background(), e.Instance())
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// createMany creates n sandboxes of cfg on m for owners o0..o<n-1>, concurrently.
func createMany(t *testing.T, m *sandbox.Manager, n int, cfg sandbox.Config) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = m.Create(t.Context(), "o"+string(rune('a'+i)), sandbox.TypeDocker, cfg)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationCloseRemovesEverything: Close removes every sandbox of the manager, its
// warm spare included, from the engine (counted by label), a few removals at a time.
func TestIntegrationCloseRemovesEverything(t *testing.T) {
	e := testenv.Engine(t)
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators:      map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(e, sandbox.TypeDocker)},
		Warm:          map[sandbox.Type]int{sandbox.TypeDocker: 1},
		RemoveWorkers: 3,
	})
	createMany(t, m, 6, sandbox.Config{})
	testwait.Until(t, 30e9, "the warm spare", func() bool { return m.Stats().Warm[0].Spare == 1 })
	if n := listed(t, e); n != 7 {
		t.Fatalf("%d containers before Close, want 6 sandboxes and a spare", n)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := listed(t, e); n != 0 {
		t.Fatalf("%d containers left after Close returned", n)
	}
}

// TestIntegrationCloseCancelled: once Close's context ends, no further removal starts; the
// sandboxes not removed stay tracked and on the engine, Close's goroutines are gone, and a
// second Close removes them all.
func TestIntegrationCloseCancelled(t *testing.T) {
	const total, workers = 5, 2
	e := testenv.Engine(t)
	started := make(chan string, total)
	gate := make(chan struct{})
	create := sandbox.NewCreator(e, sandbox.TypeDocker)
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: func(ctx context.Context, owner string, cfg sandbox.Resolved) (sandbox.Sandbox, error) {
			sb, err := create(ctx, owner, cfg)
			if err != nil {
				return nil, err
			}
			return gated{Sandbox: sb, started: started, gate: gate}, nil
		}},
		RemoveWorkers: workers,
	})
	createMany(t, m, total, sandbox.Config{})

	ctx, cancel := context.WithCancel(context.Background())
	closed := make(chan error, 1)
	go func() { closed <- m.Close(ctx) }()
	for range workers {
		<-started
	}
	cancel()
	close(gate)
	if err := <-closed; !errors.Is(err, context.Canceled) {
		t.Fatalf("Close cut short = %v, want context.Canceled", err)
	}
	if len(started) != 0 {
		t.Fatalf("%d removals started after the cancel", len(started))
	}
	// The removals under way got the cancelled context too: they failed, and their sandboxes
	// are tracked again beside those never started.
	if n, tracked := listed(t, e), len(m.List()); n != total || tracked != total {
		t.Fatalf("after the cancel: %d containers, %d tracked; want all %d", n, tracked, total)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "(*Manager).closeSlots") {
		t.Fatalf("Close left removal goroutines behind:\n%s", stacks)
	}

	go func() {
		for range started {
		}
	}()
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(started)
	if n := listed(t, e); n != 0 {
		t.Fatalf("%d containers left after the second Close", n)
	}
}

// removeCounter is a backend that counts the removals asked of it.
type removeCounter struct {
	sandbox.Backend
	removes atomic.Int32
}

func (r *removeCounter) Remove(ctx context.Context, ref string) error {
	r.removes.Add(1)
	return r.Backend.Remove(ctx, ref)
}

// TestIntegrationHandOffRemovals: once the server is exiting, Close asks the engine for no
// removal of a sandbox the engine removes by itself (remove_on_exit, the default): it ends
// each agent's stream, and the engine then removes every container with no server left to
// ask. A sandbox kept on exit is still removed, and gone when Close returns.
func TestIntegrationHandOffRemovals(t *testing.T) {
	for _, c := range []struct {
		name         string
		removeOnExit bool
		wantRemoves  int32
	}{
		{"removed by the engine", true, 0},
		{"kept on exit: removed by Close", false, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := testenv.Engine(t)
			b := &removeCounter{Backend: e}
			m := sandbox.NewManager(sandbox.ManagerOptions{
				Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(b, sandbox.TypeDocker)},
			})
			createMany(t, m, 3, sandbox.Config{RemoveOnExit: &c.removeOnExit})
			if n := listed(t, e); n != 3 {
				t.Fatalf("%d containers before Close, want 3", n)
			}
			m.HandOffRemovals()
			if err := m.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := b.removes.Load(); got != c.wantRemoves {
				t.Errorf("Close asked the engine for %d removals, want %d", got, c.wantRemoves)
			}
			if c.wantRemoves > 0 {
				if n := listed(t, e); n != 0 {
					t.Fatalf("%d containers left after Close returned", n)
				}
				return
			}
			testwait.Until(t, 30*time.Second, "the engine removes every handed-off container", func() bool { return listed(t, e) == 0 })
		})
	}
}
