package kube

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestStartState classifies Pod statuses as the cluster reports them (a pure unit test of
// the classification; the integration tests get the same statuses from a real cluster).
func TestStartState(t *testing.T) {
	waiting := func(name, reason string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "m"}}}
	}
	terminated := func(name string, code int32, reason string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason}}}
	}
	running := corev1.ContainerStatus{Name: containerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	for _, tc := range []struct {
		name    string
		status  corev1.PodStatus
		running bool
		err     error
		text    string
	}{
		{name: "pending", status: corev1.PodStatus{Phase: corev1.PodPending}},
		{name: "initialising", status: corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{waiting(initName, "PodInitializing")}}},
		{name: "running", status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{running}}, running: true},
		{name: "unschedulable", status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available: 1 Insufficient cpu."}}},
			err: ErrUnschedulable, text: "Insufficient cpu"},
		{name: "image never pulled", status: corev1.PodStatus{Phase: corev1.PodPending,
			ContainerStatuses: []corev1.ContainerStatus{waiting(containerName, "ErrImageNeverPull")}}, err: ErrImageMissing, text: "ErrImageNeverPull"},
		{name: "agent image pull backoff", status: corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{waiting(initName, "ImagePullBackOff")}}, err: ErrImageMissing, text: "container agent"},
		{name: "config error", status: corev1.PodStatus{Phase: corev1.PodPending,
			ContainerStatuses: []corev1.ContainerStatus{waiting(containerName, "CreateContainerConfigError")}}, err: ErrStartFailed},
		{name: "init failed", status: corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{terminated(initName, 1, "Error")}}, err: ErrStartFailed, text: "code 1"},
		{name: "init done", status: corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{terminated(initName, 0, "Completed")}}},
		{name: "sandbox exited", status: corev1.PodStatus{Phase: corev1.PodFailed,
			ContainerStatuses: []corev1.ContainerStatus{terminated(containerName, 137, "OOMKilled")}}, err: ErrStartFailed, text: "OOMKilled"},
		{name: "evicted", status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}, err: ErrStartFailed, text: "Evicted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := startState(&corev1.Pod{Status: tc.status})
			if ok != tc.running {
				t.Errorf("running %v, want %v", ok, tc.running)
			}
			if tc.err == nil {
				if err != nil {
					t.Errorf("error %v, want none", err)
				}
				return
			}
			if !errors.Is(err, tc.err) || !errors.Is(err, sandbox.ErrEngine) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %v: want %v and ErrEngine, saying %q", err, tc.err, tc.text)
			}
		})
	}
}

// TestPodState: an OOM kill and an exit code are reported as Inspect's State.
func TestPodState(t *testing.T) {
	p := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{Name: containerName,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}}}}}
	if st := podState(p); st.Running || st.ExitCode != 137 || st.Error != "OOMKilled" {
		t.Errorf("state %+v, want exit 137 OOMKilled", st)
	}
	if got := listState(p); got != "exited" {
		t.Errorf("list state %q, want exited", got)
	}
}

// TestCreateError classifies refused creates as the API server words them (pure: the
// errors are built, not received).
func TestCreateError(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	for _, tc := range []struct {
		name string
		err  error
		want error
		text string
	}{
		{"quota", apierrors.NewForbidden(pods, "p", errors.New("exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1")), ErrQuota, "exceeded quota"},
		{"limit range", apierrors.NewForbidden(pods, "p", errors.New("maximum memory usage per Container is 1Gi, but limit is 4Gi")), ErrQuota, "maximum memory"},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Kind: "Pod"}, "p", nil), sandbox.ErrInvalidConfig, "invalid"},
		{"other", apierrors.NewForbidden(pods, "p", errors.New("User \"x\" cannot create resource")), sandbox.ErrEngine, "cannot create"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := createError("p", tc.err)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("%v: want %v saying %q", err, tc.want, tc.text)
			}
		})
	}
}
