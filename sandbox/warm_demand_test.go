package sandbox_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// gatedRefills creates sandboxes on the process backend. A warm pool's refills (created for
// no owner) wait for a permit, and fail instead when fail is set; an owner's own creations
// go straight through. It counts the refills under way and the most seen at once.
type gatedRefills struct {
	create      sandbox.Creator
	permits     chan struct{}
	fail        atomic.Bool
	inFlight    atomic.Int32
	maxInFlight atomic.Int32
}

func newGatedRefills(t *testing.T) (*gatedRefills, sandbox.Backend) {
	b := testenv.Process(t)
	return &gatedRefills{create: sandbox.NewCreator(b, sandbox.TypeDocker), permits: make(chan struct{}, 100)}, b
}

func (g *gatedRefills) creator(ctx context.Context, owner string, cfg sandbox.Resolved) (sandbox.Sandbox, error) {
	if owner != "" {
		return g.create(ctx, owner, cfg)
	}
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for m := g.maxInFlight.Load(); n > m && !g.maxInFlight.CompareAndSwap(m, n); m = g.maxInFlight.Load() {
	}
	select {
	case <-g.permits:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if g.fail.Load() {
		return nil, errors.New("engine down")
	}
	return g.create(ctx, owner, cfg)
}

// allow lets n refills through.
func (g *gatedRefills) allow(n int) {
	for range n {
		g.permits <- struct{}{}
	}
}

func demandManager(t *testing.T, g *gatedRefills, lo, hi, fillWorkers int) *sandbox.Manager {
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators:    map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: g.creator},
		Warm:        map[sandbox.Type]int{sandbox.TypeDocker: lo},
		WarmMax:     map[sandbox.Type]int{sandbox.TypeDocker: hi},
		WarmIdle:    time.Hour, // the test decides when the pool is idle: WarmIdleTick
		FillWorkers: fillWorkers,
	})
	t.Cleanup(func() {
		g.allow(100) // refills still waiting for a permit finish, and Close removes them
		if err := m.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return m
}

func dockerPool(m *sandbox.Manager) sandbox.WarmStats {
	for _, w := range m.Stats().Warm {
		if w.Type == sandbox.TypeDocker {
			return w
		}
	}
	return sandbox.WarmStats{}
}

// result is what a caller in a goroutine got.
type result struct {
	sb  sandbox.Sandbox
	err error
}

// TestWarmPoolGrowsWithDemandAndShrinksWhenIdle drives a pool of minimum 1 and maximum 3
// through a burst: each caller that finds no spare raises the target by one (up to the
// maximum) and waits, in line, for a refill under way that no earlier caller waits for, or
// creates its own when there is none; refills run in parallel, never more than
// FillWorkers; once the burst is served the pool fills to its grown target; idle, it drops
// back to its minimum and removes the spares past it.
func TestWarmPoolGrowsWithDemandAndShrinksWhenIdle(t *testing.T) {
	g, backend := newGatedRefills(t)
	const fillWorkers = 4
	m := demandManager(t, g, 1, 3, fillWorkers)
	ctx := t.Context()
	g.allow(1)
	testwait.Until(t, 10*time.Second, "the first spare", func() bool { w := dockerPool(m); return w.Spare == 1 && w.Filling == 0 })

	a, err := m.Acquire(ctx, "a", sandbox.TypeDocker) // a hit; its refill waits for a permit
	if err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 5*time.Second, "a's refill under way", func() bool { return g.inFlight.Load() == 1 })

	// The burst: a REST-style Create of the default config and two sessions find no spare.
	got := map[string]chan result{}
	start := func(owner string, create bool) {
		ch := make(chan result, 1)
		got[owner] = ch
		go func() {
			var r result
			if create {
				r.sb, r.err = m.Create(ctx, owner, sandbox.TypeDocker, sandbox.Config{})
			} else {
				r.sb, r.err = m.Acquire(ctx, owner, sandbox.TypeDocker)
			}
			ch <- r
		}()
	}
	start("b", true)
	testwait.Until(t, 5*time.Second, "b waiting, the target raised to 2", func() bool {
		w := dockerPool(m)
		return w.Waiting == 1 && w.Size == 2 && w.Filling == 3 // 2 spares wanted + b - 0 ready
	})
	start("c", false)
	testwait.Until(t, 5*time.Second, "c waiting, the target at the maximum", func() bool {
		w := dockerPool(m)
		return w.Waiting == 2 && w.Size == 3 && w.Filling == fillWorkers
	})
	start("d", false)
	testwait.Until(t, 5*time.Second, "d waiting", func() bool { return dockerPool(m).Waiting == 3 })
	start("e", false)
	testwait.Until(t, 5*time.Second, "e waiting for the last refill under way", func() bool { return dockerPool(m).Waiting == 4 })
	if w := dockerPool(m); w.Size != 3 || w.Peak != 3 || w.Misses != 4 || w.Hits != 1 {
		t.Fatalf("after the burst: %+v; want the target held at the maximum 3, 4 misses, 1 hit", w)
	}
	if g.inFlight.Load() > fillWorkers {
		t.Fatalf("%d refills under way, more than FillWorkers %d", g.inFlight.Load(), fillWorkers)
	}
	// Every refill under way is someone's: the next caller creates its own at once.
	start("f", false)
	if r := <-got["f"]; r.err != nil || r.sb.Info().Owner != "f" {
		t.Fatalf("f, with every refill taken: %v, created for %q; want its own sandbox", r.err, r.sb.Info().Owner)
	}

	g.allow(4 + 3) // the four waiters, then three spares
	for _, owner := range []string{"b", "c", "d", "e"} {
		r := <-got[owner]
		if r.err != nil {
			t.Fatalf("%s: %v", owner, r.err)
		}
		if info := r.sb.Info(); info.Owner != "" { // made by a refill, not by the caller
			t.Errorf("%s's sandbox was created for %q: a waiter must be served by the pool", owner, info.Owner)
		}
		if _, err := m.GetOwned(owner, r.sb.ID()); err != nil {
			t.Errorf("%s does not own the sandbox it was handed: %v", owner, err)
		}
		res, err := r.sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"echo", owner}}, nil)
		if err != nil || res.Stdout != owner+"\n" {
			t.Errorf("%s's sandbox: %+v %v", owner, res, err)
		}
	}
	testwait.Until(t, 10*time.Second, "the pool full at its grown target", func() bool {
		w := dockerPool(m)
		return w.Spare == 3 && w.Filling == 0
	})
	w := dockerPool(m)
	if w.Waited != 4 || w.Hits != 1 || w.Misses != 5 {
		t.Errorf("stats %+v: want 5 misses, 4 of them served by the pool, 1 hit", w)
	}
	if n := g.maxInFlight.Load(); n > fillWorkers {
		t.Errorf("%d refills ran at once, more than FillWorkers %d", n, fillWorkers)
	}

	// Not idle yet: nothing changes. Idle: back to the minimum, the two oldest spares gone.
	m.WarmIdleTick(sandbox.TypeDocker, time.Now())
	if w := dockerPool(m); w.Size != 3 || w.Spare != 3 {
		t.Fatalf("a pool used a moment ago shrank: %+v", w)
	}
	m.WarmIdleTick(sandbox.TypeDocker, time.Now().Add(2*time.Hour))
	if w := dockerPool(m); w.Size != 1 || w.Spare != 1 || w.Shrinks != 1 || w.Min != 1 || w.Max != 3 {
		t.Fatalf("after the idle tick: %+v; want back to 1 spare", w)
	}
	testwait.Until(t, 10*time.Second, "the spares past the minimum removed", func() bool {
		list, err := backend.List(context.Background(), map[string]string{sandbox.LabelInstance: backend.Identity().ID})
		return err == nil && len(list) == 6+1 // a to f and one spare
	})
	if err := m.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetOwned("a", a.ID()); err == nil {
		t.Error("a's sandbox outlived its release")
	}
}

