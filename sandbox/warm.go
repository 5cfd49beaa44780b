package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"
)

// Warm pools: per sandbox profile (a type and the resolved default config of that type: image,
// limits, tools), the Manager keeps started, ready sandboxes, so that a new sandbox of that
// profile is handed out in microseconds instead of being created in a few hundred
// milliseconds. Two paths take from a pool: a session's first sandbox (Acquire) and every
// Create whose config, once resolved against the operator's policy, is the profile's (a
// REST create with the default config, ms-enclave's client's create without a config).
//
// A warm sandbox serves exactly one owner. It is created for nobody (owner "": no owner
// label on its container, and its own Info().Owner stays empty), and on hand-out the
// Manager's owners map records the owner, which is what every ownership check reads
// (manager_owner.go). When that owner releases it, it is destroyed like any other sandbox;
// it never goes back to the pool and is never handed to another owner. That is the
// difference from pool.go's ms-enclave pool, which lends the same sandboxes to execution
// after execution.
//
// Pools follow demand between a minimum and a maximum (ManagerOptions.Warm, WarmMax). A
// pool wants target spares, starting at the minimum. Every hand-out that finds no spare
// ready (a miss: acquisitions arrive faster than the pool refills) raises the target by one,
// up to the maximum; a pool that has handed out nothing for WarmIdle drops back to its
// minimum and removes its spares past it, oldest first. A miss that finds a refill under
// way which no earlier caller waits for waits for it, in line: that sandbox comes sooner
// than one started now. Any other miss creates its sandbox at once, as does a waiter whose
// refill failed (it then sees the engine's error) or whose pool has no room under
// MaxSandboxes. Waiting behind a queue of refills served a burst in arrival order but, on
// a machine whose cores the burst saturates, let the first sessions' calls slow the
// creations of the last ones: the load test's 50 sessions had a better median setup and
// call latency, and a worse 95th percentile (see cmd/enclave-load in the README).
//
// Refills of every pool together run at most FillWorkers creations at once (see there for
// why). They never make a pool hold more spares than its target plus the callers waiting,
// and never create past MaxSandboxes. Spares count against MaxSandboxes but never refuse a
// session: a creation that finds the cap reached while spares exist evicts one. Spares are
// not tracked sandboxes (List, Get and the idle and lifetime janitor do not see them); a
// sandbox's idle TTL and maximum lifetime count from its hand-out, not from the spare's
// creation. A spare found dead at hand-out is removed and the next one tried.

// A pool may also keep a reserve (ManagerOptions.Reserve): spares beside those of its
// target, for a burst of new sessions larger than the pool can grow to in time (each
// creation keeps the engine busy for half a second of CPU here, so a burst of 50 would
// wait seconds for the last ones). The reserve grows only while the pool is calm, one
// creation at a time, and its spares get a cheaper warm-up (WarmUpReserve: a light resident
// interpreter of a few megabytes, WarmPythonLight). A hand-out takes the pool's own spares
// first, then the reserve's; the reserve does not shrink when idle, and is evicted first to
// make room under MaxSandboxes.

// WarmPython is a ManagerOptions.WarmUp: it starts a spare's resident Python interpreter
// and waits until it is ready (AgentSandbox.WarmPython), so that the first python_executor
// call of the session the spare goes to is forked from an interpreter whose imports are
// done: milliseconds instead of a fresh interpreter's start. It costs the spare the
// interpreter's memory while it waits. Sandboxes without an agent are left as they are.
func WarmPython(ctx context.Context, sb Sandbox, _ Resolved) error { return warmPython(ctx, sb, false) }

// WarmPythonLight is a ManagerOptions.WarmUpReserve: it starts a spare's resident Python
// interpreter without the heavy modules (AgentSandbox.WarmPython, light), so that the first
// python_executor call of the session it goes to is forked in milliseconds, for a few
// megabytes of memory while it waits; a call that imports numpy, pandas or matplotlib makes
// the sandbox start a full interpreter for the calls after it.
func WarmPythonLight(ctx context.Context, sb Sandbox, _ Resolved) error {
	return warmPython(ctx, sb, true)
}

