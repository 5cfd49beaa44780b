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
