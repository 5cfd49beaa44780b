package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Variants: the same operation measured two ways in the same run, on the same engine, so
// that their difference is what one choice costs: the seccomp profile every create carries
// against the engine's own default, and each OCI runtime given with -runtimes (e.g. gVisor's
// runsc) against the engine's default runtime (runc).

// variant is one operation measured two ways: A, the reference, and B.
type variant struct {
	Op     string
	ALabel string
	A      stats
	BLabel string
	B      stats
}

func (r *report) addVariant(v variant) { r.Variants = append(r.Variants, v) }

// variants measures the seccomp profile's create cost and, for each extra runtime, the
// lifecycle and a tool call beside the default runtime's.
func (b *bench) variants(ctx context.Context) error {
	fmt.Fprintln(os.Stderr, "pinned seccomp profile, create cost:")
	if err := b.seccompCost(ctx); err != nil {
		return err
	}
	for _, rt := range b.runtimes {
		fmt.Fprintf(os.Stderr, "runtime %s beside the engine's default:\n", rt)
		if err := b.runtimeRows(ctx, rt); err != nil {
			return fmt.Errorf("runtime %s: %w", rt, err)
		}
	}
	return nil
}

// seccompCost times ContainerCreate alone (no start) with the sandbox's spec as is, which
// carries the default seccomp profile as JSON, and with that option removed (the engine then
// applies its built-in copy of the same profile). The two kinds alternate, so that drift on a
// shared machine falls on both.
func (b *bench) seccompCost(ctx context.Context) error {
	_, pinned := b.base.spec()
	_, engineDefault := b.base.spec()
	var kept []string
	for _, opt := range engineDefault.SecurityOpt {
		if !strings.HasPrefix(opt, "seccomp=") {
			kept = append(kept, opt)
		}
	}
	engineDefault.SecurityOpt = kept
	var profileBytes int
	for _, opt := range pinned.SecurityOpt {
		if strings.HasPrefix(opt, "seccomp=") {
			profileBytes = len(opt) - len("seccomp=")
		}
	}

	create := func(host *container.HostConfig) (time.Duration, error) {
		cfg, _ := b.base.spec()
		start := time.Now()
		created, err := b.cli.ContainerCreate(ctx, cfg, host, nil, nil, "")
		took := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("creating a baseline container: %w", err)
		}
		b.track.addContainer(created.ID)
		return took, b.base.remove(context.WithoutCancel(ctx), created.ID)
	}
	fmt.Fprintf(os.Stderr, "  %-44s", fmt.Sprintf("ContainerCreate, %d runs each, alternating", b.n))
	var withProfile, without []time.Duration
	for i := range b.n + 1 { // the first pair warms up
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		a, err := create(engineDefault)
		if err != nil {
			return err
		}
		p, err := create(pinned)
		if err != nil {
			return err
		}
		if i > 0 {
			without, withProfile = append(without, a), append(withProfile, p)
		}
	}
	v := variant{
		Op:     "ContainerCreate only (no start)",
		ALabel: "engine's default profile",
		A:      summarize(without),
		BLabel: fmt.Sprintf("profile pinned (%.1f KB JSON)", float64(profileBytes)/1000),
		B:      summarize(withProfile),
	}
	fmt.Fprintf(os.Stderr, "median %s without, %s pinned\n", fmtDur(v.A.Median), fmtDur(v.B.Median))
	b.rep.addVariant(v)
	return nil
}

