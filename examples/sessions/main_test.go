package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/runtimeapi"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
)

const token = "example-sessions-token"

// serve starts a server of the session API (the REST API's token check, the process
// backend) and returns its URL.
func serve(t *testing.T) string {
	t.Helper()
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(testenv.Process(t), sandbox.TypeDocker)},
	})
	core, err := session.New(session.Config{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	rest, err := httpapi.New(httpapi.Config{Core: core, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	named, err := session.NewNamed(core, session.NamedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := runtimeapi.New(runtimeapi.Config{Sessions: named, Principal: httpapi.PrincipalOf})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	sessions.Mount(mux, rest.RequireAuth)
	mux.Handle("/", rest.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = named.Close(ctx)
		_ = m.Close(ctx)
	})
	return srv.URL
}

// TestFlow runs the example against two servers and checks what it prints: every step of
// the flow, the session on the server its id hashes to, and nothing left behind.
func TestFlow(t *testing.T) {
	servers := []string{serve(t), serve(t)}
	var out strings.Builder
	if err := run(t.Context(), servers, token, "example", &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := []string{
		"created session example (50M) on http://127.0.0.1:",
		"wrote data.txt: 20 bytes, mode 0644",
		`wc -l data.txt: exit 0, stdout "3 data.txt\n"`,
		`python: success, stdout "3 words\n"`,
		"status: 2 files, 0 running, size 50M",
		"upper.txt: APPLE BANANA CHERRY",
		"deleted session example",
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("printed:\n%s", out.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %q, want %q", i+1, lines[i], w)
		}
	}
	if err := run(t.Context(), servers, "wrong-token", "example", &out); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a wrong token: %v", err)
	}
}
