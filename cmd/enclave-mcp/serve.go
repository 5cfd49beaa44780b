package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/mcp/conformance"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/runtimeapi"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/sandbox/kube"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// fileConfig is the optional --config file: the sandbox defaults, the operator's policy and
// the tools the operator declares.
type fileConfig struct {
	Sandbox  sandbox.Config `json:"sandbox"`
	Notebook notebookConfig `json:"notebook"`
	// Policy is read by sandbox.Policy's UnmarshalJSON: every field it has, unknown ones refused.
	Policy sandbox.Policy `json:"policy"`
	// Tools are declared tools (an argv template each), offered after the built-in ones.
	Tools []tools.CommandTool `json:"tools"`
	// Sessions configures the session API's named sessions.
	Sessions sessionsConfig `json:"sessions"`
}

// serveFlags are serve's flags; each overrides the config file.
type serveFlags struct {
	logFlags
	config      string
	image       string
	memory      string
	cpus        float64
	pids        int64
	timeout     float64
	network     bool
	runtime     string
	agentBinary string
	backend     backendFlags
	httpAddr    string
	token       string
	tokenFile   string
	tokensFile  string
	sessions    sessionFlags
	named       session.NamedConfig // the sessions' config, file and flags merged
	set         map[string]bool     // the flags given on the command line
	sessionTTL  time.Duration
	taskAfter   time.Duration
	fixtures    bool // --conformance-fixtures: the conformance suite's fixture tools
	idleTTL     time.Duration
	maxLifetime time.Duration
	maxTotal    int
	maxPerOwner int
	// HTTP limits and the perimeter's allow-lists.
	maxBody             string
	maxSessions         int
	maxSessionsPerToken int
	maxConns            int
	allowedOrigins      string
	allowedHosts        string
	// warm and warmMax are the warm pools' least and most spares (-1: decided by the mode
	// and by --warm); warmNotebook is the retired --warm-notebook, accepted but unused.
	warm         int
	warmMax      int
	reserve      int
	warmNotebook int
	notebook     notebookConfig // the config file's notebook section
	tools        []tools.Def    // the built-in tools, then the config file's declared ones
}

// fixturesFlag serves the conformance suite's fixture tools. It is left out of serve's
// help (hiddenServeFlags): it is for scripts/conformance.sh, not for operators.
const fixturesFlag = "conformance-fixtures"

// hiddenServeFlags are serve's flags its help does not list.
var hiddenServeFlags = []string{fixturesFlag}

// printDefaults prints fs's flags as flag.PrintDefaults does, leaving out hidden.
func printDefaults(fs *flag.FlagSet, hidden []string) {
	shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shown.SetOutput(fs.Output())
	fs.VisitAll(func(fl *flag.Flag) {
		if !slices.Contains(hidden, fl.Name) {
			shown.Var(fl.Value, fl.Name, fl.Usage)
			shown.Lookup(fl.Name).DefValue = fl.DefValue // the default, not a value parsed before the error
		}
	})
	shown.PrintDefaults()
}

// defaultWarmHTTP is the warm pools' minimum over HTTP when --warm is not given. An HTTP
// server sees sessions come and go, and two spares cover a small burst while the refills
// catch up (about 200 ms per sandbox, FillWorkers at once); their cost is two idle
// containers per pool. Over stdio there is one session for the life of the process: a spare
// would only make its first call faster, and the refill after it would keep a container
// that nobody takes, so the default there is 0.
const defaultWarmHTTP = 2

// defaultWarmMaxHTTP is the most spares a pool grows to over HTTP when --warm-max is not
// given (and --warm is not 0): a burst of new sessions raises a pool's target by one per
// session that found no spare, and an idle minute brings it back to --warm. 16 spares cost
// about 160 MiB of host memory while they last.
const defaultWarmMaxHTTP = 16

