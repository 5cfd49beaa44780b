package kube

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

func resolved(t *testing.T, c sandbox.Config, p sandbox.Policy) sandbox.Resolved {
	t.Helper()
	r, err := sandbox.Resolve(c, p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPodSpecHardening pins every security default of a sandbox Pod.
func TestPodSpecHardening(t *testing.T) {
	spec := sandbox.Spec{ID: "abc123", Config: resolved(t, sandbox.Config{}, sandbox.Policy{}),
		Labels: map[string]string{sandbox.LabelManaged: "true", sandbox.LabelOwner: "tenant/alice@example.com"}}
	pod, err := podSpec(podInput{Spec: spec, AgentImage: "enclave/agent:x", PullPolicy: corev1.PullNever, RequestFraction: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	ps := pod.Spec
	if *ps.AutomountServiceAccountToken || *ps.EnableServiceLinks || ps.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("service account token %v, service links %v, restart %s; want false, false, Never", *ps.AutomountServiceAccountToken, *ps.EnableServiceLinks, ps.RestartPolicy)
	}
	sc := ps.SecurityContext
	if !*sc.RunAsNonRoot || *sc.RunAsUser != 1000 || *sc.RunAsGroup != 1000 || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v: want non-root 1000:1000 under RuntimeDefault seccomp", sc)
	}
	if ps.RuntimeClassName != nil {
		t.Errorf("runtime class %q without one configured", *ps.RuntimeClassName)
	}
	for _, c := range append(ps.InitContainers, ps.Containers...) {
		s := c.SecurityContext
		if *s.Privileged || *s.AllowPrivilegeEscalation || !*s.ReadOnlyRootFilesystem || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(s.Capabilities.Add) > 0 {
			t.Errorf("container %s security context %+v: want unprivileged, no escalation, read-only root, all capabilities dropped", c.Name, s)
		}
		if c.ImagePullPolicy != corev1.PullNever {
			t.Errorf("container %s pull policy %s", c.Name, c.ImagePullPolicy)
		}
		mem, cpu, disk := c.Resources.Limits.Memory(), c.Resources.Limits.Cpu(), c.Resources.Limits.StorageEphemeral()
		if mem.Value() != sandbox.DefaultMemory || cpu.MilliValue() != 1000 || disk.Value() != sandbox.DefaultWorkspaceSize+agentVolumeLimit {
			t.Errorf("container %s limits memory %s cpu %s ephemeral %s", c.Name, mem, cpu, disk)
		}
		if req := c.Resources.Requests.Cpu(); req.MilliValue() != 500 {
			t.Errorf("container %s cpu request %s, want half the limit", c.Name, req)
		}
	}
	main := ps.Containers[0]
	if !main.Stdin || !main.StdinOnce || main.TTY {
		t.Errorf("stdin %v, stdinOnce %v, tty %v: want the agent's stdio open for one attach, no tty", main.Stdin, main.StdinOnce, main.TTY)
	}
	if main.Command[0] != sandbox.AgentPath || main.Image != sandbox.DefaultImage {
		t.Errorf("sandbox container runs %v from %s", main.Command, main.Image)
	}
	if init := ps.InitContainers[0]; init.Image != "enclave/agent:x" || !slices.Contains(init.Command, "--install") {
		t.Errorf("init container %s runs %v", init.Image, init.Command)
	}
	var workspace *corev1.Volume
	for i, v := range ps.Volumes {
		if v.Name == workspaceVolume {
			workspace = &ps.Volumes[i]
		}
	}
	if workspace == nil || workspace.EmptyDir.SizeLimit.Value() != sandbox.DefaultWorkspaceSize {
		t.Errorf("workspace volume %+v: want an emptyDir limited to the workspace size", workspace)
	}
	for _, m := range main.VolumeMounts {
		if m.Name == agentVolume && !m.ReadOnly {
			t.Error("agent volume is writable in the sandbox container")
		}
	}
	for k, v := range pod.Labels {
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("label %s=%q is not a valid label value: %v", k, v, errs)
		}
	}
	if got := podOriginalLabels(pod)[sandbox.LabelOwner]; got != "tenant/alice@example.com" {
		t.Errorf("original owner label %q", got)
	}
}

// TestPodSpecOptions: the runtime class comes from the config first, then the operator's
// option; a root user the policy allows runs without runAsNonRoot.
func TestPodSpecOptions(t *testing.T) {
	c := resolved(t, sandbox.Config{Runtime: "gvisor", User: "0:0"}, sandbox.Policy{AllowRootUser: true, AllowedRuntimes: []string{"gvisor"}})
	pod, err := podSpec(podInput{Spec: sandbox.Spec{ID: "x", Config: c}, RuntimeClass: "kata", RequestFraction: 1})
	if err != nil {
		t.Fatal(err)
	}
	if *pod.Spec.RuntimeClassName != "gvisor" || *pod.Spec.SecurityContext.RunAsNonRoot {
		t.Errorf("runtime class %s, runAsNonRoot %v; want gvisor, false", *pod.Spec.RuntimeClassName, *pod.Spec.SecurityContext.RunAsNonRoot)
	}
	pod, err = podSpec(podInput{Spec: sandbox.Spec{ID: "x", Config: resolved(t, sandbox.Config{}, sandbox.Policy{})}, RuntimeClass: "kata", RequestFraction: 1})
	if err != nil {
		t.Fatal(err)
	}
	if *pod.Spec.RuntimeClassName != "kata" {
		t.Errorf("runtime class %s, want the operator's kata", *pod.Spec.RuntimeClassName)
	}
	if r, l := pod.Spec.Containers[0].Resources.Requests.Memory(), pod.Spec.Containers[0].Resources.Limits.Memory(); !r.Equal(*l) {
		t.Errorf("request %s != limit %s with fraction 1", r, l)
	}
}

// TestPodSpecRefuses: what a Pod cannot give is refused by name, not silently dropped.
func TestPodSpecRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  sandbox.Resolved
		want string
	}{
		{"host mounts", sandbox.Resolved{Config: sandbox.Config{User: "1000", Volumes: map[string]sandbox.VolumeMount{"/srv": {Bind: "/data"}}}}, "volumes"},
		{"network", sandbox.Resolved{Config: sandbox.Config{User: "1000", NetworkEnabled: true}}, "network_enabled"},
		{"egress", sandbox.Resolved{Config: sandbox.Config{User: "1000"}, Egress: &egress.Rules{}}, "egress"},
		{"user name", sandbox.Resolved{Config: sandbox.Config{User: "nobody"}}, "numeric uid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := podSpec(podInput{Spec: sandbox.Spec{ID: "x", Config: tc.cfg}})
			if !errors.Is(err, sandbox.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v: want ErrInvalidConfig naming %s", err, tc.want)
			}
		})
	}
}

// TestLabelValue: valid values pass unchanged; others become valid, stay distinct and
// stay the same from one call to the next.
func TestLabelValue(t *testing.T) {
	long := strings.Repeat("a", 64)
	for _, v := range []string{"", "abc", "a.b_c-d", "tenant/alice", "TestX/sub_case", long, long + "b", "-lead", "___", "é"} {
		got := labelValue(v)
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Errorf("labelValue(%q) = %q: %v", v, got, errs)
		}
		if got != labelValue(v) {
			t.Errorf("labelValue(%q) not stable", v)
		}
	}
	if labelValue("abc") != "abc" || labelValue("a/b") == labelValue("a_b") || labelValue(long) == labelValue(long+"b") {
		t.Error("labelValue changed a valid value, or made two values one")
	}
}
