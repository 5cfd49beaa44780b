package mcp_test

// End-to-end test with the official TypeScript SDK: runs e2e/ts/client.mjs with Node against
// the real binary. Skips when node or npm is not installed.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
)

func TestIntegrationTypeScriptSDKClient(t *testing.T) {
	testenv.RequireDocker(t)
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the TypeScript SDK test needs %s (Node.js 18 or later) in PATH: %v", tool, err)
		}
	}
	t.Parallel()
	bin := testenv.Binary(t)
	dir := filepath.Join(testenv.RepoRoot(), "e2e", "ts")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
		cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm install in %s: %v\n%s", dir, err, out)
		}
	}

	cmd := exec.CommandContext(ctx, "node", "client.mjs", bin, "--log-level", "warn")
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		t.Errorf("node client.mjs: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), e2eTail(stderr.String(), 6000))
	} else {
		t.Logf("node client.mjs:\n%s", stdout.String())
	}
	// The client has closed the connection and Node has exited: the server's container
	// must go too.
	if m := regexp.MustCompile(`CONTAINER ([0-9a-f]{64})`).FindSubmatch(stdout.Bytes()); m != nil {
		e2eAssertGone(t, string(m[1]))
	} else if err == nil {
		t.Errorf("client.mjs did not report the sandbox's container")
	}
}
