package main

import (
	"context"
	"fmt"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Targets for python_executor served by the sandbox's resident interpreter (a process
// forked per call, with numpy, pandas and matplotlib imported already).
const (
	targetForkedPrint  = 3 * time.Millisecond
	targetForkedImport = 15 * time.Millisecond
)

// waitForked calls python_executor until a call is forked from the resident interpreter,
// which the first call starts in the background.
func (b *bench) waitForked(ctx context.Context, sb *sandbox.AgentSandbox) error {
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		res, err := invoke(ctx, defs["python_executor"], sb, map[string]any{"code": "pass"})
		if err != nil {
			return err
		}
		if res.Metadata["forked"] == true {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("python_executor: no call was forked from the resident interpreter within 2 minutes (image %s)", b.cfg.Image)
}

// forkedPython measures python_executor's forked calls beside the same script run by a
// fresh `python3 -` in the same sandbox.
func (b *bench) forkedPython(ctx context.Context, sb *sandbox.AgentSandbox) error {
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	for _, c := range []struct {
		script string
		target time.Duration
	}{
		{"print(1)", targetForkedPrint},
		{"import numpy, pandas; print(1)", targetForkedImport},
	} {
		r := row{Op: fmt.Sprintf("python_executor `%s`", c.script), Baseline: "a fresh `python3 -` in the same sandbox", Target: c.target}
		r.Ours, err = measure(ctx, "ours: forked "+c.script, b.n, func(*stopwatch) error {
			res, err := invoke(ctx, defs["python_executor"], sb, map[string]any{"code": c.script})
			if err != nil {
				return err
			}
			if res.Output != "1\n" || res.Metadata["forked"] != true {
				return fmt.Errorf("python_executor %q: output %q, forked %v; want \"1\\n\" from a forked process", c.script, res.Output, res.Metadata["forked"])
			}
			return nil
		})
		if err != nil {
			return err
		}
		r.Docker, err = measure(ctx, "fresh python3: "+c.script, b.n, func(*stopwatch) error {
			res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "-"}, Stdin: []byte(c.script), TimeoutMS: 60_000}, nil)
			if err != nil {
				return err
			}
			if res.Stdout != "1\n" || res.Forked {
				return fmt.Errorf("python3 - %q: stdout %q, stderr %q, forked %v", c.script, res.Stdout, res.Stderr, res.Forked)
			}
			return nil
		})
		if err != nil {
			return err
		}
		b.rep.add(r)
	}
	return nil
}
