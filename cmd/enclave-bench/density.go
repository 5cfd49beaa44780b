package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Density: what N idle sandboxes cost the host, and whether the server still answers at
// once with all of them alive. For each N the bench first runs the baseline, N plain
// containers of the same image with the same limits and hardening whose PID 1 is `sleep`
// (what the engine costs without us), samples the host, and removes them; then it creates N
// sandboxes through a sandbox.Manager (as the server does), times a tool call in the first
// one while it is the only one, creates the rest, samples the host again, times the same call
// in the Nth, and removes them all with Manager.Close.
//
// Memory is read four ways, because no one reading is both complete and precise:
//   - host: the drop of MemAvailable (/proc/meminfo) from before the containers to after,
//     over N. It is the only reading that covers everything (the containers' cgroups, the
//     containerd shims, dockerd's and containerd's growth, and the kernel's namespaces, mounts
//     and cgroups, much of which no cgroup is charged for), but every other process on the
//     machine moves it too, so it is a rough figure on a shared machine.
//   - the container's cgroup (memory.usage_in_bytes on cgroup v1, memory.current on v2): its
//     processes' memory and the kernel memory charged to it.
//   - the containerd shim of each container (one process per container), by PSS: its binary's
//     pages are shared by every shim, and PSS divides them among the sharers as RSS does not.
//   - the engine's daemons (dockerd and containerd) by RSS growth, over N.
// The server's own cost is this process's: its RSS and its Go heap after a collection, and its
// goroutine count, before the sandboxes and with all of them, over N.

// densityCreateWorkers is how many creates run at once when filling the host, the same for
// the sandboxes and the baseline: enough to keep the engine busy, few enough that it stays
// responsive on two cores.
const densityCreateWorkers = 8

// densitySettle is how long the host is left alone before a memory reading: the shims and
// daemons allocate for a moment after a container starts.
const densitySettle = 3 * time.Second

// targetDensityRatio is the bound: a tool call with N sandboxes alive takes at most
// twice what it takes with one.
const targetDensityRatio = 2.0

// densityRow is one sandbox count: the sandboxes' figures, by agent binary, beside the
// baseline's.
type densityRow struct {
	Sandboxes              int
	Base                   footprint
	BaseCreate, BaseRemove time.Duration
	Ours                   []densityRun // enclave-agent first, then enclave-mcp as agent
}

// densityRun is N sandboxes with one agent binary.
type densityRun struct {
	Agent string // which binary
	Mem   footprint

	ServerRSSBefore, ServerRSS int64 // this process's VmRSS before the sandboxes and with N
	ServerHeapPerSandbox       int64 // the Go heap's growth (after a GC) over N
	ServerGoroutinesPerSandbox float64
	AgentGoroutinesMax         int   // the most goroutines any idle agent had
	AgentHeapMedian            int64 // the agents' live heap, median
	IdleCall, LoadedCall       stats // a tool call with one sandbox alive, and in the Nth with N
	Create, Remove             time.Duration
	PythonAgents               int // idle sandboxes running python (their fork server)
}

// footprint is what N containers cost, each figure per container.
type footprint struct {
	Host      int64 // MemAvailable drop over N
	Cgroup    int64 // median of the containers' cgroup memory
	ShimPSS   int64 // median
	ShimRSS   int64 // median
	PID1RSS   int64 // median: the agent, or sleep
	PID1PSS   int64
	Daemons   int64 // dockerd and containerd RSS growth over N
	Processes int   // the most processes in one container
	// IdleCPU is the CPU time all N containers used together over densityIdleWindow, per
	// second: what idle sandboxes take from the host's cores.
	IdleCPU time.Duration
}

// densityIdleWindow is how long the containers' CPU use is watched while they are idle.
const densityIdleWindow = 10 * time.Second