// warmPython starts sb's resident interpreter, light or full, when sb has an agent.
func warmPython(ctx context.Context, sb Sandbox, light bool) error {
	if w, ok := sb.(interface {
		WarmPython(context.Context, bool) error
	}); ok {
		return w.WarmPython(ctx, light)
	}
	return nil
}

// FillWorkers is how many warm-pool creations a Manager runs at once, over all its pools.
// Creating a sandbox keeps dockerd, containerd and runc busy on the host's cores; creations
// at once beyond what the engine absorbs make no more sandboxes per second, only stretch
// each one out (so a caller waiting for the next spare waits longer) and slow down the
// tool calls running meanwhile. Measured on this project's 2-core machine (Docker 20.10,
// cgroup v1; 24 creations of the default sandbox, twice): one at a time made 1.8-1.9
// sandboxes/s (each 520-530 ms); 2 at once 2.5-2.7/s (each ~760 ms); 4, 8 and 24 at once
// 2.3-2.6/s, each taking 1.6 s, 3.0 s and 9-10 s, while a `true` run in another sandbox
// took 31-38 ms at p95 with 2 at once, 72-82 ms with 4 and 117-261 ms with 24. A host with
// more cores may want more: ManagerOptions.FillWorkers.
const FillWorkers = 2

// DefaultWarmIdle is how long a pool hands nothing out before it drops back to its minimum.
const DefaultWarmIdle = time.Minute

// DefaultReserveCalm is how long a pool hands nothing out before its reserve grows: a burst
// is over, and its sessions' first calls are done.
const DefaultReserveCalm = 3 * time.Second

// warmPool is one profile's spares. Its fields are guarded by Manager.mu.
type warmPool struct {
	typ            Type
	cfg            Resolved
	key            string // the profile: cfg as JSON, compared with a Create's resolved config
	min, max       int
	target         int       // spares wanted now, from min to max
	peak           int       // the highest target so far
	spares         []Sandbox // oldest first
	filling        int       // creations under way for the target
	reserveMax     int
	reserve        []Sandbox // the reserve's spares, oldest first
	reserveFilling int       // the reserve's creation under way (0 or 1)
	reserveAt      time.Time // when the reserve's last creation started
	warming        int       // WarmUps under way
	waiters        []*warmWaiter
	lastTake       time.Time // the last hand-out or miss
	retryAt        time.Time // after a failed refill, none starts before this
	backoff        time.Duration
	kick           chan struct{}

	hits, reserveHits, misses, waited, dead, evicted, failures, shrinks uint64
}

// warmWaiter is a caller that found no spare and waits for the next one the pool makes.
// done closes when sb is set (handed out to owner and tracked) or when the pool gives up on
// it (sb nil: the caller creates its sandbox itself).
type warmWaiter struct {
	owner string
	done  chan struct{}
	sb    Sandbox
}

// Refill back-off after failures: from warmMinBackoff, doubling to warmMaxBackoff.
const warmMinBackoff, warmMaxBackoff = 500 * time.Millisecond, 30 * time.Second

// acquireStats records how long Acquire's creations of one type took, warm and cold.
type acquireStats struct {
	warm, cold latencyRing
}

// latencyRing keeps a count, a sum and the most recent samples for quantiles.
type latencyRing struct {
	count   uint64
	sum     time.Duration
	samples []time.Duration
	next    int
}

const latencySamples = 512

func (r *latencyRing) add(d time.Duration) {
	r.count++
	r.sum += d
	if len(r.samples) < latencySamples {
		r.samples = append(r.samples, d)
		return
	}
	r.samples[r.next] = d
	r.next = (r.next + 1) % latencySamples
}

