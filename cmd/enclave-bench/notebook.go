package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Notebook sandboxes: how long one takes from nothing to a cell's result, and a cell's round
// trip through notebook_executor (the tunnel through the agent, jupyter_server and the
// kernel) beside a fresh python3 per call by docker exec in the same container, which is
// what stateless execution costs.

// targetNotebookRoundTrip is the notebook issue's target for `1+1`.
const targetNotebookRoundTrip = 10 * time.Millisecond

// notebookStarts is how many notebook sandboxes the start figure creates.
func (b *bench) notebookStarts() int { return max(3, b.createRuns()/2) }

func (b *bench) notebook(ctx context.Context) error {
	cfg := b.cfg
	cfg.Image = sandbox.DefaultNotebookImage
	present, err := b.engine.ImagePresent(ctx, cfg.Image)
	if err != nil {
		return err
	}
	if !present {
		fmt.Fprintf(os.Stderr, "  skipped: image %s is missing (enclave-mcp images build --missing)\n", cfg.Image)
		b.rep.add(row{Op: "notebook sandbox start → first result", Skipped: "image " + cfg.Image + " missing: enclave-mcp images build --missing"})
		return nil
	}

	start := row{Op: "notebook sandbox start → first `1+1` result", Baseline: "—", Skipped: "no plain-Docker equivalent"}
	start.Ours, err = measureNoWarmup(ctx, "ours: notebook.Start + 1+1", b.notebookStarts(), func(w *stopwatch) error {
		sb, err := b.startNotebook(ctx, cfg)
		if err != nil {
			return err
		}
		defer b.closeNotebook(context.WithoutCancel(ctx), sb)
		res, err := sb.Execute(ctx, "1+1", notebook.ExecOptions{Timeout: 30 * time.Second})
		w.stop()
		if err != nil {
			return err
		}
		if res.Value != "2" {
			return fmt.Errorf("1+1 gave %q", res.Value)
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.rep.add(start)

	sb, err := b.startNotebook(ctx, cfg)
	if err != nil {
		return fmt.Errorf("creating the notebook sandbox for the round trips: %w", err)
	}
	defer b.closeNotebook(context.WithoutCancel(ctx), sb)
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	rt := row{Op: "notebook_executor `1+1`", Baseline: "docker exec `python3 -c 'print(1+1)'`", Target: targetNotebookRoundTrip}
	rt.Ours, err = measure(ctx, "ours: notebook_executor 1+1", b.n, func(*stopwatch) error {
		res, err := invoke(ctx, defs["notebook_executor"], sb, map[string]any{"code": "1+1"})
		if err != nil {
			return err
		}
		if res.Output != "2" {
			return fmt.Errorf("notebook_executor gave %q, want 2", res.Output)
		}
		return nil
	})
	if err != nil {
		return err
	}
	rt.Docker, err = measure(ctx, "docker: exec python3 -c print(1+1)", b.n, func(*stopwatch) error {
		out, errOut, code, err := dockerExec(ctx, b.cli, sb.ContainerID(), cfg.User, []string{"python3", "-c", "print(1+1)"}, nil)
		if err != nil {
			return err
		}
		if code != 0 || out != "2\n" {
			return fmt.Errorf("docker exec: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.rep.add(rt)

	plot := row{Op: "notebook_executor matplotlib plot → PNG", Baseline: "—", Skipped: "no plain-Docker equivalent"}
	plot.Ours, err = measure(ctx, "ours: notebook_executor plot", max(5, b.n/3), func(*stopwatch) error {
		res, err := invoke(ctx, defs["notebook_executor"], sb, map[string]any{"code": "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"})
		if err != nil {
			return err
		}
		if len(res.Images) != 1 {
			return fmt.Errorf("the plot gave %d images", len(res.Images))
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.rep.add(plot)
	return nil
}

func (b *bench) startNotebook(ctx context.Context, cfg sandbox.Resolved) (*notebook.Sandbox, error) {
	sb, err := notebook.Start(ctx, b.engine, "enclave-bench", cfg, notebook.Options{})
	if err != nil {
		return nil, err
	}
	b.track.addSandbox(sb.AgentSandbox)
	return sb, nil
}

func (b *bench) closeNotebook(ctx context.Context, sb *notebook.Sandbox) {
	if err := sb.Close(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "enclave-bench: closing notebook sandbox %s: %v\n", sb.ID(), err)
		return
	}
	b.track.dropSandbox(sb.AgentSandbox)
}