func (b *bench) density(ctx context.Context) error {
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	shell := defs["shell_executor"]
	call := func(sb sandbox.Sandbox) func(*stopwatch) error {
		return func(*stopwatch) error {
			res, err := invoke(ctx, shell, sb, map[string]any{"command": "echo hi"})
			if err != nil {
				return err
			}
			if res.Output != "hi\n" {
				return fmt.Errorf("shell_executor printed %q, want \"hi\\n\"", res.Output)
			}
			return nil
		}
	}
	for _, n := range b.densitySizes {
		fmt.Fprintf(os.Stderr, "density, %d idle sandboxes:\n", n)
		row := densityRow{Sandboxes: n}
		if err := b.densityBaseline(ctx, &row); err != nil {
			return fmt.Errorf("density baseline, %d containers: %w", n, err)
		}
		engines := []struct {
			label  string
			engine *sandbox.Docker
		}{{"enclave-agent", b.densityEngine}}
		if b.densityCompare {
			engines = append(engines, struct {
				label  string
				engine *sandbox.Docker
			}{"enclave-mcp as agent", b.engine})
		}
		for _, e := range engines {
			fmt.Fprintf(os.Stderr, "  agent: %s\n", e.label)
			run := densityRun{Agent: e.label}
			if err := b.densityOurs(ctx, e.engine, n, &run, call); err != nil {
				return fmt.Errorf("density, %d sandboxes, agent %s: %w", n, e.label, err)
			}
			row.Ours = append(row.Ours, run)
		}
		b.rep.Density = append(b.rep.Density, row)
	}
	return nil
}

// densityBaseline fills the host with row.Sandboxes plain containers, samples it and removes
// them.
func (b *bench) densityBaseline(ctx context.Context, row *densityRow) error {
	n := row.Sandboxes
	cfg, host := sandbox.HardenedSpec(b.cfg, []string{"sleep", "infinity"}, map[string]string{benchLabel: b.base.runID})
	before, err := settledHost(ctx)
	if err != nil {
		return err
	}
	ids := make([]string, n)
	start := time.Now()
	err = bounded(ctx, n, densityCreateWorkers, func(i int) error {
		created, err := b.cli.ContainerCreate(ctx, cfg, host, nil, nil, "")
		if err != nil {
			return fmt.Errorf("creating a baseline container: %w", err)
		}
		b.track.addContainer(created.ID)
		ids[i] = created.ID
		return b.cli.ContainerStart(ctx, created.ID, container.StartOptions{})
	})
	row.BaseCreate = time.Since(start)
	fmt.Fprintf(os.Stderr, "  baseline: %d containers created in %s\n", n, fmtDur(row.BaseCreate))
	defer func() { // on failure too; the tracker is the backstop
		start := time.Now()
		_ = bounded(context.WithoutCancel(ctx), n, sandbox.RemoveWorkers, func(i int) error {
			if ids[i] == "" {
				return nil
			}
			return b.base.remove(context.WithoutCancel(ctx), ids[i])
		})
		row.BaseRemove = time.Since(start)
		fmt.Fprintf(os.Stderr, "  baseline: removed in %s\n", fmtDur(row.BaseRemove))
	}()
	if err != nil {
		return err
	}
	after, err := settledHost(ctx)
	if err != nil {
		return err
	}
	row.Base, err = b.footprint(ctx, ids, before, after)
	return err
}

