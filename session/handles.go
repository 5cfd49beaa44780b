package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Handles are sandboxes named by id rather than held by a session: how MCP clients of the
// stateless protocol (2026-07-28, no Mcp-Session-Id) keep one sandbox across calls. A
// handle is the id of a sandbox of the session type (every tool runs in it, the notebook's
// too), created through the Manager for the caller's credential: the operator's policy,
// the server's cap and the per-owner cap apply, counted with the credential's REST
// sandboxes. Only the owner that opened a handle can use or close it; to any other owner
// it is not found, exactly like an id that never existed (as the REST API answers). A
// handle ends when closed, when its sandbox goes (the Manager's own limits, a REST delete
// by the same credential), or after the idle TTL Sweep is given without a call.
type Handles struct {
	core *Core

	mu   sync.Mutex
	open map[string]*handle // by sandbox id
}

// handle is one open handle: its owner, when it was opened (a warm spare's clock starts
// there, not at the spare's creation), and the calls under way in it.
type handle struct {
	owner  string
	opened time.Time
	busy   int
	last   time.Time
}

// ErrNoHandle is the error of a handle that is not one of the caller's open handles.
var ErrNoHandle = fmt.Errorf("no such sandbox handle: %w", api.ErrNotFound)

// NewHandles serves handles on core's manager.
func NewHandles(core *Core) *Handles {
	return &Handles{core: core, open: map[string]*handle{}}
}

// Open creates a sandbox for owner, from the session type's default config (so from its
// warm pool when there is one), and returns its handle.
func (h *Handles) Open(ctx context.Context, owner string) (string, error) {
	if owner == "" {
		return "", errors.New("opening a sandbox handle: the request acts for no one (no credential)")
	}
	typ := h.core.sessionType
	sb, err := h.core.m.Create(ctx, owner, typ, h.core.m.DefaultConfig(typ))
	if err != nil {
		return "", fmt.Errorf("opening a sandbox: %w", err)
	}
	now := time.Now()
	h.mu.Lock()
	h.open[sb.ID()] = &handle{owner: owner, opened: now, last: now}
	h.mu.Unlock()
	h.core.log.Info("sandbox handle opened", "owner", owner, "sandbox", sb.ID())
	return sb.ID(), nil
}

// get finds owner's open handle id and its sandbox, counted as in use (and so never ended
// by the idle sweep) until release runs; the lookup and the count are one step, so the
// sweep ends a handle either before a call finds it or not at all. A handle whose sandbox
// the Manager no longer has is forgotten here.
func (h *Handles) get(owner, id string) (hd *handle, sb sandbox.Sandbox, release func(), err error) {
	h.mu.Lock()
	hd = h.open[id]
	if hd == nil || owner == "" || hd.owner != owner {
		h.mu.Unlock()
		return nil, nil, nil, fmt.Errorf("sandbox %q: %w", id, ErrNoHandle)
	}
	hd.busy++
	hd.last = time.Now()
	h.mu.Unlock()
	release = func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		hd.busy--
		hd.last = time.Now()
	}
	sb, err = h.core.m.GetOwned(owner, id)
	if err != nil {
		release()
		h.forget(id, hd)
		return nil, nil, nil, fmt.Errorf("sandbox %q: %w (it ended: closed, idle too long, or removed)", id, ErrNoHandle)
	}
	return hd, sb, release, nil
}

// Sandbox returns owner's sandbox of handle id, for reading its workspace.
func (h *Handles) Sandbox(owner, id string) (sandbox.Sandbox, error) {
	_, sb, release, err := h.get(owner, id)
	if err != nil {
		return nil, err
	}
	release()
	return sb, nil
}

// List lists owner's open handles, by id.
func (h *Handles) List(owner string) []sandbox.Sandbox {
	var out []sandbox.Sandbox
	for _, sb := range h.core.m.ListOwned(owner) {
		h.mu.Lock()
		hd := h.open[sb.ID()]
		h.mu.Unlock()
		if hd != nil && hd.owner == owner {
			out = append(out, sb)
		}
	}
	return out
}

// Run runs call in owner's sandbox of handle id, through the one call path every face
// uses. The idle clock never ends a handle under a call.
func (h *Handles) Run(ctx context.Context, owner, id string, call Call) (tools.Result, error) {
	_, sb, release, err := h.get(owner, id)
	if err != nil {
		return tools.Result{}, err
	}
	defer release()
	t := h.core.in(sb)
	t.stopped = "close it (sandbox_close) and open a new one"
	return h.core.Caller(owner).call(ctx, call, t)
}

// Close ends owner's handle id and removes its sandbox.
func (h *Handles) Close(ctx context.Context, owner, id string) error {
	hd, _, release, err := h.get(owner, id)
	if err != nil {
		return err
	}
	release()
	return h.end(ctx, id, hd, "closed")
}

func (h *Handles) end(ctx context.Context, id string, hd *handle, why string) error {
	h.forget(id, hd)
	err := h.core.m.DeleteOwned(ctx, hd.owner, id)
	if errors.Is(err, api.ErrNotFound) {
		err = nil
	}
	h.core.log.Info("sandbox handle ended", "owner", hd.owner, "sandbox", id, "why", why, "error", err)
	return err
}

// forget drops id from the index, if hd is still its handle.
func (h *Handles) forget(id string, hd *handle) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open[id] == hd {
		delete(h.open, id)
	}
}

// idle lists the handles with no call under way and none for ttl: counted from the later
// of the last call through Run and the sandbox's own last use.
func (h *Handles) idle(now time.Time, ttl time.Duration) map[string]*handle {
	h.mu.Lock()
	candidates := map[string]*handle{}
	for id, hd := range h.open {
		if hd.busy == 0 && now.Sub(hd.last) > ttl {
			candidates[id] = hd
		}
	}
	h.mu.Unlock()
	for id, hd := range candidates {
		sb, err := h.core.m.GetOwned(hd.owner, id)
		if err != nil {
			continue // gone already: end forgets it
		}
		if info := sb.Info(); info.Status == sandbox.StatusBusy || (info.LastUsedAt.After(hd.opened) && now.Sub(info.LastUsedAt) <= ttl) {
			delete(candidates, id)
		}
	}
	return candidates
}

// claimIdle drops hd from the index if it is still open and idle, so that no call finds
// it from here on; it reports whether it did.
func (h *Handles) claimIdle(id string, hd *handle, now time.Time, ttl time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open[id] != hd || hd.busy > 0 || now.Sub(hd.last) <= ttl {
		return false
	}
	delete(h.open, id)
	return true
}

// Sweep ends handles idle for ttl until ctx ends; ttl <= 0 never ends one.
func (h *Handles) Sweep(ctx context.Context, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	tick := time.NewTicker(max(ttl/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for id, hd := range h.idle(now, ttl) {
				if !h.claimIdle(id, hd, now, ttl) {
					continue // a call found it meanwhile
				}
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				if err := h.end(cctx, id, hd, "idle"); err != nil {
					h.core.log.Warn("ending an idle sandbox handle", "sandbox", id, "error", err)
				}
				cancel()
			}
		}
	}
}
