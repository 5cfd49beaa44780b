package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/sandbox/kube"
)

// backendFlags pick where sandboxes run.
type backendFlags struct {
	name         string
	allowProcess bool
	processRoot  string
	kube         kube.Options
	replica      kube.ReplicaOptions
	pullPolicy   string
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.name, "backend", "docker", "where sandboxes run: docker (hardened containers), kube (a hardened Pod each, on a Kubernetes cluster), or process (plain host processes that ISOLATE NOTHING, for development; needs --allow-process-backend)")
	fs.BoolVar(&b.allowProcess, "allow-process-backend", false, "DANGEROUS: allow --backend process, whose sandboxed code runs on this host unconfined")
	fs.StringVar(&b.processRoot, "process-root", "", "--backend process: directory for the sandboxes' workspaces (default: enclave-mcp-process under the temporary directory)")
	fs.StringVar(&b.kube.Kubeconfig, "kubeconfig", "", "--backend kube: kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else the in-cluster service account)")
	fs.StringVar(&b.kube.Namespace, "namespace", "", "--backend kube: namespace of the sandbox Pods (default: the kubeconfig context's, else default)")
	fs.StringVar(&b.kube.AgentImage, "kube-agent-image", "", "--backend kube: image whose /agent is the static agent, loaded on the nodes (default: enclave/agent:<hash of the agent binary>, which scripts/kube-agent-image.sh builds)")
	fs.StringVar(&b.pullPolicy, "kube-pull-policy", "Never", "--backend kube: imagePullPolicy of the sandbox and agent images: Never (images loaded on the nodes) or IfNotPresent")
	fs.Float64Var(&b.kube.RequestFraction, "kube-request-fraction", 0.1, "--backend kube: share of each limit (CPU, memory, ephemeral storage) a Pod requests from the scheduler; 1 makes Guaranteed Pods")
	fs.StringVar(&b.kube.AdvertiseURL, "kube-advertise-url", "", "--backend kube: where the other replicas reach this server's HTTP API (e.g. http://$(POD_IP):8000); a REST or stateless-MCP request for a sandbox another replica holds is forwarded to that replica's URL. Empty: this replica's sandboxes are reached through it alone")
	fs.StringVar(&b.kube.OwnerPod, "kube-owner-pod", "", "--backend kube: the server's own Pod (e.g. $(POD_NAME) from the downward API), which then owns its sandbox Pods and its Lease: Kubernetes removes them with it")
	fs.DurationVar(&b.replica.LeaseDuration, "kube-lease-duration", kube.DefaultLeaseDuration, "--backend kube: this replica's Lease lasts this long unrenewed (renewed every third of it); a replica unseen renewing for this long is dead, and its sandbox Pods are reaped")
	fs.DurationVar(&b.replica.ReapInterval, "kube-reap-interval", kube.DefaultReapInterval, "--backend kube: how often to look for dead replicas' sandbox Pods and remove them")
}

// startReplica, on the kube backend, holds this server's Lease and reaps dead replicas'
// Pods until the returned stop runs; other backends need neither (stop does nothing).
func (b *backendFlags) startReplica(ctx context.Context, engine sandbox.Backend, log *slog.Logger) (stop func(), err error) {
	k, ok := engine.(*kube.Kube)
	if !ok {
		return func() {}, nil
	}
	r, err := k.StartReplica(ctx, b.replica)
	if err != nil {
		return nil, err
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := r.Stop(sctx); err != nil {
			log.Warn("releasing the replica lease", "error", err)
		}
	}, nil
}

// open connects to the backend the flags name. The process backend is refused unless it was
// allowed in so many words, and logs ProcessWarning when it starts.
// Sandboxes' egress goes through eg (nil: the system's roots and resolver).
func (b *backendFlags) open(ctx context.Context, agentBinary string, eg *egress.Service, log *slog.Logger) (sandbox.Backend, error) {
	switch b.name {
	case "docker":
		return sandbox.NewDocker(ctx, sandbox.DockerOptions{AgentBinary: agentBinary, Logger: log, Egress: eg})
	case "kube":
		opts := b.kube
		opts.AgentBinary, opts.Logger = agentBinary, log
		opts.PullPolicy = corev1.PullPolicy(b.pullPolicy)
		if log != nil {
			// client-go logs through klog (an attach's end, as "Copying stdout failed"):
			// into the server's log, not bare lines on stderr.
			klog.SetSlogLogger(log)
		}
		return kube.New(ctx, opts)
	case "process":
		if !b.allowProcess {
			return nil, fmt.Errorf("--backend process refused: %s; pass --allow-process-backend as well if that is what you want", sandbox.ProcessWarning)
		}
		return sandbox.NewProcess(sandbox.ProcessOptions{AgentBinary: agentBinary, Root: b.processRoot, Logger: log, Egress: eg})
	}
	return nil, fmt.Errorf("--backend %q: want docker, kube or process", b.name)
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
