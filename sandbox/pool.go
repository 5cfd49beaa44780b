package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
)

// Pool errors, for errors.Is.
var (
	// ErrPoolEmpty: the pool holds no sandboxes; it must be initialized (grown) first.
	ErrPoolEmpty = api.ErrPoolEmpty
	// ErrPoolTimeout: every pooled sandbox stayed busy for the whole wait.
	ErrPoolTimeout = api.ErrPoolTimeout
)

// Resetter is implemented by sandboxes that hold state beyond their files and processes (a
// notebook's kernel): a Pool calls Reset between borrowers, after the generic clean-up.
type Resetter interface {
	Reset(ctx context.Context) error
}

// resetTimeout bounds the clean-up between two borrowers; a sandbox that cannot be cleaned
// in that time is replaced.
const resetTimeout = time.Minute

// Pool keeps warm sandboxes of one type for one owner and lends each to one borrower at a
// time, like ms-enclave's pool. Unlike ms-enclave's, a sandbox is cleaned before the next
// borrower gets it, so no borrower sees another's files or processes: the background jobs a
// borrower started are killed, and what it added to the workspace and to /tmp is deleted.
// What was there when the sandbox joined the pool is the backend's own (a notebook sandbox's
// Jupyter server is a background job, its state lives in /tmp) and is kept. A sandbox that
// cannot be cleaned, died, or was stopped is removed and replaced by a fresh one; one that
// its owner deleted leaves the pool.
//
// What the clean-up does not undo: changes inside the backend's own top-level entries of /tmp,
// the ended background jobs of earlier borrowers in the agent's job list (ids and command
// lines), and backend state beyond files and processes unless the backend implements
// Resetter (a notebook's kernel variables).
type Pool struct {
	m     *Manager
	owner string
	typ   Type
	log   *slog.Logger

	growMu sync.Mutex // one Grow at a time, so two initializes do not both fill the gap

	mu      sync.Mutex
	cfg     Config // for replacements: the config of the last Grow
	members map[string]*member
	free    []Sandbox
	pending int           // replacements being created
	wake    chan struct{} // closed (and replaced) whenever a sandbox frees up or leaves
	closed  bool
	work    sync.WaitGroup // clean-ups and replacements under way
}

// member is a pooled sandbox and what it held when it joined the pool: the clean-up between
// borrowers keeps exactly that.
type member struct {
	sb   Sandbox
	jobs map[string]bool            // background jobs running at the start
	keep map[string]map[string]bool // directory -> its entries at the start
}

// NewPool returns an empty pool of owner's sandboxes of type typ, created through m.
func NewPool(m *Manager, owner string, typ Type) *Pool {
	return &Pool{
		m: m, owner: owner, typ: typ, log: m.log.With("pool", string(typ), "owner", owner),
		members: map[string]*member{}, wake: make(chan struct{}),
	}
}

// Type is the type of the pool's sandboxes.
func (p *Pool) Type() Type { return p.typ }

// Grow creates sandboxes from cfg, concurrently, until the pool holds n, and returns the
// ids of all the pool's sandboxes. cfg also becomes the config of later replacements. When
// a creation fails, the sandboxes this call made are removed and the error is returned.
func (p *Pool) Grow(ctx context.Context, n int, cfg Config) ([]string, error) {
	p.growMu.Lock()
	defer p.growMu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrManagerClosed
	}
	missing := n - len(p.members) - p.pending
	p.cfg = cfg
	p.mu.Unlock()

	made := make([]*member, max(missing, 0))
	errs := make([]error, len(made))
	var wg sync.WaitGroup
	for i := range made {
		wg.Go(func() { made[i], errs[i] = p.create(ctx, cfg) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, mb := range made {
			if mb != nil {
				_ = p.m.Delete(context.WithoutCancel(ctx), mb.sb.ID())
			}
		}
		return nil, fmt.Errorf("creating pooled sandboxes: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, mb := range made {
		markIdle(mb.sb)
		p.members[mb.sb.ID()] = mb
		p.free = append(p.free, mb.sb)
	}
	p.broadcastLocked()
	return p.idsLocked(), nil
}

// create makes a sandbox for the pool and records what it holds before any borrower.
func (p *Pool) create(ctx context.Context, cfg Config) (*member, error) {
	sb, err := p.m.Create(ctx, p.owner, p.typ, cfg)
	if err != nil {
		return nil, err
	}
	mb, err := baseline(ctx, sb)
	if err != nil {
		_ = p.m.Delete(context.WithoutCancel(ctx), sb.ID())
		return nil, fmt.Errorf("inspecting a new pooled sandbox: %w", err)
	}
	return mb, nil
}

// baseline records sb's running jobs and the entries of its workspace and /tmp.
func baseline(ctx context.Context, sb Sandbox) (*member, error) {
	mb := &member{sb: sb, jobs: map[string]bool{}, keep: map[string]map[string]bool{}}
	jobs, err := sb.Jobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing background jobs: %w", err)
	}
	for _, j := range jobs {
		if j.Running {
			mb.jobs[j.ID] = true
		}
	}
	for _, dir := range cleanDirs(sb) {
		names, err := entries(ctx, sb, dir)
		if err != nil {
			return nil, err
		}
		mb.keep[dir] = map[string]bool{}
		for _, n := range names {
			mb.keep[dir][n] = true
		}
	}
	return mb, nil
}

// IDs lists the ids of the pool's sandboxes, sorted.
func (p *Pool) IDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idsLocked()
}