func (r *latencyRing) summary() Latency {
	l := Latency{Count: r.count, SumSeconds: r.sum.Seconds()}
	if len(r.samples) == 0 {
		return l
	}
	s := slices.Clone(r.samples)
	slices.Sort(s)
	q := func(p float64) float64 {
		return float64(s[min(len(s)-1, int(p*float64(len(s))))]) / float64(time.Millisecond)
	}
	l.P50MS, l.P90MS, l.P99MS = q(0.5), q(0.9), q(0.99)
	return l
}

// Latency summarizes Acquire's creation latencies: a count and sum over the server's life,
// and quantiles over the most recent 512.
type Latency struct {
	Count      uint64  `json:"count"`
	SumSeconds float64 `json:"sum_seconds"`
	P50MS      float64 `json:"p50_ms"`
	P90MS      float64 `json:"p90_ms"`
	P99MS      float64 `json:"p99_ms"`
}

// WarmStats describes one sandbox type's warm pool and how Acquire's creations of that type
// went.
type WarmStats struct {
	Type Type `json:"type"`
	// Size is the number of spares the pool wants now (0: no pool), from Min to Max; Peak
	// is the most it wanted so far. Spare is how many are ready now, Filling how many are
	// being created, Warming how many new ones (spare or handed out since) are being warmed
	// up (ManagerOptions.WarmUp), Waiting how many callers wait for one.
	Size    int `json:"size"`
	Min     int `json:"min"`
	Max     int `json:"max"`
	Peak    int `json:"peak"`
	Spare   int `json:"spare"`
	Filling int `json:"filling"`
	Warming int `json:"warming"`
	Waiting int `json:"waiting"`
	// Reserve is how many reserve spares are ready, of ReserveMax (ManagerOptions.Reserve);
	// Filling counts the reserve's creation too.
	Reserve    int `json:"reserve"`
	ReserveMax int `json:"reserve_max"`
	// Hits count sandboxes handed out from a ready spare, ReserveHits those of them that
	// came from the reserve; Misses those that found none,
	// of which Waited were served by the pool's next spare (the others were created cold).
	Hits        uint64 `json:"hits"`
	ReserveHits uint64 `json:"reserve_hits"`
	Misses      uint64 `json:"misses"`
	Waited      uint64 `json:"waited"`
	// Dead counts spares found dead at hand-out, Evicted spares removed to make room under
	// MaxSandboxes, RefillFailures failed refills, Shrinks the times an idle pool dropped
	// back to its minimum.
	Dead           uint64 `json:"dead"`
	Evicted        uint64 `json:"evicted"`
	RefillFailures uint64 `json:"refill_failures"`
	Shrinks        uint64 `json:"shrinks"`
	// AcquireWarm and AcquireCold are the latencies of the pool's profile's creations (a
	// session's first sandbox, a Create of the profile): from a ready spare, and otherwise.
	AcquireWarm Latency `json:"acquire_warm"`
	AcquireCold Latency `json:"acquire_cold"`
}

// startWarm builds the pools of opts.Warm and opts.WarmMax and starts their refill
// goroutines.
func (m *Manager) startWarm() {
	m.warmCtx, m.warmCancel = context.WithCancel(context.Background())
	for _, typ := range m.Types() {
		lo, hi := max(m.opts.Warm[typ], 0), m.opts.WarmMax[typ]
		hi = max(hi, lo)
		reserve := max(m.opts.Reserve[typ], 0)
		if hi == 0 && reserve == 0 {
			continue
		}
		cfg, err := Resolve(m.opts.Defaults[typ], m.opts.Policy)
		if err != nil {
			m.log.Warn("no warm pool: the default config does not resolve", "type", typ, "error", err)
			continue
		}
		p := &warmPool{typ: typ, cfg: cfg, key: profileKey(cfg), min: lo, max: hi, target: lo, peak: lo,
			reserveMax: reserve, lastTake: time.Now(), backoff: warmMinBackoff, kick: make(chan struct{}, 1)}
		m.warm[typ] = p
		m.warmWG.Add(1)
		go m.refill(p)
		p.poke()
	}
	for typ, n := range m.opts.Warm {
		if _, ok := m.opts.Creators[typ]; !ok && n > 0 {
			m.log.Warn("no warm pool: sandbox type not available", "type", typ)
		}
	}
}

