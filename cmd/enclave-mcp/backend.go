package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// backendFlags pick where sandboxes run.
type backendFlags struct {
	name         string
	allowProcess bool
	processRoot  string
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.name, "backend", "docker", "where sandboxes run: docker (hardened containers), or process (plain host processes that ISOLATE NOTHING, for development; needs --allow-process-backend)")
	fs.BoolVar(&b.allowProcess, "allow-process-backend", false, "DANGEROUS: allow --backend process, whose sandboxed code runs on this host unconfined")
	fs.StringVar(&b.processRoot, "process-root", "", "--backend process: directory for the sandboxes' workspaces (default: enclave-mcp-process under the temporary directory)")
}

// open connects to the backend the flags name. The process backend is refused unless it was
// allowed in so many words, and logs ProcessWarning when it starts.
// Sandboxes' egress goes through eg (nil: the system's roots and resolver).
func (b *backendFlags) open(ctx context.Context, agentBinary string, eg *egress.Service, log *slog.Logger) (sandbox.Backend, error) {
	switch b.name {
	case "docker":
		return sandbox.NewDocker(ctx, sandbox.DockerOptions{AgentBinary: agentBinary, Logger: log, Egress: eg})
	case "process":
		if !b.allowProcess {
			return nil, fmt.Errorf("--backend process refused: %s; pass --allow-process-backend as well if that is what you want", sandbox.ProcessWarning)
		}
		return sandbox.NewProcess(sandbox.ProcessOptions{AgentBinary: agentBinary, Root: b.processRoot, Logger: log, Egress: eg})
	}
	return nil, fmt.Errorf("--backend %q: want docker or process", b.name)
}

// egressService is the sandboxes' egress service for the operator's policy: its roots for
// intercepted TLS (policy.egress.upstream_ca_file) and the server's log.
func egressService(p sandbox.Policy, log *slog.Logger) (*egress.Service, error) {
	opts := egress.Options{Logger: log}
	if p.Egress != nil {
		roots, err := p.Egress.Roots()
		if err != nil {
			return nil, err
		}
		opts.RootCAs = roots
	}
	return egress.NewService(opts), nil
}
