package sandbox

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// poolFake is a sandbox with a file set and background jobs in memory, for the pool's and
// the owner checks' bookkeeping; the real engine is exercised by pool_integration_test.go
// and by httpapi's and client's integration tests.
type poolFake struct {
	lifecycle
	id, owner string
	dead      atomic.Bool
	closed    atomic.Bool
	failReset atomic.Bool
	resets    atomic.Int32
	writable  bool // a writable root file system

	mu     sync.Mutex
	files  map[string]bool // absolute paths
	jobs   []Job
	resetq []wire.Reset // the agent resets asked for
}

// resettable: as on Docker, a writable root file system cannot be reset.
func (f *poolFake) resettable() bool { return !f.writable }

// resetAgent plays the agent's OpReset with Docker's reset: every job ends and is
// forgotten, and the files under the directories named go.
func (f *poolFake) resetAgent(context.Context) (wire.ResetResult, error) {
	req := wire.Reset{Dirs: []string{DefaultWorkingDir, "/tmp", "/dev/shm", "/dev/mqueue"}, SysVIPC: true}
	if f.failReset.Load() {
		return wire.ResetResult{}, errors.New("agent gone")
	}
	f.resets.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resetq = append(f.resetq, req)
	res := wire.ResetResult{Killed: len(f.jobs), JobsForgotten: len(f.jobs)}
	f.jobs = nil
	for p := range f.files {
		for _, dir := range req.Dirs {
			if strings.HasPrefix(p, dir+"/") {
				delete(f.files, p)
				res.Removed++
			}
		}
	}
	return res, nil
}

func (f *poolFake) Config() Resolved {
	return Resolved{Config: Config{WorkingDir: DefaultWorkingDir, ReadOnlyRootfs: ptr(!f.writable)}}
}

// servicesFake is a sandbox running a service of its own, as a notebook sandbox runs
// Jupyter: Reset starts it again.
type servicesFake struct {
	*poolFake
}

func (s servicesFake) Reset(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs = append(s.jobs, Job{ID: "job-server-again", Running: true})
	s.files["/tmp/server-state/runtime.json"] = true
	return nil
}

// bareFake has no agent that can reset it: its resetAgent, of another signature, hides the
// embedded poolFake's.
type bareFake struct{ *poolFake }

func (bareFake) resetAgent() {}

func (f *poolFake) ID() string { return f.id }
func (f *poolFake) Info() Info {
	info := Info{ID: f.id, Owner: f.owner, Type: TypeDocker, Metadata: map[string]any{"working_dir": DefaultWorkingDir}}
	f.fill(&info)
	return info
}
func (f *poolFake) Alive() bool { return !f.dead.Load() }
func (f *poolFake) Stop(context.Context) error {
	f.set(StatusStopped, "")
	return nil
}
func (f *poolFake) Close(context.Context) error {
	f.closed.Store(true)
	f.set(StatusStopped, "")
	return nil
}
func (f *poolFake) HandOff(ctx context.Context) error { return f.Close(ctx) }
func (f *poolFake) Exec(_ context.Context, req ExecRequest, _ func(Output)) (ExecResult, error) {
	if err := f.enter(); err != nil {
		return ExecResult{}, err
	}
	defer f.leave()
	if req.Background {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.jobs = append(f.jobs, Job{ID: "job-1", Argv: req.Argv, Running: true})
	}
	return ExecResult{}, nil
}
func (f *poolFake) File(_ context.Context, req FileRequest) (FileResult, error) {
	if err := f.enter(); err != nil {
		return FileResult{}, err
	}
	defer f.leave()
	f.mu.Lock()
	defer f.mu.Unlock()
	switch req.Action {
	case FileWrite:
		f.files[req.Path] = true
	case FileList:
		seen := map[string]bool{}
		var out []FileInfo
		for p := range f.files {
			rest, ok := strings.CutPrefix(p, req.Path+"/")
			name, _, _ := strings.Cut(rest, "/")
			if ok && !seen[name] {
				seen[name] = true
				out = append(out, FileInfo{Name: name})
			}
		}
		return FileResult{Entries: out}, nil
	case FileDelete:
		for p := range f.files {
			if p == req.Path || strings.HasPrefix(p, req.Path+"/") {
				delete(f.files, p)
			}
		}
	case FileExists:
		return FileResult{Exists: f.files[req.Path]}, nil
	}
	return FileResult{}, nil
}
func (f *poolFake) Jobs(context.Context) ([]Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Job(nil), f.jobs...), nil
}
func (f *poolFake) KillJob(_ context.Context, id string) (Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.jobs {
		if f.jobs[i].ID == id {
			f.jobs[i].Running = false
			return f.jobs[i], nil
		}
	}
	return Job{}, &AgentError{Code: "not_found", Message: "no job"}
}

