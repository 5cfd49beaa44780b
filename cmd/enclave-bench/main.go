// Command enclave-bench measures how long enclave-mcp's sandbox operations take on a real
// Docker engine, and prints a Markdown table of medians (with p90, min and the number of
// runs) to stdout.
//
// Every "ours" figure goes through the same code an MCP or REST tool call does: the session
// core's one tool-call path (session.Core.RunIn) on a sandbox.AgentSandbox created by sandbox.Docker, whose requests travel as JSON lines over
// the container's attached stdio to our agent, which runs as the container's PID 1. The
// create and removal figures call Engine.Create and AgentSandbox.Close directly.
//
// Beside each figure is a baseline measured in the same run on the same engine: the same
// work done the plain way, through the Docker API with no agent. For commands that is one
// `docker exec` per call (exec create, attach, read all output, exec inspect for the exit
// code) in the very same sandbox container, as the same user; for creates and removals it is
// a container with the same image, limits and hardening whose PID 1 is `sleep`. The baseline
// exists because absolute times depend on the machine: the ratio (baseline median / ours)
// says what the resident agent buys, and it survives a change of hardware far better than
// the milliseconds do. Targets come from our performance issue and are checked against our
// medians.
//
// Usage (from the module root; `make bench` does this after `make build`):
//
//	go run ./cmd/enclave-bench [-n 30] [-json results.json] [-agent-binary bin/enclave-mcp] [-slow] [-polyglot-only]
//	go run ./cmd/enclave-bench -warm-only [-n 30]
//	go run ./cmd/enclave-bench -removal-only [-removal-sizes 10,50,200] [-removal-rounds 3]
//	go run ./cmd/enclave-bench -density-only [-density-sizes 100,500]
//	go run ./cmd/enclave-bench -python-only [-python-compare /path/to/another/static/agent]
//
// The agent binary must be a static build. Unless -agent-binary is given, bin/enclave-mcp is
// used when it is newer than every Go source file of the module; otherwise a fresh one is
// built (CGO_ENABLED=0) into a temporary directory. Every container the benchmark creates is
// removed before it exits, on errors and on Ctrl-C too. The agent volume (one per agent
// build, shared by all sandboxes) is left in place, as enclave-mcp itself leaves it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
)

func main() {
	os.Exit(run())
}

type options struct {
	n           int
	jsonPath    string
	agentBinary string
	agentSet    bool // -agent-binary was given explicitly
	slow        bool
	image       string
	// runtimes are OCI runtimes measured beside the engine's default (-runtimes).
	runtimes     []string
	variantsOnly bool
	polyglotOnly bool
	egressOnly   bool
	// warmOnly measures only the warm pools' rows; removalOnly only bulk removal:
	// removalSizes sandboxes, removalRounds times.
	warmOnly      bool
	removalOnly   bool
	pythonOnly    bool
	pythonCompare string // with pythonOnly: another agent binary, whose calls alternate with ours
	removalSizes  []int
	removalRounds int
	// densityOnly measures only N idle sandboxes' cost, for each of densitySizes.
	densityOnly  bool
	densitySizes []int
	// densityAgent is the agent built alone (cmd/enclave-agent), measured beside
	// agentBinary (enclave-mcp as its own agent) unless densityCompare is off.
	densityAgent    string
	densityAgentSet bool
	densityCompare  bool
	// kube, when kube.kubeconfig is set, measures only the kube rows (kube.go).
	kube kubeFlags
}

