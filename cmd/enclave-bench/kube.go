package main

import (
	"context"
	"fmt"
	"os"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/sandbox/kube"
)

// The kube rows (-kube KUBECONFIG): the Kubernetes backend beside the Docker backend on
// the same machine, each through the same calls: a sandbox's create until its agent
// answers (sandbox.Create: Pod created, scheduled, agent copied in, attached), a warm
// pool's Acquire, and a python_executor call in a live sandbox. The Docker backend stands
// in the baseline column.

// kubeFlags name the cluster.
type kubeFlags struct {
	kubeconfig string
	namespace  string
	agentImage string
}

func (b *bench) kubeRows(ctx context.Context) error {
	k, err := kube.New(ctx, kube.Options{Kubeconfig: b.kube.kubeconfig, Namespace: b.kube.namespace, AgentImage: b.kube.agentImage})
	if err != nil {
		return err
	}
	defer k.Close()
	defer func() { // anything a failed run left behind, by this run's instance label
		cctx := context.WithoutCancel(ctx)
		list, _ := k.List(cctx, map[string]string{sandbox.LabelInstance: k.Identity().ID})
		for _, l := range list {
			_ = k.Remove(cctx, l.Ref)
		}
	}()
	fmt.Fprintf(os.Stderr, "kube: namespace %s, agent image %s, pods labelled %s=%s\n", k.Namespace(), k.AgentImage(), sandbox.LabelInstance, k.Identity().ID)
	defs, err := b.toolDefs()
	if err != nil {
		return err
	}
	python := defs["python_executor"]

	create := func(be sandbox.Backend) func(w *stopwatch) error {
		return func(w *stopwatch) error {
			w.restart()
			sb, err := sandbox.Create(ctx, be, sandbox.CreateOptions{Config: b.cfg})
			w.stop()
			if err != nil {
				return err
			}
			return sb.Close(context.WithoutCancel(ctx))
		}
	}
	r := row{Op: "kube: sandbox create until the agent answers (sandbox.Create)", Baseline: "the docker backend, the same call"}
	if r.Ours, err = measure(ctx, "kube: create", b.createRuns(), create(k)); err != nil {
		return err
	}
	if r.Docker, err = measure(ctx, "docker: create", b.createRuns(), create(b.engine)); err != nil {
		return err
	}
	b.rep.add(r)

	acquire := func(be sandbox.Backend) (func(w *stopwatch) error, func()) {
		m := b.manager(be, 1)
		return acquireRun(ctx, m, true, nil), func() { _ = m.Close(context.WithoutCancel(ctx)) }
	}
	r = row{Op: "kube: warm-pool acquire (Manager.Acquire, spare ready)", Baseline: "the docker backend's pool"}
	kubeAcquire, closeKube := acquire(k)
	r.Ours, err = measure(ctx, "kube: warm Acquire", b.createRuns(), kubeAcquire)
	closeKube()
	if err != nil {
		return err
	}
	dockerAcquire, closeDocker := acquire(b.engine)
	r.Docker, err = measure(ctx, "docker: warm Acquire", b.createRuns(), dockerAcquire)
	closeDocker()
	if err != nil {
		return err
	}
	b.rep.add(r)

	call := func(be sandbox.Backend) (stats, error) {
		sb, err := sandbox.Create(ctx, be, sandbox.CreateOptions{Config: b.cfg})
		if err != nil {
			return stats{}, err
		}
		defer sb.Close(context.WithoutCancel(ctx))
		return measure(ctx, be.Name()+": python print(1)", b.n, func(w *stopwatch) error {
			res, err := invoke(ctx, python, sb, map[string]any{"code": "print(1)"})
			if err == nil && res.Output != "1\n" {
				err = fmt.Errorf("python_executor printed %q, want \"1\\n\"", res.Output)
			}
			return err
		})
	}
	r = row{Op: "kube: python_executor `print(1)` in a live sandbox (over the API server's attach)", Baseline: "the docker backend (the engine's attach)"}
	if r.Ours, err = call(k); err != nil {
		return err
	}
	if r.Docker, err = call(b.engine); err != nil {
		return err
	}
	b.rep.add(r)
	return nil
}