type poolFakes struct {
	mu   sync.Mutex
	made []*poolFake
	// system, when set, gives each new sandbox a backend job and a file of its own in /tmp,
	// as a notebook sandbox has (its Jupyter server and state), and makes it a Resetter.
	system bool
	// bare makes sandboxes without an agent that can reset them; writable, ones with a
	// writable root file system.
	bare, writable bool
}

func (c *poolFakes) create(_ context.Context, owner string, _ Resolved) (Sandbox, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	sb := &poolFake{id: NewID(), owner: owner, files: map[string]bool{}, writable: c.writable}
	sb.lifecycle = lifecycle{status: StatusRunning, createdAt: now, updatedAt: now}
	c.made = append(c.made, sb)
	switch {
	case c.system:
		sb.jobs = []Job{{ID: "job-server", Running: true}}
		sb.files["/tmp/server-state/runtime.json"] = true
		return servicesFake{sb}, nil
	case c.bare:
		return bareFake{sb}, nil
	}
	return sb, nil
}

func newPoolTest(t *testing.T) (*Manager, *poolFakes) {
	t.Helper()
	c := &poolFakes{}
	m := NewManager(ManagerOptions{Creators: map[Type]Creator{TypeDocker: c.create}})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m, c
}

// waitFree polls until n sandboxes are free: clean-up after Return runs in the background.
func waitFree(t *testing.T, p *Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Free() != n {
		if time.Now().After(deadline) {
			t.Fatalf("pool has %d free sandboxes, want %d", p.Free(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestPoolGrowIsIdempotentAndIdle(t *testing.T) {
	t.Parallel()
	m, _ := newPoolTest(t)
	p := NewPool(m, "rest", TypeDocker)
	ctx := t.Context()
	ids, err := p.Grow(ctx, 2, Config{})
	if err != nil || len(ids) != 2 {
		t.Fatalf("Grow(2) = %v, %v", ids, err)
	}
	for _, id := range ids {
		sb, err := m.GetOwned("rest", id)
		if err != nil {
			t.Fatal(err)
		}
		if got := sb.Info().Status; got != StatusIdle {
			t.Errorf("pooled sandbox %s is %s, want idle", id, got)
		}
	}
	again, err := p.Grow(ctx, 2, Config{})
	if err != nil || strings.Join(again, ",") != strings.Join(ids, ",") {
		t.Errorf("Grow(2) again = %v, %v; want the same %v", again, err, ids)
	}
	more, err := p.Grow(ctx, 3, Config{})
	if err != nil || len(more) != 3 {
		t.Errorf("Grow(3) = %v, %v", more, err)
	}
}

// TestPoolResetsBetweenBorrowers: a returned sandbox is reset by its agent (every scratch
// place a borrower can write, System V IPC included) before anyone borrows it again.
func TestPoolResetsBetweenBorrowers(t *testing.T) {
	t.Parallel()
	m, _ := newPoolTest(t)
	p := NewPool(m, "rest", TypeDocker)
	ctx := t.Context()
	sb := growOneAndBorrow(t, p)
	if got := sb.Info().Status; got != StatusRunning {
		t.Errorf("borrowed sandbox is %s, want running", got)
	}
	for _, f := range []string{"/sandbox/secret.txt", "/sandbox/dir/nested", "/tmp/scratch", "/dev/shm/seg", "/dev/mqueue/q"} {
		if _, err := sb.File(ctx, FileRequest{Action: FileWrite, Path: f}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sb.Exec(ctx, ExecRequest{Argv: []string{"server"}, Background: true}, nil); err != nil {
		t.Fatal(err)
	}
	p.Return(sb)
	waitFree(t, p, 1)
	next, err := p.Borrow(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fake := next.(*poolFake)
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if next != sb || len(fake.resetq) != 1 {
		t.Fatalf("want the same sandbox reset once, got %v after %d resets", next.ID(), len(fake.resetq))
	}
	want := wire.Reset{Dirs: []string{DefaultWorkingDir, "/tmp", "/dev/shm", "/dev/mqueue"}, SysVIPC: true}
	if got := fake.resetq[0]; !slices.Equal(got.Dirs, want.Dirs) || got.SysVIPC != want.SysVIPC {
		t.Errorf("reset request %+v, want %+v", got, want)
	}
	if len(fake.files) != 0 || len(fake.jobs) != 0 {
		t.Errorf("next borrower sees the previous one's files %v or jobs %v", fake.files, fake.jobs)
	}
}

// TestPoolRestartsTheBackendsServices: a Resetter's services go with everything else and
// are started afresh, never kept from one borrower to the next.
func TestPoolRestartsTheBackendsServices(t *testing.T) {
	t.Parallel()
	m, c := newPoolTest(t)
	c.system = true
	p := NewPool(m, "rest", TypeDocker)
	ctx := t.Context()
	sb := growOneAndBorrow(t, p)
	for _, f := range []string{"/tmp/mine", "/sandbox/mine", "/tmp/server-state/startup.py"} {
		if _, err := sb.File(ctx, FileRequest{Action: FileWrite, Path: f}); err != nil {
			t.Fatal(err)
		}
	}
	p.Return(sb)
	waitFree(t, p, 1)

	fake := sb.(servicesFake)
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.files) != 1 || !fake.files["/tmp/server-state/runtime.json"] {
		t.Errorf("files after the reset: %v; want only the restarted service's", fake.files)
	}
	if len(fake.jobs) != 1 || fake.jobs[0].ID != "job-server-again" {
		t.Errorf("jobs after the reset: %+v; want only the restarted service", fake.jobs)
	}
}

// TestPoolRefusesSandboxesItCannotReset: a backend without a resetting agent cannot be
// pooled, rather than be lent half-clean.
func TestPoolRefusesSandboxesItCannotReset(t *testing.T) {
	t.Parallel()
	m, c := newPoolTest(t)
	c.bare = true
	p := NewPool(m, "rest", TypeDocker)
	_, err := p.Grow(t.Context(), 1, Config{})
	if !errors.Is(err, ErrNotPoolable) {
		t.Fatalf("Grow = %v, want ErrNotPoolable", err)
	}
	if !c.made[0].closed.Load() || len(m.List()) != 0 {
		t.Error("the refused sandbox was not removed")
	}
}

// TestPoolReplacesWritableRootfsSandboxes: with a writable root file system a borrower could
// leave code anywhere in the image, so the sandbox is replaced, never reset and lent again.
func TestPoolReplacesWritableRootfsSandboxes(t *testing.T) {
	t.Parallel()
	m, c := newPoolTest(t)
	c.writable = true
	p := NewPool(m, "rest", TypeDocker)
	ctx := t.Context()
	sb := growOneAndBorrow(t, p)
	p.Return(sb)
	waitFree(t, p, 1)
	next, err := p.Borrow(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if next.ID() == sb.ID() || !sb.(*poolFake).closed.Load() {
		t.Errorf("the writable sandbox %s was lent again (next %s)", sb.ID(), next.ID())
	}
	if n := sb.(*poolFake).resets.Load(); n != 0 {
		t.Errorf("the writable sandbox was reset %d times instead of replaced", n)
	}
}

func TestPoolWaitsTimesOutAndReportsEmpty(t *testing.T) {
	t.Parallel()
	m, _ := newPoolTest(t)
	p := NewPool(m, "rest", TypeDocker)
	ctx := t.Context()
	if _, err := p.Borrow(ctx, 10*time.Millisecond); !errors.Is(err, ErrPoolEmpty) {
		t.Fatalf("empty pool: %v, want ErrPoolEmpty", err)
	}
	sb := growOneAndBorrow(t, p)
	start := time.Now()
	if _, err := p.Borrow(ctx, 50*time.Millisecond); !errors.Is(err, ErrPoolTimeout) {
		t.Fatalf("all busy: %v, want ErrPoolTimeout", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond || waited > 2*time.Second {
		t.Errorf("waited %v for a 50ms timeout", waited)
	}
	// A waiter gets the sandbox as soon as it is back and clean.
	got := make(chan error, 1)
	go func() {
		b, err := p.Borrow(ctx, 5*time.Second)
		if err == nil && b != sb {
			err = errors.New("got another sandbox")
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	p.Return(sb)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestPoolReplacesBrokenAndForgetsDeleted(t *testing.T) {
	t.Parallel()
	m, c := newPoolTest(t)
	p := NewPool(m, "rest", TypeDocker)
	ctx := t.Context()
	ids, err := p.Grow(ctx, 2, Config{})
	if err != nil {
		t.Fatal(err)
	}
	// One dies while free: the next Borrow skips it and a replacement keeps the size.
	c.mu.Lock()
	c.made[0].dead.Store(true)
	dead := c.made[0]
	c.mu.Unlock()
	var borrowed []Sandbox
	for range 2 {
		sb, err := p.Borrow(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if sb == Sandbox(dead) {
			t.Fatal("a dead sandbox was lent")
		}
		borrowed = append(borrowed, sb)
	}
	for _, sb := range borrowed {
		p.Return(sb)
	}
	waitFree(t, p, 2)
	if !dead.closed.Load() {
		t.Error("the dead sandbox was not removed")
	}
	if p.Size() != 2 {
		t.Errorf("pool size %d after a replacement, want 2", p.Size())
	}

	// One that cannot be cleaned after use is replaced too.
	sb, err := p.Borrow(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sb.(*poolFake).failReset.Store(true)
	p.Return(sb)
	waitFree(t, p, 2)
	if slicesContain(p.IDs(), sb.ID()) {
		t.Error("an uncleanable sandbox stayed in the pool")
	}

	// Deleted by its owner: it leaves the pool, which ends up empty.
	for _, id := range p.IDs() {
		if err := m.DeleteOwned(ctx, "rest", id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Borrow(ctx, time.Second); !errors.Is(err, ErrPoolEmpty) {
		t.Errorf("after deleting every member: %v, want ErrPoolEmpty (ids were %v)", err, ids)
	}
}

func TestPoolClose(t *testing.T) {
	t.Parallel()
	m, c := newPoolTest(t)
	p := NewPool(m, "rest", TypeDocker)
	if _, err := p.Grow(t.Context(), 2, Config{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, sb := range c.made {
		if !sb.closed.Load() {
			t.Errorf("sandbox %s survived the pool's Close", sb.id)
		}
	}
	if _, err := p.Borrow(t.Context(), time.Millisecond); !errors.Is(err, ErrManagerClosed) {
		t.Errorf("Borrow after Close: %v", err)
	}
}

func TestManagerOwnership(t *testing.T) {
	t.Parallel()
	m, _ := newPoolTest(t)
	ctx := t.Context()
	mine, err := m.Create(ctx, "rest", TypeDocker, Config{})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := m.Create(ctx, "mcp-session-1", TypeDocker, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetOwned("rest", mine.ID()); err != nil {
		t.Errorf("own sandbox: %v", err)
	}
	for name, err := range map[string]error{
		"get other's":    func() error { _, err := m.GetOwned("rest", theirs.ID()); return err }(),
		"get as nobody":  func() error { _, err := m.GetOwned("", mine.ID()); return err }(),
		"delete other's": m.DeleteOwned(ctx, "rest", theirs.ID()),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
	if got := m.ListOwned("rest"); len(got) != 1 || got[0].ID() != mine.ID() {
		t.Errorf("ListOwned = %v", got)
	}
	if _, err := m.Get(theirs.ID()); err != nil {
		t.Errorf("a refused delete removed the sandbox: %v", err)
	}
}

func TestManagerDefaultConfigIsACopy(t *testing.T) {
	t.Parallel()
	m := NewManager(ManagerOptions{Defaults: map[Type]Config{TypeDocker: {
		Image: "img", EnvVars: map[string]string{"A": "1"}, ToolsConfig: ToolsConfig{"shell_executor": {"shell": "/bin/bash"}},
	}}})
	c := m.DefaultConfig(TypeDocker)
	c.EnvVars["A"] = "changed"
	c.ToolsConfig["shell_executor"]["shell"] = "changed"
	again := m.DefaultConfig(TypeDocker)
	if again.EnvVars["A"] != "1" || again.ToolsConfig["shell_executor"]["shell"] != "/bin/bash" || again.Image != "img" {
		t.Errorf("DefaultConfig shares maps with the manager: %+v", again)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// growOneAndBorrow grows p by one sandbox and borrows it.
func growOneAndBorrow(t *testing.T, p *Pool) Sandbox {
	t.Helper()
	if _, err := p.Grow(t.Context(), 1, Config{}); err != nil {
		t.Fatal(err)
	}
	sb, err := p.Borrow(t.Context(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}
