package sandbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/enclave-mcp/enclave-mcp/egress"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
)

// Creator makes a sandbox of one type for an owner. The Docker engine is one; the notebook
// backend wraps it.
type Creator func(ctx context.Context, owner string, cfg Resolved) (Sandbox, error)

// ManagerOptions configures a Manager.
type ManagerOptions struct {
	// Defaults is the config each sandbox type starts from.
	Defaults map[Type]Config
	// Policy is applied to every config.
	Policy Policy
	// Creators build sandboxes by type.
	Creators map[Type]Creator
	Logger   *slog.Logger

	// MaxSandboxes caps the sandboxes alive at once (0: no cap); MaxPerOwner caps one
	// owner's. Past a cap, creation fails at once with ErrLimit: never a hang.
	MaxSandboxes int
	MaxPerOwner  int
	// IdleTTL removes a sandbox that has not been used for this long (0: never); MaxLifetime
	// removes one this long after its creation, busy or not (0: never).
	IdleTTL     time.Duration
	MaxLifetime time.Duration
	// Warm is the least number of started spares to keep per sandbox type, made from that
	// type's default config, for sessions' first sandboxes and creates of that config (see
	// warm.go); WarmMax is the most a pool grows to while demand outruns it. A type with
	// neither has no pool; a WarmMax under Warm is Warm (a pool of a fixed size).
	Warm    map[Type]int
	WarmMax map[Type]int
	// WarmIdle is how long a pool hands nothing out before it drops back to its minimum;
	// 0 means DefaultWarmIdle.
	WarmIdle time.Duration
	// FillWorkers caps the warm pools' creations under way at once; 0 means FillWorkers.
	FillWorkers int
	// WarmUp, if set, readies each new spare for its first call (e.g. WarmPython). It runs
	// once the spare is in the pool, which may hand it out meanwhile; an error is only
	// logged.
	WarmUp func(ctx context.Context, sb Sandbox, cfg Resolved) error
	// Reserve is how many spares a type's pool keeps beside those of its target: made only
	// while the pool is calm (it has handed nothing out for ReserveCalm, and no other
	// creation is under way), one at a time, and readied by WarmUpReserve instead of
	// WarmUp. They are handed out after the pool's own spares: a cheap floor for a burst
	// larger than the pool can grow to in time (see warm.go).
	Reserve map[Type]int
	// WarmUpReserve, if set, readies each new reserve spare (e.g. WarmPythonLight).
	WarmUpReserve func(ctx context.Context, sb Sandbox, cfg Resolved) error
	// ReserveCalm is how long a pool must hand nothing out before its reserve grows; 0
	// means DefaultReserveCalm.
	ReserveCalm time.Duration

	// RemoveWorkers caps the sandbox removals under way at once, whatever asked for them
	// (Close, Release, Delete, the janitor); 0 means the package's RemoveWorkers.
	RemoveWorkers int

	// Egress is the service serving the sandboxes' egress, whose totals Stats reports; nil
	// leaves them out.
	Egress *egress.Service
}

// RemoveWorkers is how many sandbox removals a Manager runs at once by default. The engine
// does most of a removal's work one container at a time (the kernel tears a container's
// cgroups down under one lock: ~8 ms per cgroup hierarchy, ten of them on cgroup v1), so
// concurrency only overlaps the rest: the API round trips, the unmounts, the volume
// removals. Measured on this project's 2-core machine (Docker 20.10, cgroup v1, overlay2;
// `go run ./cmd/enclave-bench -removal-only`, medians of 3 rounds, a loaded machine):
// Manager.Close of 10 sandboxes took 1.32 s one at a time, 1.25 s with 4 at once, 1.21 s
// with 8 and 1.11 s with 16; of 50, 7.70, 6.29, 6.73 and 6.39 s; of 200, 41.3, 32.9, 35.0
// and 32.3 s. On a quiet machine 40 took 6.0-6.5 s one at a time and 4.5-4.8 s with 4, 8
// or 16, while a `true` run in another sandbox meanwhile took 16-20 ms at p95 with 4 at
// once and 25-38 ms with 8 or 16. 16 is the fastest or as fast as any on every count, and
// a server shutting down or cleaning up wants its sandboxes gone first; the calls it slows
// meanwhile stay in tens of milliseconds.
const RemoveWorkers = 16

