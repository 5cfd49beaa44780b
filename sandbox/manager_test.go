package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSandbox stands in for a container in tests of the manager's own bookkeeping; the real
// engine is exercised by the integration tests.
type fakeSandbox struct {
	id        string
	closed    atomic.Bool
	dead      atomic.Bool
	created   atomic.Int64 // unix nanoseconds
	lastUsed  atomic.Int64 // unix nanoseconds
	handedOff atomic.Bool
}

func (f *fakeSandbox) ID() string { return f.id }
func (f *fakeSandbox) Info() Info {
	return Info{ID: f.id, Status: StatusRunning, Type: TypeDocker, CreatedAt: time.Unix(0, f.created.Load()), LastUsedAt: time.Unix(0, f.lastUsed.Load())}
}
func (f *fakeSandbox) Alive() bool                { return !f.dead.Load() }
func (f *fakeSandbox) Stop(context.Context) error { return nil }
func (f *fakeSandbox) HandOff(context.Context) error {
	f.handedOff.Store(true)
	return nil
}
func (f *fakeSandbox) Close(context.Context) error {
	f.closed.Store(true)
	return nil
}
func (f *fakeSandbox) Exec(context.Context, ExecRequest, func(Output)) (ExecResult, error) {
	return ExecResult{}, nil
}
func (f *fakeSandbox) File(context.Context, FileRequest) (FileResult, error) {
	return FileResult{}, nil
}
func (f *fakeSandbox) Jobs(context.Context) ([]Job, error)          { return nil, nil }
func (f *fakeSandbox) KillJob(context.Context, string) (Job, error) { return Job{}, nil }

type fakeCreator struct {
	mu      sync.Mutex
	made    []*fakeSandbox
	delay   time.Duration
	failing bool
}

func (c *fakeCreator) create(ctx context.Context, owner string, cfg Resolved) (Sandbox, error) {
	time.Sleep(c.delay)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failing {
		return nil, errors.New("engine down")
	}
	sb := &fakeSandbox{id: NewID()}
	sb.created.Store(time.Now().UnixNano())
	sb.lastUsed.Store(time.Now().UnixNano())
	c.made = append(c.made, sb)
	return sb, nil
}

func newTestManager(c *fakeCreator, opts ...func(*ManagerOptions)) *Manager {
	o := ManagerOptions{Creators: map[Type]Creator{TypeDocker: c.create}}
	for _, f := range opts {
		f(&o)
	}
	return NewManager(o)
}

func TestManagerConcurrentFirstCallsShareOneSandbox(t *testing.T) {
	t.Parallel()
	c := &fakeCreator{delay: 20 * time.Millisecond}
	m := newTestManager(c)
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb, err := m.Acquire(context.Background(), "session-1", TypeDocker)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = sb.ID()
		}()
	}
	wg.Wait()
	if len(c.made) != 1 {
		t.Fatalf("created %d sandboxes for one session, want 1", len(c.made))
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("calls got different sandboxes: %v", ids)
		}
	}
}

func TestManagerOwnersAreSeparateAndReleased(t *testing.T) {
	t.Parallel()
	c := &fakeCreator{}
	m := newTestManager(c)
	ctx := context.Background()
	a, _ := m.Acquire(ctx, "a", TypeDocker)
	b, _ := m.Acquire(ctx, "b", TypeDocker)
	if a.ID() == b.ID() {
		t.Fatal("two owners share a sandbox")
	}
	if err := m.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if !a.(*fakeSandbox).closed.Load() || b.(*fakeSandbox).closed.Load() {
		t.Fatal("Release must close the owner's sandbox and only that")
	}
	if _, err := m.Get(a.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("released sandbox still listed: %v", err)
	}
	if got := len(m.List()); got != 1 {
		t.Errorf("List has %d sandboxes, want 1", got)
	}
}

