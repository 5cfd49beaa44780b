package deploy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
)

// Environment of TestIntegrationChartOnKube (make test-kube sets them).
const (
	// kubeServerImageEnv names the server image loaded on the test cluster's node.
	kubeServerImageEnv = "ENCLAVE_TEST_KUBE_SERVER_IMAGE"
	// kubeHelmNamespaceEnv is the namespace the chart is installed in (default
	// enclave-test-helm), which must exist.
	kubeHelmNamespaceEnv = "ENCLAVE_TEST_KUBE_HELM_NAMESPACE"
)

// TestIntegrationChartOnKube installs the chart with backend=kube and two replicas onto the
// test cluster (make test-kube), with the helm built from its Go module, and talks to it
// through its Service's cluster IP from the host: /health answers without a token, and a
// sandbox created through the Service runs tool calls spread over both replicas (the
// Service's session affinity off, so calls reach the replica that does not hold the
// sandbox and are forwarded), then is deleted. Uninstalling removes every sandbox Pod.
func TestIntegrationChartOnKube(t *testing.T) {
	opts := testenv.KubeOptions(t)
	image := os.Getenv(kubeServerImageEnv)
	if image == "" {
		t.Skipf("no server image on the cluster: set %s (make test-kube does)", kubeServerImageEnv)
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl on PATH (eval \"$(scripts/kube-cluster.sh env)\")")
	}
	ns := os.Getenv(kubeHelmNamespaceEnv)
	if ns == "" {
		ns = "enclave-test-helm"
	}
	repo, tag, _ := strings.Cut(image, ":")
	const token = "chart-on-kube-token-41d7"
	k := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), kubectl, append([]string{"--kubeconfig", opts.Kubeconfig, "-n", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	install := time.Now()
	uninstalled := false
	out, err := helm(t, "install", release, chartDir, "--kubeconfig", opts.Kubeconfig, "--namespace", ns, "--wait", "--timeout", "4m",
		"--set", "backend=kube", "--set", "kube.agentImage="+opts.AgentImage, "--set", "kube.leaseDuration=6s", "--set", "kube.reapInterval=2s",
		"--set", "image.repository="+repo, "--set", "image.tag="+tag, "--set", "image.pullPolicy=Never",
		"--set", "images.sandbox=enclave/python:bookworm", "--set", "deployment.replicas=2",
		"--set", "service.sessionAffinity=None", "--set", "token.value="+token, "--set", "log.level=debug")
	t.Cleanup(func() {
		if t.Failed() {
			if logs, err := exec.Command(kubectl, "--kubeconfig", opts.Kubeconfig, "-n", ns, "logs", "-l", "app.kubernetes.io/instance="+release, "--tail", "60", "--prefix").CombinedOutput(); err == nil {
				t.Logf("server logs:\n%s", logs)
			}
		}
		if !uninstalled {
			// t.Context is over by now: helm runs without it.
			_ = exec.Command(helmBinary(t), "uninstall", release, "--kubeconfig", opts.Kubeconfig, "--namespace", ns, "--wait", "--timeout", "2m").Run()
		}
	})
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	t.Logf("helm install --wait (2 replicas ready): %s", time.Since(install).Round(100*time.Millisecond))
	ip := k("get", "service", defaultPrefix, "-o", "jsonpath={.spec.clusterIP}")
	base := "http://" + ip + ":8000"

	// A connection per request: the Service spreads connections, not requests, over the
	// replicas.
	noKeepAlive := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	do := func(method, path string, body any, auth bool) (int, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			raw, _ := json.Marshal(body)
			rd = bytes.NewReader(raw)
		}
		req, _ := http.NewRequestWithContext(t.Context(), method, base+path, rd)
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := noKeepAlive.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, raw
	}
	// helm's --wait may return before the Deployment's status says anything: wait for both
	// replicas ready, then for the Service to answer.
	testwait.Until(t, 3*time.Minute, "both replicas ready", func() bool {
		return k("get", "deployment", defaultPrefix, "-o", "jsonpath={.status.readyReplicas}") == "2"
	})
	testwait.Until(t, 30*time.Second, "GET /health through the Service", func() bool {
		resp, err := noKeepAlive.Get(base + "/health")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200 && strings.Contains(string(body), `"ok"`)
	})
	t.Logf("install to both replicas ready and the Service answering: %s", time.Since(install).Round(100*time.Millisecond))
	if status, _ := do("GET", "/sandboxes", nil, false); status != 401 {
		t.Errorf("GET /sandboxes without the token: %d, want 401", status)
	}
	status, body := do("POST", "/sandbox/create", map[string]any{}, true)
	var created struct {
		ID string `json:"sandbox_id"`
	}
	if status != 200 || json.Unmarshal(body, &created) != nil || created.ID == "" {
		t.Fatalf("create through the Service: %d %s", status, body)
	}
	for i := range 10 {
		status, body := do("POST", "/sandbox/tool/execute", map[string]any{
			"sandbox_id": created.ID, "tool_name": "shell_executor", "parameters": map[string]any{"command": "echo call-$((40+2))"},
		}, true)
		if status != 200 || !strings.Contains(string(body), "call-42") {
			t.Fatalf("tool call %d through the Service: %d %s", i, status, body)
		}
	}
	if status, body := do("DELETE", "/sandbox/"+created.ID, nil, true); status != 200 {
		t.Errorf("delete through the Service: %d %s", status, body)
	}
	testwait.Until(t, 60*time.Second, "the deleted sandbox's pod gone", func() bool {
		return k("get", "pods", "-l", "enclave-mcp.sandbox="+created.ID, "-o", "name") == ""
	})
	// Both replicas served calls: the one without the sandbox forwarded its share.
	logs := k("logs", "-l", "app.kubernetes.io/instance="+release, "--tail", "-1", "--prefix")
	if n := strings.Count(logs, "forwarding to the replica that holds the sandbox"); n == 0 {
		t.Errorf("no replica forwarded a call in 10 through a Service without session affinity")
	} else {
		t.Logf("%d of 10 calls reached the replica without the sandbox and were forwarded", n)
	}
	// Uninstalling removes the Role with the Deployment, so the servers may not clean up
	// themselves: their pods own the sandbox pods and Leases, which go with them.
	if out, err := helm(t, "uninstall", release, "--kubeconfig", opts.Kubeconfig, "--namespace", ns, "--wait", "--timeout", "2m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	uninstalled = true
	start := time.Now()
	testwait.Until(t, 90*time.Second, "every sandbox pod and lease gone after the uninstall", func() bool {
		return k("get", "pods,leases", "-l", "enclave-mcp.managed=true", "-o", "name") == ""
	})
	t.Logf("sandbox pods and leases gone %s after helm uninstall --wait returned", time.Since(start).Round(100*time.Millisecond))
}