// Manager owns every sandbox of a server: it creates each owner's sandbox on first use, hands
// the same one back on later calls, replaces one that died, and removes them all on Close.
type Manager struct {
	opts ManagerOptions
	log  *slog.Logger

	mu       sync.Mutex
	byID     map[string]Sandbox
	owners   map[string]string // sandbox id -> owner
	byOwner  map[ownerKey]*slot
	creating map[string]int // owner -> creations under way, counted against the caps
	closed   bool

	// Warm pools (warm.go): spares by type, Acquire latencies by type, when each sandbox
	// taken from a pool was handed out (its idle and lifetime clocks start there), and the
	// pools' creations under way, all pools together.
	warm       map[Type]*warmPool
	filling    int
	acq        map[Type]*acquireStats
	handedOut  map[string]time.Time
	warmCtx    context.Context
	warmCancel context.CancelFunc
	warmWG     sync.WaitGroup // refill goroutines and background removals of spares

	// removeSlots holds a token per removal under way: at most opts.RemoveWorkers.
	removeSlots chan struct{}
	// handOff: the server is exiting, and removals hand sandboxes off (HandOffRemovals).
	handOff atomic.Bool

	stopJanitor chan struct{}
	janitorDone chan struct{}
}

type ownerKey struct {
	owner string
	typ   Type
}

// slot holds an owner's sandbox of one type; ready closes when creation has finished, so
// concurrent first calls of one session share one creation instead of racing.
type slot struct {
	ready chan struct{}
	sb    Sandbox
	err   error
}

// ErrManagerClosed is returned by a Manager that is shutting down.
var ErrManagerClosed = api.ErrManagerClosed

// ErrLimit is returned when a sandbox cap is reached; callers answer it with 429.
var ErrLimit = api.ErrLimit

// NewManager returns a Manager.
func NewManager(opts ManagerOptions) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RemoveWorkers <= 0 {
		opts.RemoveWorkers = RemoveWorkers
	}
	if opts.FillWorkers <= 0 {
		opts.FillWorkers = FillWorkers
	}
	if opts.ReserveCalm <= 0 {
		opts.ReserveCalm = DefaultReserveCalm
	}
	if opts.WarmIdle <= 0 {
		opts.WarmIdle = DefaultWarmIdle
	}
	m := &Manager{
		opts: opts, log: opts.Logger,
		byID: map[string]Sandbox{}, owners: map[string]string{}, byOwner: map[ownerKey]*slot{}, creating: map[string]int{},
		stopJanitor: make(chan struct{}), janitorDone: make(chan struct{}),
		warm: map[Type]*warmPool{}, acq: map[Type]*acquireStats{}, handedOut: map[string]time.Time{},
		removeSlots: make(chan struct{}, opts.RemoveWorkers),
	}
	m.startWarm()
	go m.janitor()
	return m
}

// alive is implemented by sandboxes that can tell when their container died behind our back.
type alive interface{ Alive() bool }

// Acquire returns owner's sandbox of type typ, creating it on first use. A sandbox whose
// container died is dropped here; the call that found it dead already returned its error,
// and this one gets a fresh sandbox.
func (m *Manager) Acquire(ctx context.Context, owner string, typ Type) (Sandbox, error) {
	key := ownerKey{owner, typ}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrManagerClosed
	}
	if s, ok := m.byOwner[key]; ok {
		m.mu.Unlock()
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the session's sandbox: %w", ctx.Err())
		}
		if s.err == nil && isAlive(s.sb) {
			return s.sb, nil
		}
		m.drop(key, s)
		if s.sb != nil {
			m.log.Warn("sandbox died; replacing it", "sandbox", s.sb.ID(), "owner", owner)
			m.removeDead(ctx, s.sb)
		}
		return m.Acquire(ctx, owner, typ)
	}
	s := &slot{ready: make(chan struct{})}
	m.byOwner[key] = s
	m.mu.Unlock()

	s.sb, s.err = m.createFirst(ctx, owner, typ)
	close(s.ready)
	if s.err != nil {
		m.drop(key, s)
		return nil, s.err
	}
	return s.sb, nil
}

