package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Warm pools: a session's first sandbox through sandbox.Manager.Acquire, taken from a ready
// spare, beside the cold path (no spare: Acquire creates the container and waits for its
// agent). The cold path stands in the baseline column, so "docker / ours" is what the pool
// buys. Each run uses a new owner, released (and its sandbox removed) after the run, outside
// the timing; a warm run first waits, untimed, for the pool's refill to have a spare ready.

// Targets from the warm pool issue.
const (
	targetWarmAcquire   = 5 * time.Millisecond
	targetWarmFirstCall = 30 * time.Millisecond
)

func (b *bench) warm(ctx context.Context) error {
	fmt.Fprintln(os.Stderr, "warm pools:")
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	warmM, coldM := b.manager(b.engine, 1), b.manager(b.engine, 0)
	defer func() {
		cctx := context.WithoutCancel(ctx)
		_ = warmM.Close(cctx)
		_ = coldM.Close(cctx)
	}()

	python := defs["python_executor"]
	session := func(m *sandbox.Manager, warm, call bool) func(w *stopwatch) error {
		if !call {
			return acquireRun(ctx, m, warm, nil)
		}
		return acquireRun(ctx, m, warm, &python)
	}

	acq := row{Op: "warm-pool acquire (Manager.Acquire, spare ready)", Baseline: "cold: Acquire creates the sandbox", Target: targetWarmAcquire}
	if acq.Ours, err = measure(ctx, "ours: warm Acquire", b.n, session(warmM, true, false)); err != nil {
		return err
	}
	if acq.Docker, err = measureNoWarmup(ctx, "cold: Acquire", b.createRuns(), session(coldM, false, false)); err != nil {
		return err
	}
	b.rep.add(acq)

	first := row{Op: "first tool call of a session from the pool (Acquire + python `print(1)`)", Baseline: "cold: Acquire + the same call", Target: targetWarmFirstCall}
	if first.Ours, err = measure(ctx, "ours: warm Acquire + python print(1)", b.n, session(warmM, true, true)); err != nil {
		return err
	}
	if first.Docker, err = measureNoWarmup(ctx, "cold: Acquire + python print(1)", b.createRuns(), session(coldM, false, true)); err != nil {
		return err
	}
	b.rep.add(first)

	if w := warmStats(warmM); w.Misses > 0 || w.Dead > 0 {
		return fmt.Errorf("warm runs were not all served by the pool: %+v", w)
	}
	return nil
}

// acquireRun is one timed run of a session's start on m: it acquires a new owner's
// sandbox (after waiting, untimed, for a spare when warm), runs python `print(1)` in it when
// python is set, and releases it after the stopwatch stopped.
func acquireRun(ctx context.Context, m *sandbox.Manager, warm bool, python *benchTool) func(w *stopwatch) error {
	return func(w *stopwatch) error {
		if warm {
			if err := waitSpare(ctx, m); err != nil {
				return err
			}
		}
		owner := "enclave-bench-" + sandbox.NewID()
		defer func() { _ = m.Release(context.WithoutCancel(ctx), owner) }()
		w.restart()
		sb, err := m.Acquire(ctx, owner, sandbox.TypeDocker)
		if err != nil {
			return err
		}
		if python != nil {
			res, err := invoke(ctx, *python, sb, map[string]any{"code": "print(1)"})
			if err != nil {
				return err
			}
			if res.Output != "1\n" {
				return fmt.Errorf("python_executor printed %q, want \"1\\n\"", res.Output)
			}
		}
		w.stop()
		return nil
	}
}

// manager is a manager of sandboxes of the bench's image on be, with a pool of warm spares
// whose resident Python interpreter is started ahead of the first call, as serve's are.
func (b *bench) manager(be sandbox.Backend, warm int) *sandbox.Manager {
	return sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {Image: b.cfg.Image}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(be, sandbox.TypeDocker)},
		Warm:     map[sandbox.Type]int{sandbox.TypeDocker: warm},
		WarmUp:   sandbox.WarmPython,
	})
}

// waitSpare waits until m's docker pool has a spare ready and warmed up: a session comes
// to a pool that has had the time a model's turn takes to refill.
func waitSpare(ctx context.Context, m *sandbox.Manager) error {
	deadline := time.Now().Add(60 * time.Second)
	for w := warmStats(m); w.Spare == 0 || w.Warming > 0; w = warmStats(m) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no warm spare after 60 s: %+v", warmStats(m))
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

func warmStats(m *sandbox.Manager) sandbox.WarmStats {
	for _, w := range m.Stats().Warm {
		if w.Type == sandbox.TypeDocker {
			return w
		}
	}
	return sandbox.WarmStats{}
}
