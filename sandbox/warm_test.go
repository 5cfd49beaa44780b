package sandbox

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// warmCreator wraps fakeCreator and records what the warm pool asks of it: the owners it
// creates for and how many pool refills run at once.
type warmCreator struct {
	fakeCreator
	refilling, maxRefilling atomic.Int32
	mu                      sync.Mutex
	owners                  map[string]string // sandbox id -> owner it was created for
}

func (c *warmCreator) create(ctx context.Context, owner string, cfg Resolved) (Sandbox, error) {
	if owner == "" {
		n := c.refilling.Add(1)
		defer c.refilling.Add(-1)
		for {
			m := c.maxRefilling.Load()
			if n <= m || c.maxRefilling.CompareAndSwap(m, n) {
				break
			}
		}
	}
	sb, err := c.fakeCreator.create(ctx, owner, cfg)
	if err == nil {
		c.mu.Lock()
		if c.owners == nil {
			c.owners = map[string]string{}
		}
		c.owners[sb.ID()] = owner
		c.mu.Unlock()
	}
	return sb, err
}

func (c *warmCreator) sandboxes() []*fakeSandbox {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fakeCreator.mu.Lock()
	defer c.fakeCreator.mu.Unlock()
	return append([]*fakeSandbox(nil), c.made...)
}

