package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/client"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Targets from the performance issue, checked against our medians.
const (
	targetPython     = 25 * time.Millisecond
	targetShell      = 5 * time.Millisecond
	targetFile       = 5 * time.Millisecond
	targetRemove     = 300 * time.Millisecond
	targetConcurrent = 1500 * time.Millisecond
)

// concurrentCreates is how many sandboxes the concurrency test starts at once.
const concurrentCreates = 10

type bench struct {
	agentPath string // the sandboxes' agent binary
	core      *session.Core
	engine    *sandbox.Docker
	cli       *client.Client
	cfg       sandbox.Resolved
	track     *tracker
	base      *baseline
	n         int
	slow      bool
	rep       *report

	runtimes     []string // measured beside the engine's default runtime (variants.go)
	variantsOnly bool
	polyglotOnly bool // only multi_code_executor's languages (polyglot.go)
	egressOnly   bool // only the egress proxy's rows (egress.go)

	warmOnly      bool  // only the warm pools' rows (warm.go, restpool.go)
	removalOnly   bool  // only bulk removal (removal.go)
	pythonOnly    bool  // only python_executor's forked rows (pyfork.go)
	removalSizes  []int // its sandbox counts
	removalRounds int

	densityOnly    bool      // only density (density.go)
	densitySizes   []int     // its sandbox counts
	densityCompare bool      // also with enclave-mcp as the agent
	kube           kubeFlags // -kube: only the kube rows
	// densityEngine injects the agent built alone (enclave-agent); engine injects enclave-mcp.
	densityEngine *sandbox.Docker
	// compareEngine, if not nil, injects another build's agent (-python-compare, pyfork.go).
	compareEngine *sandbox.Docker
	compareAgent  string // its agent binary
}

// createRuns is the run count for operations that create a container per run.
func (b *bench) createRuns() int { return max(5, b.n/3) }

// concurrentRounds is the run count for the concurrent-create test: 3 to 5 rounds.
func (b *bench) concurrentRounds() int { return min(5, max(3, b.n/10)) }

// all measures every operation in turn, adding a row per operation to the report.
func (b *bench) all(ctx context.Context) error {
	if b.variantsOnly {
		return b.variants(ctx)
	}
	if b.removalOnly {
		return b.removal(ctx)
	}
	if b.densityOnly {
		return b.density(ctx)
	}
	if b.polyglotOnly {
		fmt.Fprintln(os.Stderr, "languages (multi_code_executor):")
		return b.polyglot(ctx)
	}
	if b.egressOnly {
		fmt.Fprintln(os.Stderr, "egress proxy vs a direct connection:")
		return b.egressProxy(ctx)
	}
	if b.pythonOnly {
		if err := b.pythonRows(ctx); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "the agent's protocol over attach vs its socket:")
		return b.transport(ctx)
	}
	if b.kube.kubeconfig != "" {
		fmt.Fprintln(os.Stderr, "kubernetes backend vs docker backend:")
		return b.kubeRows(ctx)
	}
	fmt.Fprintln(os.Stderr, "sandbox lifecycle:")
	if !b.warmOnly {
		if err := b.createAndRemove(ctx); err != nil {
			return err
		}
	}

	if err := b.warm(ctx); err != nil {
		return err
	}
	if err := b.restCreate(ctx); err != nil {
		return err
	}
	if b.warmOnly {
		return nil
	}

	// The per-call operations share one sandbox, and the baseline's docker exec runs in the
	// same container as the same user.
	sb, err := b.newSandbox(ctx)
	if err != nil {
		return fmt.Errorf("creating the sandbox for the per-call operations: %w", err)
	}
	defer b.closeSandbox(context.WithoutCancel(ctx), sb)
	fmt.Fprintf(os.Stderr, "per-call operations in sandbox %s (container %.12s):\n", sb.ID(), sb.ContainerID())
	if err := b.perCall(ctx, sb); err != nil {
		return err
	}
	if err := b.breakdown(ctx, sb); err != nil {
		return err
	}
	if err := b.variants(ctx); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "the agent's protocol over attach vs its socket:")
	if err := b.transport(ctx); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "MCP over HTTP vs in-process:")
	if err := b.httpLayer(ctx); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "egress proxy vs a direct connection:")
	if err := b.egressProxy(ctx); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "notebook sandboxes:")
	if err := b.notebook(ctx); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "languages (multi_code_executor):")
	if err := b.polyglot(ctx); err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "%d concurrent creates:\n", concurrentCreates)
	return b.concurrent(ctx)
}

