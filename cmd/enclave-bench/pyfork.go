package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Targets for python_executor served by the sandbox's resident interpreter (a process
// forked per call, with numpy, pandas and matplotlib imported already).
const (
	targetForkedPrint  = 3 * time.Millisecond
	targetForkedImport = 15 * time.Millisecond
)

// pythonRows measures only the forked python rows, in a sandbox of their own.
func (b *bench) pythonRows(ctx context.Context) error {
	sb, err := b.newSandbox(ctx)
	if err != nil {
		return fmt.Errorf("creating the sandbox for python_executor: %w", err)
	}
	defer b.closeSandbox(context.WithoutCancel(ctx), sb)
	fmt.Fprintf(os.Stderr, "python_executor in sandbox %s (container %.12s):\n", sb.ID(), sb.ContainerID())
	if err := b.waitForked(ctx, sb); err != nil {
		return err
	}
	if err := b.forkedPython(ctx, sb); err != nil {
		return err
	}
	if b.compareEngine == nil {
		return nil
	}
	return b.comparedPython(ctx)
}

// comparedPython alternates python_executor `print(1)` calls, the think time apart, between
// a sandbox of the run's agent and one whose agent is another build's (-python-compare),
// both new: on this machine the same build's median moves by a fifth within an hour, so two
// builds measured one after the other differ by the hour as much as by the build. Which
// goes first alternates too (ABBA): the first of a pair came out ~0.15 ms faster whichever
// build it was.
func (b *bench) comparedPython(ctx context.Context) error {
	var pair [2]*sandbox.AgentSandbox
	for i, engine := range []*sandbox.Docker{b.engine, b.compareEngine} {
		sb, err := b.newSandboxOn(ctx, engine, b.cfg)
		if err != nil {
			return fmt.Errorf("creating a sandbox for the alternating row: %w", err)
		}
		defer b.closeSandbox(context.WithoutCancel(ctx), sb)
		if err := b.waitForked(ctx, sb); err != nil {
			return err
		}
		pair[i] = sb
	}
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	call := func(s *sandbox.AgentSandbox) (time.Duration, error) {
		if err := sleep(ctx, thinkTime); err != nil {
			return 0, err
		}
		start := time.Now()
		_, err := forkedCall(ctx, defs, s, "print(1)")
		return time.Since(start), err
	}
	fmt.Fprintf(os.Stderr, "  %-44s", "print(1), alternating with the other agent")
	var samples [2][]time.Duration // ours, theirs
	for i := range b.n {
		for _, k := range [][2]int{{0, 1}, {1, 0}}[i%2] {
			took, err := call(pair[k])
			if err != nil {
				fmt.Fprintln(os.Stderr, "failed")
				return err
			}
			samples[k] = append(samples[k], took)
		}
	}
	r := row{Op: fmt.Sprintf("python_executor `print(1)`, %s between calls, alternating", thinkTime),
		Baseline: "the same, by the agent " + b.compareAgent, Ours: summarize(samples[0]), Docker: summarize(samples[1])}
	fmt.Fprintf(os.Stderr, "median %s, compared %s, over %d each\n", fmtDur(r.Ours.Median), fmtDur(r.Docker.Median), b.n)
	b.rep.add(r)
	return nil
}

// forkedCall runs script, which prints 1, through python_executor in sb, and wants it
// served by the resident interpreter.
func forkedCall(ctx context.Context, defs map[string]benchTool, sb *sandbox.AgentSandbox, script string) (tools.Result, error) {
	res, err := invoke(ctx, defs["python_executor"], sb, map[string]any{"code": script})
	if err == nil && (res.Output != "1\n" || res.Metadata["forked"] != true) {
		err = fmt.Errorf("python_executor %q in %s: output %q, forked %v; want \"1\\n\" from a forked process", script, sb.ID(), res.Output, res.Metadata["forked"])
	}
	return res, err
}

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
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("python_executor: no call was forked from the resident interpreter within 2 minutes (image %s)", b.cfg.Image)
}

// thinkTime separates the calls of the rows that model an agent: a model takes at least
// this long to read a result and write the next call.
const thinkTime = 250 * time.Millisecond

// forkedPython measures python_executor's forked calls beside the same script run by a
// fresh `python3 -` in the same sandbox: with an agent's think time between calls, when a
// spare process forked ahead is waiting for each call, and back to back, when each call
// waits for the fork of its process.
func (b *bench) forkedPython(ctx context.Context, sb *sandbox.AgentSandbox) error {
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	for _, c := range []struct {
		script string
		gap    time.Duration
		target time.Duration
	}{
		{"print(1)", thinkTime, targetForkedPrint},
		{"import numpy, pandas; print(1)", thinkTime, targetForkedImport},
		{"print(1)", 0, 0},
	} {
		op := fmt.Sprintf("python_executor `%s`, %s between calls", c.script, c.gap)
		if c.gap == 0 {
			op = fmt.Sprintf("python_executor `%s`, back to back", c.script)
		}
		pause := func(w *stopwatch) error {
			if err := sleep(ctx, c.gap); err != nil {
				return err
			}
			w.restart()
			return nil
		}
		r := row{Op: op, Baseline: "a fresh `python3 -` in the same sandbox", Target: c.target}
		var inSandbox []time.Duration
		r.Ours, err = measure(ctx, "ours: forked "+c.script, b.n, func(w *stopwatch) error {
			if err := pause(w); err != nil {
				return err
			}
			res, err := forkedCall(ctx, defs, sb, c.script)
			if err != nil {
				return err
			}
			if d, ok := agentMS(res); ok {
				inSandbox = append(inSandbox, d)
			}
			return nil
		})
		if err != nil {
			return err
		}
		r.Docker, err = measure(ctx, "fresh python3: "+c.script, b.n, func(w *stopwatch) error {
			if err := pause(w); err != nil {
				return err
			}
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
		b.rep.addAgentTime(r.Op, r.Ours, inSandbox)
	}
	return nil
}