// profileKey identifies a resolved config: two configs with the same key make the same
// sandbox.
func profileKey(r Resolved) string {
	b, err := json.Marshal(r)
	if err != nil {
		return "" // never equal to a pool's: such a create is made cold
	}
	return string(b)
}

// poolFor returns the warm pool whose profile cfg is, or nil.
func (m *Manager) poolFor(typ Type, cfg Resolved) *warmPool {
	p := m.warm[typ]
	if p == nil || p.key == "" || p.key != profileKey(cfg) {
		return nil
	}
	return p
}

// poke wakes the pool's refill goroutine without blocking.
func (p *warmPool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// pokeWarm wakes every refill goroutine: room may have opened under the cap, or a fill
// slot freed.
func (m *Manager) pokeWarm() {
	for _, p := range m.warm {
		p.poke()
	}
}

// refill keeps p at its target, with the waiters served, until the manager closes; it
// also shrinks p when it idles.
func (m *Manager) refill(p *warmPool) {
	defer m.warmWG.Done()
	tick := time.NewTicker(max(m.opts.WarmIdle/4, 50*time.Millisecond))
	defer tick.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		if wait := m.startFills(p); wait > 0 {
			retry.Reset(wait)
		}
		select {
		case <-m.warmCtx.Done():
			return
		case <-p.kick:
		case <-retry.C:
		case now := <-tick.C:
			m.shrinkIdle(p, now)
		}
	}
}

// startFills starts the creations p needs now, within FillWorkers over all pools and the
// cap. While p backs off after a failure, it starts none and returns how long to wait.
func (m *Manager) startFills(p *warmPool) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0
	}
	if wait := time.Until(p.retryAt); wait > 0 {
		m.releaseWaitersLocked(p) // they create their own: the engine is failing
		return wait
	}
	want := p.target + len(p.waiters) - len(p.spares) - p.filling
	if m.opts.MaxSandboxes > 0 {
		want = min(want, m.opts.MaxSandboxes-m.totalLocked())
	}
	want = min(want, m.opts.FillWorkers-m.filling)
	if want <= 0 && p.filling == 0 && len(p.waiters) > 0 && m.filling < m.opts.FillWorkers {
		// No room under the cap: the waiters find out for themselves (ErrLimit, or an
		// eviction of another pool's spare).
		m.releaseWaitersLocked(p)
	}
	for range max(want, 0) {
		p.filling++
		m.filling++
		m.warmWG.Add(1)
		go m.fill(p, false)
	}
	return m.growReserveLocked(p, want, time.Now())
}

// growReserveLocked starts one creation for p's reserve when p is calm: nothing of its
// target to make (want, as startFills found it), no creation under way anywhere, nobody
// waiting, and nothing handed out for ReserveCalm. While sandboxes run calls, it starts
// at most one per ReserveCalm, so that the engine's work (half a second of CPU each, here)
// takes a fraction of a core from them. It returns how long to wait before asking again,
// or 0. m.mu must be held.
func (m *Manager) growReserveLocked(p *warmPool, want int, now time.Time) time.Duration {
	if len(p.reserve)+p.reserveFilling >= p.reserveMax || want > 0 || m.filling > 0 || len(p.waiters) > 0 {
		return 0
	}
	calm := m.opts.ReserveCalm
	if since := now.Sub(p.lastTake); since < calm {
		return calm - since
	}
	if since := now.Sub(p.reserveAt); since < calm && m.inUseLocked(now, calm) {
		return calm - since
	}
	if m.opts.MaxSandboxes > 0 && m.totalLocked() >= m.opts.MaxSandboxes {
		return 0
	}
	p.reserveAt = now
	p.reserveFilling++
	m.filling++
	m.warmWG.Add(1)
	go m.fill(p, true)
	return 0
}

