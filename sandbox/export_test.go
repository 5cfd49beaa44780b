package sandbox

import (
	"context"
	"time"
)

// ReapOrphansWith exposes reaping with a chosen liveness check, limited to one instance.
func ReapOrphansWith(ctx context.Context, b Backend, alive func(int, string) bool, instance string) (int, error) {
	return reap(ctx, b, instance, alive)
}

// WarmIdleTick runs typ's warm pool's idle check as if the clock read now.
func (m *Manager) WarmIdleTick(typ Type, now time.Time) { m.shrinkIdle(m.warm[typ], now) }

// ReserveTick runs typ's warm pool's reserve growth as if the clock read now, with the
// pool's own target made; it returns how long the pool would wait to ask again (0: it
// started a creation, or has nothing to do).
func (m *Manager) ReserveTick(typ Type, now time.Time) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.growReserveLocked(m.warm[typ], 0, now)
}

// AgentSocketBase is the directory holding e's agents' sockets while they connect; "" when
// e uses attach.
func (e *Docker) AgentSocketBase() string { return e.sockets.base }

// BreakAgentSockets makes e's sockets fail to open, as ones the engine cannot see would,
// until restore.
func (e *Docker) BreakAgentSockets() (restore func()) {
	base := e.sockets.base
	e.sockets.base = "/nonexistent-enclave-test/sockets"
	return func() { e.sockets.base = base }
}
