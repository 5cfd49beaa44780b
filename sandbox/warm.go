package sandbox

import (
	"context"
	"slices"
	"sort"
	"time"
)

// Warm pools: per sandbox profile (a type and the resolved default config of that type: image,
// limits, tools), the Manager keeps a few started, ready sandboxes, so that a new session's
// first sandbox (Acquire's creation path) is handed out in microseconds instead of being
// created in a few hundred milliseconds.
//
// A warm sandbox serves exactly one owner. It is created for nobody (owner "": no owner
// label on its container, and its own Info().Owner stays empty), and on hand-out the
// Manager's owners map records the session, which is what every ownership check reads
// (manager_owner.go). When that owner releases it, it is destroyed like any other sandbox;
// it never goes back to the pool and is never handed to another owner. That is the
// difference from pool.go's ms-enclave pool, which lends the same sandboxes to execution
// after execution.
//
// Refilling runs in one goroutine per profile that creates one sandbox at a time, so a
// burst of sessions never competes with a burst of refills for the engine; it never holds
// more than the profile's size, and it never creates past MaxSandboxes. Spares do count
// against MaxSandboxes, but never refuse a session: a creation that finds the cap reached
// while spares exist evicts one. Spares are not tracked sandboxes (List, Get and the idle
// and lifetime janitor do not see them); a session's idle TTL and maximum lifetime count
// from the hand-out, not from the spare's creation. A spare found dead at hand-out is
// removed and the next one tried; with none left the session's sandbox is created cold.

// warmPool is one profile's spares. Its slices and counters are guarded by Manager.mu.
type warmPool struct {
	typ     Type
	cfg     Resolved
	size    int
	spares  []Sandbox // oldest first
	filling int       // creations under way (0 or 1)
	kick    chan struct{}

	hits, misses, dead, evicted, failures uint64
}

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
	// Size is the number of spares the pool keeps (0: no pool); Spare is how many are ready
	// now, Filling how many are being created.
	Size    int `json:"size"`
	Spare   int `json:"spare"`
	Filling int `json:"filling"`
	// Hits and Misses count first sandboxes of a session handed out from the pool and
	// created cold because it was empty.
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
	// Dead counts spares found dead at hand-out, Evicted spares removed to make room under
	// MaxSandboxes, RefillFailures failed refills.
	Dead           uint64 `json:"dead"`
	Evicted        uint64 `json:"evicted"`
	RefillFailures uint64 `json:"refill_failures"`
	// AcquireWarm and AcquireCold are Acquire's latencies for a session's first sandbox.
	AcquireWarm Latency `json:"acquire_warm"`
	AcquireCold Latency `json:"acquire_cold"`
}

// startWarm builds the pools of opts.Warm and starts their refill goroutines.
func (m *Manager) startWarm() {
	m.warmCtx, m.warmCancel = context.WithCancel(context.Background())
	for typ, size := range m.opts.Warm {
		if size <= 0 {
			continue
		}
		if _, ok := m.opts.Creators[typ]; !ok {
			m.log.Warn("no warm pool: sandbox type not available", "type", typ)
			continue
		}
		cfg, err := Resolve(m.opts.Defaults[typ], m.opts.Policy)
		if err != nil {
			m.log.Warn("no warm pool: the default config does not resolve", "type", typ, "error", err)
			continue
		}
		p := &warmPool{typ: typ, cfg: cfg, size: size, kick: make(chan struct{}, 1)}
		m.warm[typ] = p
		m.warmWG.Add(1)
		go m.refill(p)
		p.poke()
	}
}