// inUseLocked reports whether a tracked sandbox runs a call, or ran one within d of now.
// m.mu must be held.
func (m *Manager) inUseLocked(now time.Time, d time.Duration) bool {
	for _, sb := range m.byID {
		if l, ok := sb.(interface{ lastUse() (time.Time, bool) }); ok {
			if at, busy := l.lastUse(); busy || now.Sub(at) < d {
				return true
			}
		}
	}
	return false
}

// fill creates one sandbox for p, for its reserve or its target: a waiter gets it, else it
// becomes a spare.
func (m *Manager) fill(p *warmPool, reserve bool) {
	defer m.warmWG.Done()
	defer m.pokeWarm() // a fill slot is free again: any pool may start one
	sb, err := m.opts.Creators[p.typ](m.warmCtx, "", p.cfg)
	m.mu.Lock()
	if reserve {
		p.reserveFilling--
	} else {
		p.filling--
	}
	m.filling--
	if err != nil {
		closed, retryIn := m.closed, p.backoff
		if !closed {
			p.failures++
			p.retryAt = time.Now().Add(p.backoff)
			p.backoff = min(2*p.backoff, warmMaxBackoff)
			m.releaseWaitersLocked(p)
		}
		m.mu.Unlock() // p's fields belong to m.mu: another fill may fail meanwhile
		if !closed {
			m.log.Warn("refilling the warm pool", "type", p.typ, "error", err, "retry_in", retryIn)
		}
		return
	}
	p.backoff = warmMinBackoff
	if m.closed {
		m.mu.Unlock()
		_ = m.end(context.Background(), sb)
		return
	}
	m.placeLocked(p, sb, reserve)
	warmUp := m.opts.WarmUp
	if reserve {
		warmUp = m.opts.WarmUpReserve
	}
	if warmUp != nil {
		p.warming++
	}
	m.mu.Unlock()
	m.log.Debug("warm sandbox ready", "sandbox", sb.ID(), "type", p.typ, "reserve", reserve)
	if warmUp != nil {
		m.warmUp(p, sb, warmUp)
	}
}

// warmUp runs warmUp, the pool's WarmUp or WarmUpReserve, on sb, a sandbox it has just
// placed: it is usable meanwhile (a call that comes first runs as it would have without),
// and the fill slot is free already.
func (m *Manager) warmUp(p *warmPool, sb Sandbox, warmUp func(context.Context, Sandbox, Resolved) error) {
	err := warmUp(m.warmCtx, sb, p.cfg)
	m.mu.Lock()
	p.warming--
	m.mu.Unlock()
	if err != nil {
		// Often a spare handed out and closed, or a server shutting down, meanwhile.
		m.log.Debug("warming a spare up", "sandbox", sb.ID(), "type", p.typ, "error", err)
	}
}

// placeLocked gives a sandbox p just made to the first waiter whose owner may have one more,
// else keeps it as a spare (of the reserve, when made for it), or removes it when p holds
// its target already (it shrank while the sandbox was being made). m.mu must be held.
func (m *Manager) placeLocked(p *warmPool, sb Sandbox, reserve bool) {
	for len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = slices.Delete(p.waiters, 0, 1)
		if m.ownerRoomLocked(w.owner) != nil {
			close(w.done) // it creates its own, and hears why it may not
			continue
		}
		p.waited++
		m.handOutLocked(sb, w.owner)
		w.sb = sb
		close(w.done)
		return
	}
	switch {
	case reserve && len(p.reserve) < p.reserveMax:
		p.reserve = append(p.reserve, sb)
	case !reserve && len(p.spares) < p.target:
		p.spares = append(p.spares, sb)
	default:
		m.closeAsyncLocked(sb)
	}
}