// defaultReserveHTTP is the reserve of the MCP sessions' pool over HTTP when --reserve is
// not given (and --warm is not 0): with the two spares of --warm, a burst of 50 new
// sessions finds a sandbox ready for each. A reserve spare costs ~12 MiB of host memory
// (its container's shim, its agent and its light resident interpreter, see the README), so
// 48 cost ~580 MiB; they are made one at a time while the pool is calm, ~30 s after the
// server starts here.
const defaultReserveHTTP = 48

// reserveSize is the MCP sessions' pool's reserve for the flags and the mode: --reserve,
// else defaultReserveHTTP over HTTP with pools on and the Docker backend, at most half of
// --max-sandboxes. None over stdio, whose one session would take one spare at most, nor on
// Kubernetes, where spare Pods hold the cluster's quota and a creation's cost is not this
// host's CPU.
func (f *serveFlags) reserveSize(warmMax int) (int, error) {
	switch {
	case f.reserve < -1:
		return 0, fmt.Errorf("--reserve %d: want 0 or more", f.reserve)
	case f.reserve >= 0:
		return f.reserve, nil
	case f.httpAddr == "" || warmMax == 0 || f.backend.name != "docker": // warmMax 0: pools off
		return 0, nil
	case f.maxTotal > 0:
		return min(defaultReserveHTTP, f.maxTotal/2), nil
	}
	return defaultReserveHTTP, nil
}

// warmPools returns the warm pools' least and most spares for the flags and the mode. MCP
// sessions take from one pool (a session has one sandbox for every tool,
// session.SessionType); over HTTP the REST API's creates of the default docker config take
// from another of the same bounds. --warm 0 turns pools off unless --warm-max is given,
// which makes them grow from nothing. --warm-notebook, which sized a pool of notebook
// sandboxes for sessions' notebook calls, is accepted so that command lines keep working,
// and a value above 0 is warned about: a session's notebook starts in its own sandbox (1-2
// s, on its first notebook call).
func (f *serveFlags) warmPools(log *slog.Logger) (lo, hi int, err error) {
	lo = f.warm
	switch {
	case lo == -1 && f.httpAddr != "":
		lo = defaultWarmHTTP
	case lo == -1:
		lo = 0
	case lo < 0:
		return 0, 0, fmt.Errorf("--warm %d: want 0 or more", f.warm)
	}
	hi = f.warmMax
	switch {
	case hi == -1 && lo > 0 && f.httpAddr != "":
		hi = max(lo, defaultWarmMaxHTTP)
	case hi == -1:
		hi = lo
	case hi < lo:
		return 0, 0, fmt.Errorf("--warm-max %d: want at least --warm (%d)", f.warmMax, lo)
	}
	if f.warmNotebook < 0 {
		return 0, 0, fmt.Errorf("--warm-notebook %d: want 0 or more", f.warmNotebook)
	}
	if f.warmNotebook > 0 {
		log.Warn("--warm-notebook has no effect any more: each MCP session has one sandbox for every tool, "+
			"its notebook started in it on the first notebook call; --warm keeps spares of that sandbox", "warm_notebook", f.warmNotebook)
	}
	return lo, hi, nil
}

