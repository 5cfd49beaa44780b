package sandbox

import "context"

// ReapOrphansWith exposes reaping with a chosen liveness check, limited to one instance.
func ReapOrphansWith(ctx context.Context, b Backend, alive func(int, string) bool, instance string) (int, error) {
	return reap(ctx, b, instance, alive)
}
