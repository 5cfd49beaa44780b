package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/api"
)

// Pool errors, for errors.Is.
var (
	// ErrPoolEmpty: the pool holds no sandboxes; it must be initialized (grown) first.
	ErrPoolEmpty = api.ErrPoolEmpty
	// ErrPoolTimeout: every pooled sandbox stayed busy for the whole wait.
	ErrPoolTimeout = api.ErrPoolTimeout
)

// Resetter is implemented by sandboxes that run services of their own inside the container
// (a notebook's Jupyter server and kernel). Between borrowers a Pool first returns the
// sandbox to the bare container, which stops those services and deletes their files with
// everything else, then calls Reset, which must start them afresh. Nothing of a service is
// kept from one borrower to the next: it runs under the borrowers' uid, so any of them could
// have tampered with its files or its memory.
type Resetter interface {
	Reset(ctx context.Context) error
}

// ErrNotPoolable: the sandbox cannot be returned to a clean state between borrowers.
var ErrNotPoolable = errors.New("sandbox cannot be pooled")

// agentResetter is implemented by every sandbox whose agent serves wire.OpReset:
// AgentSandbox and the sandboxes built on it.
type agentResetter interface {
	resettable() bool
	resetAgent(ctx context.Context) (wire.ResetResult, error)
}

// resettable reports whether the sandbox's backend said how to return it to its start.
func (s *AgentSandbox) resettable() bool { return s.reset != nil }

// resetAgent asks the sandbox's agent to return it to the state it started in: its
// backend's reset (Launched.Reset), with the workspace where the agent has it.
func (s *AgentSandbox) resetAgent(ctx context.Context) (wire.ResetResult, error) {
	if s.reset == nil {
		return wire.ResetResult{}, fmt.Errorf("%w: sandbox %s cannot be returned to its start on the %s backend", ErrNotPoolable, s.id, s.backend.Name())
	}
	resp, err := s.request(ctx, wire.Request{Op: wire.OpReset, Reset: s.reset})
	if err != nil {
		return wire.ResetResult{}, err
	}
	if resp.Reset == nil {
		return wire.ResetResult{}, errors.New("agent answered a reset without a result")
	}
	if s.egress != nil {
		// The next borrower sees none of the last one's egress, and a trust bundle the
		// last one may have changed is written afresh.
		s.egress.Reset()
		if _, docker := s.backend.(*Docker); docker {
			if err := s.installCABundle(ctx); err != nil {
				return wire.ResetResult{}, err
			}
		}
	}
	return *resp.Reset, nil
}

// resetTimeout bounds the clean-up between two borrowers; a sandbox that cannot be cleaned
// in that time is replaced.
const resetTimeout = time.Minute

// Pool keeps warm sandboxes of one type for one owner and lends each to one borrower at a
// time, like ms-enclave's pool. Unlike ms-enclave's, a sandbox goes back to the state it was
// created in before the next borrower gets it, so nothing one borrower leaves can watch,
// reach or run code in the next one. The agent (wire.OpReset) kills every process but
// itself, whatever session, group or environment marker it carries; empties the workspace
// (HOME, with its dotfiles and user site-packages), /tmp, /dev/shm and /dev/mqueue, leaving
// operator volumes mounted inside them alone; removes System V IPC objects; and forgets the
// background jobs and their command lines. A Resetter then starts its services afresh. A
// sandbox whose root file system is writable cannot be cleaned that way and is replaced by
// a fresh one instead, as is one that cannot be cleaned, died, or was stopped; one that its
// owner deleted leaves the pool.
//
// What the reset does not undo: files the borrower wrote to writable host volumes, which
// the operator shares on purpose, and the job ids already used (numbering goes on).
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

// member is a pooled sandbox: the pool tells its own from a replacement under the same id
// by this pointer.
type member struct {
	sb Sandbox
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

// create makes a sandbox for the pool; one the pool could not clean between borrowers is
// removed again.
func (p *Pool) create(ctx context.Context, cfg Config) (*member, error) {
	sb, err := p.m.Create(ctx, p.owner, p.typ, cfg)
	if err != nil {
		return nil, err
	}
	if _, ok := sb.(agentResetter); !ok {
		_ = p.m.Delete(context.WithoutCancel(ctx), sb.ID())
		return nil, fmt.Errorf("%w: %s sandboxes have no agent that can reset them between borrowers", ErrNotPoolable, p.typ)
	}
	return &member{sb: sb}, nil
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
		if ar, ok := sb.(agentResetter); !ok || !ar.resettable() {
			p.log.Debug("replacing a pooled sandbox that cannot be reset (a writable root file system, or a backend without one)", "sandbox", sb.ID())
			p.discard(sb)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), resetTimeout)
		defer cancel()
		if err := p.reset(ctx, sb); err != nil {
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
// pool's sandboxes, in parallel (bounded by the manager's RemoveWorkers).
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
	// All at once: the manager runs at most its RemoveWorkers removals at a time.
	var wg sync.WaitGroup
	errs := make([]error, 0, len(members))
	var errMu sync.Mutex
	for id := range members {
		wg.Go(func() {
			if err := p.m.Delete(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// reset returns sb to the state it was created in: the agent kills every other process and
// empties the scratch directories, then a Resetter starts its services afresh.
func (p *Pool) reset(ctx context.Context, sb Sandbox) error {
	start := time.Now()
	ar, ok := sb.(agentResetter)
	if !ok {
		return fmt.Errorf("%w: %s has no agent that can reset it", ErrNotPoolable, sb.ID())
	}
	res, err := ar.resetAgent(ctx)
	if err != nil {
		return fmt.Errorf("resetting the sandbox's processes and files: %w", err)
	}
	agentDone := time.Since(start)
	if r, ok := sb.(Resetter); ok {
		if err := r.Reset(ctx); err != nil {
			return fmt.Errorf("restarting the sandbox's services: %w", err)
		}
	}
	p.log.Debug("pooled sandbox reset", "sandbox", sb.ID(), "killed", res.Killed, "killed_names", res.KilledNames,
		"removed", res.Removed, "removed_paths", res.RemovedPaths, "kept_mounts", res.KeptMounts,
		"ipc", res.IPCRemoved, "jobs", res.JobsForgotten, "agent", agentDone, "total", time.Since(start))
	return nil
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
