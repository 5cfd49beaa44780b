package session

import (
	"context"
	"fmt"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Pools are ms-enclave's /pool: each owner's sandboxes of one type, started ahead and lent
// out one call at a time, cleaned between borrowers.

// InitializePool implements api.Manager.
func (l *Caller) InitializePool(ctx context.Context, size int, typ sandbox.Type, cfg *sandbox.Config) ([]string, error) {
	if size < 1 || size > l.limits.MaxPoolSize {
		return nil, fmt.Errorf("%w: pool_size %d must be between 1 and %d", api.ErrBadRequest, size, l.limits.MaxPoolSize)
	}
	var req sandbox.Config
	if cfg != nil {
		req = *cfg
	}
	typ, merged, err := l.prepare(typ, req)
	if err != nil {
		return nil, err
	}
	return l.pool(typ, true).Grow(ctx, size, merged)
}

// pool returns this owner's pool of type typ, making it when create is set.
func (l *Caller) pool(typ sandbox.Type, create bool) *sandbox.Pool {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := poolKey{l.owner, typ}
	p := l.pools[key]
	if p == nil && create {
		p = sandbox.NewPool(l.m, l.owner, typ)
		l.pools[key] = p
	}
	return p
}

// ExecuteInPool implements api.Manager. The tool's sandbox type picks the pool; a tool made
// for plain docker sandboxes also runs in a notebook pool when there is no docker pool.
func (l *Caller) ExecuteInPool(ctx context.Context, tool string, params any, wait time.Duration) (tools.Result, error) {
	return l.call(ctx, Call{Tool: tool, Args: params}, target{
		tool: func(name string) (tools.Def, error) {
			if def, ok := l.byName[name]; ok {
				return def, nil
			}
			return tools.Def{}, fmt.Errorf("tool %q: %w", name, sandbox.ErrNotFound)
		},
		sandbox: func(ctx context.Context, def tools.Def) (sandbox.Sandbox, func(), error) {
			return l.borrow(ctx, def, wait)
		},
		stopped: "initialize the pool again",
	})
}

// borrow lends a free sandbox of def's pool, waiting up to wait for one; the release
// function gives it back. The sandbox must offer def.
func (l *Caller) borrow(ctx context.Context, def tools.Def, wait time.Duration) (sandbox.Sandbox, func(), error) {
	p := l.pool(def.Sandbox, false)
	if (p == nil || p.Size() == 0) && def.Sandbox == sandbox.TypeDocker {
		if nb := l.pool(sandbox.TypeNotebook, false); nb != nil {
			p = nb
		}
	}
	if p == nil {
		return nil, nil, sandbox.ErrPoolEmpty
	}
	if wait <= 0 {
		wait = l.limits.PoolWait
	}
	sb, err := p.Borrow(ctx, wait)
	if err != nil {
		return nil, nil, err
	}
	if _, err := l.offered(sb, def.Name); err != nil {
		p.Return(sb)
		return nil, nil, err
	}
	return sb, func() { p.Return(sb) }, nil
}