func TestManagerReplacesDeadSandbox(t *testing.T) {
	t.Parallel()
	c := &fakeCreator{}
	m := newTestManager(c)
	ctx := context.Background()
	first, _ := m.Acquire(ctx, "s", TypeDocker)
	first.(*fakeSandbox).dead.Store(true)
	second, err := m.Acquire(ctx, "s", TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID() == first.ID() {
		t.Fatal("a dead sandbox was handed out again")
	}
	deadline := time.Now().Add(2 * time.Second)
	for !first.(*fakeSandbox).closed.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !first.(*fakeSandbox).closed.Load() {
		t.Error("the dead sandbox was not cleaned up")
	}
}

func TestManagerCreateFailureIsNotCached(t *testing.T) {
	t.Parallel()
	c := &fakeCreator{failing: true}
	m := newTestManager(c)
	ctx := context.Background()
	if _, err := m.Acquire(ctx, "s", TypeDocker); err == nil {
		t.Fatal("want the creator's error")
	}
	c.mu.Lock()
	c.failing = false
	c.mu.Unlock()
	if _, err := m.Acquire(ctx, "s", TypeDocker); err != nil {
		t.Fatalf("after the engine recovered: %v", err)
	}
}

// TestManagerCloseRemovesAllAndRefusesNew: Close ends every sandbox, with Close, or with
// HandOff once the server is exiting, and then refuses new ones.
func TestManagerCloseRemovesAllAndRefusesNew(t *testing.T) {
	t.Parallel()
	for _, handOff := range []bool{false, true} {
		t.Run(fmt.Sprintf("hand_off=%v", handOff), func(t *testing.T) {
			c := &fakeCreator{}
			m := newTestManager(c)
			ctx := context.Background()
			for _, owner := range []string{"a", "b", "c"} {
				if _, err := m.Acquire(ctx, owner, TypeDocker); err != nil {
					t.Fatal(err)
				}
			}
			if handOff {
				m.HandOffRemovals()
			}
			if err := m.Close(ctx); err != nil {
				t.Fatal(err)
			}
			for _, sb := range c.made {
				if sb.closed.Load() == handOff || sb.handedOff.Load() != handOff {
					t.Errorf("sandbox %s: closed %v, handed off %v; want it %s", sb.id, sb.closed.Load(), sb.handedOff.Load(),
						map[bool]string{false: "closed", true: "handed off"}[handOff])
				}
			}
			if _, err := m.Acquire(ctx, "d", TypeDocker); !errors.Is(err, ErrManagerClosed) {
				t.Errorf("Acquire after Close = %v, want ErrManagerClosed", err)
			}
		})
	}
}

func TestManagerUnknownTypeAndPolicy(t *testing.T) {
	t.Parallel()
	m := newTestManager(&fakeCreator{})
	ctx := context.Background()
	if _, err := m.Create(ctx, "o", TypeNotebook, Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("unknown type: %v", err)
	}
	if _, err := m.Create(ctx, "o", TypeDocker, Config{Privileged: true}); !errors.Is(err, ErrPolicy) {
		t.Errorf("privileged: %v", err)
	}
}

func TestManagerLimits(t *testing.T) {
	t.Parallel()
	m := newTestManager(&fakeCreator{}, func(o *ManagerOptions) { o.MaxSandboxes, o.MaxPerOwner = 3, 2 })
	ctx := context.Background()
	for i := range 2 {
		if _, err := m.Create(ctx, "a", TypeDocker, Config{}); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	if _, err := m.Create(ctx, "a", TypeDocker, Config{}); !errors.Is(err, ErrLimit) {
		t.Fatalf("third for one owner = %v, want ErrLimit", err)
	}
	if _, err := m.Create(ctx, "b", TypeDocker, Config{}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Create(ctx, "c", TypeDocker, Config{})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("fourth overall = %v, want ErrLimit", err)
	}
	if !strings.Contains(err.Error(), "3 sandboxes exist") {
		t.Errorf("limit error should say why: %v", err)
	}
	if got := m.Stats(); got.Total != 3 || got.ByStatus[StatusRunning] != 3 || got.ByType[TypeDocker] != 3 {
		t.Errorf("stats = %+v", got)
	}
	_ = m.Close(ctx)
}

func TestManagerExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts func(*ManagerOptions)
		age  func(*fakeSandbox)
	}{
		{"idle ttl counts from last use", func(o *ManagerOptions) { o.IdleTTL = 200 * time.Millisecond },
			func(f *fakeSandbox) { f.lastUsed.Store(time.Now().Add(-time.Hour).UnixNano()) }},
		{"max lifetime counts from creation", func(o *ManagerOptions) { o.MaxLifetime = 200 * time.Millisecond },
			func(f *fakeSandbox) { f.created.Store(time.Now().Add(-time.Hour).UnixNano()) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := &fakeCreator{}
			m := newTestManager(c, tc.opts)
			defer m.Close(context.Background())
			fresh, _ := m.Create(context.Background(), "fresh", TypeDocker, Config{})
			old, _ := m.Create(context.Background(), "old", TypeDocker, Config{})
			tc.age(old.(*fakeSandbox))
			deadline := time.Now().Add(3 * time.Second)
			for !old.(*fakeSandbox).closed.Load() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !old.(*fakeSandbox).closed.Load() {
				t.Fatal("expired sandbox was not removed")
			}
			if fresh.(*fakeSandbox).closed.Load() {
				t.Fatal("a fresh sandbox was removed")
			}
		})
	}
}
