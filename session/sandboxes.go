package session

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Sandboxes says where a server's sandboxes run and what they start from. NewManager turns
// it into the sandbox.Manager a Core is built on, with the three kinds of sandbox the faces
// use: ms-enclave's docker and docker_notebook (the REST API), and an MCP session's one
// sandbox (SessionType). The command line builds one from its flags; a program that
// embeds the server builds its own, with any Backend.
type Sandboxes struct {
	// Backend runs the sandboxes: sandbox.Docker, sandbox.Process, or one of your own.
	Backend sandbox.Backend
	// Config is what docker sandboxes start from, and the others too but for the image.
	Config sandbox.Config
	// NotebookImage is docker_notebook sandboxes' image; empty means
	// sandbox.DefaultNotebookImage. Notebook configures their Jupyter server and kernel,
	// and sessions' notebooks too.
	NotebookImage string
	Notebook      notebook.Options
	// Tools are the tools the server offers; whether one runs in a notebook kernel decides
	// a session's default image (see SessionConfig).
	Tools []tools.Def
	// Policy is the operator's: it applies to every config, the session's included.
	Policy sandbox.Policy

	// The Manager's caps and clocks (see sandbox.ManagerOptions).
	MaxSandboxes, MaxPerOwner int
	IdleTTL, MaxLifetime      time.Duration
	// Warm is the least number of started sandboxes each warm pool keeps ready, WarmMax the
	// most it grows to while demand outruns it (below Warm: Warm, a fixed size); 0 and 0
	// means no pools. One pool holds MCP sessions' sandboxes; with WarmREST, another holds
	// docker sandboxes of the default config, which serves the REST API's creates that ask
	// for nothing else (ms-enclave's client's create without a config).
	Warm, WarmMax int
	WarmREST      bool
	// Reserve is how many more spares the MCP sessions' pool keeps, made while it is calm
	// and warmed up light (sandbox.ManagerOptions.Reserve): a floor for bursts of new
	// sessions.
	Reserve int
	Logger  *slog.Logger
}

// NewManager returns the Manager for s. It resolves the session's config against the policy
// first, so a policy that refuses the session's image fails here, at start, saying why.
func NewManager(s Sandboxes) (*sandbox.Manager, error) {
	notebookCfg := s.Config
	notebookCfg.Image = s.NotebookImage
	if notebookCfg.Image == "" {
		notebookCfg.Image = sandbox.DefaultNotebookImage
	}
	sessionCfg := s.SessionConfig()
	if _, err := sandbox.Resolve(sessionCfg, s.Policy); err != nil {
		return nil, fmt.Errorf("the MCP sessions' sandbox (image %s, which runs every tool, the notebook's too; name one with "+
			"--image or the config's sandbox.image, or disable the notebook tools in tools_config): %w", sessionCfg.Image, err)
	}
	nb := s.Notebook
	if nb.Logger == nil {
		nb.Logger = s.Logger
	}
	return sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{
			sandbox.TypeDocker: s.Config, sandbox.TypeNotebook: notebookCfg, SessionType: sessionCfg,
		},
		Policy: s.Policy,
		Creators: map[sandbox.Type]sandbox.Creator{
			sandbox.TypeDocker:   sandbox.NewCreator(s.Backend, sandbox.TypeDocker),
			sandbox.TypeNotebook: notebook.Creator(s.Backend, nb),
			SessionType:          notebook.LazyCreator(s.Backend, SessionType, nb),
		},
		Logger:        s.Logger,
		MaxSandboxes:  s.MaxSandboxes,
		MaxPerOwner:   s.MaxPerOwner,
		IdleTTL:       s.IdleTTL,
		MaxLifetime:   s.MaxLifetime,
		Warm:          warm(s.Warm, s.WarmREST),
		WarmMax:       warm(s.WarmMax, s.WarmREST),
		WarmUp:        s.whenForking(sandbox.WarmPython),
		Reserve:       map[sandbox.Type]int{SessionType: s.Reserve},
		WarmUpReserve: s.whenForking(sandbox.WarmPythonLight),
		Egress:        egressOf(s.Backend),
	}), nil
}

// whenForking is warm (sandbox.WarmPython for a pool's spares, WarmPythonLight for its
// reserve's) for a sandbox that forks python_executor's calls, and nothing for one that
// does not: only the former has a resident interpreter to start.
func (s Sandboxes) whenForking(warm func(context.Context, sandbox.Sandbox, sandbox.Resolved) error) func(context.Context, sandbox.Sandbox, sandbox.Resolved) error {
	return func(ctx context.Context, sb sandbox.Sandbox, cfg sandbox.Resolved) error {
		if !tools.ForksPython(s.Tools, cfg.ToolsConfig) {
			return nil
		}
		return warm(ctx, sb, cfg)
	}
}

// egressOf is the egress service of backend b, when it has one.
func egressOf(b sandbox.Backend) *egress.Service {
	if e, ok := b.(interface{ Egress() *egress.Service }); ok {
		return e.Egress()
	}
	return nil
}

// warm sizes the pools: the MCP sessions' and, with rest, the REST API's docker default.
func warm(n int, rest bool) map[sandbox.Type]int {
	sizes := map[sandbox.Type]int{SessionType: n}
	if rest {
		sizes[sandbox.TypeDocker] = n
	}
	return sizes
}

// SessionConfig is the config an MCP session's one sandbox starts from: every tool of the
// session runs in it, the notebook's kernel included. An image the operator named in Config
// is used as it is (without Jupyter, the notebook tools then say so when called).
// Otherwise, when a notebook tool is offered, the session needs an image that runs every
// tool: NotebookImage, else the notebook image (python3 with Jupyter, numpy and
// matplotlib); with no notebook tool, the plain default image.
func (s Sandboxes) SessionConfig() sandbox.Config {
	cfg := s.Config
	if cfg.Image != "" || !notebookOffered(s.Tools) {
		return cfg
	}
	cfg.Image = sandbox.DefaultNotebookImage
	if s.NotebookImage != "" {
		cfg.Image = s.NotebookImage
	}
	return cfg
}

// notebookOffered reports whether any of the tools runs in a notebook kernel.
func notebookOffered(defs []tools.Def) bool {
	for _, def := range defs {
		if def.Sandbox == sandbox.TypeNotebook {
			return true
		}
	}
	return false
}
