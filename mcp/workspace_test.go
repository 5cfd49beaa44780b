package mcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/loadtest"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
)

// workspaceScenario is issue 10's "one workspace per MCP session", through call: a file
// file_operation writes, the notebook reads (with the csv module: the notebook image has no
// pandas); a file the notebook writes, shell_executor sees; a job shell_executor starts,
// background_jobs lists. It returns how long the session's first notebook call took (the
// kernel starts in the session's sandbox) and a later one.
func workspaceScenario(t *testing.T, call toolCaller) (first, later time.Duration) {
	t.Helper()
	steps := []struct {
		name, tool string
		args       map[string]any
		want       string // in the text; "" checks success only
	}{
		{"file_operation writes data.csv", "file_operation",
			map[string]any{"operation": "write", "file_path": "data.csv", "content": "name,value\nalpha,1\nbeta,2\n"}, ""},
		{"notebook_executor reads it", "notebook_executor",
			map[string]any{"code": "import csv, os\nrows = list(csv.reader(open('data.csv')))\nprint(len(rows), rows[2][0], os.getcwd())"}, "3 beta /sandbox"},
		{"the notebook writes from_nb.txt", "notebook_executor",
			map[string]any{"code": "with open('from_nb.txt', 'w') as f:\n    f.write('written by the kernel')"}, ""},
		{"shell_executor sees it", "shell_executor", map[string]any{"command": "cat from_nb.txt"}, "written by the kernel"},
		{"shell_executor starts a background job", "shell_executor",
			map[string]any{"command": "sleep 300", "background": true}, "job-"},
		{"background_jobs lists it", "background_jobs", map[string]any{"action": "list"}, "sleep 300"},
		{"a later notebook call", "notebook_executor", map[string]any{"code": "rows[1]"}, "'alpha', '1'"},
	}
	var notebookCalls []time.Duration
	for _, st := range steps {
		start := time.Now()
		text, isErr, err := call(t.Context(), st.tool, st.args)
		if st.tool == "notebook_executor" {
			notebookCalls = append(notebookCalls, time.Since(start))
		}
		if err != nil || isErr || !strings.Contains(text, st.want) {
			t.Fatalf("%s: err=%v isError=%v text=%q; want success with %q", st.name, err, isErr, text, st.want)
		}
	}
	return notebookCalls[0], notebookCalls[len(notebookCalls)-1]
}

// TestIntegrationOneWorkspaceStdio: the real binary over stdio, with its defaults (the
// notebook image, since the notebook tools are on): every tool of the session works in one
// workspace, and the server made exactly one container for it.
func TestIntegrationOneWorkspaceStdio(t *testing.T) {
	t.Parallel()
	s := e2eStart(t)
	first, later := workspaceScenario(t, func(ctx context.Context, name string, args map[string]any) (string, bool, error) {
		out, err := s.CallCtx(ctx, t, name, args, nil)
		return out.Text, out.IsError, err
	})
	t.Logf("notebook_executor: first call of the session %s (kernel start included), a later one %s", first, later)
	c := e2eInspect(t, s.ContainerID(t))
	if c == nil {
		t.Fatal("the session's container is gone")
	}
	instance := c.Config.Labels["enclave-mcp.instance"]
	if ids := e2eInstanceContainers(t, instance); instance == "" || len(ids) != 1 {
		t.Fatalf("server instance %q has %d containers (%.12s), want the session's one", instance, len(ids), ids)
	}
}

// serveHTTP starts the real binary as `serve --http` with extra flags, stops it when the test
// ends and checks that none of its containers is left.
func serveHTTP(t *testing.T, args ...string) *loadtest.Server {
	t.Helper()
	testenv.RequireDocker(t)
	logs := &syncbuf.Buffer{}
	srv, err := loadtest.StartServer(t.Context(), loadtest.ServerOptions{Binary: testenv.Binary(t), Token: httpTestToken, Args: args, Log: logs})
	if err != nil {
		t.Fatalf("starting serve --http: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("stopping the server: %v", err)
		}
		// An exiting server hands its sandboxes' removal to the engine, which removes each
		// once its agent has exited: what is still there after the bounded wait is a leak.
		if left, err := loadtest.WaitSandboxes(ctx, srv.PID(), 0); err != nil || left != 0 {
			list, _ := loadtest.Sandboxes(context.Background(), srv.PID())
			t.Errorf("containers left after the server stopped: %v, %v", list, err)
		}
		if t.Failed() {
			t.Logf("server log (tail):\n%s", logs.Tail(6000))
		}
	})
	return srv
}

// connectHTTP opens an MCP session over streamable HTTP with mcp-go's client.
func connectHTTP(t *testing.T, url string) *mcpclient.Client {
	t.Helper()
	c, err := mcpclient.NewStreamableHttpClient(url+"/mcp", transport.WithHTTPHeaders(authHeader()))
	if err != nil {
		t.Fatal(err)
	}
	startMCPGo(t, c)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestIntegrationOneWorkspaceStreamableHTTP: the same over streamable HTTP, with mcp-go's
// client and the real binary as `serve --http` (no warm pool, so that the count is exact):
// the server holds one container, for the session.
func TestIntegrationOneWorkspaceStreamableHTTP(t *testing.T) {
	t.Parallel()
	srv := serveHTTP(t)
	c := connectHTTP(t, srv.URL)
	first, later := workspaceScenario(t, mcpgoCaller(c))
	t.Logf("notebook_executor: first call of the session %s (kernel start included), a later one %s", first, later)
	list, err := loadtest.Sandboxes(t.Context(), srv.PID())
	if err != nil || len(list) != 1 {
		t.Fatalf("the server has containers %+v (%v), want the session's one", list, err)
	}
	if ids := e2eInstanceContainers(t, list[0].Instance); len(ids) != 1 {
		t.Fatalf("server instance %s has %d containers, want 1", list[0].Instance, len(ids))
	}
	_ = c.Close() // sends DELETE: the session ends at once
	testwait.Until(t, 15*time.Second, "the session's container removed", func() bool {
		list, err := loadtest.Sandboxes(t.Context(), srv.PID())
		return err == nil && len(list) == 0
	})
}

// TestIntegrationWarmPoolServesSessions: --warm keeps spares of the sandbox MCP sessions
// actually use (and of the REST API's default), and a session's first call takes one.
func TestIntegrationWarmPoolServesSessions(t *testing.T) {
	t.Parallel()
	srv := serveHTTP(t, "--warm", "1")
	pool := func() (spare int, hits uint64) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/stats", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+httpTestToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct {
			Warm []sandbox.WarmStats `json:"warm_pools"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		for _, w := range st.Warm {
			// The docker pool serves the REST API's creates of the default config.
			if w.Type != session.SessionType && w.Type != sandbox.TypeDocker && w.Size > 0 {
				t.Errorf("a warm pool of %s, which neither MCP sessions nor REST creates take from: %+v", w.Type, w)
			}
			if w.Type == session.SessionType {
				spare, hits = w.Spare, w.Hits
			}
		}
		return spare, hits
	}
	testwait.Until(t, 30*time.Second, "a spare session sandbox", func() bool { spare, _ := pool(); return spare == 1 })
	c := connectHTTP(t, srv.URL)
	if text, isErr, err := mcpgoCaller(c)(t.Context(), "shell_executor", map[string]any{"command": "echo warm"}); err != nil || isErr || text != "warm\n" {
		t.Fatalf("first call: %q %v %v", text, isErr, err)
	}
	if _, hits := pool(); hits != 1 {
		t.Errorf("the session's sandbox did not come from the warm pool: %d hits", hits)
	}
}