// releaseWaitersLocked tells every waiter of p to create its own sandbox. m.mu must be held.
func (m *Manager) releaseWaitersLocked(p *warmPool) {
	for _, w := range p.waiters {
		close(w.done)
	}
	p.waiters = nil
}

// handOutLocked makes sb owner's tracked sandbox. m.mu must be held.
func (m *Manager) handOutLocked(sb Sandbox, owner string) {
	m.byID[sb.ID()] = sb
	m.owners[sb.ID()] = owner
	m.handedOut[sb.ID()] = time.Now()
}

// shrinkIdle drops p back to its minimum when it has handed nothing out for WarmIdle, and
// removes its spares past the minimum, oldest first.
func (m *Manager) shrinkIdle(p *warmPool, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || p.target <= p.min || now.Sub(p.lastTake) < m.opts.WarmIdle {
		return
	}
	p.target = p.min
	p.shrinks++
	excess := max(len(p.spares)-p.target, 0)
	for _, sb := range p.spares[:excess] {
		m.closeAsyncLocked(sb)
	}
	p.spares = slices.Delete(p.spares, 0, excess)
	m.log.Info("warm pool idle: back to its minimum", "type", p.typ, "spares", p.target, "removed", excess)
}

// fromPool hands owner a sandbox of p: a ready spare, else the next one p makes. It returns
// nil, with hit false, when owner must create its sandbox itself (see the package comment
// above). hit says whether a spare was ready.
func (m *Manager) fromPool(ctx context.Context, p *warmPool, owner string) (sb Sandbox, hit bool, err error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, false, ErrManagerClosed
	}
	p.lastTake = time.Now()
	for len(p.spares)+len(p.reserve) > 0 {
		if err := m.ownerRoomLocked(owner); err != nil {
			m.mu.Unlock()
			return nil, false, err
		}
		from := &p.spares // the pool's own first: they had the full warm-up
		if len(p.spares) == 0 {
			from = &p.reserve
		}
		reserve := from == &p.reserve
		sb := (*from)[0]
		*from = slices.Delete(*from, 0, 1)
		if !isAlive(sb) {
			p.dead++
			m.log.Warn("warm sandbox died; removing it", "sandbox", sb.ID(), "type", p.typ)
			m.closeAsyncLocked(sb)
			continue
		}
		p.hits++
		if reserve {
			p.reserveHits++
		}
		m.handOutLocked(sb, owner)
		m.mu.Unlock()
		p.poke()
		return sb, true, nil
	}
	p.misses++
	if p.target < p.max {
		p.target++
		p.peak = max(p.peak, p.target)
	}
	if err := m.ownerRoomLocked(owner); err != nil {
		m.mu.Unlock()
		p.poke()
		return nil, false, err
	}
	// Wait only for a sandbox already being made that no earlier waiter will take: it
	// comes sooner than one started now would. Past those, create at once.
	if len(p.waiters) >= p.filling || time.Now().Before(p.retryAt) {
		m.mu.Unlock()
		p.poke()
		return nil, false, nil
	}
	w := &warmWaiter{owner: owner, done: make(chan struct{})}
	p.waiters = append(p.waiters, w)
	m.mu.Unlock()
	p.poke()

	select {
	case <-w.done:
		return w.sb, false, nil
	case <-ctx.Done():
	}
	m.mu.Lock()
	if i := slices.Index(p.waiters, w); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
		m.mu.Unlock()
		return nil, false, fmt.Errorf("waiting for a warm sandbox: %w", context.Cause(ctx))
	}
	// Served (or released) while giving up: an unused sandbox goes back to the pool.
	if w.sb != nil && !m.closed {
		m.forgetLocked(w.sb.ID())
		p.waited--
		p.spares = append([]Sandbox{w.sb}, p.spares...)
	}
	m.mu.Unlock()
	return nil, false, fmt.Errorf("waiting for a warm sandbox: %w", context.Cause(ctx))
}

