package mcp_test

// End-to-end test with the official TypeScript SDK: runs e2e/ts/client.mjs with Node against
// the real binary. Skips when node or npm is not installed.

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
)

func TestIntegrationTypeScriptSDKClient(t *testing.T) {
	testenv.RequireDocker(t)
	dir := requireTSSDK(t)
	t.Parallel()
	bin := testenv.Binary(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
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