// densityOurs creates row.Sandboxes sandboxes through a Manager, times a tool call with one
// and with all of them alive, samples the host and the server, and removes them.
func (b *bench) densityOurs(ctx context.Context, engine *sandbox.Docker, n int, row *densityRun, call func(sandbox.Sandbox) func(*stopwatch) error) error {
	// No cap on the count: the server's defaults (--max-sandboxes 100, --max-per-owner 10)
	// would refuse most of these, which is the point of them.
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: b.cfg.Config},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(engine, sandbox.TypeDocker)},
	})
	closed := false
	defer func() {
		if !closed {
			_ = m.Close(context.WithoutCancel(ctx))
		}
	}()
	before, err := settledHost(ctx)
	if err != nil {
		return err
	}
	server0 := sampleServer()

	sbs := make([]sandbox.Sandbox, n)
	create := func(i int) error {
		sb, err := m.Create(ctx, fmt.Sprintf("enclave-bench-density-%d", i), sandbox.TypeDocker, sandbox.Config{})
		sbs[i] = sb
		return err
	}
	start := time.Now()
	if err := create(0); err != nil {
		return err
	}
	first := time.Since(start)
	if row.IdleCall, err = measure(ctx, "shell_executor echo hi, 1 sandbox alive", b.n, call(sbs[0])); err != nil {
		return err
	}
	start = time.Now()
	if err := bounded(ctx, n-1, densityCreateWorkers, func(i int) error { return create(i + 1) }); err != nil {
		return err
	}
	row.Create = first + time.Since(start)
	fmt.Fprintf(os.Stderr, "  ours: %d sandboxes created in %s\n", n, fmtDur(row.Create))

	after, err := settledHost(ctx)
	if err != nil {
		return err
	}
	server := sampleServer()
	row.ServerRSSBefore, row.ServerRSS = server0.rss, server.rss
	row.ServerHeapPerSandbox = (server.heap - server0.heap) / int64(n)
	row.ServerGoroutinesPerSandbox = float64(server.goroutines-server0.goroutines) / float64(n)

	ids := make([]string, n)
	heaps := make([]int64, n)
	for i, sb := range sbs {
		a, ok := sb.(*sandbox.AgentSandbox)
		if !ok {
			return fmt.Errorf("sandbox %s is a %T, not an agent sandbox", sb.ID(), sb)
		}
		ids[i] = a.ContainerID()
		st, err := a.AgentStats(ctx)
		if err != nil && a.Alive() { // an agent built before ping had stats answers without them
			row.AgentGoroutinesMax = -1
			continue
		}
		if err != nil {
			return fmt.Errorf("asking sandbox %s's agent for its stats: %w", a.ID(), err)
		}
		row.AgentGoroutinesMax = max(row.AgentGoroutinesMax, st.Goroutines)
		heaps[i] = int64(st.HeapBytes)
	}
	row.AgentHeapMedian = medianInt(heaps)
	if row.AgentGoroutinesMax < 0 {
		row.AgentHeapMedian = -1
	}
	if row.Mem, err = b.footprint(ctx, ids, before, after); err != nil {
		return err
	}
	if row.PythonAgents, err = b.pythonSandboxes(ctx, ids); err != nil {
		return err
	}

	label := fmt.Sprintf("shell_executor echo hi, in the %dth of %d alive", n, n)
	if row.LoadedCall, err = measure(ctx, label, b.n, call(sbs[n-1])); err != nil {
		return err
	}

	start = time.Now()
	err = m.Close(ctx)
	row.Remove = time.Since(start)
	closed = true
	fmt.Fprintf(os.Stderr, "  ours: Manager.Close removed %d sandboxes in %s\n", n, fmtDur(row.Remove))
	if err != nil {
		return err
	}
	left, err := engine.ListManaged(ctx, engine.Instance())
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("%d containers left after Close returned", len(left))
	}
	return nil
}

// footprint reads what the containers ids cost, each, given the host before and after
// they were created.
func (b *bench) footprint(ctx context.Context, ids []string, before, after hostSample) (footprint, error) {
	n := int64(len(ids))
	f := footprint{
		Host:    (before.available - after.available) / n,
		Daemons: (after.daemons - before.daemons) / n,
	}
	shims, err := shimsByContainer()
	if err != nil {
		return f, err
	}
	var cg, shimPSS, shimRSS, pid1RSS, pid1PSS []int64
	var pids []int
	for _, id := range ids {
		insp, err := b.cli.ContainerInspect(ctx, id)
		if err != nil {
			return f, fmt.Errorf("inspecting container %.12s: %w", id, err)
		}
		if insp.State == nil || insp.State.Pid == 0 {
			return f, fmt.Errorf("container %.12s is not running", id)
		}
		pid := insp.State.Pid
		pids = append(pids, pid)
		dir, err := memoryCgroup(pid)
		if err != nil {
			return f, err
		}
		usage, err := cgroupMemory(dir)
		if err != nil {
			return f, err
		}
		procs, err := cgroupProcs(dir)
		if err != nil {
			return f, err
		}
		f.Processes = max(f.Processes, len(procs))
		cg = append(cg, usage)
		rss, pss := processMemory(pid)
		pid1RSS, pid1PSS = append(pid1RSS, rss), append(pid1PSS, pss)
		if shim, ok := shims[id]; ok {
			rss, pss := processMemory(shim)
			shimRSS, shimPSS = append(shimRSS, rss), append(shimPSS, pss)
		}
	}
	f.Cgroup, f.ShimPSS, f.ShimRSS = medianInt(cg), medianInt(shimPSS), medianInt(shimRSS)
	f.PID1RSS, f.PID1PSS = medianInt(pid1RSS), medianInt(pid1PSS)
	f.IdleCPU, err = idleCPU(ctx, pids)
	return f, err
}