// TestWarmPoolWaiterFallsBack: a caller waiting for the pool creates its own sandbox when
// the refill it waits for fails.
func TestWarmPoolWaiterFallsBack(t *testing.T) {
	g, _ := newGatedRefills(t)
	g.fail.Store(true)
	m := demandManager(t, g, 1, 2, 2) // its first refill waits for a permit, and fails
	ctx := t.Context()
	testwait.Until(t, 5*time.Second, "the first refill under way", func() bool { return g.inFlight.Load() == 1 })

	done := make(chan result, 1)
	go func() {
		sb, err := m.Acquire(ctx, "a", sandbox.TypeDocker)
		done <- result{sb, err}
	}()
	testwait.Until(t, 5*time.Second, "a waiting for the pool", func() bool { return dockerPool(m).Waiting == 1 })
	g.allow(1) // the refill fails
	r := <-done
	if r.err != nil {
		t.Fatalf("a waiter whose refill failed = %v, want its own sandbox", r.err)
	}
	if r.sb.Info().Owner != "a" {
		t.Errorf("a's sandbox was created for %q, want a cold create for a", r.sb.Info().Owner)
	}
	if w := dockerPool(m); w.RefillFailures != 1 || w.Waited != 0 || w.Misses != 1 {
		t.Errorf("stats %+v: want 1 failed refill, a miss served cold", w)
	}

}

