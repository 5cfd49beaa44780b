package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// transport measures the same tool calls with the agent's protocol on the engine's attach
// stream (A) and on the agent's own connection to the server's socket (B), the default for
// an engine on this host (sandbox/agentsocket.go). Each side gets a sandbox of its own.
func (b *bench) transport(ctx context.Context) error {
	if transport, _ := b.engine.AgentTransport(); transport != "socket" {
		fmt.Fprintln(os.Stderr, "  (the engine is not on this host: its sandboxes use attach; no transport rows)")
		return nil
	}
	attach, err := sandbox.NewDocker(ctx, sandbox.DockerOptions{AgentBinary: b.agentPath, AttachOnly: true, Instance: b.engine.Instance()})
	if err != nil {
		return fmt.Errorf("connecting an attach-only engine: %w", err)
	}
	defer attach.Close()
	sandboxes := map[string]*sandbox.AgentSandbox{}
	for _, side := range []struct {
		name   string
		engine *sandbox.Docker
	}{{"attach", attach}, {"socket", b.engine}} {
		sb, err := b.newSandboxOn(ctx, side.engine, b.cfg)
		if err != nil {
			return fmt.Errorf("creating the %s sandbox: %w", side.name, err)
		}
		defer b.closeSandbox(context.WithoutCancel(ctx), sb)
		if got := sb.Info().Metadata["agent_transport"]; got != side.name {
			return fmt.Errorf("the %s sandbox's agent uses %v", side.name, got)
		}
		if err := b.waitForked(ctx, sb); err != nil {
			return err
		}
		sandboxes[side.name] = sb
	}
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	for _, c := range []struct {
		tool, arg, code, want string
		gap                   time.Duration
	}{
		{"shell_executor", "command", "echo hi", "hi\n", 0},
		{"python_executor", "code", "print(1)", "1\n", thinkTime},
	} {
		one := func(side string) (stats, error) {
			return measure(ctx, side+": "+c.code, b.n, func(w *stopwatch) error {
				if c.gap > 0 {
					if err := sleep(ctx, c.gap); err != nil {
						return err
					}
					w.restart()
				}
				res, err := invoke(ctx, defs[c.tool], sandboxes[side], map[string]any{c.arg: c.code})
				if err != nil {
					return err
				}
				if res.Output != c.want {
					return fmt.Errorf("%s %q: output %q, want %q", c.tool, c.code, res.Output, c.want)
				}
				return nil
			})
		}
		a, err := one("attach")
		if err != nil {
			return err
		}
		s, err := one("socket")
		if err != nil {
			return err
		}
		op := fmt.Sprintf("%s `%s`, back to back", c.tool, c.code)
		if c.gap > 0 {
			op = fmt.Sprintf("%s `%s`, %s between calls", c.tool, c.code, c.gap)
		}
		b.rep.addVariant(variant{Op: op, ALabel: "agent over attach", A: a, BLabel: "agent over its socket", B: s})
	}
	return nil
}
