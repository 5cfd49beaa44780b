// Package testenv gives integration tests what they need from the machine: the static
// enclave-mcp binary (which is also the in-sandbox agent) and a Docker engine. Without an
// engine a test skips with a clear message, except under CI, where it fails: CI's set-up
// (make test) starts one, so its absence there is a bug, not a reason to pass.
package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/sandbox/kube"
)

// staticBuild is a static build of one command, made once per test process.
type staticBuild struct {
	once sync.Once
	path string
	err  error
}

// The two binaries tests inject as agents: enclave-mcp (its own agent) and enclave-agent.
var mcpBuild, agentBuild staticBuild

// RepoRoot is the module's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Binary builds ./cmd/enclave-mcp (static, CGO off) once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	return mcpBuild.get(t, "enclave-mcp")
}

// AgentBinary builds ./cmd/enclave-agent, the agent alone, as Binary builds enclave-mcp.
func AgentBinary(t testing.TB) string {
	t.Helper()
	return agentBuild.get(t, "enclave-agent")
}

// get builds ./cmd/name the first time and returns its path.
func (b *staticBuild) get(t testing.TB, name string) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "enclave-test-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", b.path, "./cmd/"+name)
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = &buildError{err: err, out: string(out)}
		}
	})
	if b.err != nil {
		t.Fatalf("building %s: %v", name, b.err)
	}
	return b.path
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// RequireDocker skips (or, under CI, fails) the test when no engine answers; it also skips
// in -short mode, which is for the quick unit loop.
func RequireDocker(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the Docker engine (run without -short, e.g. make test)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "info").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Docker engine answers under CI; make test should have started one (scripts/ensure-docker.sh): %v", err)
		}
		t.Skipf("no Docker engine answers (%v): run scripts/ensure-docker.sh or make test", err)
	}
}

// Engine returns an engine for tests, with a fresh instance label so that leak checks count
// only this test's containers.
func Engine(t testing.TB) *sandbox.Docker {
	t.Helper()
	return EngineWith(t, sandbox.DockerOptions{})
}

// EngineWith is Engine with opts; without opts.AgentBinary, the agent is the test build's
// enclave-mcp (Binary).
func EngineWith(t testing.TB, opts sandbox.DockerOptions) *sandbox.Docker {
	t.Helper()
	RequireDocker(t)
	if opts.AgentBinary == "" {
		opts.AgentBinary = Binary(t)
	}
	e, err := sandbox.NewDocker(t.Context(), opts)
	if err != nil {
		t.Fatalf("connecting to the engine: %v", err)
	}
	t.Cleanup(func() {
		AssertNoContainers(t, e)
		_ = e.Close()
	})
	return e
}

// AssertNoContainers fails the test when any sandbox of b's instance still exists on b.
// Removal is asynchronous on the engine's side, so it polls briefly before failing.
func AssertNoContainers(t testing.TB, b sandbox.Backend) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := b.List(context.Background(), map[string]string{sandbox.LabelManaged: "true", sandbox.LabelInstance: b.Identity().ID})
		if err != nil {
			t.Errorf("listing containers: %v", err)
			return
		}
		if len(list) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, c := range list {
				t.Errorf("leaked sandbox %s (%s, %s)", c.Labels[sandbox.LabelSandbox], c.Ref, c.State)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RuntimeEnv names the environment variable that picks the OCI runtime of the sandboxes
// integration tests create (ENCLAVE_TEST_RUNTIME=runsc: make test-gvisor); unset means the
// engine's default.
const RuntimeEnv = "ENCLAVE_TEST_RUNTIME"

// Runtime is the OCI runtime RuntimeEnv names, "" for the engine's default.
func Runtime() string { return os.Getenv(RuntimeEnv) }

// Sandbox creates a default sandbox on b, under Runtime() unless cfg names a runtime, and
// removes it when the test ends.
func Sandbox(t testing.TB, b sandbox.Backend, cfg sandbox.Config) *sandbox.AgentSandbox {
	t.Helper()
	return SandboxWith(t, b, cfg, sandbox.Policy{})
}

// SandboxWith is Sandbox under the operator's policy p.
func SandboxWith(t testing.TB, b sandbox.Backend, cfg sandbox.Config, p sandbox.Policy) *sandbox.AgentSandbox {
	t.Helper()
	if cfg.Runtime == "" {
		cfg.Runtime = Runtime()
	}
	resolved, err := sandbox.Resolve(cfg, p)
	if err != nil {
		t.Fatalf("resolving config: %v", err)
	}
	sb, err := sandbox.Create(t.Context(), b, sandbox.CreateOptions{Config: resolved, Owner: t.Name()})
	if err != nil {
		t.Fatalf("creating sandbox: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Close(context.Background()); err != nil {
			t.Errorf("removing sandbox: %v", err)
		}
	})
	return sb
}