func newWarmManager(t *testing.T, c *warmCreator, size int, opts ...func(*ManagerOptions)) *Manager {
	t.Helper()
	o := ManagerOptions{Creators: map[Type]Creator{TypeDocker: c.create}, Warm: map[Type]int{TypeDocker: size}}
	for _, f := range opts {
		f(&o)
	}
	m := NewManager(o)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

// warmOf returns the docker type's warm numbers.
func warmOf(m *Manager) WarmStats {
	for _, w := range m.Stats().Warm {
		if w.Type == TypeDocker {
			return w
		}
	}
	return WarmStats{}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitSpares(t *testing.T, m *Manager, n int) {
	t.Helper()
	waitFor(t, "the warm pool to fill", func() bool { w := warmOf(m); return w.Spare == n && w.Filling == 0 })
}

func TestWarmHitRefills(t *testing.T) {
	t.Parallel()
	c := &warmCreator{fakeCreator: fakeCreator{delay: 5 * time.Millisecond}}
	m := newWarmManager(t, c, 2)
	waitSpares(t, m, 2)
	ctx := context.Background()

	for i, owner := range []string{"a", "b", "c", "d", "e"} {
		sb, err := m.Acquire(ctx, owner, TypeDocker)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.GetOwned(owner, sb.ID()); err != nil {
			t.Fatalf("acquire %d: the pooled sandbox is not recorded as %s's: %v", i, owner, err)
		}
		c.mu.Lock()
		createdFor := c.owners[sb.ID()]
		c.mu.Unlock()
		if createdFor != "" {
			t.Fatalf("acquire %d was not a hit: created for %q", i, createdFor)
		}
		waitSpares(t, m, 2) // back to the size and no further
	}
	w := warmOf(m)
	if w.Hits != 5 || w.Misses != 0 || w.Size != 2 {
		t.Errorf("warm stats = %+v, want 5 hits, no misses, size 2", w)
	}
	if got := len(c.sandboxes()); got != 7 {
		t.Errorf("created %d sandboxes, want 5 handed out + 2 spares", got)
	}
	if got := c.maxRefilling.Load(); got > 2 {
		t.Errorf("%d refills ran at once, want at most the 2 the pool was short of", got)
	}
	if w.AcquireWarm.Count != 5 || w.AcquireWarm.P50MS > 5 {
		t.Errorf("warm acquire latency = %+v", w.AcquireWarm)
	}
	if st := m.Stats(); st.Total != 5 {
		t.Errorf("Stats.Total = %d: spares must not be counted as tracked sandboxes", st.Total)
	}
	if got := len(m.ListOwned("")); got != 0 {
		t.Errorf("the empty owner owns %d sandboxes", got)
	}
}

// TestWarmMissWaitsForTheRefill: a session that finds the pool empty while a refill is
// under way is served by that refill rather than creating a sandbox of its own.
func TestWarmMissWaitsForTheRefill(t *testing.T) {
	t.Parallel()
	c := &warmCreator{fakeCreator: fakeCreator{delay: 100 * time.Millisecond}}
	m := newWarmManager(t, c, 1)
	waitFor(t, "the first refill under way", func() bool { return warmOf(m).Filling == 1 })
	sb, err := m.Acquire(context.Background(), "a", TypeDocker) // the first refill is still under way
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	createdFor := c.owners[sb.ID()]
	c.mu.Unlock()
	if createdFor != "" {
		t.Fatalf("a miss must wait for the pool's refill; created for %q", createdFor)
	}
	if _, err := m.GetOwned("a", sb.ID()); err != nil {
		t.Fatalf("the refill handed to a is not a's: %v", err)
	}
	w := warmOf(m)
	if w.Misses != 1 || w.Waited != 1 || w.Hits != 0 || w.AcquireCold.Count != 1 || w.AcquireCold.P50MS < 50 {
		t.Errorf("warm stats = %+v", w)
	}
	waitSpares(t, m, 1)
}

func TestWarmDeadSpareIsReplaced(t *testing.T) {
	t.Parallel()
	c := &warmCreator{}
	m := newWarmManager(t, c, 2)
	waitSpares(t, m, 2)
	spares := c.sandboxes()
	spares[0].dead.Store(true) // the oldest, which goes out first

	sb, err := m.Acquire(context.Background(), "a", TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID() != spares[1].id {
		t.Fatalf("got %s, want the live spare %s", sb.ID(), spares[1].id)
	}
	waitFor(t, "the dead spare to be removed", spares[0].closed.Load)
	waitSpares(t, m, 2)
	if w := warmOf(m); w.Dead != 1 || w.Hits != 1 {
		t.Errorf("warm stats = %+v, want 1 dead, 1 hit", w)
	}

	// Every spare dead: the session's sandbox is created cold.
	for _, s := range c.sandboxes() {
		s.dead.Store(true)
	}
	sb, err = m.Acquire(context.Background(), "b", TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	if !isAlive(sb) {
		t.Fatal("handed out a dead sandbox")
	}
	if w := warmOf(m); w.Misses != 1 || w.Dead < 3 {
		t.Errorf("warm stats = %+v, want a miss after the dead ones", w)
	}
}

func TestWarmSandboxServesOneOwner(t *testing.T) {
	t.Parallel()
	c := &warmCreator{}
	m := newWarmManager(t, c, 1)
	ctx := context.Background()
	waitSpares(t, m, 1)
	a, err := m.Acquire(ctx, "a", TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetOwned("b", a.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("another owner reaches a's pooled sandbox: %v", err)
	}
	if err := m.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if !a.(*fakeSandbox).closed.Load() {
		t.Fatal("a pooled sandbox must be destroyed when its owner releases it")
	}
	waitSpares(t, m, 1)
	b, err := m.Acquire(ctx, "b", TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID() == a.ID() {
		t.Fatal("a pooled sandbox was handed to a second owner")
	}
}

func TestWarmSparesYieldToSessionsAtTheCap(t *testing.T) {
	t.Parallel()
	c := &warmCreator{}
	m := newWarmManager(t, c, 2, func(o *ManagerOptions) { o.MaxSandboxes = 2 })
	ctx := context.Background()
	waitSpares(t, m, 2)
	spares := c.sandboxes()

	// A create of another config than the pool's is not served by it, but a spare makes room.
	x, err := m.Create(ctx, "x", TypeDocker, Config{Timeout: 5})
	if err != nil {
		t.Fatalf("a session was refused because of spares: %v", err)
	}
	waitFor(t, "the evicted spare to be removed", spares[0].closed.Load)
	if w := warmOf(m); w.Evicted != 1 || w.Spare != 1 {
		t.Fatalf("warm stats = %+v, want 1 evicted, 1 spare", w)
	}
	if _, err := m.Acquire(ctx, "y", TypeDocker); err != nil { // the last spare
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, "z", TypeDocker, Config{Timeout: 5}); !errors.Is(err, ErrLimit) {
		t.Fatalf("past the cap with no spare left = %v, want ErrLimit", err)
	}
	time.Sleep(20 * time.Millisecond)
	if w := warmOf(m); w.Spare+w.Filling != 0 {
		t.Fatalf("the pool refilled past the cap: %+v", w)
	}

	// Room opens: the pool refills.
	if err := m.Delete(ctx, x.ID()); err != nil {
		t.Fatal(err)
	}
	waitSpares(t, m, 1)
}

func TestWarmPerOwnerCapOnHandOut(t *testing.T) {
	t.Parallel()
	c := &warmCreator{}
	m := newWarmManager(t, c, 1, func(o *ManagerOptions) { o.MaxPerOwner = 1 })
	ctx := context.Background()
	waitSpares(t, m, 1)
	if _, err := m.Create(ctx, "a", TypeDocker, Config{Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Acquire(ctx, "a", TypeDocker); !errors.Is(err, ErrLimit) {
		t.Fatalf("Acquire past the per-owner cap = %v, want ErrLimit", err)
	}
	if w := warmOf(m); w.Spare != 1 {
		t.Errorf("a refused hand-out lost the spare: %+v", w)
	}
}

func TestWarmSparesAreNotIdleExpired(t *testing.T) {
	t.Parallel()
	c := &warmCreator{}
	m := newWarmManager(t, c, 1, func(o *ManagerOptions) { o.IdleTTL, o.MaxLifetime = 300*time.Millisecond, 300*time.Millisecond })
	waitSpares(t, m, 1)
	spare := c.sandboxes()[0]
	spare.lastUsed.Store(time.Now().Add(-time.Hour).UnixNano())
	spare.created.Store(time.Now().Add(-time.Hour).UnixNano())
	time.Sleep(400 * time.Millisecond) // past both, with the janitor ticking every 75ms
	if spare.closed.Load() {
		t.Fatal("the janitor removed a spare")
	}
	sb, err := m.Acquire(context.Background(), "a", TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID() != spare.id {
		t.Fatal("want the old spare handed out")
	}
	time.Sleep(150 * time.Millisecond)
	if spare.closed.Load() {
		t.Fatal("a sandbox was expired right after its hand-out: its clocks must start there")
	}
	waitFor(t, "the handed-out sandbox to idle out", spare.closed.Load)
}

func TestWarmCloseRemovesSpares(t *testing.T) {
	t.Parallel()
	c := &warmCreator{fakeCreator: fakeCreator{delay: 30 * time.Millisecond}}
	m := NewManager(ManagerOptions{Creators: map[Type]Creator{TypeDocker: c.create}, Warm: map[Type]int{TypeDocker: 3}})
	waitSpares(t, m, 3)
	ctx := context.Background()
	if _, err := m.Acquire(ctx, "a", TypeDocker); err != nil { // and a refill starts
		t.Fatal(err)
	}
	start := time.Now()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %s", time.Since(start))
	for _, sb := range c.sandboxes() {
		if !sb.closed.Load() {
			t.Errorf("sandbox %s survived Close", sb.id)
		}
	}
	if w := warmOf(m); w.Spare != 0 || w.Filling != 0 {
		t.Errorf("warm stats after Close = %+v", w)
	}
}

func TestWarmRefillFailureBacksOff(t *testing.T) {
	t.Parallel()
	c := &warmCreator{fakeCreator: fakeCreator{failing: true}}
	m := newWarmManager(t, c, 1)
	waitFor(t, "a refill failure", func() bool { return warmOf(m).RefillFailures >= 1 })
	time.Sleep(100 * time.Millisecond)
	if n := warmOf(m).RefillFailures; n > 1 {
		t.Errorf("%d refill failures within 100ms: no back-off", n)
	}
	if _, err := m.Acquire(context.Background(), "a", TypeDocker); err == nil {
		t.Error("want the engine's error from the cold path")
	}
	c.fakeCreator.mu.Lock()
	c.failing = false
	c.fakeCreator.mu.Unlock()
	waitSpares(t, m, 1)
}
