package sandbox

import "context"

// ReapOrphansWith exposes reaping with a chosen liveness check, limited to one instance.
func (e *Engine) ReapOrphansWith(ctx context.Context, alive func(int, string) bool, instance string) (int, error) {
	return e.reap(ctx, instance, alive)
}
