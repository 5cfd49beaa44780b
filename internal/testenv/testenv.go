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
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// RepoRoot is the module's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Binary builds ./cmd/enclave-mcp (static, CGO off) once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "enclave-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "enclave-mcp")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/enclave-mcp")
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("building enclave-mcp: %v", buildErr)
	}
	return buildPath
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
func Engine(t testing.TB) *sandbox.Engine {
	t.Helper()
	RequireDocker(t)
	e, err := sandbox.NewEngine(t.Context(), sandbox.EngineOptions{AgentBinary: Binary(t)})
	if err != nil {
		t.Fatalf("connecting to the engine: %v", err)
	}
	t.Cleanup(func() {
		AssertNoContainers(t, e)
		_ = e.Close()
	})
	return e
}

// AssertNoContainers fails the test when any container of e's instance still exists.
// Removal is asynchronous on the engine's side, so it polls briefly before failing.
func AssertNoContainers(t testing.TB, e *sandbox.Engine) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := e.ListManaged(context.Background(), e.Instance())
		if err != nil {
			t.Errorf("listing containers: %v", err)
			return
		}
		if len(list) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, c := range list {
				t.Errorf("leaked container %s (%s, %s)", c.Names, c.ID[:12], c.State)
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

// Sandbox creates a default sandbox on e, under Runtime() unless cfg names a runtime, and
// removes it when the test ends.
func Sandbox(t testing.TB, e *sandbox.Engine, cfg sandbox.Config) *sandbox.DockerSandbox {
	t.Helper()
	if cfg.Runtime == "" {
		cfg.Runtime = Runtime()
	}
	resolved, err := sandbox.Resolve(cfg, sandbox.Policy{})
	if err != nil {
		t.Fatalf("resolving config: %v", err)
	}
	sb, err := e.Create(t.Context(), sandbox.CreateOptions{Config: resolved, Owner: t.Name()})
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
func RequireImage(t testing.TB, e *sandbox.Engine, tag string) {
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
