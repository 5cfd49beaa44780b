package loadtest_test

import (
	"testing"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/loadtest"
)

// TestIntegrationLoadSmall is the CI-sized load: 8 concurrent sessions x 5 python_executor
// calls through a real server subprocess, with no error and no sandbox left behind. `make
// load` runs the full size (50 x 20).
func TestIntegrationLoadSmall(t *testing.T) {
	t.Parallel()
	testenv.RequireDocker(t)
	var log syncbuf.Buffer
	rep, err := loadtest.RunWithServer(t.Context(),
		loadtest.ServerOptions{Binary: testenv.Binary(t), Log: &log},
		loadtest.Options{Sessions: 8, CallsPerSession: 5})
	t.Logf("\n%s", rep.Markdown())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Calls != 8*5 || rep.Errors != 0 {
		t.Errorf("%d calls made, %d errors; want 40 and 0: %q", rep.Calls, rep.Errors, rep.ErrorSamples)
	}
	if s := rep.Server; s.LeftAfterClose != 0 || s.LeftAfterStop != 0 {
		t.Errorf("sandboxes left: %d after the sessions closed, %d after the server stopped", s.LeftAfterClose, s.LeftAfterStop)
	}
	if t.Failed() {
		t.Logf("server log:\n%s", log.Tail(40))
	}
}