func run() int {
	var opts options
	flag.IntVar(&opts.n, "n", 30, "runs per operation (creates and removals use max(5, n/3), concurrent creates 3 to 5 rounds)")
	flag.StringVar(&opts.jsonPath, "json", "", "also write machine-readable results to this file (- for stdout, after the table)")
	flag.StringVar(&opts.agentBinary, "agent-binary", "bin/enclave-mcp", "static enclave-mcp binary run as the sandboxes' agent (the default path is relative to the module root, and is rebuilt when missing or stale)")
	flag.BoolVar(&opts.slow, "slow", false, "also measure docker stop + remove of a container whose PID 1 ignores SIGTERM (about 10 s per run, 2 runs)")
	flag.StringVar(&opts.image, "image", sandbox.DefaultImage, "sandbox image")
	runtimes := flag.String("runtimes", os.Getenv("ENCLAVE_BENCH_RUNTIMES"), "comma-separated OCI runtimes to measure beside the engine's default, e.g. runsc (default $ENCLAVE_BENCH_RUNTIMES)")
	flag.BoolVar(&opts.variantsOnly, "variants-only", false, "measure only the two-ways table: the seccomp profile's create cost and the -runtimes rows")
	flag.BoolVar(&opts.polyglotOnly, "polyglot-only", false, "measure only multi_code_executor's languages, in a sandbox of "+sandbox.PolyglotImage)
	flag.BoolVar(&opts.egressOnly, "egress-only", false, "measure only the egress proxy's rows: plain HTTP through the proxy beside a direct connection from a bridge-network sandbox")
	flag.BoolVar(&opts.warmOnly, "warm-only", false, "measure only the warm pools' rows: a session's first sandbox and a REST create from the pool, each beside its cold baseline")
	flag.BoolVar(&opts.pythonOnly, "python-only", false, "measure only python_executor served by the resident interpreter, beside a fresh python3 in the same sandbox")
	flag.StringVar(&opts.pythonCompare, "python-compare", "", "with -python-only: also alternate `print(1)` calls between a sandbox of -agent-binary's agent and one of this static agent binary's (another build's), in the same run")
	flag.BoolVar(&opts.removalOnly, "removal-only", false, "measure only bulk removal: Manager.Close of N sandboxes, serial and with 4, 8 and 16 workers")
	removalSizes := flag.String("removal-sizes", "10,50,200", "with -removal-only: the sandbox counts N")
	flag.IntVar(&opts.removalRounds, "removal-rounds", 3, "with -removal-only: rounds per count and concurrency")
	flag.BoolVar(&opts.densityOnly, "density-only", false, "measure only density: what N idle sandboxes cost the host and the server, beside N plain containers, and a tool call with N alive beside one alive")
	densitySizes := flag.String("density-sizes", "100,500", "with -density-only: the sandbox counts N")
	flag.StringVar(&opts.densityAgent, "density-agent", "bin/enclave-agent", "with -density-only: the agent built alone (cmd/enclave-agent), rebuilt like -agent-binary when missing or stale")
	flag.BoolVar(&opts.densityCompare, "density-compare", true, "with -density-only: also measure N sandboxes whose agent is -agent-binary (enclave-mcp as its own agent), the way before enclave-agent")
	flag.StringVar(&opts.kube.kubeconfig, "kube", "", "measure only the Kubernetes backend beside the Docker backend, on the cluster of this kubeconfig: create until ready, warm acquire, a tool call (make bench-kube)")
	flag.StringVar(&opts.kube.namespace, "kube-namespace", "enclave-bench", "with -kube: the namespace of the sandbox Pods (it must exist)")
	flag.StringVar(&opts.kube.agentImage, "kube-agent-image", "", "with -kube: the agent image loaded on the nodes (default: enclave/agent:<hash of bin/enclave-agent>, scripts/kube-agent-image.sh)")
	flag.Parse()
	var err error
	if opts.removalSizes, err = parseSizes("-removal-sizes", *removalSizes); err != nil {
		fmt.Fprintln(os.Stderr, "enclave-bench:", err)
		return 2
	}
	if opts.densitySizes, err = parseSizes("-density-sizes", *densitySizes); err != nil {
		fmt.Fprintln(os.Stderr, "enclave-bench:", err)
		return 2
	}
	for _, rt := range strings.Split(*runtimes, ",") {
		if rt = strings.TrimSpace(rt); rt != "" {
			opts.runtimes = append(opts.runtimes, rt)
		}
	}
	flag.Visit(func(f *flag.Flag) {
		opts.agentSet = opts.agentSet || f.Name == "agent-binary"
		opts.densityAgentSet = opts.densityAgentSet || f.Name == "density-agent"
	})
	if opts.n < 1 || opts.removalRounds < 1 || flag.NArg() > 0 {
		flag.Usage()
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runBench(ctx, opts); err != nil {
		fmt.Fprintf(os.Stderr, "enclave-bench: %v\n", err)
		return 1
	}
	return 0
}

func runBench(ctx context.Context, opts options) (err error) {
	AgentPath, cleanupAgent, err := agentBinary(ctx, opts)
	if err != nil {
		return err
	}
	defer cleanupAgent()

	cfg, err := sandbox.Resolve(sandbox.Config{Image: opts.image}, sandbox.Policy{})
	if err != nil {
		return fmt.Errorf("resolving the sandbox config: %w", err)
	}
	engine, err := sandbox.NewDocker(ctx, sandbox.DockerOptions{AgentBinary: AgentPath})
	if err != nil {
		if errors.Is(err, sandbox.ErrEngine) {
			return fmt.Errorf("connecting to the engine (scripts/ensure-docker.sh starts one): %w", err)
		}
		return fmt.Errorf("loading the agent binary %s: %w", AgentPath, err)
	}
	defer engine.Close()
	cli := engine.Client()

	ver, err := cli.ServerVersion(ctx)
	if err != nil {
		return fmt.Errorf("asking the engine for its version: %w", err)
	}
	if _, err := cli.ImageInspect(ctx, cfg.Image); err != nil {
		return fmt.Errorf("image %s is not on the engine (build it with `make setup`): %w", cfg.Image, err)
	}

	track := newTracker()
	runID := sandbox.NewID()
	defer func() {
		// The measurement context may be cancelled already; cleanup gets its own.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if cerr := track.cleanup(cctx, cli, engine, runID); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
	}()

	rep := &report{
		Engine:     ver.Version,
		APIVersion: cli.ClientVersion(),
		Kernel:     ver.KernelVersion,
		Nproc:      runtime.NumCPU(),
		LoadAvg:    loadAverage(),
		Image:      cfg.Image,
		Agent:      AgentPath,
		N:          opts.n,
		Started:    time.Now().UTC(),
	}
	// The session core the tool calls go through. Its manager holds nothing: the bench
	// creates its sandboxes on the engine itself, to time the create apart.
	manager := sandbox.NewManager(sandbox.ManagerOptions{})
	defer func() { _ = manager.Close(context.WithoutCancel(ctx)) }()
	core, err := session.New(session.Config{Manager: manager})
	if err != nil {
		return err
	}
	b := &bench{
		agentPath: AgentPath,
		core:      core,
		engine:    engine,
		cli:       cli,
		cfg:       cfg,
		track:     track,
		base:      &baseline{cli: cli, cfg: cfg, runID: runID, track: track},
		n:         opts.n,
		slow:      opts.slow,
		rep:       rep,

		runtimes:     opts.runtimes,
		variantsOnly: opts.variantsOnly,
		polyglotOnly: opts.polyglotOnly,
		egressOnly:   opts.egressOnly,

		warmOnly:      opts.warmOnly,
		removalOnly:   opts.removalOnly,
		pythonOnly:    opts.pythonOnly,
		removalSizes:  opts.removalSizes,
		removalRounds: opts.removalRounds,

		densityOnly:    opts.densityOnly,
		densitySizes:   opts.densitySizes,
		densityCompare: opts.densityCompare,
		kube:           opts.kube,
	}
	// A second engine injects another agent: the one built alone, for density; another
	// build's, for -python-compare. Its sandboxes are swept by its own instance label.
	extraEngine := func(purpose, path string) (*sandbox.Docker, error) {
		e, err := sandbox.NewDocker(ctx, sandbox.DockerOptions{AgentBinary: path})
		if err != nil {
			return nil, fmt.Errorf("loading the agent binary %s: %w", path, err)
		}
		fmt.Fprintf(os.Stderr, "enclave-bench: %s agent %s (containers labelled %s=%s)\n", purpose, path, sandbox.LabelInstance, e.Instance())
		return e, nil
	}
	defer func() {
		for _, e := range []*sandbox.Docker{b.densityEngine, b.compareEngine} {
			if e == nil {
				continue
			}
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			if cerr := track.cleanup(cctx, cli, e, runID); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
			}
			cancel()
			e.Close()
		}
	}()
	if opts.densityOnly {
		path, cleanupDensityAgent, berr := staticBinary(ctx, opts.densityAgent, opts.densityAgentSet, "./cmd/enclave-agent")
		if berr != nil {
			return berr
		}
		defer cleanupDensityAgent()
		if b.densityEngine, berr = extraEngine("density", path); berr != nil {
			return berr
		}
	}
	if opts.pythonCompare != "" {
		if b.compareEngine, err = extraEngine("compared", opts.pythonCompare); err != nil {
			return err
		}
		b.compareAgent = opts.pythonCompare
	}
	fmt.Fprintf(os.Stderr, "enclave-bench: %s\nenclave-bench: containers are labelled %s=%s (sandboxes) and %s=%s (baseline)\n",
		rep.header(), sandbox.LabelInstance, engine.Instance(), benchLabel, runID)
	start := time.Now()
	runErr := b.all(ctx)
	rep.Took = time.Since(start).Round(time.Millisecond).String()

	// What was measured is printed even when a later operation failed.
	measured := len(rep.Rows) > 0 || len(rep.Variants) > 0 || len(rep.Removals) > 0 || len(rep.Density) > 0
	if measured {
		printReport(os.Stdout, rep)
	}
	if opts.jsonPath != "" && measured {
		if err := writeJSON(opts.jsonPath, rep); err != nil {
			runErr = errors.Join(runErr, err)
		}
	}
	return runErr
}

