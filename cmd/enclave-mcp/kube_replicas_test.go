package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/sandbox/kube"
)

// The replicas' test on a real cluster (make test-kube): two server processes that share
// nothing but the cluster. Without ENCLAVE_TEST_KUBECONFIG it skips.

// KubeReplicaNamespaceEnv is the namespace of the replicas' test (default: the kube tests'
// namespace with "-replicas"): the replicas' reapers see every sandbox Pod of their
// namespace, so they get one of their own, which must exist.
const kubeReplicaNamespaceEnv = "ENCLAVE_TEST_KUBE_REPLICA_NAMESPACE"

// kubeReplicaKubeconfigEnv is the kubeconfig the replicas run with (make test-kube writes
// one of the ServiceAccount of deploy/kube/rbac, the server's least privilege); unset, the
// cluster's own (ENCLAVE_TEST_KUBECONFIG).
const kubeReplicaKubeconfigEnv = "ENCLAVE_TEST_KUBE_REPLICA_KUBECONFIG"

// Replica timings of the test: short, so that a dead replica's Pods go within seconds.
const (
	testLease = 4 * time.Second
	testReap  = time.Second
)

const replicaToken = "replica-test-token-7d21"

// replicaProc is one server process of the test.
type replicaProc struct {
	url    string
	cmd    *exec.Cmd
	exited chan error
	stderr interface{ String() string }
}

// startKubeReplica starts a server on the cluster of opts, in ns, on a free loopback port it
// advertises to the other replicas.
func startKubeReplica(t *testing.T, bin string, opts kube.Options, ns, tokens string) *replicaProc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	url := "http://" + addr
	cmd := exec.Command(bin, "serve", "--backend", "kube", "--kubeconfig", opts.Kubeconfig, "--namespace", ns,
		"--kube-agent-image", opts.AgentImage, "--http", addr, "--kube-advertise-url", url,
		"--kube-lease-duration", testLease.String(), "--kube-reap-interval", testReap.String(),
		"--image", sandbox.DefaultImage, "--warm", "1", "--warm-max", "1", "--tokens-file", tokens, "--log-format", "json", "--log-level", "debug")
	cmd.Env = append(withoutTokenEnv(os.Environ()), tokenEnv+"="+replicaToken, "XDG_RUNTIME_DIR="+t.TempDir())
	lines, stderr, exited := startLogged(t, cmd)
	// Before startLogged's kill: a test that failed half-way still stops its servers the
	// way an operator would, so that they remove their sandboxes.
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(45 * time.Second):
			}
		}
	})
	base, _ := awaitServing(t, lines, stderr)
	if base != url {
		t.Fatalf("serving at %s, want %s", base, url)
	}
	return &replicaProc{url: url, cmd: cmd, exited: exited, stderr: stderr}
}

// call is one REST request with token; it returns the status and the body.
func call(t *testing.T, base, token, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, out
}