func (b *bench) newSandbox(ctx context.Context) (*sandbox.AgentSandbox, error) {
	return b.newSandboxOn(ctx, b.engine, b.cfg)
}

// newSandboxOn creates a sandbox of cfg on engine, tracked for the final clean-up.
func (b *bench) newSandboxOn(ctx context.Context, engine *sandbox.Docker, cfg sandbox.Resolved) (*sandbox.AgentSandbox, error) {
	sb, err := sandbox.Create(ctx, engine, sandbox.CreateOptions{Config: cfg, Owner: "enclave-bench"})
	if err != nil {
		return nil, err
	}
	b.track.addSandbox(sb)
	return sb, nil
}

func (b *bench) closeSandbox(ctx context.Context, sb *sandbox.AgentSandbox) error {
	if err := sb.Close(ctx); err != nil {
		return fmt.Errorf("closing sandbox %s: %w", sb.ID(), err)
	}
	b.track.dropSandbox(sb)
	return nil
}

// createAndRemove measures a sandbox's create (until its agent answers) and its removal,
// each against a plain container's create+start and force remove.
func (b *bench) createAndRemove(ctx context.Context) error {
	runs := b.createRuns()

	create := row{Op: "sandbox create+start → ready", Baseline: "ContainerCreate+ContainerStart, PID 1 `sleep`"}
	var err error
	create.Ours, err = measure(ctx, "ours: Engine.Create", runs, func(w *stopwatch) error {
		sb, err := b.newSandbox(ctx)
		w.stop()
		if err != nil {
			return err
		}
		return b.closeSandbox(context.WithoutCancel(ctx), sb)
	})
	if err != nil {
		return err
	}
	if create.Docker, err = b.dockerCreateStart(ctx, runs); err != nil {
		return err
	}
	b.rep.add(create)

	remove := row{Op: "sandbox removal (Close: force remove)", Baseline: "ContainerRemove force (`docker rm -f`), PID 1 `sleep`", Target: targetRemove}
	// Close can return while the engine is still removing the container (see waitGone), so
	// each run also records, untimed by the stopwatch, when the container was really gone.
	var gone []time.Duration
	var early []bool
	remove.Ours, err = measure(ctx, "ours: AgentSandbox.Close", runs, func(w *stopwatch) error {
		sb, err := b.newSandbox(ctx)
		if err != nil {
			return err
		}
		w.restart()
		if err := b.closeSandbox(ctx, sb); err != nil {
			return err
		}
		w.stop()
		wasThere, err := waitGone(ctx, b.cli, sb.ContainerID())
		if err != nil {
			return err
		}
		gone, early = append(gone, time.Since(w.start)), append(early, wasThere)
		return nil
	})
	if err != nil {
		return err
	}
	// The warm-up run is recorded too; it is dropped so the counts match the row's.
	gone, early = gone[1:], early[1:]
	b.rep.addPart(fmt.Sprintf("removal until the container is gone (Close returned early in %d of %d runs)", countTrue(early), len(gone)), summarize(gone), nil)
	remove.Docker, err = measure(ctx, "docker: rm -f", runs, func(w *stopwatch) error {
		id, err := b.base.createStart(ctx)
		if err != nil {
			return err
		}
		w.restart()
		return b.base.remove(ctx, id)
	})
	if err != nil {
		return err
	}
	b.rep.add(remove)

	// Close is a force remove (SIGKILL, no grace), so what PID 1 does with SIGTERM cannot
	// matter to it. This row shows what the polite way would cost with a PID 1 that ignores
	// SIGTERM; ours has no such path, so it has no "ours" figure.
	stopRow := row{Op: "removal the polite way: `docker stop` + rm, PID 1 ignores SIGTERM", Baseline: "ContainerStop (10 s grace) + ContainerRemove"}
	if !b.slow {
		stopRow.Skipped = "skipped (use -slow)"
		b.rep.add(stopRow)
		return nil
	}
	// No warm-up run: the remove path was just warmed, and each run costs the full grace.
	stopRow.Docker, err = measureNoWarmup(ctx, "docker: stop + rm (slow)", 2, func(w *stopwatch) error {
		id, err := b.base.createStart(ctx)
		if err != nil {
			return err
		}
		w.restart()
		return b.base.stopRemove(ctx, id)
	})
	if err != nil {
		return err
	}
	b.rep.add(stopRow)
	return nil
}