func (p *Pool) idsLocked() []string {
	ids := make([]string, 0, len(p.members))
	for id := range p.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Size is the number of sandboxes in the pool; Free, how many wait for a borrower.
func (p *Pool) Size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.members)
}

// Free is the number of sandboxes ready for a borrower.
func (p *Pool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// Borrow takes a free sandbox, waiting up to wait (zero: until ctx ends) for one to free
// up. The borrower must give it back with Return. An empty pool is ErrPoolEmpty at once;
// a wait that runs out is ErrPoolTimeout.
func (p *Pool) Borrow(ctx context.Context, wait time.Duration) (Sandbox, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrManagerClosed
		}
		if len(p.members) == 0 && p.pending == 0 {
			p.mu.Unlock()
			return nil, ErrPoolEmpty
		}
		if len(p.free) > 0 {
			sb := p.free[0]
			p.free = p.free[1:]
			p.mu.Unlock()
			if p.usable(sb) {
				claim(sb)
				return sb, nil
			}
			p.discard(sb)
			continue
		}
		wake, size := p.wake, len(p.members)
		p.mu.Unlock()
		select {
		case <-wake:
		case <-timeout:
			return nil, fmt.Errorf("%w: all %d pooled sandboxes stayed busy for %v", ErrPoolTimeout, size, wait)
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a pooled sandbox: %w", ctx.Err())
		}
	}
}

// Return gives a borrowed sandbox back. It is cleaned in the background and handed to the
// next borrower only once clean, so the borrower's response is not delayed by the clean-up.
func (p *Pool) Return(sb Sandbox) {
	p.mu.Lock()
	mb := p.members[sb.ID()]
	if p.closed || mb == nil || mb.sb != sb {
		p.mu.Unlock()
		return
	}
	p.work.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.work.Done()
		ctx, cancel := context.WithTimeout(context.Background(), resetTimeout)
		defer cancel()
		if err := mb.reset(ctx); err != nil {
			p.log.Warn("cleaning a pooled sandbox failed; replacing it", "sandbox", sb.ID(), "error", err)
			p.discard(sb)
			return
		}
		markIdle(sb)
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.closed && p.members[sb.ID()] == mb {
			p.free = append(p.free, sb)
			p.broadcastLocked()
		}
	}()
}

// usable reports whether sb can be lent: still tracked by the manager, alive and running.
func (p *Pool) usable(sb Sandbox) bool {
	cur, err := p.m.Get(sb.ID())
	if err != nil || cur != sb || !isAlive(sb) {
		return false
	}
	switch sb.Info().Status {
	case StatusIdle, StatusRunning:
		return true
	}
	return false
}