// shell runs command in sandbox id through base's REST API and returns its stdout.
func shell(t *testing.T, base, id, command string) string {
	t.Helper()
	status, body := call(t, base, replicaToken, "POST", "/sandbox/tool/execute",
		map[string]any{"sandbox_id": id, "tool_name": "shell_executor", "parameters": map[string]any{"command": command}})
	if status != 200 {
		t.Fatalf("execute %q in %s through %s: %d %s", command, id, base, status, body)
	}
	var res struct {
		Output string `json:"output"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &res); err != nil || res.Status != "success" {
		t.Fatalf("execute %q: %s (%v)", command, body, err)
	}
	return res.Output
}

// podsOf lists the namespace's sandbox Pods, by instance.
func podsOf(t *testing.T, k *kube.Kube) map[string][]sandbox.Listed {
	t.Helper()
	list, err := k.List(t.Context(), map[string]string{sandbox.LabelManaged: "true"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]sandbox.Listed{}
	for _, l := range list {
		out[l.Labels[sandbox.LabelInstance]] = append(out[l.Labels[sandbox.LabelInstance]], l)
	}
	return out
}

// instanceOf is the instance label of sandbox id's Pod.
func instanceOf(t *testing.T, k *kube.Kube, id string) (instance, owner string) {
	t.Helper()
	list, err := k.List(t.Context(), map[string]string{sandbox.LabelSandbox: id})
	if err != nil || len(list) != 1 {
		t.Fatalf("the pod of sandbox %s: %v %v", id, list, err)
	}
	return list[0].Labels[sandbox.LabelInstance], list[0].Labels[sandbox.LabelOwner]
}

// median of ds.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestIntegrationKubeReplicas: two replicas share only the cluster. A sandbox created
// through A is used and deleted through B (REST, and a stateless MCP handle); another
// token is told "not found" through either; a warm spare handed out carries its owner's
// label. Then A is killed with SIGKILL: B's reaper removes every Pod of A within the
// Lease's duration and a reap interval (with slack for the API), and never one of B's,
// whose sandbox still runs.
func TestIntegrationKubeReplicas(t *testing.T) {
	opts := testenv.KubeOptions(t)
	ns := os.Getenv(kubeReplicaNamespaceEnv)
	if ns == "" {
		ns = opts.Namespace + "-replicas"
	}
	watcher, err := kube.New(t.Context(), kube.Options{Kubeconfig: opts.Kubeconfig, Namespace: ns, AgentImage: opts.AgentImage})
	if err != nil {
		t.Fatal(err)
	}
	// The namespace is this test's: a run that failed may have left Pods of servers it
	// killed, which no live replica is left to reap.
	for inst, pods := range podsOf(t, watcher) {
		for _, p := range pods {
			t.Logf("removing pod %s of instance %s, left by an earlier run", p.Ref, inst)
			if err := watcher.Remove(t.Context(), p.Ref); err != nil {
				t.Fatal(err)
			}
		}
	}
	bin := testenv.Binary(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("mallory:mallory-token-0c44\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	serverOpts := opts
	if kc := os.Getenv(kubeReplicaKubeconfigEnv); kc != "" {
		serverOpts.Kubeconfig = kc
	} else {
		t.Logf("the replicas run as the cluster's admin: set %s to test the least privilege", kubeReplicaKubeconfigEnv)
	}
	a := startKubeReplica(t, bin, serverOpts, ns, tokens)
	b := startKubeReplica(t, bin, serverOpts, ns, tokens)

	// REST: create through A (its warm spare), use and delete through B.
	status, body := call(t, a.url, replicaToken, "POST", "/sandbox/create", map[string]any{})
	var created struct {
		ID string `json:"sandbox_id"`
	}
	if status != 200 || json.Unmarshal(body, &created) != nil || created.ID == "" {
		t.Fatalf("create through A: %d %s", status, body)
	}
	id := created.ID
	instA, owner := instanceOf(t, watcher, id)
	if !logged(a.stderr.String(), `"msg":"sandbox handed out from the warm pool"`, `"sandbox":"`+id+`"`) {
		t.Errorf("sandbox %s did not come from A's warm pool", id)
	}
	if owner != httpapi.RESTOwner {
		t.Errorf("the pod of a warm sandbox handed out to %s is labelled owner %q", httpapi.RESTOwner, owner)
	}
	if out := shell(t, b.url, id, "echo made-by-a > a.txt; cat a.txt"); strings.TrimSpace(out) != "made-by-a" {
		t.Errorf("through B: %q", out)
	}
	if out := shell(t, a.url, id, "cat a.txt"); strings.TrimSpace(out) != "made-by-a" {
		t.Errorf("the file B wrote, read through A: %q", out)
	}
	for _, base := range []string{a.url, b.url} {
		if status, body := call(t, base, "mallory-token-0c44", "GET", "/sandbox/"+id, nil); status != 404 {
			t.Errorf("another token through %s: %d %s, want 404", base, status, body)
		}
		if status, body := call(t, base, "mallory-token-0c44", "DELETE", "/sandbox/"+id, nil); status != 404 {
			t.Errorf("another token deleting through %s: %d %s, want 404", base, status, body)
		}
	}
	// Latency: the same call through the replica that holds the sandbox and through the other.
	var same, cross []time.Duration
	for range 15 {
		start := time.Now()
		shell(t, a.url, id, "true")
		same = append(same, time.Since(start))
		start = time.Now()
		shell(t, b.url, id, "true")
		cross = append(cross, time.Since(start))
	}
	t.Logf("shell_executor `true`: median %s through the holding replica, %s through the other (15 calls each)", median(same), median(cross))
	if status, body := call(t, b.url, replicaToken, "DELETE", "/sandbox/"+id, nil); status != 200 {
		t.Fatalf("delete through B: %d %s", status, body)
	}
	if status, _ := call(t, a.url, replicaToken, "GET", "/sandbox/"+id, nil); status != 404 {
		t.Errorf("after the delete through B, A answers %d, want 404", status)
	}
	testwait.Until(t, 30*time.Second, "the deleted sandbox's pod gone", func() bool {
		list, err := watcher.List(t.Context(), map[string]string{sandbox.LabelSandbox: id})
		return err == nil && len(list) == 0
	})

	// Stateless MCP: a handle opened through A, used and closed through B.
	mcpOf := func(base string) *mcpclient.Client {
		c, err := mcpclient.NewStreamableHttpClient(base+"/mcp", transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + replicaToken}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		testenv.InitializeMCP(t, c) // the latest protocol: stateless, with handles
		return c
	}
	toolCall := func(c *mcpclient.Client, name string, args map[string]any) *mcpgo.CallToolResult {
		req := mcpgo.CallToolRequest{}
		req.Params.Name, req.Params.Arguments = name, args
		res, err := c.CallTool(t.Context(), req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	mcpA, mcpB := mcpOf(a.url), mcpOf(b.url)
	opened := toolCall(mcpA, "sandbox_open", nil)
	raw, _ := json.Marshal(opened.StructuredContent)
	var handle struct{ Sandbox string }
	if opened.IsError || json.Unmarshal(raw, &handle) != nil || handle.Sandbox == "" {
		t.Fatalf("sandbox_open through A: %+v", opened)
	}
	res := toolCall(mcpB, "shell_executor", map[string]any{"command": "echo via-b", "sandbox": handle.Sandbox})
	if text := fmt.Sprint(res.Content); res.IsError || !strings.Contains(text, "via-b") {
		t.Errorf("a tool call through B on A's handle: %+v", res)
	}
	if res := toolCall(mcpB, "sandbox_close", map[string]any{"sandbox": handle.Sandbox}); res.IsError {
		t.Errorf("sandbox_close through B: %+v", res)
	}
	testwait.Until(t, 30*time.Second, "the closed handle's pod gone", func() bool {
		list, err := watcher.List(t.Context(), map[string]string{sandbox.LabelSandbox: handle.Sandbox})
		return err == nil && len(list) == 0
	})

	// Kill A: B reaps A's Pods (its warm spare and two sandboxes), and only those.
	var onA []string
	for range 2 {
		status, body := call(t, a.url, replicaToken, "POST", "/sandbox/create", map[string]any{})
		if status != 200 || json.Unmarshal(body, &created) != nil {
			t.Fatalf("create through A: %d %s", status, body)
		}
		onA = append(onA, created.ID)
	}
	status, body = call(t, b.url, replicaToken, "POST", "/sandbox/create", map[string]any{})
	if status != 200 || json.Unmarshal(body, &created) != nil {
		t.Fatalf("create through B: %d %s", status, body)
	}
	onB := created.ID
	instB, _ := instanceOf(t, watcher, onB)
	// A's pods: the two sandboxes and its warm spares (a REST one, an MCP session one).
	settled := func(inst string) func() bool {
		return func() bool {
			pods := podsOf(t, watcher)[inst]
			for _, p := range pods {
				if p.State != "running" {
					return false
				}
			}
			return len(pods) >= 3
		}
	}
	testwait.Until(t, 90*time.Second, "A's pods all running, its warm pools refilled", settled(instA))
	testwait.Until(t, 90*time.Second, "B's pods all running, its warm pools refilled", settled(instB))
	aPods, bPods := len(podsOf(t, watcher)[instA]), len(podsOf(t, watcher)[instB])
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-a.exited
	bound := testLease + 2*testReap + 5*time.Second
	testwait.Until(t, bound, "every pod of the killed replica reaped by the other", func() bool { return len(podsOf(t, watcher)[instA]) == 0 })
	t.Logf("reaped the killed replica's %d pods %s after SIGKILL (lease %s, reap interval %s)", aPods, time.Since(killed).Round(10*time.Millisecond), testLease, testReap)
	if got := len(podsOf(t, watcher)[instB]); got != bPods {
		t.Errorf("B has %d pods after the reap, had %d", got, bPods)
	}
	if out := shell(t, b.url, onB, "echo alive"); strings.TrimSpace(out) != "alive" {
		t.Errorf("B's sandbox after the reap: %q", out)
	}
	if status, body := call(t, b.url, replicaToken, "GET", "/sandbox/"+onA[0], nil); status != 404 {
		t.Errorf("the killed replica's sandbox through B: %d %s, want 404", status, body)
	}

	// B stops: its own Pods go with it.
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("B did not exit on SIGTERM:\n%s", b.stderr.String())
	}
	testwait.Until(t, 30*time.Second, "B's pods removed on its shutdown", func() bool { return len(podsOf(t, watcher)) == 0 })
	if t.Failed() {
		t.Logf("A's log:\n%s\nB's log:\n%s", tail(a.stderr.String(), 8000), tail(b.stderr.String(), 8000))
	}
}

// logged says whether one line of log holds every one of parts.
func logged(log string, parts ...string) bool {
	for line := range strings.Lines(log) {
		if containsEvery(line, parts) {
			return true
		}
	}
	return false
}

func containsEvery(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