// waitGone waits until the engine no longer knows container id, and reports whether it still
// did on the first look.
func waitGone(ctx context.Context, cli *client.Client, id string) (wasThere bool, err error) {
	deadline := time.Now().Add(30 * time.Second)
	for first := true; ; first = false {
		_, err := cli.ContainerInspect(ctx, id)
		if errdefs.IsNotFound(err) {
			return !first, nil
		}
		if err != nil {
			return !first, fmt.Errorf("inspecting container %.12s after its removal: %w", id, err)
		}
		if time.Now().After(deadline) {
			return true, fmt.Errorf("container %.12s still exists 30 s after its removal returned", id)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// invoke runs one tool call through the session core's one tool-call path, the path every
// MCP and REST call takes, and insists on success.
func invoke(ctx context.Context, t benchTool, sb sandbox.Sandbox, args any) (tools.Result, error) {
	res, err := t.core.RunIn(ctx, sb, session.Call{Tool: t.name, Args: args})
	if err != nil {
		return res, fmt.Errorf("%s: %w", t.name, err)
	}
	if !res.OK() {
		return res, fmt.Errorf("%s: status %s: %s", t.name, res.Status, res.Text())
	}
	return res, nil
}

// benchTool is a tool the benchmark runs through the session core.
type benchTool struct {
	core *session.Core
	name string
}

// toolDefs returns the built-in tools by name, each run through the bench's session core.
func (b *bench) toolDefs() (map[string]benchTool, error) {
	defs := map[string]benchTool{}
	for _, d := range b.core.ToolDefs() {
		defs[d.Name] = benchTool{core: b.core, name: d.Name}
	}
	for _, name := range []string{"python_executor", "shell_executor", "file_operation"} {
		if _, ok := defs[name]; !ok {
			return nil, fmt.Errorf("tools.All() has no %s", name)
		}
	}
	return defs, nil
}

// agentMS is the process run time the agent reports in an exec result's metadata.
func agentMS(res tools.Result) (time.Duration, bool) {
	v, ok := res.Metadata["duration_ms"].(float64)
	return time.Duration(v * float64(time.Millisecond)), ok
}

// perCall measures the tool calls against docker exec of the same command.
func (b *bench) perCall(ctx context.Context, sb *sandbox.AgentSandbox) error {
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	user := b.cfg.User
	exec := func(argv []string, stdin []byte, want string) error {
		out, errOut, code, err := dockerExec(ctx, b.cli, sb.ContainerID(), user, argv, stdin)
		if err != nil {
			return err
		}
		if code != 0 || out != want {
			return fmt.Errorf("docker exec %q: exit %d, stdout %q, stderr %q; want exit 0 and stdout %q", argv, code, out, errOut, want)
		}
		return nil
	}

	// python_executor print(1), forked from the resident interpreter.
	if err := b.waitForked(ctx, sb); err != nil {
		return err
	}
	python := row{Op: "python_executor `print(1)`", Baseline: "docker exec `python3 -c 'print(1)'`", Target: targetPython}
	var pyAgent []time.Duration
	python.Ours, err = measure(ctx, "ours: python_executor print(1)", b.n, func(*stopwatch) error {
		res, err := invoke(ctx, defs["python_executor"], sb, map[string]any{"code": "print(1)"})
		if err != nil {
			return err
		}
		if res.Output != "1\n" {
			return fmt.Errorf("python_executor printed %q, want \"1\\n\"", res.Output)
		}
		if d, ok := agentMS(res); ok {
			pyAgent = append(pyAgent, d)
		}
		return nil
	})
	if err != nil {
		return err
	}
	python.Docker, err = measure(ctx, "docker: exec python3 -c print(1)", b.n, func(*stopwatch) error {
		return exec([]string{"python3", "-c", "print(1)"}, nil, "1\n")
	})
	if err != nil {
		return err
	}
	b.rep.add(python)
	b.rep.addAgentTime(python.Op, python.Ours, pyAgent)
	if err := b.forkedPython(ctx, sb); err != nil {
		return err
	}

	// shell_executor echo hi.
	shell := row{Op: "shell_executor `echo hi`", Baseline: "docker exec `sh -c 'echo hi'`", Target: targetShell}
	var shAgent []time.Duration
	shell.Ours, err = measure(ctx, "ours: shell_executor echo hi", b.n, func(*stopwatch) error {
		res, err := invoke(ctx, defs["shell_executor"], sb, map[string]any{"command": "echo hi"})
		if err != nil {
			return err
		}
		if res.Output != "hi\n" {
			return fmt.Errorf("shell_executor printed %q, want \"hi\\n\"", res.Output)
		}
		if d, ok := agentMS(res); ok {
			shAgent = append(shAgent, d)
		}
		return nil
	})
	if err != nil {
		return err
	}
	shell.Docker, err = measure(ctx, "docker: exec sh -c 'echo hi'", b.n, func(*stopwatch) error {
		return exec([]string{"sh", "-c", "echo hi"}, nil, "hi\n")
	})
	if err != nil {
		return err
	}
	b.rep.add(shell)
	b.rep.addAgentTime(shell.Op, shell.Ours, shAgent)

	// file_operation: write then read 1 KB, both calls in one sample.
	content := strings.Repeat("0123456789abcdef", 64) // 1 KiB of text
	file := row{Op: "file_operation write + read, 1 KB", Baseline: "docker exec `sh -c 'cat > f'` (stdin) + `cat f`", Target: targetFile}
	file.Ours, err = measure(ctx, "ours: file_operation write+read 1 KB", b.n, func(*stopwatch) error {
		const path = "bench-ours.txt"
		if _, err := invoke(ctx, defs["file_operation"], sb, map[string]any{"operation": "write", "file_path": path, "content": content}); err != nil {
			return err
		}
		res, err := invoke(ctx, defs["file_operation"], sb, map[string]any{"operation": "read", "file_path": path})
		if err != nil {
			return err
		}
		if res.Output != content {
			return fmt.Errorf("file_operation read back %d bytes that differ from the %d written", len(res.Output), len(content))
		}
		return nil
	})
	if err != nil {
		return err
	}
	file.Docker, err = measure(ctx, "docker: exec cat > f, cat f", b.n, func(*stopwatch) error {
		path := b.cfg.WorkingDir + "/bench-docker.txt"
		if err := exec([]string{"sh", "-c", "cat > " + path}, []byte(content), ""); err != nil {
			return err
		}
		return exec([]string{"cat", path}, nil, content)
	})
	if err != nil {
		return err
	}
	b.rep.add(file)
	return nil
}

// breakdown splits a tool call's time into its parts, to show where it goes: argument
// decoding in the tool layer, the agent round trip (a trivial process through
// AgentSandbox.Exec, below the tool layer), and the process's own run time as the agent
// reports it. docker exec of the same trivial process is the baseline's floor.
func (b *bench) breakdown(ctx context.Context, sb *sandbox.AgentSandbox) error {
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "where the time goes:")

	bind, err := measure(ctx, "tool layer: python_executor argument decoding", b.n, func(*stopwatch) error {
		return defs["python_executor"].core.Check("python_executor", json.RawMessage(`{"code":"print(1)"}`))
	})
	if err != nil {
		return err
	}
	b.rep.addPart("tool layer: argument decoding (session core, no sandbox)", bind, nil)

	var trueAgent []time.Duration
	direct, err := measure(ctx, "AgentSandbox.Exec /bin/true", b.n, func(*stopwatch) error {
		res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"/bin/true"}, TimeoutMS: 30000}, nil)
		if err != nil {
			return fmt.Errorf("AgentSandbox.Exec /bin/true: %w", err)
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("AgentSandbox.Exec /bin/true: exit %d", res.ExitCode)
		}
		trueAgent = append(trueAgent, time.Duration(res.DurationMS*float64(time.Millisecond)))
		return nil
	})
	if err != nil {
		return err
	}
	b.rep.addPart("agent round trip: AgentSandbox.Exec `/bin/true` (no tool layer)", direct, trueAgent)

	var pyAgent []time.Duration
	pyDirect, err := measure(ctx, "AgentSandbox.Exec python3 -c print(1)", b.n, func(*stopwatch) error {
		res, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "-c", "print(1)"}, TimeoutMS: 30000}, nil)
		if err != nil {
			return fmt.Errorf("AgentSandbox.Exec python3: %w", err)
		}
		if res.ExitCode != 0 || res.Stdout != "1\n" {
			return fmt.Errorf("AgentSandbox.Exec python3: exit %d, stdout %q", res.ExitCode, res.Stdout)
		}
		pyAgent = append(pyAgent, time.Duration(res.DurationMS*float64(time.Millisecond)))
		return nil
	})
	if err != nil {
		return err
	}
	b.rep.addPart("AgentSandbox.Exec `python3 -c 'print(1)'` (no tool layer)", pyDirect, pyAgent)

	floor, err := measure(ctx, "docker: exec /bin/true", b.n, func(*stopwatch) error {
		_, _, code, err := dockerExec(ctx, b.cli, sb.ContainerID(), b.cfg.User, []string{"/bin/true"}, nil)
		if err == nil && code != 0 {
			err = fmt.Errorf("docker exec /bin/true: exit %d", code)
		}
		return err
	})
	if err != nil {
		return err
	}
	b.rep.addPart("docker exec `/bin/true` (the baseline's floor)", floor, nil)
	return nil
}