// createFirst makes owner's first sandbox of type typ from the type's default config: from
// the warm pool when there is one (Create takes it from there).
func (m *Manager) createFirst(ctx context.Context, owner string, typ Type) (Sandbox, error) {
	start := time.Now()
	sb, err := m.Create(ctx, owner, typ, m.opts.Defaults[typ])
	if err == nil && m.warm[typ] == nil { // m.warm is fixed once NewManager returns
		m.observeAcquire(typ, false, time.Since(start))
	}
	return sb, err
}

// removeDead removes a dead sandbox's container in the background, with a bounded wait and
// a logged failure; Close waits for it. Once Close has begun, it removes it here instead.
func (m *Manager) removeDead(ctx context.Context, sb Sandbox) {
	m.mu.Lock()
	closed := m.closed
	if !closed {
		m.closeAsyncLocked(sb)
	}
	m.mu.Unlock()
	if closed {
		_ = m.remove(context.WithoutCancel(ctx), sb)
	}
}

func isAlive(sb Sandbox) bool {
	a, ok := sb.(alive)
	return !ok || a.Alive()
}

func (m *Manager) drop(key ownerKey, s *slot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byOwner[key] == s {
		delete(m.byOwner, key)
	}
	if s.sb != nil {
		m.forgetLocked(s.sb.ID())
	}
}

// forgetLocked drops a sandbox from the indexes; m.mu must be held.
func (m *Manager) forgetLocked(id string) {
	delete(m.byID, id)
	delete(m.owners, id)
	delete(m.handedOut, id)
}

// Create makes a new sandbox from cfg (after defaults and policy) and tracks it. When cfg
// resolves to the profile of typ's warm pool, the sandbox comes from the pool (warm.go).
func (m *Manager) Create(ctx context.Context, owner string, typ Type, cfg Config) (Sandbox, error) {
	create, ok := m.opts.Creators[typ]
	if !ok {
		return nil, fmt.Errorf("%w: sandbox type %q is not available (have: %v)", ErrInvalidConfig, typ, m.Types())
	}
	resolved, err := Resolve(cfg, m.opts.Policy)
	if err != nil {
		return nil, err
	}
	if p := m.poolFor(typ, resolved); p != nil {
		start := time.Now()
		sb, hit, err := m.fromPool(ctx, p, owner)
		if err != nil {
			return nil, err
		}
		if sb == nil { // the pool cannot make one now: created cold
			sb, err = m.createCold(ctx, owner, typ, create, resolved)
			if err != nil {
				return nil, err
			}
		} else {
			m.labelOwner(ctx, sb, owner)
			m.log.Info("sandbox handed out from the warm pool", "sandbox", sb.ID(), "type", typ, "owner", owner, "waited", !hit)
		}
		m.observeAcquire(typ, hit, time.Since(start))
		return sb, nil
	}
	return m.createCold(ctx, owner, typ, create, resolved)
}

// createCold creates a sandbox of resolved for owner, within the caps, and tracks it.
func (m *Manager) createCold(ctx context.Context, owner string, typ Type, create Creator, resolved Resolved) (Sandbox, error) {
	if err := m.reserve(owner); err != nil {
		return nil, err
	}
	sb, err := create(ctx, owner, resolved)
	m.mu.Lock()
	m.creating[owner]--
	if m.creating[owner] == 0 {
		delete(m.creating, owner)
	}
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if m.closed {
		m.mu.Unlock()
		_ = m.end(context.WithoutCancel(ctx), sb)
		return nil, ErrManagerClosed
	}
	m.byID[sb.ID()] = sb
	m.owners[sb.ID()] = owner
	m.mu.Unlock()
	m.log.Info("sandbox created", "sandbox", sb.ID(), "type", typ, "owner", owner)
	return sb, nil
}

