package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// TestExampleAgainstRealServer runs the example against a real server (in process, behind the
// same token check as `serve --http`) with a real sandbox, and checks a wrong token fails.
func TestExampleAgainstRealServer(t *testing.T) {
	engine := testenv.Engine(t)
	manager := sandbox.NewManager(sandbox.ManagerOptions{
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(engine, sandbox.TypeDocker)},
	})
	srv, err := mcp.New(mcp.Config{Tools: tools.All(), Manager: manager, DefaultTimeout: 30})
	if err != nil {
		t.Fatal(err)
	}
	transports := srv.HTTPTransports(t.Context(), mcp.HTTPOptions{})
	mux := http.NewServeMux()
	transports.Mount(mux, func(next http.Handler) http.Handler { return httpapi.RequireToken("s3cret", next) })
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		_ = transports.Streamable.Shutdown(context.Background())
		ts.Close()
		_ = manager.Close(context.Background())
	})

	var out bytes.Buffer
	if err := run(t.Context(), ts.URL+"/mcp", "s3cret", &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"tool python_executor", "sum 23 max 9"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if err := run(t.Context(), ts.URL+"/mcp", "wrong", &bytes.Buffer{}); err == nil {
		t.Error("a wrong token was accepted")
	}
}
