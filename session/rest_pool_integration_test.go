package session_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// TestIntegrationRESTCreateFromWarmPool: wired as serve wires an HTTP server, a REST create
// with no config (ms-enclave's client's create without one: POST /sandbox/create {}) is
// served from the docker pool's spare, which then belongs to the caller, works, and is
// removed by DELETE; the pool refills. A create of another config is made cold.
func TestIntegrationRESTCreateFromWarmPool(t *testing.T) {
	e := testenv.Engine(t)
	var plain []tools.Def // no notebook tool: the sessions' pool holds plain sandboxes
	for _, def := range tools.All() {
		if def.Sandbox != sandbox.TypeNotebook {
			plain = append(plain, def)
		}
	}
	m, err := session.NewManager(session.Sandboxes{Backend: e, Tools: plain, Warm: 1, WarmMax: 2, WarmREST: true})
	if err != nil {
		t.Fatal(err)
	}
	core, err := session.New(session.Config{Manager: m, Tools: plain})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = core.Close(ctx)
		if err := m.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	const token = "rest-pool-test-token"
	api, err := httpapi.New(httpapi.Config{Core: core, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	remote, err := client.NewRemote(client.RemoteConfig{BaseURL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	pool := func() sandbox.WarmStats {
		for _, w := range m.Stats().Warm {
			if w.Type == sandbox.TypeDocker {
				return w
			}
		}
		return sandbox.WarmStats{}
	}
	testwait.Until(t, time.Minute, "the REST pool's spare", func() bool { return pool().Spare == 1 })

	ctx := t.Context()
	start := time.Now()
	id, err := remote.Create(ctx, sandbox.TypeDocker, sandbox.Config{})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if w := pool(); w.Hits != 1 || w.Misses != 0 {
		t.Fatalf("the default create did not come from the pool: %+v", w)
	}
	t.Logf("REST create from the pool took %s", took)
	info, err := remote.Get(ctx, id)
	if err != nil || info.Type != sandbox.TypeDocker || info.Status != sandbox.StatusRunning {
		t.Fatalf("GET the pooled sandbox: %+v %v", info, err)
	}
	res, err := remote.ExecuteTool(ctx, id, "python_executor", map[string]any{"code": "print(6 * 7)"})
	if err != nil || res.Status != "success" || res.Output != "42\n" {
		t.Fatalf("python_executor in the pooled sandbox: %+v %v", res, err)
	}
	other, err := core.Caller("someone-else").Get(ctx, id)
	if err == nil {
		t.Fatalf("another principal sees the pooled sandbox: %+v", other)
	}

	// Another config is not the pool's profile: made cold, the spare left alone.
	testwait.Until(t, time.Minute, "the pool refilled", func() bool { return pool().Spare >= 1 })
	cold, err := remote.Create(ctx, sandbox.TypeDocker, sandbox.Config{Timeout: 12})
	if err != nil {
		t.Fatal(err)
	}
	if w := pool(); w.Hits != 1 || w.Misses != 0 {
		t.Errorf("a create of another config touched the pool: %+v", w)
	}
	for _, sid := range []string{id, cold} {
		if err := remote.Delete(ctx, sid); err != nil {
			t.Fatal(err)
		}
	}
}