func serveCmd(ctx context.Context, args []string) error {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, "Usage: enclave-mcp serve [flags]\n\nServes MCP over stdio by default: one client, whose sandbox is created on its first\ntool call and removed when it disconnects. With --http ADDR (token from --token-file F or\nENCLAVE_MCP_TOKEN) it serves MCP over streamable HTTP (/mcp) and SSE (/sse) beside the REST\nAPI; GET /health needs no token, and without one answers only {\"status\":\"ok\"|\"unhealthy\"}.\n\nFlags:\n")
		printDefaults(fs, hiddenServeFlags)
	}
	f.register(fs)
	fs.StringVar(&f.config, "config", "", "JSON file with sandbox defaults, policy and declared tools {\"sandbox\": {...}, \"policy\": {...}, \"tools\": [...]}")
	fs.StringVar(&f.image, "image", "", "sandbox image (default "+sandbox.DefaultImage+")")
	fs.StringVar(&f.memory, "memory", "", "sandbox memory limit, e.g. 512m (default 1g)")
	fs.Float64Var(&f.cpus, "cpus", 0, "sandbox CPU limit (default 1)")
	fs.Int64Var(&f.pids, "pids", 0, "sandbox process limit (default 256)")
	fs.Float64Var(&f.timeout, "timeout", 0, "default tool timeout in seconds (default 30)")
	fs.BoolVar(&f.network, "network", false, "DANGEROUS: give sandboxes network access")
	fs.StringVar(&f.runtime, "runtime", "", "OCI runtime for sandboxes, e.g. runsc (default: the engine's)")
	fs.StringVar(&f.agentBinary, "agent-binary", "", agentBinaryFlag)
	f.backend.register(fs)
	fs.StringVar(&f.httpAddr, "http", "", "serve MCP and the REST API over HTTP on ADDR (e.g. 127.0.0.1:8000) instead of stdio")
	fs.StringVar(&f.token, "token", "", "bearer token required by the HTTP endpoints; visible in ps: prefer --token-file or "+tokenEnv+". Generated when listening on loopback without any")
	fs.StringVar(&f.tokenFile, "token-file", "", "read the HTTP bearer token from this file (its first line); else "+tokenEnv+", then "+legacyTokenEnv)
	fs.StringVar(&f.tokensFile, "tokens-file", "", "more HTTP tokens, one principal each: a file of name:token lines (# comments); each name's sandboxes and sessions are its own, on every API")
	f.sessions.register(fs)
	fs.StringVar(&f.maxBody, "max-body", "8m", "HTTP: largest JSON request body (MCP messages, REST JSON); larger is 413. REST tar uploads have their own 64 MiB limit")
	fs.IntVar(&f.maxSessions, "max-sessions", defaultMaxSessions, "HTTP: most live MCP sessions (streamable-HTTP sessions and SSE streams) in total (0: no cap)")
	fs.IntVar(&f.maxConns, "max-conns", defaultMaxConns, "HTTP: most open TCP connections; more wait to be accepted until one closes (0: no cap)")
	fs.IntVar(&f.maxSessionsPerToken, "max-sessions-per-token", defaultMaxSessionsPerToken, "HTTP: most live MCP sessions one token holds (0: no cap)")
	fs.StringVar(&f.allowedOrigins, "allowed-origins", "", "HTTP: comma-separated browser origins (https://app.example.com) allowed to call the server, with CORS; * allows any. Requests with any other Origin get 403")
	fs.StringVar(&f.allowedHosts, "allowed-hosts", "", "HTTP: comma-separated host names the server may be addressed as, besides localhost and loopback addresses; on a loopback listener any other Host gets 403 (DNS rebinding)")
	fs.DurationVar(&f.sessionTTL, "session-ttl", 30*time.Minute, "HTTP: end an MCP session (and remove its sandboxes) after this long without a request")
	fs.DurationVar(&f.taskAfter, "task-after", mcp.DefaultTaskAfter, "HTTP: a tool call of a client that declared the MCP tasks extension goes on as a task (polled with tasks/get) once it has run this long (negative: never)")
	fs.BoolVar(&f.fixtures, fixturesFlag, false, "TEST ONLY: also serve the MCP conformance suite's fixture tools (greet, slow_compute, test_*, ...; package mcp/conformance), which run no sandbox; for scripts/conformance.sh, never for agents")
	fs.DurationVar(&f.idleTTL, "idle-ttl", 0, "remove a sandbox unused for this long (0: never)")
	fs.DurationVar(&f.maxLifetime, "max-lifetime", 0, "remove a sandbox this long after its creation (0: never)")
	fs.IntVar(&f.maxTotal, "max-sandboxes", 100, "most sandboxes alive at once (0: no cap)")
	fs.IntVar(&f.maxPerOwner, "max-per-owner", 10, "most sandboxes one session or REST client holds (0: no cap)")
	fs.IntVar(&f.warm, "warm", -1, fmt.Sprintf("least started spare sandboxes kept ready for new MCP sessions (a session's one sandbox, for every tool; its notebook starts on the first notebook call) and, with --http, for REST creates of the default config; each serves one session or create and counts against --max-sandboxes (default %d with --http, 0 over stdio)", defaultWarmHTTP))
	fs.IntVar(&f.warmMax, "warm-max", -1, fmt.Sprintf("most spares a warm pool grows to while new sessions or creates outrun its refills; an idle minute brings it back to --warm (default %d with --http when --warm is not 0, else --warm)", defaultWarmMaxHTTP))
	fs.IntVar(&f.reserve, "reserve", -1, fmt.Sprintf("spares the MCP sessions' pool keeps beyond --warm for bursts of new sessions: made one at a time while no session starts, with a light resident Python interpreter (numpy, pandas, matplotlib imported once a call needs them), handed out after the --warm ones (default %d with --http and --backend docker unless --warm is 0, at most half of --max-sandboxes; else 0)", defaultReserveHTTP))
	fs.IntVar(&f.warmNotebook, "warm-notebook", 0, "retired: no effect (a session's notebook runs in its one sandbox, warmed by --warm); accepted so command lines keep working")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := f.logger()
	if err != nil {
		return err
	}
	f.set = setFlags(fs)
	cfg, policy, err := f.sandboxConfig()
	if err != nil {
		return err
	}
	warm, warmMax, err := f.warmPools(log)
	if err != nil {
		return err
	}
	reserve, err := f.reserveSize(warmMax)
	if err != nil {
		return err
	}
	var token string
	var named []httpapi.Credential
	var generated bool
	var limits httpLimits
	var perimeter *httpapi.Perimeter
	if f.httpAddr != "" {
		// Checked before any engine work: a remote endpoint without a token never starts,
		// and a mistyped limit or allow-list fails at once.
		configured, _, err := resolveToken(f.token, f.tokenFile, os.Getenv, log)
		if err != nil {
			return err
		}
		if f.tokensFile != "" {
			if named, err = readTokensFile(f.tokensFile, log); err != nil {
				return err
			}
		}
		// A tokens file is tokens enough: no operator token is generated beside it.
		if configured != "" || len(named) == 0 {
			if token, generated, err = httpToken(f.httpAddr, configured); err != nil {
				return err
			}
		}
		if err := httpapi.CheckCredentials(token, named); err != nil {
			return err
		}
		if limits, perimeter, err = f.httpSetup(log); err != nil {
			return err
		}
		if generated {
			path, err := showGeneratedToken(token, os.Stderr, isTerminal(os.Stderr), "", log)
			if err != nil {
				return err
			}
			if path != "" {
				defer os.Remove(path)
			}
		}
	}

	eg, err := egressService(policy, log)
	if err != nil {
		return err
	}
	engine, err := f.backend.open(ctx, defaultAgent(f.agentBinary), eg, log)
	if err != nil {
		return err
	}
	defer engine.Close()
	if n, err := sandbox.ReapOrphans(ctx, engine); err != nil {
		log.Warn("reaping sandboxes of dead servers", "error", err)
	} else if n > 0 {
		log.Info("reaped sandboxes of dead servers", "count", n)
	}
	// Before the first sandbox: a Pod whose replica holds no Lease is another's to reap.
	stopReplica, err := f.backend.startReplica(ctx, engine, log)
	if err != nil {
		return err
	}
	defer stopReplica() // after the manager's Close below: the Lease outlives the sandboxes
	enabled, err := tools.Enabled(f.tools, cfg.ToolsConfig)
	if err != nil {
		return err
	}
	// The REST API creates ms-enclave's two types; MCP sessions get one sandbox each, of the
	// session type, whose notebook starts on its first notebook call.
	manager, err := session.NewManager(session.Sandboxes{
		Backend: engine, Config: cfg, Policy: policy, Tools: enabled,
		NotebookImage: f.notebook.Image,
		Notebook:      notebook.Options{Command: f.notebook.Command, Port: f.notebook.Port, KernelName: f.notebook.Kernel, Logger: log},
		MaxSandboxes:  f.maxTotal, MaxPerOwner: f.maxPerOwner, IdleTTL: f.idleTTL, MaxLifetime: f.maxLifetime,
		Warm: warm, WarmMax: warmMax, WarmREST: f.httpAddr != "", Reserve: reserve, Logger: log,
	})
	if err != nil {
		return err
	}
	// Remove every sandbox (warm spares too, which exist from here on), even when interrupted
	// or failing early: a fresh context, bounded. Once the server is exiting (a signal, or
	// stdio's end), removals are handed to the engine, which removes each container once
	// its agent has exited on its stream's end: the server exits in milliseconds, not the
	// ~120-200 ms per sandbox that the kernel's tear-down costs here.
	defer context.AfterFunc(ctx, manager.HandOffRemovals)()
	defer func() {
		manager.HandOffRemovals()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := manager.Close(cctx); err != nil {
			log.Error("removing sandboxes on shutdown", "error", err)
		}
		log.Info("stopped")
	}()
	// Resolve once now, so a bad config fails at start rather than at the first tool call.
	resolved, err := sandbox.Resolve(cfg, policy)
	if err != nil {
		return err
	}
	// One session core behind both faces: every tool call, MCP or REST, runs through it.
	core, err := session.New(session.Config{
		Manager: manager, Tools: enabled, ToolOptions: cfg.ToolsConfig, DefaultTimeout: resolved.Timeout,
		Version: version, Logger: log, Check: engine.Ping,
	})
	if err != nil {
		return err
	}
	// In HTTP mode the REST API comes first: its metrics count MCP tool calls too.
	var api *httpapi.API
	var onToolCall func(string, tools.Result, time.Duration)
	var sessionsAPI *runtimeapi.API
	if f.httpAddr != "" {
		api, err = httpapi.New(httpapi.Config{Core: core, Token: token, Tokens: named, Logger: log, MaxJSONBytes: limits.MaxBodyBytes})
		if err != nil {
			return err
		}
		onToolCall = api.Metrics().ObserveTool
		// sandbox_runtime's session API, on the same listener and tokens.
		sessions, err := session.NewNamed(core, f.named)
		if err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := sessions.Close(cctx); err != nil {
				log.Error("ending named sessions on shutdown", "error", err)
			}
		}()
		sessionsAPI, err = runtimeapi.New(runtimeapi.Config{
			Sessions: sessions, Principal: httpapi.PrincipalOf, Check: engine.Ping,
			MaxJSONBytes: limits.MaxBodyBytes, MaxUploadBytes: core.Limits().MaxArchiveBytes, Logger: log,
		})
		if err != nil {
			return err
		}
	}
	var local []mcp.LocalTool
	if f.fixtures {
		log.Warn("serving the MCP conformance suite's fixture tools beside the real ones (--" + fixturesFlag + "): for testing only")
		local = conformance.Tools()
	}
	srv, err := mcp.New(mcp.Config{
		Name: "enclave-mcp", Version: version, Core: core, Logger: log, OnToolCall: onToolCall, TaskAfter: f.taskAfter,
		LocalTools: local,
	})
	if err != nil {
		return err
	}
	var serveErr error
	if api != nil {
		h := &httpServer{
			addr: f.httpAddr, mcp: srv, rest: api, sessions: sessionsAPI, perimeter: perimeter,
			sessionTTL: f.sessionTTL, limits: limits, log: log,
		}
		if k, ok := engine.(*kube.Kube); ok && f.backend.kube.AdvertiseURL != "" {
			h.peers, h.instance = k, k.Identity().ID
		}
		serveErr = h.serve(ctx)
	} else {
		log.Info("serving MCP over stdio", "image", manager.DefaultConfig(session.SessionType).Image, "tools", len(enabled))
		serveErr = srv.ServeStdio(ctx, os.Stdin, os.Stdout)
	}
	return serveErr
}

