package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// rbacRule is one rule of a Role.
type rbacRule struct {
	APIGroups []string `json:"apiGroups" yaml:"apiGroups"`
	Resources []string `json:"resources" yaml:"resources"`
	Verbs     []string `json:"verbs" yaml:"verbs"`
}

// manifestRules are the rules of the Role in deploy/kube/rbac/enclave-mcp.yaml.
func manifestRules(t *testing.T) []rbacRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("kube", "rbac", "enclave-mcp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range strings.Split(string(data), "\n---\n") {
		var doc struct {
			Kind  string     `yaml:"kind"`
			Rules []rbacRule `yaml:"rules"`
		}
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			t.Fatalf("deploy/kube/rbac/enclave-mcp.yaml: %v", err)
		}
		if doc.Kind == "Role" {
			return doc.Rules
		}
	}
	t.Fatal("deploy/kube/rbac/enclave-mcp.yaml has no Role")
	return nil
}

// TestChartKubeBackend: backend=kube renders the server for the Kubernetes backend: a
// ServiceAccount whose token the server gets, a Role in the release's namespace with the
// same rules as deploy/kube/rbac (nothing cluster-wide), its binding, the kube flags with
// the pod's own address advertised to the other replicas, a non-root server, and no Docker
// socket.
func TestChartKubeBackend(t *testing.T) {
	r := render(t, "--set", "backend=kube", "--set", "kube.agentImage=enclave/agent:0123456789abcdef",
		"--set", "kube.leaseDuration=20s", "--set", "deployment.replicas=2")
	if got, want := r.kinds(), []string{"ConfigMap", "Deployment", "Role", "RoleBinding", "Secret", "Service", "ServiceAccount"}; !slices.Equal(got, want) {
		t.Fatalf("rendered %v, want %v", got, want)
	}
	if got, want := r["Role"].Rules, manifestRules(t); !equalJSON(got, want) {
		t.Errorf("the chart's Role rules\n %+v\ndiffer from deploy/kube/rbac/enclave-mcp.yaml's\n %+v", got, want)
	}
	var binding struct {
		RoleRef  struct{ Kind, Name string }              `yaml:"roleRef"`
		Subjects []struct{ Kind, Name, Namespace string } `yaml:"subjects"`
	}
	if err := yaml.Unmarshal([]byte(r["RoleBinding"].Text), &binding); err != nil {
		t.Fatal(err)
	}
	if binding.RoleRef.Kind != "Role" || binding.RoleRef.Name != defaultPrefix || len(binding.Subjects) != 1 ||
		binding.Subjects[0].Kind != "ServiceAccount" || binding.Subjects[0].Name != defaultPrefix || binding.Subjects[0].Namespace != namespace {
		t.Errorf("RoleBinding %+v, want Role %s bound to ServiceAccount %s/%s", binding, defaultPrefix, namespace, defaultPrefix)
	}
	d, c := r.deployment(t)
	pod := d.Template.Spec
	if pod.ServiceAccountName != defaultPrefix || pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Errorf("serviceAccountName %q, automount %v: the server needs its ServiceAccount's token", pod.ServiceAccountName, pod.AutomountServiceAccountToken)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{
		"--backend kube", "--namespace " + namespace, "--kube-pull-policy Never", "--kube-lease-duration 20s",
		"--kube-reap-interval 5s", "--kube-advertise-url http://$(POD_IP):8000", "--kube-owner-pod $(POD_NAME)", "--kube-agent-image enclave/agent:0123456789abcdef",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if e, ok := c.env("POD_IP"); !ok || !strings.Contains(r["Deployment"].Text, "fieldPath: status.podIP") {
		t.Errorf("POD_IP %+v is not the pod's address (status.podIP)", e)
	}
	if pod.SecurityContext["runAsNonRoot"] != true || pod.SecurityContext["runAsUser"] != float64(10001) {
		t.Errorf("pod securityContext %v: the kube backend's server needs no root", pod.SecurityContext)
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s mounts the node's %s: the kube backend needs no Docker socket", v.Name, v.HostPath.Path)
		}
	}
	if _, ok := c.env("DOCKER_HOST"); ok {
		t.Error("DOCKER_HOST is set on the kube backend")
	}
}

func equalJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