// poke wakes the pool's refill goroutine without blocking.
func (p *warmPool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// pokeWarm wakes every refill goroutine: room may have opened under the cap.
func (m *Manager) pokeWarm() {
	for _, p := range m.warm {
		p.poke()
	}
}

// refill keeps p at its size, one creation at a time, until the manager closes.
func (m *Manager) refill(p *warmPool) {
	defer m.warmWG.Done()
	const minBackoff, maxBackoff = 500 * time.Millisecond, 30 * time.Second
	backoff := minBackoff
	for {
		made, err := m.refillOne(p)
		var retry <-chan time.Time
		switch {
		case err != nil:
			m.log.Warn("refilling the warm pool", "type", p.typ, "error", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			retry = t.C
			backoff = min(2*backoff, maxBackoff)
			select {
			case <-m.warmCtx.Done():
				t.Stop()
				return
			case <-retry:
			}
			continue
		case made:
			backoff = minBackoff
			continue
		}
		select {
		case <-m.warmCtx.Done():
			return
		case <-p.kick:
		}
	}
}

// refillOne creates one spare when p is short of its size and the cap leaves room.
func (m *Manager) refillOne(p *warmPool) (made bool, err error) {
	m.mu.Lock()
	if m.closed || len(p.spares)+p.filling >= p.size ||
		(m.opts.MaxSandboxes > 0 && m.totalLocked() >= m.opts.MaxSandboxes) {
		m.mu.Unlock()
		return false, nil
	}
	p.filling++
	m.mu.Unlock()

	sb, err := m.opts.Creators[p.typ](m.warmCtx, "", p.cfg)

	m.mu.Lock()
	p.filling--
	if err != nil {
		closed := m.closed
		if !closed {
			p.failures++
		}
		m.mu.Unlock()
		if closed {
			return false, nil
		}
		return false, err
	}
	if m.closed {
		m.mu.Unlock()
		_ = sb.Close(context.Background())
		return false, nil
	}
	p.spares = append(p.spares, sb)
	m.mu.Unlock()
	m.log.Debug("warm sandbox ready", "sandbox", sb.ID(), "type", p.typ)
	return true, nil
}

// takeWarm hands owner a ready spare of type typ, or returns nil when there is none (or no
// pool). A spare that died is removed and the next one tried.
func (m *Manager) takeWarm(owner string, typ Type) (Sandbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.warm[typ]
	if p == nil {
		return nil, nil
	}
	if m.closed {
		return nil, ErrManagerClosed
	}
	for len(p.spares) > 0 {
		if err := m.ownerRoomLocked(owner); err != nil {
			return nil, err
		}
		sb := p.spares[0]
		p.spares = slices.Delete(p.spares, 0, 1)
		if !isAlive(sb) {
			p.dead++
			m.log.Warn("warm sandbox died; removing it", "sandbox", sb.ID(), "type", typ)
			m.closeAsyncLocked(sb)
			continue
		}
		p.hits++
		m.byID[sb.ID()] = sb
		m.owners[sb.ID()] = owner
		m.handedOut[sb.ID()] = time.Now()
		p.poke()
		return sb, nil
	}
	p.misses++
	p.poke()
	return nil, nil
}

// evictSpareLocked removes one spare, from the fullest pool, to make room under the cap.
// It reports whether there was one.
func (m *Manager) evictSpareLocked() bool {
	var fullest *warmPool
	for _, p := range m.warm {
		if len(p.spares) > 0 && (fullest == nil || len(p.spares) > len(fullest.spares)) {
			fullest = p
		}
	}
	if fullest == nil {
		return false
	}
	sb := fullest.spares[0]
	fullest.spares = slices.Delete(fullest.spares, 0, 1)
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
		if err := sb.Close(ctx); err != nil {
			m.log.Warn("removing a warm sandbox", "sandbox", sb.ID(), "error", err)
		}
	}()
}

// sparesLocked counts the spares and the refills under way, which hold room under the cap.
func (m *Manager) sparesLocked() int {
	n := 0
	for _, p := range m.warm {
		n += len(p.spares) + p.filling
	}
	return n
}

// drainWarmLocked empties every pool and returns the spares for closing.
func (m *Manager) drainWarmLocked() []*slot {
	var out []*slot
	for _, p := range m.warm {
		for _, sb := range p.spares {
			out = append(out, doneSlot(sb))
		}
		p.spares = nil
	}
	return out
}

// observeAcquire records a session's first sandbox creation.
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
			ws.Size, ws.Spare, ws.Filling = p.size, len(p.spares), p.filling
			ws.Hits, ws.Misses, ws.Dead, ws.Evicted, ws.RefillFailures = p.hits, p.misses, p.dead, p.evicted, p.failures
		}
		if a := m.acq[t]; a != nil {
			ws.AcquireWarm, ws.AcquireCold = a.warm.summary(), a.cold.summary()
		}
		out = append(out, ws)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}
