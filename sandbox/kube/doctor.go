package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// DoctorReport is what `enclave-mcp doctor --backend kube` shows about a cluster.
type DoctorReport struct {
	Host       string // the API server's address
	Version    string // its gitVersion
	Namespace  string
	AgentImage string
	// Pods is how many sandbox Pods the namespace holds, when they can be listed; PodsErr
	// says why not.
	Pods    int
	PodsErr error
	// Policy says whether the deny-all NetworkPolicy exists yet (Launch creates it).
	Policy    bool
	PolicyErr error
	// Replicas are the server replicas' Leases in the namespace, with how long ago each was
	// renewed by its writer's clock; ReplicasErr says why they cannot be listed.
	Replicas    []ReplicaLease
	ReplicasErr error
	// Nodes are the nodes and whether each is Ready and holds the agent image; listing
	// nodes needs a cluster-wide permission the server does not, so NodesErr is usual.
	Nodes    []NodeStatus
	NodesErr error
}

// ReplicaLease is one replica's Lease as doctor sees it.
type ReplicaLease struct {
	Instance string
	Released bool          // its replica stopped
	Renewed  time.Duration // since its renewTime, by this machine's clock
	Duration time.Duration
}

// NodeStatus is one node as doctor sees it.
type NodeStatus struct {
	Name       string
	Ready      bool
	AgentImage bool // the node reports the agent image among its images
	Runtime    string
}

// Doctor inspects the cluster: its version, the namespace's sandbox Pods and policy, and
// the nodes when it may list them.
func (k *Kube) Doctor(ctx context.Context) (DoctorReport, error) {
	r := DoctorReport{Host: k.cfg.Host, Namespace: k.ns, AgentImage: k.opts.AgentImage}
	raw, err := k.core.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return r, fmt.Errorf("%w: reading the API server's version: %w", sandbox.ErrEngine, err)
	}
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return r, fmt.Errorf("%w: reading the API server's version: %w", sandbox.ErrEngine, err)
	}
	r.Version = v.GitVersion
	if list, err := k.List(ctx, map[string]string{sandbox.LabelManaged: "true"}); err != nil {
		r.PodsErr = err
	} else {
		r.Pods = len(list)
	}
	err = k.net.Get().Namespace(k.ns).Resource("networkpolicies").Name(denyAllPolicy).Do(ctx).Error()
	switch {
	case err == nil:
		r.Policy = true
	case !apierrors.IsNotFound(err):
		r.PolicyErr = err
	}
	var leases coordinationv1.LeaseList
	err = k.coord.Get().Namespace(k.ns).Resource("leases").
		VersionedParams(&metav1.ListOptions{LabelSelector: sandbox.LabelManaged + "=true"}, k.params).Do(ctx).Into(&leases)
	if err != nil {
		r.ReplicasErr = err
	}
	for i := range leases.Items {
		l := &leases.Items[i]
		lv := viewLease(l)
		rl := ReplicaLease{Instance: lv.Instance, Released: lv.Holder == "", Duration: lv.Duration}
		if l.Spec.RenewTime != nil {
			rl.Renewed = time.Since(l.Spec.RenewTime.Time).Round(time.Second)
		}
		r.Replicas = append(r.Replicas, rl)
	}
	var nodes corev1.NodeList
	if err := k.core.Get().Resource("nodes").VersionedParams(&metav1.ListOptions{}, k.params).Do(ctx).Into(&nodes); err != nil {
		r.NodesErr = err
		return r, nil
	}
	for _, n := range nodes.Items {
		s := NodeStatus{Name: n.Name, Runtime: n.Status.NodeInfo.ContainerRuntimeVersion}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				s.Ready = c.Status == corev1.ConditionTrue
			}
		}
		for _, img := range n.Status.Images {
			for _, name := range img.Names {
				if name == k.opts.AgentImage || name == "docker.io/"+k.opts.AgentImage {
					s.AgentImage = true
				}
			}
		}
		r.Nodes = append(r.Nodes, s)
	}
	return r, nil
}
