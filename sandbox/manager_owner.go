package sandbox

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"time"
)

// Owner-scoped access. A sandbox belongs to the owner it was created for (an MCP session, a
// REST principal); callers that serve more than one principal go through these methods so
// that one principal cannot list, read, run in or remove another's sandbox. The owner is the
// one Create recorded; the empty owner owns nothing.

// GetOwned returns sandbox id when owner owns it. Another owner's sandbox is reported
// exactly as a missing one (ErrNotFound), so its id cannot be probed.
func (m *Manager) GetOwned(owner, id string) (Sandbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb, ok := m.byID[id]
	if !ok || owner == "" || m.owners[id] != owner {
		return nil, fmt.Errorf("sandbox %q: %w", id, ErrNotFound)
	}
	return sb, nil
}

// ListOwned returns owner's sandboxes, ordered by id.
func (m *Manager) ListOwned(owner string) []Sandbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Sandbox
	for id, sb := range m.byID {
		if owner != "" && m.owners[id] == owner {
			out = append(out, sb)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// DeleteOwned removes sandbox id when owner owns it.
func (m *Manager) DeleteOwned(ctx context.Context, owner, id string) error {
	if _, err := m.GetOwned(owner, id); err != nil {
		return err
	}
	return m.Delete(ctx, id)
}

// Policy is the operator's policy, which Create applies to every config.
func (m *Manager) Policy() Policy { return m.opts.Policy }

// DefaultConfig returns the operator's default config for sandboxes of type typ. It is a
// copy: the caller may change it freely.
func (m *Manager) DefaultConfig(typ Type) Config {
	c := m.opts.Defaults[typ]
	c.EnvVars = maps.Clone(c.EnvVars)
	c.ExtraHosts = maps.Clone(c.ExtraHosts)
	c.Volumes = maps.Clone(c.Volumes)
	if c.ToolsConfig != nil {
		tc := make(ToolsConfig, len(c.ToolsConfig))
		for name, opts := range c.ToolsConfig {
			tc[name] = maps.Clone(opts)
		}
		c.ToolsConfig = tc
	}
	if c.ReadOnlyRootfs != nil {
		c.ReadOnlyRootfs = ptr(*c.ReadOnlyRootfs)
	}
	if c.RemoveOnExit != nil {
		c.RemoveOnExit = ptr(*c.RemoveOnExit)
	}
	return c
}

// relabelTimeout bounds labelOwner: a hand-out waits for it, and goes on without it.
const relabelTimeout = 5 * time.Second

// labelOwner gives a warm spare just handed to owner its owner's label, where its backend
// can change labels (Relabeler). A failure is logged, not returned: the sandbox is owner's
// in this manager whatever its label says, and every check on this server reads the
// manager.
func (m *Manager) labelOwner(ctx context.Context, sb Sandbox, owner string) {
	a, ok := sb.(*AgentSandbox)
	if !ok || owner == "" {
		return
	}
	rl, ok := a.backend.(Relabeler)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), relabelTimeout)
	defer cancel()
	if err := rl.Relabel(ctx, a.ref, map[string]string{LabelOwner: owner}); err != nil {
		m.log.Warn("labelling a warm sandbox with its owner", "sandbox", sb.ID(), "error", err)
	}
}
