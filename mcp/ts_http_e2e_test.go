package mcp_test

// End-to-end test of the HTTP transports with the official TypeScript SDK: runs
// e2e/ts/http-client.mjs with Node against the in-process HTTP fixture (real engine, token
// check on), over streamable HTTP and over SSE. Skips when node or npm is not installed.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
)

var (
	tsSDKOnce sync.Once
	tsSDKErr  string
)

// requireTSSDK skips the test unless node and npm are installed, installs e2e/ts's
// dependencies once per test process when they are missing, and returns e2e/ts's path.
func requireTSSDK(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the TypeScript SDK tests need %s (Node.js 18 or later) in PATH: %v", tool, err)
		}
	}
	dir := filepath.Join(testenv.RepoRoot(), "e2e", "ts")
	tsSDKOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk")); err == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			tsSDKErr = "npm install in " + dir + ": " + err.Error() + "\n" + string(out)
		}
	})
	if tsSDKErr != "" {
		t.Fatal(tsSDKErr)
	}
	return dir
}

func TestIntegrationTypeScriptSDKHTTP(t *testing.T) {
	testenv.RequireDocker(t)
	for _, kind := range []string{"streamable", "sse"} {
		t.Run(kind, func(t *testing.T) {
			dir := requireTSSDK(t)
			t.Parallel()
			// A long idle TTL: the sandboxes must go because the client ended its session,
			// not because the sweeper did.
			f := newHTTPFixture(t, 10*time.Minute)
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", "http-client.mjs", f.url, kind, httpTestToken)
			cmd.Dir = dir
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("node http-client.mjs %s: %v\nstdout:\n%s\nstderr:\n%s", kind, err, stdout.String(), e2eTail(stderr.String(), 6000))
			}
			t.Logf("node http-client.mjs %s:\n%s", kind, stdout.String())
			f.waitNoSandboxes(t, "after the TypeScript client ended its session")
		})
	}
}