// agentBinary returns the agent executable to inject, building one when needed, and a
// function that removes what it built.
func agentBinary(ctx context.Context, opts options) (string, func(), error) {
	return staticBinary(ctx, opts.agentBinary, opts.agentSet, "./cmd/enclave-mcp")
}

// staticBinary returns the static build of pkg at path, building one into a temporary
// directory when path is missing or older than the sources (unless set: the user named it),
// and a function that removes what it built.
func staticBinary(ctx context.Context, path string, set bool, pkg string) (string, func(), error) {
	nothing := func() {}
	if set {
		return path, nothing, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", nothing, err
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	info, statErr := os.Stat(path)
	if statErr == nil {
		newest, err := newestSource(root)
		if err != nil {
			return "", nothing, err
		}
		if !newest.After(info.ModTime()) {
			return path, nothing, nil
		}
	}
	dir, err := os.MkdirTemp("", "enclave-bench-")
	if err != nil {
		return "", nothing, fmt.Errorf("making a directory for the agent build: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	built := filepath.Join(dir, filepath.Base(pkg))
	reason := "missing"
	if statErr == nil {
		reason = "older than the sources"
	}
	fmt.Fprintf(os.Stderr, "enclave-bench: %s is %s; building a static agent into %s\n", path, reason, built)
	if err := goBuild(ctx, root, built, pkg); err != nil {
		cleanup()
		if statErr == nil {
			fmt.Fprintf(os.Stderr, "enclave-bench: %v\nenclave-bench: using the stale %s\n", err, path)
			return path, nothing, nil
		}
		return "", nothing, err
	}
	return built, cleanup, nil
}

// moduleRoot is the directory of the go.mod `go env GOMOD` names.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root with `go env GOMOD`: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("finding the module root: not inside a Go module; run from the enclave-mcp checkout or pass -agent-binary")
	}
	return filepath.Dir(gomod), nil
}

// newestSource is the latest modification time of the module's non-test Go files, this
// command's own excepted (it is not part of the agent).
func newestSource(root string) (time.Time, error) {
	var newest time.Time
	skip := filepath.Join(root, "cmd", "enclave-bench")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p == skip || (p != root && strings.HasPrefix(d.Name(), ".")) || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") && d.Name() != "go.mod" && d.Name() != "go.sum" {
			return nil
		}
		if strings.HasSuffix(p, "_test.go") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.ModTime().After(newest) {
			newest = info.ModTime()
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("checking whether the agent binary is up to date: %w", err)
	}
	return newest, nil
}

func goBuild(ctx context.Context, root, out, pkg string) error {
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the agent (CGO_ENABLED=0 go build %s in %s): %w", pkg, root, err)
	}
	return nil
}

// goTool is the go command: the one on PATH, else where this machine installs Go.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// loadAverage is the host's load averages as /proc/loadavg gives them (1, 5 and 15 min):
// other work on the machine skews every figure, the baseline's included.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func writeJSON(path string, rep *report) error {
	data, err := json.MarshalIndent(rep.toJSON(), "", "  ")
	if err != nil {
		return fmt.Errorf("encoding JSON results: %w", err)
	}
	data = append(data, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(data)
	} else {
		err = os.WriteFile(path, data, 0o644)
	}
	if err != nil {
		return fmt.Errorf("writing JSON results: %w", err)
	}
	return nil
}