// TestWarmPoolWaiterGivesUp: a caller whose context ends while it waits for the pool leaves
// the line with the context's error; the sandbox then made for it becomes a spare.
func TestWarmPoolWaiterGivesUp(t *testing.T) {
	g, _ := newGatedRefills(t)
	m := demandManager(t, g, 1, 1, 1) // its first refill waits for a permit
	testwait.Until(t, 5*time.Second, "the first refill under way", func() bool { return g.inFlight.Load() == 1 })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := m.Acquire(ctx, "b", sandbox.TypeDocker)
		done <- err
	}()
	testwait.Until(t, 5*time.Second, "b waiting, its refill under way", func() bool {
		return dockerPool(m).Waiting == 1 && g.inFlight.Load() == 1
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a waiter whose context ended = %v, want context.Canceled", err)
	}
	if w := dockerPool(m); w.Waiting != 0 {
		t.Fatalf("the waiter that gave up is still in line: %+v", w)
	}
	g.allow(1)
	testwait.Until(t, 10*time.Second, "the refill kept as a spare", func() bool { w := dockerPool(m); return w.Spare == 1 && w.Filling == 0 })
	if got := len(m.ListOwned("b")); got != 0 {
		t.Errorf("b owns %d sandboxes after giving up", got)
	}
}

// TestWarmPoolServesOnlyItsProfile: a Create whose resolved config is the pool's is served
// from a spare; one with another config is created cold and leaves the spares alone.
func TestWarmPoolServesOnlyItsProfile(t *testing.T) {
	g, _ := newGatedRefills(t)
	m := demandManager(t, g, 1, 1, 2)
	ctx := t.Context()
	g.allow(1)
	testwait.Until(t, 10*time.Second, "the spare", func() bool { return dockerPool(m).Spare == 1 })

	other, err := m.Create(ctx, "x", sandbox.TypeDocker, sandbox.Config{Timeout: 5})
	if err != nil {
		t.Fatal(err)
	}
	if other.Info().Owner != "x" || dockerPool(m).Spare != 1 || dockerPool(m).Hits != 0 {
		t.Fatalf("a create of another config took from the pool: owner %q, %+v", other.Info().Owner, dockerPool(m))
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		same, err := m.Create(ctx, "y", sandbox.TypeDocker, sandbox.Config{Image: sandbox.DefaultImage}) // the default, spelt out
		if err != nil {
			t.Error(err)
			return
		}
		if same.Info().Owner != "" {
			t.Errorf("a create of the pool's profile was made cold, for %q", same.Info().Owner)
		}
	})
	wg.Wait()
	if w := dockerPool(m); w.Hits != 1 {
		t.Errorf("stats %+v: want the profile's create as a hit", w)
	}
}

// TestWarmPoolReserve: a pool's reserve fills once the pool holds its target and is calm,
// one creation at a time, each reserve spare warmed up by WarmUpReserve and the pool's own
// by WarmUp; hand-outs take the pool's own spares first, then the reserve's; the reserve
// grows back only after the pool's target is made again.
func TestWarmPoolReserve(t *testing.T) {
	g, _ := newGatedRefills(t)
	var mu sync.Mutex
	warmed := map[string]string{} // sandbox id -> "full" or "reserve"
	warmUp := func(kind string) func(context.Context, sandbox.Sandbox, sandbox.Resolved) error {
		return func(_ context.Context, sb sandbox.Sandbox, _ sandbox.Resolved) error {
			mu.Lock()
			defer mu.Unlock()
			warmed[sb.ID()] = kind
			return nil
		}
	}
	kind := func(sb sandbox.Sandbox) string {
		mu.Lock()
		defer mu.Unlock()
		return warmed[sb.ID()]
	}
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators:      map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: g.creator},
		Warm:          map[sandbox.Type]int{sandbox.TypeDocker: 1},
		WarmMax:       map[sandbox.Type]int{sandbox.TypeDocker: 1},
		Reserve:       map[sandbox.Type]int{sandbox.TypeDocker: 2},
		ReserveCalm:   100 * time.Millisecond,
		WarmIdle:      time.Hour,
		FillWorkers:   4,
		WarmUp:        warmUp("full"),
		WarmUpReserve: warmUp("reserve"),
	})
	t.Cleanup(func() {
		g.allow(100)
		if err := m.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	ctx := t.Context()
	full := func() bool {
		w := dockerPool(m)
		mu.Lock()
		defer mu.Unlock()
		return w.Spare == 1 && w.Reserve == 2 && w.Filling == 0 && w.Warming == 0 && len(warmed) >= 3
	}
	g.allow(3)
	testwait.Until(t, 10*time.Second, "the spare and the reserve", full)
	if w := dockerPool(m); w.ReserveMax != 2 || w.Size != 1 {
		t.Fatalf("stats %+v: want size 1 and a reserve of 2", w)
	}
	if n := g.maxInFlight.Load(); n != 1 {
		t.Errorf("%d creations at once: the reserve grows one at a time, after the target", n)
	}

	want := []string{"full", "reserve", "reserve"}
	for i, owner := range []string{"a", "b", "c"} {
		sb, err := m.Acquire(ctx, owner, sandbox.TypeDocker)
		if err != nil {
			t.Fatal(err)
		}
		if got := kind(sb); got != want[i] {
			t.Errorf("hand-out %d: a %q spare, want %q", i+1, got, want[i])
		}
		if res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"echo", owner}}, nil); err != nil || res.Stdout != owner+"\n" {
			t.Errorf("%s's sandbox: %+v %v", owner, res, err)
		}
	}
	if w := dockerPool(m); w.Hits != 3 || w.ReserveHits != 2 || w.Misses != 0 || w.Reserve != 0 {
		t.Fatalf("after three hand-outs: %+v; want 3 hits, 2 of them from the reserve", w)
	}
	// The pool's own refill comes first, alone; the reserve's follow it, one at a time.
	testwait.Until(t, 5*time.Second, "the pool's refill waiting for the engine", func() bool { return g.inFlight.Load() == 1 })
	if w := dockerPool(m); w.Filling != 1 || w.Reserve != 0 {
		t.Fatalf("while the pool's refill is under way: %+v; want it alone", w)
	}
	g.maxInFlight.Store(0)
	g.allow(3)
	testwait.Until(t, 10*time.Second, "the spare and the reserve made again", full)
	if n := g.maxInFlight.Load(); n != 1 {
		t.Errorf("%d creations at once refilling the reserve, want 1", n)
	}
}