// idleCPU is the CPU time the cgroups of pids used together over densityIdleWindow, per
// second.
func idleCPU(ctx context.Context, pids []int) (time.Duration, error) {
	total := func() (time.Duration, error) {
		var sum time.Duration
		for _, pid := range pids {
			used, err := cgroupCPU(pid)
			if err != nil {
				return 0, err
			}
			sum += used
		}
		return sum, nil
	}
	start := time.Now()
	before, err := total()
	if err != nil {
		return 0, err
	}
	if err := sleep(ctx, densityIdleWindow); err != nil {
		return 0, err
	}
	after, err := total()
	if err != nil {
		return 0, err
	}
	return time.Duration(float64(after-before) / time.Since(start).Seconds()), nil
}

// pythonSandboxes counts the sandboxes running python: an idle sandbox must not have started
// its fork server.
func (b *bench) pythonSandboxes(ctx context.Context, ids []string) (int, error) {
	python := 0
	for _, id := range ids {
		insp, err := b.cli.ContainerInspect(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("inspecting container %.12s: %w", id, err)
		}
		if insp.State == nil || insp.State.Pid == 0 {
			return 0, fmt.Errorf("container %.12s is not running", id)
		}
		dir, err := memoryCgroup(insp.State.Pid)
		if err != nil {
			return 0, err
		}
		procs, err := cgroupProcs(dir)
		if err != nil {
			return 0, err
		}
		for _, p := range procs {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); strings.HasPrefix(string(comm), "python") {
				python++
				break
			}
		}
	}
	return python, nil
}

// hostSample is the host-wide memory a density step compares.
type hostSample struct {
	available int64 // MemAvailable
	daemons   int64 // dockerd + containerd RSS
}

// settledHost samples the host after leaving it alone for densitySettle.
func settledHost(ctx context.Context) (hostSample, error) {
	if err := sleep(ctx, densitySettle); err != nil {
		return hostSample{}, err
	}
	var s hostSample
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return s, fmt.Errorf("reading the host's memory: %w", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			s.available = kib(v)
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return s, fmt.Errorf("listing processes: %w", err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(comm) == "dockerd\n" || string(comm) == "containerd\n" {
			rss, _ := processMemory(pid)
			s.daemons += rss
		}
	}
	return s, nil
}

// shimsByContainer finds the containerd shim of every container: the process whose command
// line names the container's ID after -id.
func shimsByContainer() (map[string]int, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	out := map[string]int{}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte("containerd-shim")) {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if i := slices.Index(args, "-id"); i >= 0 && i+1 < len(args) {
			out[args[i+1]] = pid
		}
	}
	return out, nil
}

// processMemory is pid's RSS (VmRSS) and PSS (smaps_rollup), in bytes; 0 for what cannot be
// read.
func processMemory(pid int) (rss, pss int64) {
	rss = procField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
	pss = procField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
	return rss, pss
}

// procField reads a "Name:   123 kB" line of a /proc file, in bytes.
func procField(path, name string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name); ok {
			return kib(v)
		}
	}
	return 0
}

// kib parses "  123 kB" into bytes.
func kib(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
	return n << 10
}

// memoryCgroup is the directory of pid's memory cgroup: the v1 memory hierarchy's, or the
// unified one's.
func memoryCgroup(pid int) (string, error) { return cgroupDir(pid, "memory") }