// reserve counts a creation against the caps, or refuses it.
func (m *Manager) reserve(owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrManagerClosed
	}
	if err := m.ownerRoomLocked(owner); err != nil {
		return err
	}
	// Warm spares hold room under the cap but never refuse a session: evict one instead.
	if m.opts.MaxSandboxes > 0 && m.totalLocked() >= m.opts.MaxSandboxes && !m.evictSpareLocked() {
		total := m.totalLocked()
		return fmt.Errorf("%w: %d sandboxes exist, the server's maximum; remove one (or end a session) first", ErrLimit, total)
	}
	m.creating[owner]++
	return nil
}

// totalLocked counts the sandboxes that hold room under MaxSandboxes: tracked ones,
// creations under way and warm spares. m.mu must be held.
func (m *Manager) totalLocked() int {
	total := len(m.byID) + m.sparesLocked()
	for _, n := range m.creating {
		total += n
	}
	return total
}

// ownerRoomLocked refuses owner one more sandbox past MaxPerOwner. m.mu must be held.
func (m *Manager) ownerRoomLocked(owner string) error {
	if m.opts.MaxPerOwner <= 0 {
		return nil
	}
	mine := m.creating[owner]
	for _, o := range m.owners {
		if o == owner {
			mine++
		}
	}
	if mine >= m.opts.MaxPerOwner {
		return fmt.Errorf("%w: this owner already has %d sandboxes, the per-owner maximum; remove one first", ErrLimit, mine)
	}
	return nil
}

// Types lists the sandbox types this manager can create.
func (m *Manager) Types() []Type {
	types := make([]Type, 0, len(m.opts.Creators))
	for t := range m.opts.Creators {
		types = append(types, t)
	}
	sort.Slice(types, func(i, j int) bool { return types[i] < types[j] })
	return types
}

// Get returns a tracked sandbox by id.
func (m *Manager) Get(id string) (Sandbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb, ok := m.byID[id]
	if !ok {
		return nil, fmt.Errorf("sandbox %q: %w", id, ErrNotFound)
	}
	return sb, nil
}

