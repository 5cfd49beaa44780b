package kube

import (
	"context"

	corev1 "k8s.io/api/core/v1"
)

// Pod reads a sandbox's Pod, for tests that check its spec.
func (k *Kube) Pod(ctx context.Context, name string) (*corev1.Pod, error) {
	var p corev1.Pod
	err := k.core.Get().Namespace(k.ns).Resource("pods").Name(name).Do(ctx).Into(&p)
	return &p, err
}

// PolicyExists reads the namespace's deny-all NetworkPolicy.
func (k *Kube) PolicyExists(ctx context.Context) error {
	return k.net.Get().Namespace(k.ns).Resource("networkpolicies").Name(denyAllPolicy).Do(ctx).Error()
}
