package httpapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// A notebook sandbox's Jupyter server is a background job and its state lives in /tmp: the
// pool's clean-up between borrowers must keep them, or the second borrower gets a dead
// notebook.
func TestIntegrationNotebookPool(t *testing.T) {
	e := testenv.Engine(t)
	testenv.RequireImage(t, e, sandbox.DefaultNotebookImage)
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeNotebook: {Image: sandbox.DefaultNotebookImage}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeNotebook: notebook.Creator(e, notebook.Options{})},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	api, err := httpapi.New(httpapi.Config{Manager: m, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close(context.Background()) })
	s := newServerFor(t, api, m)

	var pool struct {
		SandboxIDs []string `json:"sandbox_ids"`
	}
	s.must("POST", "/pool/initialize?pool_size=1&sandbox_type=docker_notebook", nil, &pool)
	cell := func(code string) toolResult {
		t.Helper()
		var res toolResult
		s.must("POST", "/pool/execute?tool_name=notebook_executor&timeout=60", map[string]string{"code": code}, &res)
		return res
	}
	if res := cell("x = 41\nx + 1"); res.Status != "success" || !strings.Contains(res.Output, "42") {
		t.Fatalf("first borrower: %+v", res)
	}
	if res := cell("open('/tmp/borrower.txt', 'w').write('x'); 2 + 2"); res.Status != "success" || !strings.Contains(res.Output, "4") {
		t.Fatalf("second borrower: the notebook did not survive the clean-up: %+v", res)
	}
	res := cell("import os; print(os.path.exists('/tmp/borrower.txt'))")
	if res.Status != "success" || !strings.Contains(res.Output, "False") {
		t.Errorf("third borrower sees the second's file: %+v", res)
	}
	sb, err := m.Get(pool.SandboxIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sb.(sandbox.Resetter); !ok {
		t.Fatalf("notebook sandboxes must implement sandbox.Resetter, or kernel variables pass between borrowers")
	}
	if leaked := cell("print('x' in dir())").Output; !strings.Contains(leaked, "False") {
		t.Errorf("the first borrower's variable x is visible to a later one: %q", leaked)
	}
}
