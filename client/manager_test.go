package client_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

const token = "client-test-token"

// impl opens one implementation of client.Manager over m.
type impl struct {
	name string
	open func(t *testing.T, m *sandbox.Manager) client.Manager
}

func impls() []impl {
	return []impl{
		{"local", func(t *testing.T, m *sandbox.Manager) client.Manager {
			core, err := session.New(session.Config{Manager: m, Version: "test"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = core.Close(context.Background()) })
			return core.Caller(session.DefaultOwner)
		}},
		{"remote", func(t *testing.T, m *sandbox.Manager) client.Manager {
			api, err := httpapi.New(httpapi.Config{Manager: m, Token: token, Version: "test"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = api.Close(context.Background()) })
			srv := httptest.NewServer(api.Handler())
			t.Cleanup(srv.Close)
			r, err := client.NewRemote(client.RemoteConfig{BaseURL: srv.URL, Token: token})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}},
	}
}

func newManager(t *testing.T, creator sandbox.Creator) *sandbox.Manager {
	t.Helper()
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: creator},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	return m
}

// state is what the steps of the behaviour table share.
type state struct {
	c  client.Manager
	m  *sandbox.Manager
	id string
}

// behaviours is one table of what a Manager does, run in order against every implementation:
// a program that switches from the in-process Caller to Remote sees the same results and the same errors.
func behaviours() []struct {
	name string
	run  func(t *testing.T, ctx context.Context, s *state)
} {
	return []struct {
		name string
		run  func(t *testing.T, ctx context.Context, s *state)
	}{
		{"health", func(t *testing.T, ctx context.Context, s *state) {
			h, err := s.c.Health(ctx)
			if err != nil || !h.Healthy || h.Version != "test" || h.SystemInfo == nil {
				t.Fatalf("Health = %+v, %v", h, err)
			}
		}},
		{"list starts empty", func(t *testing.T, ctx context.Context, s *state) {
			list, err := s.c.List(ctx, "")
			if err != nil || list == nil || len(list) != 0 {
				t.Fatalf("List = %v (nil: %v), %v", list, list == nil, err)
			}
		}},
		{"policy refusals name the field", func(t *testing.T, ctx context.Context, s *state) {
			for field, cfg := range map[string]sandbox.Config{
				"privileged": {Privileged: true},
				"volumes":    {Volumes: map[string]sandbox.VolumeMount{"/etc": {Bind: "/host"}}},
			} {
				_, err := s.c.Create(ctx, "", cfg)
				if !errors.Is(err, sandbox.ErrPolicy) || !strings.Contains(err.Error(), field) {
					t.Errorf("%s: %v, want ErrPolicy naming it", field, err)
				}
			}
			if _, err := s.c.Create(ctx, "", sandbox.Config{ToolsConfig: sandbox.ToolsConfig{"rm_rf": {}}}); !errors.Is(err, sandbox.ErrInvalidConfig) {
				t.Errorf("unknown tool in tools_config: %v, want ErrInvalidConfig", err)
			}
		}},
		{"create", func(t *testing.T, ctx context.Context, s *state) {
			id, err := s.c.Create(ctx, sandbox.TypeDocker, sandbox.Config{
				NetworkEnabled: true, MemoryLimit: "4g", EnvVars: map[string]string{"TOKEN": "s3cret"},
			})
			if err != nil || id == "" {
				t.Fatalf("Create = %q, %v", id, err)
			}
			s.id = id
		}},
		{"get", func(t *testing.T, ctx context.Context, s *state) {
			in, err := s.c.Get(ctx, s.id)
			if err != nil {
				t.Fatal(err)
			}
			if in.ID != s.id || in.Status != sandbox.StatusRunning || in.Type != sandbox.TypeDocker || in.AvailableTools["python_executor"] == nil {
				t.Errorf("Get = %+v", in)
			}
			if env := fmt.Sprint(in.Config["env_vars"]); strings.Contains(env, "s3cret") || !strings.Contains(env, "TOKEN") {
				t.Errorf("config env_vars = %s: the name shows, the value never", env)
			}
			if !strings.Contains(fmt.Sprint(in.Metadata["policy_notes"]), "network") {
				t.Errorf("no policy note about the network: %v", in.Metadata)
			}
			if _, err := s.c.Get(ctx, "nosuch"); !errors.Is(err, sandbox.ErrNotFound) {
				t.Errorf("Get(unknown) = %v, want ErrNotFound", err)
			}
		}},
		{"list has it", func(t *testing.T, ctx context.Context, s *state) {
			list, err := s.c.List(ctx, sandbox.StatusRunning)
			if err != nil || len(list) != 1 || list[0].ID != s.id {
				t.Fatalf("List(running) = %+v, %v", list, err)
			}
			if stopped, _ := s.c.List(ctx, sandbox.StatusStopped); len(stopped) != 0 {
				t.Errorf("List(stopped) = %+v", stopped)
			}
		}},
		{"execute", func(t *testing.T, ctx context.Context, s *state) {
			res, err := s.c.ExecuteTool(ctx, s.id, "python_executor", tools.PythonParams{Code: "print('Hello from sandbox!')\nprint(2 + 2)"})
			if err != nil || res.Status != tools.StatusSuccess || res.Output != "Hello from sandbox!\n4\n" || res.ToolName != "python_executor" {
				t.Fatalf("ExecuteTool = %+v, %v", res, err)
			}
			res, err = s.c.ExecuteTool(ctx, s.id, "shell_executor", json.RawMessage(`{"command": ["echo", "argv", "form"]}`))
			if err != nil || res.Output != "argv form\n" {
				t.Errorf("shell argv = %+v, %v", res, err)
			}
		}},
		{"bad arguments are an error result", func(t *testing.T, ctx context.Context, s *state) {
			res, err := s.c.ExecuteTool(ctx, s.id, "python_executor", map[string]any{"code": "1", "colour": "red"})
			if err != nil || res.Status != tools.StatusError || !strings.Contains(res.Error, "colour") || res.Metadata == nil {
				t.Errorf("= %+v, %v", res, err)
			}
		}},
		{"unknown tool", func(t *testing.T, ctx context.Context, s *state) {
			if _, err := s.c.ExecuteTool(ctx, s.id, "nope", nil); !errors.Is(err, sandbox.ErrNotFound) {
				t.Errorf("= %v, want ErrNotFound", err)
			}
			if _, err := s.c.ExecuteTool(ctx, "nosuch", "python_executor", nil); !errors.Is(err, sandbox.ErrNotFound) {
				t.Errorf("unknown sandbox = %v, want ErrNotFound", err)
			}
		}},
		{"tools", func(t *testing.T, ctx context.Context, s *state) {
			list, err := s.c.Tools(ctx, s.id)
			var want []string
			for _, def := range tools.All() {
				if def.Sandbox == sandbox.TypeDocker {
					want = append(want, def.Name)
				}
			}
			if err != nil || len(list) != len(want) {
				t.Fatalf("Tools = %d tools, %v; want the docker tools %v", len(list), err, want)
			}
			var fn struct {
				Function struct {
					Name string `json:"name"`
				} `json:"function"`
			}
			if err := json.Unmarshal(list["file_operation"], &fn); err != nil || fn.Function.Name != "file_operation" {
				t.Errorf("file_operation schema = %s", list["file_operation"])
			}
		}},
		{"put dir and download", func(t *testing.T, ctx context.Context, s *state) {
			dir := t.TempDir()
			mustWrite(t, filepath.Join(dir, "a.txt"), "alpha\n", 0o644)
			mustWrite(t, filepath.Join(dir, "sub", "b.sh"), "echo beta\n", 0o755)
			if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := s.c.PutDir(ctx, s.id, dir, "/sandbox/in"); err != nil {
				t.Fatal(err)
			}
			res, err := s.c.ExecuteTool(ctx, s.id, "shell_executor", map[string]any{"command": "cat in/a.txt && sh in/sub/b.sh && test -d in/empty && echo dir"})
			if err != nil || res.Output != "alpha\nbeta\ndir\n" {
				t.Errorf("uploaded files: %+v, %v", res, err)
			}

			d, err := s.c.Download(ctx, s.id, "in/a.txt")
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(d)
			_ = d.Close()
			if string(data) != "alpha\n" || d.Dir || d.Name != "a.txt" || d.Size != 6 {
				t.Errorf("Download(file) = %q dir=%v name=%q size=%d", data, d.Dir, d.Name, d.Size)
			}

			d, err = s.c.Download(ctx, s.id, "/sandbox/in")
			if err != nil {
				t.Fatal(err)
			}
			names := tarNames(t, d)
			_ = d.Close()
			if !d.Dir || d.Name != "in" || strings.Join(names, ",") != "a.txt,empty/,sub/,sub/b.sh" {
				t.Errorf("Download(dir) dir=%v name=%q entries %v", d.Dir, d.Name, names)
			}
			if _, err := s.c.Download(ctx, s.id, "missing"); !errors.Is(err, sandbox.ErrNotFound) {
				t.Errorf("Download(missing) = %v, want ErrNotFound", err)
			}
		}},
		{"bad archives", func(t *testing.T, ctx context.Context, s *state) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			_ = tw.WriteHeader(&tar.Header{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"})
			_ = tw.Close()
			if err := s.c.PutArchive(ctx, s.id, "x", &buf); !errors.Is(err, client.ErrInvalidArchive) {
				t.Errorf("symlink entry: %v, want ErrInvalidArchive", err)
			}
		}},
		{"stats", func(t *testing.T, ctx context.Context, s *state) {
			st, err := s.c.Stats(ctx)
			if err != nil || st.TotalSandboxes != 1 || st.Running != 1 || st.StatusCounts["running"] != 1 {
				t.Errorf("Stats = %+v, %v", st, err)
			}
		}},
		{"stop, then delete", func(t *testing.T, ctx context.Context, s *state) {
			if err := s.c.Stop(ctx, s.id); err != nil {
				t.Fatal(err)
			}
			if in, err := s.c.Get(ctx, s.id); err != nil || in.Status != sandbox.StatusStopped {
				t.Errorf("after Stop: %+v, %v", in, err)
			}
			if _, err := s.c.ExecuteTool(ctx, s.id, "python_executor", tools.PythonParams{Code: "1"}); !errors.Is(err, sandbox.ErrClosed) {
				t.Errorf("execute in a stopped sandbox = %v, want ErrClosed", err)
			}
			if err := s.c.Delete(ctx, s.id); err != nil {
				t.Fatal(err)
			}
			if err := s.c.Delete(ctx, s.id); !errors.Is(err, sandbox.ErrNotFound) {
				t.Errorf("second Delete = %v, want ErrNotFound", err)
			}
		}},
		{"pool", func(t *testing.T, ctx context.Context, s *state) {
			if _, err := s.c.ExecuteInPool(ctx, "python_executor", tools.PythonParams{Code: "1"}, time.Second); !errors.Is(err, sandbox.ErrPoolEmpty) {
				t.Fatalf("empty pool = %v, want ErrPoolEmpty", err)
			}
			ids, err := s.c.InitializePool(ctx, 1, "", nil)
			if err != nil || len(ids) != 1 {
				t.Fatalf("InitializePool = %v, %v", ids, err)
			}
			if in, err := s.c.Get(ctx, ids[0]); err != nil || in.Status != sandbox.StatusIdle {
				t.Errorf("pooled sandbox = %+v, %v; want idle", in, err)
			}
			res, err := s.c.ExecuteInPool(ctx, "python_executor", tools.PythonParams{Code: "print('pooled')"}, 0)
			if err != nil || res.Output != "pooled\n" {
				t.Fatalf("ExecuteInPool = %+v, %v", res, err)
			}
			// Occupy the only sandbox once the clean-up after the last call is over (it shows
			// busy too); a short wait then runs out.
			waitFor(t, func() bool { st, _ := s.c.Stats(ctx); return st.PoolAvailable == 1 })
			var wg sync.WaitGroup
			wg.Go(func() {
				_, _ = s.c.ExecuteInPool(ctx, "shell_executor", map[string]any{"command": "sleep 2"}, 10*time.Second)
			})
			waitFor(t, func() bool { in, _ := s.c.Get(ctx, ids[0]); return in.Status == sandbox.StatusBusy })
			_, err = s.c.ExecuteInPool(ctx, "python_executor", tools.PythonParams{Code: "1"}, 200*time.Millisecond)
			if !errors.Is(err, sandbox.ErrPoolTimeout) {
				t.Errorf("busy pool = %v, want ErrPoolTimeout", err)
			}
			wg.Wait()
		}},
	}
}

func TestIntegrationManagerBehaviours(t *testing.T) {
	e := testenv.Engine(t)
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			m := newManager(t, sandbox.NewCreator(e, sandbox.TypeDocker))
			s := &state{c: im.open(t, m), m: m}
			for _, b := range behaviours() {
				if !t.Run(b.name, func(t *testing.T) { b.run(t, t.Context(), s) }) {
					return // the steps build on each other
				}
			}
		})
	}
}

