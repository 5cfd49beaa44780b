package main

import (
	"context"
	"fmt"
	"io"

	"github.com/enclave-mcp/enclave-mcp/sandbox/kube"
)

// kubeDoctor is `doctor --backend kube`: the cluster the flags name, its namespace, and the
// nodes when the credentials may list them.
func kubeDoctor(ctx context.Context, b backendFlags, agentBinary string, out io.Writer) error {
	engine, err := b.open(ctx, agentBinary, nil, nil)
	if err != nil {
		fmt.Fprintf(out, "[FAIL] %-22s %v\n       fix: point --kubeconfig (or KUBECONFIG) at a cluster that answers\n", "cluster", err)
		return fmt.Errorf("1 check(s) failed")
	}
	defer engine.Close()
	k := engine.(*kube.Kube)
	r, err := k.Doctor(ctx)
	if err != nil {
		fmt.Fprintf(out, "[FAIL] %-22s %v\n", "cluster", err)
		return fmt.Errorf("1 check(s) failed")
	}
	failed := 0
	line := func(ok bool, what, detail, fix string) {
		mark := "ok  "
		if !ok {
			mark, failed = "FAIL", failed+1
		}
		fmt.Fprintf(out, "[%s] %-22s %s\n", mark, what, detail)
		if !ok && fix != "" {
			fmt.Fprintf(out, "       fix: %s\n", fix)
		}
	}
	line(true, "cluster", fmt.Sprintf("Kubernetes %s at %s", r.Version, r.Host), "")
	if r.PodsErr != nil {
		line(false, "namespace "+r.Namespace, r.PodsErr.Error(), "grant the server list, create, delete on pods and create on pods/attach in the namespace (README, Kubernetes)")
	} else {
		line(true, "namespace "+r.Namespace, fmt.Sprintf("%d sandbox pod(s)", r.Pods), "")
	}
	switch {
	case r.PolicyErr != nil:
		line(false, "network policy", r.PolicyErr.Error(), "grant the server get and create on networkpolicies in the namespace")
	case r.Policy:
		line(true, "network policy", "deny-all present (enforced only by a NetworkPolicy-aware network plugin)", "")
	default:
		fmt.Fprintf(out, "[note] %-22s deny-all not created yet (the first sandbox creates it)\n", "network policy")
	}
	if r.ReplicasErr != nil {
		line(false, "replica leases", r.ReplicasErr.Error(), "grant the server create, get, list, update and delete on leases.coordination.k8s.io in the namespace (deploy/kube/rbac)")
	}
	for _, l := range r.Replicas {
		state := fmt.Sprintf("renewed %s ago, lasts %s", l.Renewed, l.Duration)
		if l.Released {
			state = "released (stopped; removed once its pods are gone)"
		}
		fmt.Fprintf(out, "[note] %-22s %s\n", "replica "+l.Instance, state)
	}
	if r.NodesErr != nil {
		fmt.Fprintf(out, "[note] %-22s cannot list nodes (%v): not needed to serve\n", "nodes", r.NodesErr)
	}
	for _, n := range r.Nodes {
		line(n.Ready, "node "+n.Name, fmt.Sprintf("ready=%v, %s", n.Ready, n.Runtime), "check the kubelet")
		line(n.AgentImage, "  agent image", r.AgentImage, "scripts/kube-agent-image.sh, then import it into the node's container runtime")
	}
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed", failed)
	}
	fmt.Fprintln(out, "all checks passed")
	return nil
}
