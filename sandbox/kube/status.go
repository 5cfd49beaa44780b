package kube

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Why the cluster refused a sandbox; each wraps sandbox.ErrEngine as well, for callers that
// do not tell them apart.
var (
	// ErrImageMissing: an image is not on the node and the pull policy forbids pulling it,
	// or the pull failed.
	ErrImageMissing = errors.New("image missing on the node")
	// ErrUnschedulable: no node can take the Pod (its requests exceed what is free, a
	// runtime class that no node has, taints).
	ErrUnschedulable = errors.New("pod unschedulable")
	// ErrQuota: the namespace's ResourceQuota or LimitRange refused the Pod.
	ErrQuota = errors.New("refused by the namespace's quota")
	// ErrStartFailed: the Pod was placed but a container could not be created or ended
	// before the sandbox ran.
	ErrStartFailed = errors.New("sandbox pod failed to start")
)

// imageReasons are the waiting reasons of a container whose image cannot be had.
var imageReasons = map[string]bool{
	"ErrImageNeverPull":   true,
	"ErrImagePull":        true,
	"ImagePullBackOff":    true,
	"InvalidImageName":    true,
	"ImageInspectError":   true,
	"RegistryUnavailable": true,
}

// startReasons are the waiting reasons of a container that cannot be created or run: they
// do not clear by themselves with restartPolicy Never.
var startReasons = map[string]bool{
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"RunContainerError":          true,
	"CrashLoopBackOff":           true,
	"PreStartHookError":          true,
	"PostStartHookError":         true,
}

// startState reads a Pod on its way up: running is true once the sandbox container runs;
// err is set when it never will, and says why in the cluster's words. Neither means it is
// still on its way (scheduling, pulling, the init container copying the agent).
func startState(p *corev1.Pod) (running bool, err error) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return false, fmt.Errorf("%w: %w: pod %s: %s", sandbox.ErrEngine, ErrUnschedulable, p.Name, c.Message)
		}
	}
	for _, group := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range group {
			if err := containerFailed(p, cs); err != nil {
				return false, err
			}
		}
	}
	switch p.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		return false, fmt.Errorf("%w: %w: pod %s ended before the sandbox ran (%s)", sandbox.ErrEngine, ErrStartFailed, p.Name,
			strings.TrimSpace(string(p.Status.Phase)+" "+p.Status.Reason+" "+p.Status.Message))
	case corev1.PodRunning:
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == containerName && cs.State.Running != nil {
				return true, nil
			}
		}
	}
	return false, nil
}

// containerFailed says why a container of p will never run, or nil.
func containerFailed(p *corev1.Pod, cs corev1.ContainerStatus) error {
	if w := cs.State.Waiting; w != nil {
		switch {
		case imageReasons[w.Reason]:
			return fmt.Errorf("%w: %w: pod %s, container %s: %s: %s (the kube backend's images are loaded into the node's container runtime, never pulled by default: import %q there)",
				sandbox.ErrEngine, ErrImageMissing, p.Name, cs.Name, w.Reason, w.Message, cs.Image)
		case startReasons[w.Reason]:
			return fmt.Errorf("%w: %w: pod %s, container %s: %s: %s", sandbox.ErrEngine, ErrStartFailed, p.Name, cs.Name, w.Reason, w.Message)
		}
	}
	if t := cs.State.Terminated; t != nil && (t.ExitCode != 0 || cs.Name == containerName) {
		return fmt.Errorf("%w: %w: pod %s, container %s exited with code %d%s", sandbox.ErrEngine, ErrStartFailed, p.Name, cs.Name, t.ExitCode,
			strings.TrimRight(" "+t.Reason+" "+strings.TrimSpace(t.Message), " "))
	}
	return nil
}

// podState is a Pod's sandbox.State: its sandbox container's.
func podState(p *corev1.Pod) sandbox.State {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name != containerName {
			continue
		}
		switch {
		case cs.State.Running != nil:
			return sandbox.State{Running: true}
		case cs.State.Terminated != nil:
			t := cs.State.Terminated
			return sandbox.State{ExitCode: int(t.ExitCode), Error: strings.TrimSpace(t.Reason + " " + strings.TrimSpace(t.Message))}
		}
	}
	if p.Status.Phase == corev1.PodFailed {
		return sandbox.State{ExitCode: -1, Error: strings.TrimSpace(p.Status.Reason + " " + p.Status.Message)}
	}
	return sandbox.State{}
}

// listState is a Pod's state in the words sandbox.Listed uses (Docker's): running,
// created, exited.
func listState(p *corev1.Pod) string {
	switch p.Status.Phase {
	case corev1.PodRunning:
		return "running"
	case corev1.PodSucceeded, corev1.PodFailed:
		return "exited"
	}
	if p.DeletionTimestamp != nil {
		return "removing"
	}
	return "created"
}