// RequireImage skips the test (or, under CI, fails it) when e lacks image tag: images are
// built by `make test`'s set-up (enclave-mcp images build --missing), never pulled.
func RequireImage(t testing.TB, e *sandbox.Docker, tag string) {
	t.Helper()
	present, err := e.ImagePresent(t.Context(), tag)
	if err != nil {
		t.Fatalf("inspecting image %s: %v", tag, err)
	}
	if present {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("image %s is missing under CI; make test should have built it (enclave-mcp images build --missing)", tag)
	}
	t.Skipf("image %s is missing: build it with `enclave-mcp images build --missing` (make test does)", tag)
}

// Process returns a process backend for tests: its agents are the enclave-mcp binary, its
// sandboxes live in a directory of their own that the test removes, and it checks at the
// end that no sandbox of it is left. It needs no engine, so it runs under -short too.
func Process(t testing.TB) *sandbox.Process {
	t.Helper()
	root, err := os.MkdirTemp("", "enclave-process-")
	if err != nil {
		t.Fatal(err)
	}
	// Traversable by the uid the agents run as when the tests run as root.
	if err := os.Chmod(root, 0o711); err != nil {
		t.Fatal(err)
	}
	p, err := sandbox.NewProcess(sandbox.ProcessOptions{AgentBinary: Binary(t), Root: root})
	if err != nil {
		t.Fatalf("starting the process backend: %v", err)
	}
	t.Cleanup(func() {
		AssertNoContainers(t, p)
		_ = p.Close()
		_ = os.RemoveAll(root)
	})
	return p
}

// Backend is one backend a behaviour table runs on.
type Backend struct {
	Name string
	New  func(t testing.TB) sandbox.Backend
}

// Backends are the backends a behaviour table runs on: the process backend always,
// Docker, which skips under -short (and without an engine outside CI) like every
// integration test, and Kubernetes, which runs only when KubeconfigEnv names a cluster.
func Backends() []Backend {
	return []Backend{
		{Name: "process", New: func(t testing.TB) sandbox.Backend { return Process(t) }},
		{Name: "docker", New: func(t testing.TB) sandbox.Backend { return Engine(t) }},
		{Name: "kube", New: func(t testing.TB) sandbox.Backend { return Kube(t) }},
	}
}

// Environment of the Kubernetes backend's tests (make test-kube sets them).
const (
	// KubeconfigEnv names the kubeconfig of the cluster the kube backend's tests use;
	// unset, they skip.
	KubeconfigEnv = "ENCLAVE_TEST_KUBECONFIG"
	// KubeNamespaceEnv is the namespace they create Pods in (default enclave-test), which
	// must exist.
	KubeNamespaceEnv = "ENCLAVE_TEST_KUBE_NAMESPACE"
	// KubeAgentImageEnv is the agent image loaded on the nodes (default: the tag of
	// bin/enclave-agent, which make test-kube builds and loads).
	KubeAgentImageEnv = "ENCLAVE_TEST_KUBE_AGENT_IMAGE"
)

// KubeOptions are the kube backend's options for tests, with a fresh instance label, or a
// skip when KubeconfigEnv is unset or in -short mode.
func KubeOptions(t testing.TB) kube.Options {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs a Kubernetes cluster (make test-kube)")
	}
	path := os.Getenv(KubeconfigEnv)
	if path == "" {
		t.Skipf("no cluster: set %s to a kubeconfig (make test-kube does)", KubeconfigEnv)
	}
	ns := os.Getenv(KubeNamespaceEnv)
	if ns == "" {
		ns = "enclave-test"
	}
	image := os.Getenv(KubeAgentImageEnv)
	if image == "" {
		var err error
		if image, err = kube.AgentImageTag(filepath.Join(RepoRoot(), "bin", "enclave-agent")); err != nil {
			t.Fatalf("no agent image named in %s, and none from bin/enclave-agent: %v", KubeAgentImageEnv, err)
		}
	}
	return kube.Options{Kubeconfig: path, Namespace: ns, AgentImage: image, StartTimeout: time.Minute}
}

// Kube returns a kube backend on the test cluster (KubeOptions) that checks at the end
// that no Pod of it is left.
func Kube(t testing.TB) *kube.Kube {
	t.Helper()
	return KubeWith(t, KubeOptions(t))
}

// KubeWith is Kube with opts.
func KubeWith(t testing.TB, opts kube.Options) *kube.Kube {
	t.Helper()
	k, err := kube.New(t.Context(), opts)
	if err != nil {
		t.Fatalf("connecting to the cluster: %v", err)
	}
	t.Cleanup(func() {
		AssertNoContainers(t, k)
		_ = k.Close()
	})
	return k
}