// List returns every tracked sandbox, ordered by id.
func (m *Manager) List() []Sandbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Sandbox, 0, len(m.byID))
	for _, sb := range m.byID {
		out = append(out, sb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// Release removes every sandbox owner holds. It is called when a session ends.
func (m *Manager) Release(ctx context.Context, owner string) error {
	m.mu.Lock()
	var victims []*slot
	for key, s := range m.byOwner {
		if key.owner == owner {
			victims = append(victims, s)
			delete(m.byOwner, key)
		}
	}
	m.mu.Unlock()
	// Close outside the lock: removal talks to the engine.
	err := m.closeSlots(ctx, victims)
	m.pokeWarm()
	return err
}

// Delete removes one sandbox by id.
func (m *Manager) Delete(ctx context.Context, id string) error {
	m.mu.Lock()
	sb, ok := m.byID[id]
	if ok {
		m.forgetLocked(id)
		for key, s := range m.byOwner {
			if slotHolds(s, sb) {
				delete(m.byOwner, key)
			}
		}
	}
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("sandbox %q: %w", id, ErrNotFound)
	}
	err := m.remove(ctx, sb)
	m.pokeWarm()
	return err
}

// remove closes sb once a removal slot is free: at most opts.RemoveWorkers removals run at
// once. When ctx ends first, the removal does not start.
func (m *Manager) remove(ctx context.Context, sb Sandbox) error {
	if err := m.removeSlot(ctx); err != nil {
		return fmt.Errorf("removing sandbox %s: %w", sb.ID(), err)
	}
	defer func() { <-m.removeSlots }()
	return m.end(ctx, sb)
}

// HandOffRemovals tells the manager that its server is exiting: from then on each removal,
// Close's included, hands the sandbox to its backend (Sandbox.HandOff) instead of waiting
// for it to be removed. On Docker a removal costs ~120-200 ms of the kernel's time per
// container whatever the concurrency (see README, bulk removal), so a server holding 50
// sandboxes would take seconds to exit; handed off, it exits at once and the engine removes
// them after it.
func (m *Manager) HandOffRemovals() { m.handOff.Store(true) }

// end removes sb, or hands it off once the server is exiting.
func (m *Manager) end(ctx context.Context, sb Sandbox) error {
	if m.handOff.Load() {
		return sb.HandOff(ctx)
	}
	return sb.Close(ctx)
}

// removeSlot waits for a removal slot; the caller gives it back with <-m.removeSlots.
func (m *Manager) removeSlot(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	select {
	case m.removeSlots <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if err := ctx.Err(); err != nil { // both were ready, and select picked the slot
		<-m.removeSlots
		return context.Cause(ctx)
	}
	return nil
}

// Close refuses new sandboxes and removes every one, warm spares included, at most
// opts.RemoveWorkers at a time. When ctx ends, no further removal starts (and those under
// way are cut short by ctx): the sandboxes not removed stay tracked, the error says how
// many, and a later Close removes them.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if !m.closed {
		close(m.stopJanitor)
	}
	m.closed = true
	// Spares become tracked sandboxes of nobody's, so that one Close cut short leaves them
	// for the next.
	for _, s := range m.drainWarmLocked() {
		m.byID[s.sb.ID()] = s.sb
	}
	var victims []*slot
	for _, sb := range m.byID {
		victims = append(victims, doneSlot(sb))
	}
	for _, s := range m.byOwner {
		victims = append(victims, s)
	}
	m.byOwner = map[ownerKey]*slot{}
	m.mu.Unlock()
	// A refill under way gives up and removes what it made, before the engine is busy with
	// the removals below: behind the removal of 50 handed-off spares, that one removal
	// waited 4 s here.
	m.warmCancel()
	m.warmWG.Wait()
	err := m.closeSlots(ctx, victims)
	<-m.janitorDone
	return err
}

// janitor removes sandboxes past their idle TTL or maximum lifetime.
func (m *Manager) janitor() {
	defer close(m.janitorDone)
	if m.opts.IdleTTL <= 0 && m.opts.MaxLifetime <= 0 {
		<-m.stopJanitor
		return
	}
	interval := min(nonZero(m.opts.IdleTTL), nonZero(m.opts.MaxLifetime)) / 4
	interval = max(interval, 50*time.Millisecond)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-m.stopJanitor:
			return
		case now := <-tick.C:
			for _, id := range m.expired(now) {
				m.log.Info("removing expired sandbox", "sandbox", id)
				if err := m.Delete(context.Background(), id); err != nil && !errors.Is(err, ErrNotFound) {
					m.log.Warn("removing expired sandbox", "sandbox", id, "error", err)
				}
			}
		}
	}
}

func nonZero(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Duration(1<<63 - 1)
	}
	return d
}

// expired lists sandboxes idle past IdleTTL (and not busy) or older than MaxLifetime. A
// sandbox from the warm pool counts both from its hand-out; spares are not listed at all.
func (m *Manager) expired(now time.Time) []string {
	m.mu.Lock()
	handedOut := make(map[string]time.Time, len(m.handedOut))
	for id, t := range m.handedOut {
		handedOut[id] = t
	}
	m.mu.Unlock()
	var ids []string
	for _, sb := range m.List() {
		info := sb.Info()
		if t, ok := handedOut[sb.ID()]; ok {
			if t.After(info.LastUsedAt) {
				info.LastUsedAt = t
			}
			if t.After(info.CreatedAt) {
				info.CreatedAt = t
			}
		}
		idle := m.opts.IdleTTL > 0 && info.Status != StatusBusy && now.Sub(info.LastUsedAt) > m.opts.IdleTTL
		old := m.opts.MaxLifetime > 0 && now.Sub(info.CreatedAt) > m.opts.MaxLifetime
		if idle || old {
			ids = append(ids, sb.ID())
		}
	}
	return ids
}