// evictSpareLocked removes one spare to make room under the cap: a reserve's, from the
// fullest reserve, else one from the fullest pool. It reports whether there was one.
func (m *Manager) evictSpareLocked() bool {
	var fullest *warmPool
	var from *[]Sandbox
	for _, reserve := range []bool{true, false} {
		for _, p := range m.warm {
			spares := &p.spares
			if reserve {
				spares = &p.reserve
			}
			if len(*spares) > 0 && (from == nil || len(*spares) > len(*from)) {
				fullest, from = p, spares
			}
		}
		if from != nil {
			break
		}
	}
	if from == nil {
		return false
	}
	sb := (*from)[0]
	*from = slices.Delete(*from, 0, 1)
	fullest.evicted++
	m.log.Info("evicting a warm sandbox to make room under the cap", "sandbox", sb.ID(), "type", fullest.typ)
	m.closeAsyncLocked(sb)
	return true
}

// closeAsyncLocked removes sb in the background; Close waits for it. m.mu must be held.
func (m *Manager) closeAsyncLocked(sb Sandbox) {
	m.warmWG.Add(1)
	go func() {
		defer m.warmWG.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.remove(ctx, sb); err != nil {
			m.log.Warn("removing a warm sandbox", "sandbox", sb.ID(), "error", err)
		}
	}()
}

// sparesLocked counts the spares and the refills under way, which hold room under the cap.
func (m *Manager) sparesLocked() int {
	n := 0
	for _, p := range m.warm {
		n += len(p.spares) + p.filling + len(p.reserve) + p.reserveFilling
	}
	return n
}

// drainWarmLocked empties every pool, tells its waiters to go (they then find the manager
// closed), and returns the spares for closing.
func (m *Manager) drainWarmLocked() []*slot {
	var out []*slot
	for _, p := range m.warm {
		for _, sb := range slices.Concat(p.spares, p.reserve) {
			out = append(out, doneSlot(sb))
		}
		p.spares, p.reserve = nil, nil
		m.releaseWaitersLocked(p)
	}
	return out
}

// observeAcquire records the creation of a pool's profile (or, without a pool, of a
// session's first sandbox).
func (m *Manager) observeAcquire(typ Type, warm bool, took time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.acq[typ]
	if a == nil {
		a = &acquireStats{}
		m.acq[typ] = a
	}
	if warm {
		a.warm.add(took)
	} else {
		a.cold.add(took)
	}
}

// warmStatsLocked lists every type with a pool or an Acquire creation, ordered by type.
func (m *Manager) warmStatsLocked() []WarmStats {
	types := map[Type]bool{}
	for t := range m.warm {
		types[t] = true
	}
	for t := range m.acq {
		types[t] = true
	}
	out := make([]WarmStats, 0, len(types))
	for t := range types {
		ws := WarmStats{Type: t}
		if p := m.warm[t]; p != nil {
			ws.Size, ws.Min, ws.Max, ws.Peak = p.target, p.min, p.max, p.peak
			ws.Spare, ws.Filling, ws.Warming, ws.Waiting = len(p.spares), p.filling+p.reserveFilling, p.warming, len(p.waiters)
			ws.Reserve, ws.ReserveMax, ws.ReserveHits = len(p.reserve), p.reserveMax, p.reserveHits
			ws.Hits, ws.Misses, ws.Waited = p.hits, p.misses, p.waited
			ws.Dead, ws.Evicted, ws.RefillFailures, ws.Shrinks = p.dead, p.evicted, p.failures, p.shrinks
		}
		if a := m.acq[t]; a != nil {
			ws.AcquireWarm, ws.AcquireCold = a.warm.summary(), a.cold.summary()
		}
		out = append(out, ws)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}