// discard takes sb out of the pool. A sandbox its owner deleted just leaves; one that died,
// was stopped or could not be cleaned is removed and replaced, keeping the pool's size.
func (p *Pool) discard(sb Sandbox) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.members, sb.ID())
	defer p.broadcastLocked() // waiters re-check: the pool may now be empty
	if _, err := p.m.Get(sb.ID()); err != nil || p.closed {
		return
	}
	p.pending++
	p.work.Add(1)
	cfg := p.cfg
	go func() {
		defer p.work.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*resetTimeout)
		defer cancel()
		if err := p.m.Delete(ctx, sb.ID()); err != nil {
			p.log.Warn("removing a broken pooled sandbox", "sandbox", sb.ID(), "error", err)
		}
		fresh, err := p.create(ctx, cfg)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.pending--
		defer p.broadcastLocked()
		if err != nil {
			p.log.Error("replacing a pooled sandbox; the pool shrinks", "error", err)
			return
		}
		if p.closed {
			_ = p.m.Delete(context.WithoutCancel(ctx), fresh.sb.ID())
			return
		}
		markIdle(fresh.sb)
		p.members[fresh.sb.ID()] = fresh
		p.free = append(p.free, fresh.sb)
	}()
}

func (p *Pool) broadcastLocked() {
	close(p.wake)
	p.wake = make(chan struct{})
}

// Close stops lending, waits for clean-ups and replacements under way, and removes the
// pool's sandboxes.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.broadcastLocked()
	p.mu.Unlock()
	p.work.Wait()
	p.mu.Lock()
	members := p.members
	p.members, p.free = map[string]*member{}, nil
	p.mu.Unlock()
	var errs []error
	for id := range members {
		if err := p.m.Delete(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reset undoes what borrowers left: the background jobs they started, what they added to
// the workspace and /tmp, and (for a Resetter) the backend's own state.
func (mb *member) reset(ctx context.Context) error {
	sb := mb.sb
	jobs, err := sb.Jobs(ctx)
	if err != nil {
		return fmt.Errorf("listing background jobs: %w", err)
	}
	for _, j := range jobs {
		if !j.Running || mb.jobs[j.ID] {
			continue
		}
		if _, err := sb.KillJob(ctx, j.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("killing background job %s: %w", j.ID, err)
		}
	}
	for _, dir := range cleanDirs(sb) {
		names, err := entries(ctx, sb, dir)
		if err != nil {
			return err
		}
		for _, n := range names {
			if mb.keep[dir][n] {
				continue
			}
			_, err := sb.File(ctx, FileRequest{Action: FileDelete, Path: path.Join(dir, n), Recursive: true})
			if err != nil && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("emptying %s: %w", dir, err)
			}
		}
	}
	if r, ok := sb.(Resetter); ok {
		if err := r.Reset(ctx); err != nil {
			return fmt.Errorf("resetting sandbox state: %w", err)
		}
	}
	return nil
}

// cleanDirs are the writable places a borrower can leave files in.
func cleanDirs(sb Sandbox) []string {
	return []string{workingDirOf(sb), "/tmp"}
}

// entries lists the names in dir; a missing dir has none.
func entries(ctx context.Context, sb Sandbox, dir string) ([]string, error) {
	list, err := sb.File(ctx, FileRequest{Action: FileList, Path: dir})
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	names := make([]string, len(list.Entries))
	for i, e := range list.Entries {
		names[i] = e.Name
	}
	return names, nil
}

// workingDirOf is sb's workspace.
func workingDirOf(sb Sandbox) string {
	if c, ok := sb.(interface{ Config() Resolved }); ok && c.Config().WorkingDir != "" {
		return c.Config().WorkingDir
	}
	if wd, ok := sb.Info().Metadata["working_dir"].(string); ok && wd != "" {
		return wd
	}
	return DefaultWorkingDir
}

// idler is implemented by every backend that embeds lifecycle.
type idler interface {
	markIdle()
	claim()
}

// markIdle shows a free pooled sandbox as idle, as ms-enclave does.
func markIdle(sb Sandbox) {
	if i, ok := sb.(idler); ok {
		i.markIdle()
	}
}

// claim shows a borrowed sandbox as running again.
func claim(sb Sandbox) {
	if i, ok := sb.(idler); ok {
		i.claim()
	}
}

func (l *lifecycle) markIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.status == StatusRunning && l.busy == 0 {
		l.status, l.updatedAt = StatusIdle, time.Now()
	}
}

func (l *lifecycle) claim() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.status == StatusIdle {
		l.status, l.updatedAt = StatusRunning, time.Now()
	}
}