// Neither implementation reaches a sandbox another owner (an MCP session) holds.
func TestIntegrationOwnersAreSeparate(t *testing.T) {
	e := testenv.Engine(t)
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			m := newManager(t, sandbox.NewCreator(e, sandbox.TypeDocker))
			c := im.open(t, m)
			theirs, err := m.Create(t.Context(), "mcp-session", sandbox.TypeDocker, sandbox.Config{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			for name, err := range map[string]error{
				"get":     func() error { _, err := c.Get(ctx, theirs.ID()); return err }(),
				"execute": func() error { _, err := c.ExecuteTool(ctx, theirs.ID(), "shell_executor", nil); return err }(),
				"stop":    c.Stop(ctx, theirs.ID()),
				"delete":  c.Delete(ctx, theirs.ID()),
			} {
				if !errors.Is(err, sandbox.ErrNotFound) {
					t.Errorf("%s: %v, want ErrNotFound", name, err)
				}
			}
			if list, _ := c.List(ctx, ""); len(list) != 0 {
				t.Errorf("List shows another owner's sandbox: %+v", list)
			}
		})
	}
}

func TestRemoteErrors(t *testing.T) {
	t.Parallel()
	m := newManager(t, func(context.Context, string, sandbox.Resolved) (sandbox.Sandbox, error) {
		return nil, errors.New("no engine in this test")
	})
	api, err := httpapi.New(httpapi.Config{Manager: m, Token: token, Check: func(context.Context) error {
		return errors.New("engine unreachable")
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	ctx := t.Context()

	wrong, _ := client.NewRemote(client.RemoteConfig{BaseURL: srv.URL, Token: "wrong"})
	if _, err := wrong.List(ctx, ""); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("wrong token: %v, want ErrUnauthorized", err)
	}
	var apiErr *client.APIError
	if _, err := wrong.Stats(ctx); !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.RequestID == "" {
		t.Errorf("APIError = %#v", apiErr)
	}
	// /health needs no token, and an unhealthy server is a Health, not an error; only the
	// token holder learns why.
	h, err := wrong.Health(ctx)
	if err != nil || h.Healthy || h.Detail != "" {
		t.Errorf("Health without the token = %+v, %v; want unhealthy with no detail", h, err)
	}
	right, _ := client.NewRemote(client.RemoteConfig{BaseURL: srv.URL + "/", Token: token})
	if h, err := right.Health(ctx); err != nil || h.Healthy || !strings.Contains(h.Detail, "engine unreachable") {
		t.Errorf("Health = %+v, %v", h, err)
	}
	exported, err := right.ExportTools(ctx, "openai-strict")
	if err != nil || len(exported) != len(tools.All()) || !strings.Contains(string(exported[0]), `"strict":true`) {
		t.Errorf("ExportTools = %d tools, %v", len(exported), err)
	}
	if _, err := right.ExportTools(ctx, "yaml"); !errors.Is(err, client.ErrBadRequest) {
		t.Errorf("ExportTools(yaml) = %v, want ErrBadRequest", err)
	}
	if _, err := client.NewRemote(client.RemoteConfig{BaseURL: "localhost:8000"}); err == nil {
		t.Error("a base URL without a scheme is accepted")
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustWrite(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

func tarNames(t *testing.T, r io.Reader) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
	sort.Strings(names)
	return names
}
