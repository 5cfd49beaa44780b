package sandbox

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
)

// gatedSandbox is a fake whose Close says it started, then waits for the gate to open.
type gatedSandbox struct {
	*fakeSandbox
	started chan<- string
	gate    <-chan struct{}
}

func (g gatedSandbox) Close(ctx context.Context) error {
	g.started <- g.id
	<-g.gate
	return g.fakeSandbox.Close(ctx)
}

// TestManagerCloseBoundedAndCancellable: Close runs at most RemoveWorkers removals at once;
// once its context ends it starts no other, leaves the rest tracked and says how many, and
// returns with none of its goroutines left; a second Close removes the rest. It does not run
// in parallel with the package's other tests, whose removals would show in the goroutine dump.
func TestManagerCloseBoundedAndCancellable(t *testing.T) {
	const total, workers = 6, 2
	started := make(chan string, total)
	gate := make(chan struct{})
	var made []gatedSandbox
	create := func(context.Context, string, Resolved) (Sandbox, error) {
		sb := gatedSandbox{fakeSandbox: &fakeSandbox{id: NewID()}, started: started, gate: gate}
		made = append(made, sb)
		return sb, nil
	}
	m := NewManager(ManagerOptions{Creators: map[Type]Creator{TypeDocker: create}, RemoveWorkers: workers})
	for i := range total {
		if _, err := m.Create(context.Background(), "o", TypeDocker, Config{}); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	closed := make(chan error, 1)
	go func() { closed <- m.Close(ctx) }()
	for range workers { // the removals that fit start; the others wait for a slot
		<-started
	}
	cancel()
	close(gate)
	err := <-closed
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "4 sandboxes not removed") {
		t.Fatalf("Close cut short = %v, want context.Canceled naming the 4 left", err)
	}
	var removed atomic.Int32
	for _, sb := range made {
		if sb.closed.Load() {
			removed.Add(1)
		}
	}
	if removed.Load() != workers || len(started) != 0 {
		t.Fatalf("%d removals done and %d more started after the cancel, want %d and 0", removed.Load(), len(started), workers)
	}
	if got := len(m.List()); got != total-workers {
		t.Fatalf("%d sandboxes still tracked, want the %d not removed", got, total-workers)
	}
	if stacks := goroutines(); strings.Contains(stacks, "(*Manager).closeSlots") || strings.Contains(stacks, "(*Manager).removeSlot") {
		t.Fatalf("Close left removal goroutines behind:\n%s", stacks)
	}

	go func() { // the second Close's removals start at once now: drain their signals
		for range started {
		}
	}()
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(started)
	for _, sb := range made {
		if !sb.closed.Load() {
			t.Errorf("sandbox %s survived the second Close", sb.id)
		}
	}
	if got := len(m.List()); got != 0 {
		t.Errorf("%d sandboxes tracked after Close", got)
	}
}

// goroutines is every goroutine's stack.
func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