// sandboxConfig merges the config file and the flags: the sandbox config and policy, and
// the named sessions' config (f.named).
func (f *serveFlags) sandboxConfig() (sandbox.Config, sandbox.Policy, error) {
	var fc fileConfig
	if f.config != "" {
		data, err := os.ReadFile(f.config)
		if err != nil {
			return sandbox.Config{}, sandbox.Policy{}, fmt.Errorf("reading config: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fc); err != nil {
			return sandbox.Config{}, sandbox.Policy{}, fmt.Errorf("reading config %s: %w", f.config, err)
		}
	}
	cfg := fc.Sandbox
	f.notebook = fc.Notebook
	// Checked here, before any engine work: a bad declaration fails at start, saying why.
	all, err := tools.AddCommands(tools.All(), fc.Tools)
	if err != nil {
		return sandbox.Config{}, sandbox.Policy{}, fmt.Errorf("reading config %s: %w", f.config, err)
	}
	f.tools = all
	if f.named, err = f.sessions.namedConfig(fc.Sessions, f.set); err != nil {
		return sandbox.Config{}, sandbox.Policy{}, err
	}
	policy := fc.Policy
	if f.image != "" {
		cfg.Image = f.image
	}
	if f.memory != "" {
		cfg.MemoryLimit = f.memory
	}
	if f.cpus != 0 {
		cfg.CPULimit = f.cpus
	}
	if f.pids != 0 {
		cfg.PidsLimit = f.pids
	}
	if f.timeout != 0 {
		cfg.Timeout = f.timeout
	}
	if f.runtime != "" {
		cfg.Runtime = f.runtime
	}
	if f.network {
		cfg.NetworkEnabled, policy.AllowNetwork = true, true
	}
	return cfg, policy, nil
}

// httpSetup reads the HTTP flags: the limits and the perimeter's allow-lists.
func (f *serveFlags) httpSetup(log *slog.Logger) (httpLimits, *httpapi.Perimeter, error) {
	limits := httpLimits{
		ReadHeaderTimeout:   defaultReadHeaderTimeout,
		ReadTimeout:         defaultReadTimeout,
		IdleTimeout:         defaultIdleTimeout,
		MaxHeaderBytes:      defaultMaxHeaderBytes,
		MaxSessions:         f.maxSessions,
		MaxSessionsPerToken: f.maxSessionsPerToken,
		MaxConns:            f.maxConns,
	}
	n, err := sandbox.ParseSize(f.maxBody)
	if err != nil || n < 64<<10 {
		return limits, nil, fmt.Errorf("--max-body %q: want a size of at least 64k, e.g. 8m", f.maxBody)
	}
	limits.MaxBodyBytes = n
	if f.maxSessions < 0 || f.maxSessionsPerToken < 0 || f.maxConns < 0 {
		return limits, nil, fmt.Errorf("--max-sessions %d, --max-sessions-per-token %d, --max-conns %d: want 0 (no cap) or more", f.maxSessions, f.maxSessionsPerToken, f.maxConns)
	}
	perimeter, err := httpapi.NewPerimeter(httpapi.PerimeterConfig{
		AllowedOrigins: splitList(f.allowedOrigins),
		AllowedHosts:   splitList(f.allowedHosts),
		Logger:         log,
	})
	if err != nil {
		return limits, nil, fmt.Errorf("--allowed-origins/--allowed-hosts: %w", err)
	}
	return limits, perimeter, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