// concurrent measures the wall time of concurrentCreates Engine.Create calls started at
// once, until every sandbox is ready, against as many plain create+starts.
func (b *bench) concurrent(ctx context.Context) error {
	rounds := b.concurrentRounds()
	r := row{Op: fmt.Sprintf("%d concurrent creates → all ready (wall)", concurrentCreates), Baseline: fmt.Sprintf("%d concurrent ContainerCreate+ContainerStart", concurrentCreates), Target: targetConcurrent}

	var err error
	r.Ours, err = measure(ctx, fmt.Sprintf("ours: %d× Engine.Create", concurrentCreates), rounds, func(w *stopwatch) error {
		sbs := make([]*sandbox.AgentSandbox, concurrentCreates)
		errs := parallel(concurrentCreates, func(i int) (err error) {
			sbs[i], err = b.newSandbox(ctx)
			return err
		})
		w.stop()
		// Closing is not part of the figure, and runs even when a create failed.
		closeErrs := parallel(concurrentCreates, func(i int) error {
			if sbs[i] == nil {
				return nil
			}
			return b.closeSandbox(context.WithoutCancel(ctx), sbs[i])
		})
		return firstError(append(errs, closeErrs...))
	})
	if err != nil {
		return err
	}
	r.Docker, err = measure(ctx, fmt.Sprintf("docker: %d× create+start", concurrentCreates), rounds, func(w *stopwatch) error {
		ids := make([]string, concurrentCreates)
		errs := parallel(concurrentCreates, func(i int) (err error) {
			ids[i], err = b.base.createStart(ctx)
			return err
		})
		w.stop()
		removeErrs := parallel(concurrentCreates, func(i int) error {
			if ids[i] == "" {
				return nil
			}
			return b.base.remove(context.WithoutCancel(ctx), ids[i])
		})
		return firstError(append(errs, removeErrs...))
	})
	if err != nil {
		return err
	}
	b.rep.add(r)
	return nil
}

// parallel runs fn(0..n-1) at once and returns their errors by index.
func parallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	return errs
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// dockerCreateStart measures the baseline's create: ContainerCreate+ContainerStart of a
// container whose PID 1 is sleep, removed after each run (not timed).
func (b *bench) dockerCreateStart(ctx context.Context, runs int) (stats, error) {
	return measure(ctx, "docker: create+start", runs, func(w *stopwatch) error {
		id, err := b.base.createStart(ctx)
		w.stop()
		if err != nil {
			return err
		}
		return b.base.remove(context.WithoutCancel(ctx), id)
	})
}