// cgroupDir is the directory of pid's cgroup in the v1 hierarchy of controller, or in the
// unified one.
func cgroupDir(pid int, controller string) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("reading process %d's cgroups: %w", pid, err)
	}
	unified := ""
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if slices.Contains(strings.Split(parts[1], ","), controller) {
			return filepath.Join("/sys/fs/cgroup", parts[1], parts[2]), nil
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = filepath.Join("/sys/fs/cgroup", parts[2])
		}
	}
	if unified == "" {
		return "", fmt.Errorf("process %d has no %s cgroup", pid, controller)
	}
	return unified, nil
}

// cgroupMemory is a memory cgroup's usage in bytes.
func cgroupMemory(dir string) (int64, error) {
	for _, name := range []string{"memory.usage_in_bytes", "memory.current"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		}
	}
	return 0, fmt.Errorf("reading the memory usage of cgroup %s: no memory.usage_in_bytes or memory.current", dir)
}

// cgroupCPU is the CPU time a cgroup's processes have used: cpuacct.usage on cgroup v1,
// cpu.stat's usage_usec on v2.
func cgroupCPU(pid int) (time.Duration, error) {
	if dir, err := cgroupDir(pid, "cpuacct"); err == nil {
		if data, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage")); err == nil {
			ns, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
			return time.Duration(ns), err
		}
	}
	dir, err := cgroupDir(pid, "cpu")
	if err != nil {
		return 0, err
	}
	data, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of cgroup %s: %w", dir, err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("no usage_usec in %s/cpu.stat", dir)
}

// cgroupProcs lists the processes in a cgroup.
func cgroupProcs(dir string) ([]int, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("listing the processes of cgroup %s: %w", dir, err)
	}
	var out []int
	for f := range strings.FieldsSeq(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out, nil
}

// serverSample is this process's footprint: it is the server, holding every sandbox's
// agent connection.
type serverSample struct {
	rss, heap  int64
	goroutines int
}

func sampleServer() serverSample {
	runtime.GC()
	debug.FreeOSMemory()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return serverSample{
		rss:        procField("/proc/self/status", "VmRSS:"),
		heap:       int64(s[0].Value.Uint64()),
		goroutines: runtime.NumGoroutine(),
	}
}