// Stats counts the tracked sandboxes by status and by type; warm spares are not among them
// but in Warm.
type Stats struct {
	Total    int            `json:"total_sandboxes"`
	ByStatus map[Status]int `json:"status_counts"`
	ByType   map[Type]int   `json:"sandbox_types"`
	// Warm has, per type with a warm pool or a session's first sandbox made, the pool's
	// numbers and Acquire's latencies, ordered by type.
	Warm []WarmStats `json:"warm_pools"`
	// Egress is the egress proxy's totals, all sandboxes together (ManagerOptions.Egress).
	Egress *egress.Stats `json:"egress,omitempty"`
}

// Stats returns the current counts.
func (m *Manager) Stats() Stats {
	st := Stats{ByStatus: map[Status]int{}, ByType: map[Type]int{}}
	for _, sb := range m.List() {
		info := sb.Info()
		st.Total++
		st.ByStatus[info.Status]++
		st.ByType[info.Type]++
	}
	m.mu.Lock()
	st.Warm = m.warmStatsLocked()
	m.mu.Unlock()
	if m.opts.Egress != nil {
		e := m.opts.Egress.Stats()
		st.Egress = &e
	}
	return st
}

// slotHolds reports whether s's finished creation made sb. A slot still being created
// holds nothing yet; reading its sb before ready closes would race with the creation.
func slotHolds(s *slot, sb Sandbox) bool {
	select {
	case <-s.ready:
		return s.sb == sb
	default:
		return false
	}
}

// doneSlot wraps a sandbox that needs no waiting for.
func doneSlot(sb Sandbox) *slot {
	s := &slot{sb: sb, ready: make(chan struct{})}
	close(s.ready)
	return s
}

// closeSlots removes the sandboxes of slots, at most opts.RemoveWorkers at a time; a slot
// whose creation is under way is waited for first, so its container is not leaked. Each
// sandbox leaves the manager's indexes when its removal starts, and comes back when the
// removal fails; when ctx ends, those not started stay, and the error counts them.
func (m *Manager) closeSlots(ctx context.Context, slots []*slot) error {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		skipped int
		seen    = map[Sandbox]bool{}
	)
	for _, s := range slots {
		wg.Go(func() {
			select {
			case <-s.ready:
			default:
				select {
				case <-s.ready:
				case <-ctx.Done():
					// A creation that finishes after Close began removes its own
					// sandbox (Create sees the manager closed).
					return
				}
			}
			mu.Lock()
			dup := s.sb == nil || seen[s.sb]
			if !dup {
				seen[s.sb] = true
			}
			mu.Unlock()
			if dup {
				return
			}
			if err := m.removeSlot(ctx); err != nil {
				mu.Lock()
				skipped++
				mu.Unlock()
				return
			}
			defer func() { <-m.removeSlots }()
			id := s.sb.ID()
			m.mu.Lock()
			owner, tracked := m.owners[id], m.byID[id] != nil
			m.forgetLocked(id)
			m.mu.Unlock()
			if err := m.end(ctx, s.sb); err != nil {
				if tracked { // tracked again, for the next Close to retry
					m.mu.Lock()
					m.byID[id] = s.sb
					if owner != "" {
						m.owners[id] = owner
					}
					m.mu.Unlock()
				}
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if skipped > 0 {
		errs = append(errs, fmt.Errorf("%d sandboxes not removed: %w", skipped, context.Cause(ctx)))
	}
	return errors.Join(errs...)
}