// TestWarmPoolReservePaced: the reserve grows only once the pool has handed nothing out for
// ReserveCalm; while a sandbox runs a call (or ran one within ReserveCalm), it starts at
// most one creation per ReserveCalm; with nothing running, one after the other.
func TestWarmPoolReservePaced(t *testing.T) {
	g, _ := newGatedRefills(t)
	g.allow(100)
	const calm = time.Hour // the test's clock: ReserveTick; the refill loop's own never gets there
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Creators:    map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: g.creator},
		Reserve:     map[sandbox.Type]int{sandbox.TypeDocker: 3},
		ReserveCalm: calm,
		WarmIdle:    time.Hour,
	})
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	ctx := t.Context()
	start := time.Now()
	// A tracked sandbox (a config other than the pool's, so made cold) running a call.
	sb, err := m.Create(ctx, "a", sandbox.TypeDocker, sandbox.Config{Timeout: 7})
	if err != nil {
		t.Fatal(err)
	}
	callCtx, endCall := context.WithCancel(ctx)
	callDone := make(chan struct{})
	go func() {
		defer close(callDone)
		_, _ = sb.Exec(callCtx, sandbox.ExecRequest{Argv: []string{"sleep", "60"}}, nil)
	}()
	testwait.Until(t, 5*time.Second, "the call running", func() bool { return sb.Info().Status == sandbox.StatusBusy })

	reserveOf := func(n int) func() bool {
		return func() bool { w := dockerPool(m); return w.Reserve == n && w.Filling == 0 }
	}
	if wait := m.ReserveTick(sandbox.TypeDocker, start.Add(calm/2)); wait <= 0 || dockerPool(m).Filling != 0 {
		t.Fatalf("half a calm period after the pool's start: wait %v, %+v; want no creation yet", wait, dockerPool(m))
	}
	at := start.Add(2 * calm)
	if wait := m.ReserveTick(sandbox.TypeDocker, at); wait != 0 {
		t.Fatalf("calm: wait %v, want a creation started", wait)
	}
	testwait.Until(t, 10*time.Second, "the first reserve spare", reserveOf(1))
	if wait := m.ReserveTick(sandbox.TypeDocker, at.Add(time.Minute)); wait <= 0 || dockerPool(m).Filling != 0 {
		t.Fatalf("a minute after the last creation, a call running: wait %v, %+v; want none started", wait, dockerPool(m))
	}
	at = at.Add(calm + time.Minute)
	if wait := m.ReserveTick(sandbox.TypeDocker, at); wait != 0 {
		t.Fatalf("a calm period after the last creation, a call running: wait %v, want a creation started", wait)
	}
	testwait.Until(t, 10*time.Second, "the second reserve spare", reserveOf(2))
	endCall()
	<-callDone
	if wait := m.ReserveTick(sandbox.TypeDocker, at.Add(time.Minute)); wait != 0 {
		t.Fatalf("nothing running for a calm period: wait %v, want the next creation at once", wait)
	}
	testwait.Until(t, 10*time.Second, "the third reserve spare", reserveOf(3))
}