func medianInt(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// bounded runs fn(0) to fn(n-1), workers at a time, and returns the first error; after an
// error it starts no more.
func bounded(ctx context.Context, n, workers int, fn func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range min(n, workers) {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
feed:
	for i := range n {
		mu.Lock()
		failed := len(errs) > 0
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break feed
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := firstError(errs); err != nil {
		return err
	}
	return ctx.Err()
}

// mib prints bytes in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// printDensity writes the density table, when there is one.
func printDensity(w io.Writer, r *report) {
	if len(r.Density) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Density: N idle sandboxes\n\n")
	fmt.Fprintf(w, "Baseline: N plain containers of the same image, limits and hardening, PID 1 `sleep infinity`, created and sampled in the same run just before ours. "+
		"Ours: N sandboxes through sandbox.Manager, with each agent binary in turn. Memory per container: host = MemAvailable drop / N (covers everything, noisy on a shared machine); "+
		"cgroup = the container's memory cgroup, median; shim = its containerd-shim, median; daemons = dockerd + containerd RSS growth / N. "+
		"Creates run %d at a time; removal uses %d workers. The tool call is timed in the first sandbox while it is the only one, then in the Nth with all N alive.\n\n", densityCreateWorkers, sandbox.RemoveWorkers)
	for _, d := range r.Density {
		t := &table{}
		head := []string{fmt.Sprintf("N = %d", d.Sandboxes)}
		for _, o := range d.Ours {
			head = append(head, o.Agent)
		}
		head = append(head, "baseline (plain container)", fmt.Sprintf("%s − baseline", d.Ours[0].Agent), "target", "pass")
		t.row(head...)
		line := func(what string, ours func(densityRun) string, base, diff, target, ok string) {
			cells := []string{what}
			for _, o := range d.Ours {
				cells = append(cells, ours(o))
			}
			t.row(append(cells, base, diff, target, ok)...)
		}
		mem := func(what string, ours func(footprint) int64, base bool) {
			b, diff := "—", "—"
			if base {
				b, diff = mib(ours(d.Base)), mib(ours(d.Ours[0].Mem)-ours(d.Base))
			}
			line(what, func(o densityRun) string { return mib(ours(o.Mem)) }, b, diff, "—", "—")
		}
		mem("host memory per sandbox (MemAvailable drop / N)", func(f footprint) int64 { return f.Host }, true)
		mem("container cgroup memory", func(f footprint) int64 { return f.Cgroup }, true)
		mem("containerd-shim PSS", func(f footprint) int64 { return f.ShimPSS }, true)
		mem("containerd-shim RSS", func(f footprint) int64 { return f.ShimRSS }, true)
		mem("PID 1 RSS (agent / sleep)", func(f footprint) int64 { return f.PID1RSS }, true)
		mem("PID 1 PSS (agent / sleep)", func(f footprint) int64 { return f.PID1PSS }, true)
		mem("dockerd + containerd growth / N", func(f footprint) int64 { return f.Daemons }, true)
		mem("sum: cgroup + shim PSS + daemons", func(f footprint) int64 { return f.Cgroup + f.ShimPSS + f.Daemons }, true)
		line("CPU of all N idle containers (per second, cgroup)", func(o densityRun) string { return fmtDur(o.Mem.IdleCPU) },
			fmtDur(d.Base.IdleCPU), "—", "—", "—")
		line("agent goroutines (most) / live heap (median)", func(o densityRun) string {
			if o.AgentGoroutinesMax < 0 {
				return "not reported"
			}
			return fmt.Sprintf("%d / %.0f KiB", o.AgentGoroutinesMax, float64(o.AgentHeapMedian)/1024)
		}, "—", "—", "—", "—")
		procsOK := true
		for _, o := range d.Ours {
			procsOK = procsOK && o.Mem.Processes == 1 && o.PythonAgents == 0
		}
		line("processes in an idle sandbox (most) / sandboxes running python", func(o densityRun) string {
			return fmt.Sprintf("%d / %d", o.Mem.Processes, o.PythonAgents)
		}, fmt.Sprintf("%d / —", d.Base.Processes), "—", "1 / 0", pass(procsOK))
		line("server RSS: before → with N", func(o densityRun) string {
			return fmt.Sprintf("%s → %s", mib(o.ServerRSSBefore), mib(o.ServerRSS))
		}, "—", "—", "—", "—")
		line("server per sandbox: RSS / Go heap / goroutines", func(o densityRun) string {
			return fmt.Sprintf("%.0f KiB / %.1f KiB / %.1f", float64(o.ServerRSS-o.ServerRSSBefore)/float64(d.Sandboxes)/1024, float64(o.ServerHeapPerSandbox)/1024, o.ServerGoroutinesPerSandbox)
		}, "—", "—", "—", "—")
		line("create all N (wall)", func(o densityRun) string { return fmtDur(o.Create) }, fmtDur(d.BaseCreate), "—", "—", "—")
		line("remove all N (Manager.Close; baseline: docker rm -f, same workers)", func(o densityRun) string { return fmtDur(o.Remove) }, fmtDur(d.BaseRemove), "—", "—", "—")
		line("shell_executor `echo hi`, median (p90): 1 alive", func(o densityRun) string {
			return fmt.Sprintf("%s (%s)", fmtDur(o.IdleCall.Median), fmtDur(o.IdleCall.P90))
		}, "—", "—", "—", "—")
		callOK := true
		for _, o := range d.Ours {
			callOK = callOK && o.IdleCall.Median > 0 && float64(o.LoadedCall.Median) <= targetDensityRatio*float64(o.IdleCall.Median)
		}
		line("… in the Nth, N alive (ratio to 1 alive)", func(o densityRun) string {
			ratio := 0.0
			if o.IdleCall.Median > 0 {
				ratio = float64(o.LoadedCall.Median) / float64(o.IdleCall.Median)
			}
			return fmt.Sprintf("%s (%s) (%.2f×)", fmtDur(o.LoadedCall.Median), fmtDur(o.LoadedCall.P90), ratio)
		}, "—", "—", fmt.Sprintf("≤ %.0f×", targetDensityRatio), pass(callOK))
		t.write(w)
		fmt.Fprintln(w)
	}
}

func pass(ok bool) string {
	if ok {
		return "pass"
	}
	return "**FAIL**"
}

type jsonDensity struct {
	Sandboxes    int              `json:"sandboxes"`
	Baseline     jsonFootprint    `json:"baseline"`
	BaseCreateMS float64          `json:"baseline_create_ms"`
	BaseRemoveMS float64          `json:"baseline_remove_ms"`
	Ours         []jsonDensityRun `json:"ours"`
}

type jsonFootprint struct {
	HostBytes    int64   `json:"host_bytes"`
	CgroupBytes  int64   `json:"cgroup_bytes"`
	ShimPSS      int64   `json:"shim_pss_bytes"`
	ShimRSS      int64   `json:"shim_rss_bytes"`
	PID1RSS      int64   `json:"pid1_rss_bytes"`
	PID1PSS      int64   `json:"pid1_pss_bytes"`
	DaemonsBytes int64   `json:"daemons_bytes"`
	Processes    int     `json:"processes_max"`
	IdleCPUMS    float64 `json:"idle_cpu_ms_per_s"`
}

type jsonDensityRun struct {
	Agent                 string        `json:"agent"`
	PerSandbox            jsonFootprint `json:"per_sandbox"`
	AgentGoroutinesMax    int           `json:"agent_goroutines_max"`
	AgentHeapMedian       int64         `json:"agent_heap_bytes_median"`
	PythonSandboxes       int           `json:"idle_sandboxes_running_python"`
	ServerRSSBefore       int64         `json:"server_rss_bytes_before"`
	ServerRSS             int64         `json:"server_rss_bytes"`
	ServerHeapPerSandbox  int64         `json:"server_heap_bytes_per_sandbox"`
	ServerGoroutinesPerSb float64       `json:"server_goroutines_per_sandbox"`
	IdleCall              *jsonStats    `json:"call_one_alive"`
	LoadedCall            *jsonStats    `json:"call_n_alive"`
	CreateMS              float64       `json:"create_ms"`
	RemoveMS              float64       `json:"remove_ms"`
}

func (f footprint) toJSON() jsonFootprint {
	return jsonFootprint{HostBytes: f.Host, CgroupBytes: f.Cgroup, ShimPSS: f.ShimPSS, ShimRSS: f.ShimRSS,
		PID1RSS: f.PID1RSS, PID1PSS: f.PID1PSS, DaemonsBytes: f.Daemons, Processes: f.Processes, IdleCPUMS: ms(f.IdleCPU)}
}

func (r *report) densityJSON() []jsonDensity {
	var out []jsonDensity
	for _, d := range r.Density {
		j := jsonDensity{Sandboxes: d.Sandboxes, Baseline: d.Base.toJSON(), BaseCreateMS: ms(d.BaseCreate), BaseRemoveMS: ms(d.BaseRemove)}
		for _, o := range d.Ours {
			j.Ours = append(j.Ours, jsonDensityRun{
				Agent: o.Agent, PerSandbox: o.Mem.toJSON(), AgentGoroutinesMax: o.AgentGoroutinesMax, AgentHeapMedian: o.AgentHeapMedian,
				PythonSandboxes: o.PythonAgents, ServerRSSBefore: o.ServerRSSBefore, ServerRSS: o.ServerRSS,
				ServerHeapPerSandbox: o.ServerHeapPerSandbox, ServerGoroutinesPerSb: o.ServerGoroutinesPerSandbox,
				IdleCall: o.IdleCall.toJSON(), LoadedCall: o.LoadedCall.toJSON(), CreateMS: ms(o.Create), RemoveMS: ms(o.Remove),
			})
		}
		out = append(out, j)
	}
	return out
}