// runtimeRows measures sandbox create → ready, removal, a plain container's create+start and
// python_executor print(1) under the engine's default runtime and under rt.
func (b *bench) runtimeRows(ctx context.Context, rt string) error {
	info, err := b.cli.Info(ctx)
	if err != nil {
		return fmt.Errorf("asking the engine for its runtimes: %w", err)
	}
	if _, ok := info.Runtimes[rt]; !ok {
		names := make([]string, 0, len(info.Runtimes))
		for name := range info.Runtimes {
			names = append(names, name)
		}
		return fmt.Errorf("the engine has no runtime %q (it has %s); for gVisor run `make gvisor` (scripts/ensure-gvisor.sh)", rt, strings.Join(names, ", "))
	}
	def := info.DefaultRuntime
	cfgFor := func(runtime string) sandbox.Resolved {
		c := b.cfg
		c.Runtime = runtime
		return c
	}
	both := func(op string, measureOne func(name string, cfg sandbox.Resolved) (stats, error)) error {
		a, err := measureOne(def, cfgFor(""))
		if err != nil {
			return err
		}
		bb, err := measureOne(rt, cfgFor(rt))
		if err != nil {
			return err
		}
		b.rep.addVariant(variant{Op: op, ALabel: def + " (engine default)", A: a, BLabel: rt, B: bb})
		return nil
	}
	runs := b.createRuns()

	if err := both("sandbox create+start → ready", func(name string, cfg sandbox.Resolved) (stats, error) {
		return measure(ctx, name+": Engine.Create", runs, func(w *stopwatch) error {
			sb, err := b.newSandboxOn(ctx, b.engine, cfg)
			w.stop()
			if err != nil {
				return err
			}
			return b.closeSandbox(context.WithoutCancel(ctx), sb)
		})
	}); err != nil {
		return err
	}
	if err := both("sandbox removal (Close)", func(name string, cfg sandbox.Resolved) (stats, error) {
		return measure(ctx, name+": AgentSandbox.Close", runs, func(w *stopwatch) error {
			sb, err := b.newSandboxOn(ctx, b.engine, cfg)
			if err != nil {
				return err
			}
			w.restart()
			return b.closeSandbox(ctx, sb)
		})
	}); err != nil {
		return err
	}
	if err := both("plain container create+start, PID 1 `sleep`", func(name string, cfg sandbox.Resolved) (stats, error) {
		base := &baseline{cli: b.cli, cfg: cfg, runID: b.base.runID, track: b.track}
		return measure(ctx, name+": docker create+start", runs, func(w *stopwatch) error {
			id, err := base.createStart(ctx)
			w.stop()
			if err != nil {
				return err
			}
			return base.remove(context.WithoutCancel(ctx), id)
		})
	}); err != nil {
		return err
	}
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	return both("python_executor `print(1)`", func(name string, cfg sandbox.Resolved) (stats, error) {
		sb, err := b.newSandboxOn(ctx, b.engine, cfg)
		if err != nil {
			return stats{}, err
		}
		defer b.closeSandbox(context.WithoutCancel(ctx), sb)
		return measure(ctx, name+": python_executor print(1)", b.n, func(*stopwatch) error {
			res, err := invoke(ctx, defs["python_executor"], sb, map[string]any{"code": "print(1)"})
			if err != nil {
				return err
			}
			if res.Output != "1\n" {
				return fmt.Errorf("python_executor printed %q, want \"1\\n\"", res.Output)
			}
			return nil
		})
	})
}

// spec is the baseline container's spec (a sandbox's hardening, PID 1 sleep).
func (b *baseline) spec() (*container.Config, *container.HostConfig) {
	return baselineSpec(b.cfg, b.runID)
}

// printVariants writes the variants table, when there is one.
func printVariants(w io.Writer, r *report) {
	if len(r.Variants) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Two ways, same run\n\n")
	fmt.Fprintf(w, "Each operation measured both ways in this run; B − A and B / A are of the medians.\n\n")
	t := &table{}
	t.row("operation", "A", "median", "p90", "min", "n", "B", "median", "p90", "min", "n", "B − A", "B / A")
	for _, v := range r.Variants {
		cells := []string{v.Op, v.ALabel}
		cells = append(cells, statCells(v.A)...)
		cells = append(cells, v.BLabel)
		cells = append(cells, statCells(v.B)...)
		diff, ratio := "—", "—"
		if v.A.N > 0 && v.B.N > 0 {
			diff = fmtSigned(v.B.Median - v.A.Median)
			if v.A.Median > 0 {
				ratio = fmt.Sprintf("%.2f×", float64(v.B.Median)/float64(v.A.Median))
			}
		}
		cells = append(cells, diff, ratio)
		t.row(cells...)
	}
	t.write(w)
}

func fmtSigned(d time.Duration) string {
	if d < 0 {
		return "−" + fmtDur(-d)
	}
	return "+" + fmtDur(d)
}

type jsonVariant struct {
	Op     string     `json:"op"`
	ALabel string     `json:"a"`
	A      *jsonStats `json:"a_stats,omitempty"`
	BLabel string     `json:"b"`
	B      *jsonStats `json:"b_stats,omitempty"`
}

func (r *report) variantsJSON() []jsonVariant {
	var out []jsonVariant
	for _, v := range r.Variants {
		out = append(out, jsonVariant{Op: v.Op, ALabel: v.ALabel, A: v.A.toJSON(), BLabel: v.BLabel, B: v.B.toJSON()})
	}
	return out
}
