package httpapi_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

const token = "test-token-3f9a"

// server is an API under test behind a real HTTP listener.
type server struct {
	t       *testing.T
	url     string
	manager *sandbox.Manager
	api     *httpapi.API
}

// newServer serves the API over a manager whose docker sandboxes come from creator; tweak
// adjusts the config before New.
func newServer(t *testing.T, creator sandbox.Creator, tweak func(*httpapi.Config)) *server {
	t.Helper()
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: creator},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("closing the manager: %v", err)
		}
	})
	cfg := httpapi.Config{Manager: m, Token: token, Version: "test"}
	if tweak != nil {
		tweak(&cfg)
	}
	api, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close(context.Background()) })
	return newServerFor(t, api, m)
}

// newServerFor serves api (over m) on a test listener.
func newServerFor(t *testing.T, api *httpapi.API, m *sandbox.Manager) *server {
	t.Helper()
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return &server{t: t, url: srv.URL, manager: m, api: api}
}

// newEngineServer serves the API over the real engine; the engine's clean-up checks that no
// container outlives the test.
func newEngineServer(t *testing.T, tweak func(*httpapi.Config)) *server {
	t.Helper()
	e := testenv.Engine(t)
	return newServer(t, sandbox.NewCreator(e, sandbox.TypeDocker), tweak)
}

// refusingCreator stands in for the engine in tests that must never reach it.
func refusingCreator(context.Context, string, sandbox.Resolved) (sandbox.Sandbox, error) {
	return nil, errors.New("test: the engine must not be reached")
}

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer is not JSON (%d %s): %v", r.status, r.body, err)
	}
}

// detail is an error answer's detail, checking that it is JSON with a detail.
func (r response) detail(t *testing.T) string {
	t.Helper()
	var e struct {
		Detail *string `json:"detail"`
	}
	r.json(t, &e)
	if e.Detail == nil {
		t.Fatalf("error answer %d without detail: %s", r.status, r.body)
	}
	return *e.Detail
}

// do sends a request with the token (unless headers set Authorization or X-API-Key to "",
// which drops it). body may be nil, a string, []byte, io.Reader or a value sent as JSON.
func (s *server) do(method, path string, body any, headers ...string) response {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: reading: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// must sends a request that must answer 200 and decodes its JSON into out (when not nil).
func (s *server) must(method, path string, body any, out any) {
	s.t.Helper()
	r := s.do(method, path, body)
	if r.status != http.StatusOK {
		s.t.Fatalf("%s %s = %d %s, want 200", method, path, r.status, r.body)
	}
	if out != nil {
		r.json(s.t, out)
	}
}

// create makes a sandbox and returns its id.
func (s *server) create(body any) string {
	s.t.Helper()
	var out struct {
		SandboxID string `json:"sandbox_id"`
	}
	s.must(http.MethodPost, "/sandbox/create?sandbox_type=docker", body, &out)
	if out.SandboxID == "" {
		s.t.Fatal("create answered without a sandbox_id")
	}
	return out.SandboxID
}

// toolResult is a tool result as ms-enclave's client reads it.
type toolResult struct {
	Status   string         `json:"status"`
	ToolName string         `json:"tool_name"`
	Output   string         `json:"output"`
	Error    string         `json:"error"`
	Metadata map[string]any `json:"metadata"`
}

// execute runs a tool and checks the result's ms-enclave shape.
func (s *server) execute(id, tool string, params any) toolResult {
	s.t.Helper()
	var res toolResult
	s.must(http.MethodPost, "/sandbox/tool/execute",
		map[string]any{"sandbox_id": id, "tool_name": tool, "parameters": params, "timeout": nil}, &res)
	if res.ToolName != tool || res.Metadata == nil {
		s.t.Fatalf("result lacks ms-enclave's fields: %+v", res)
	}
	return res
}

// info is SandboxInfo as ms-enclave's client validates it: nulls where it wants objects
// would fail to decode into these (non-pointer maps stay nil only when absent).
type info struct {
	ID             string                     `json:"id"`
	Status         string                     `json:"status"`
	Type           string                     `json:"type"`
	Config         map[string]any             `json:"config"`
	CreatedAt      time.Time                  `json:"created_at"`
	UpdatedAt      time.Time                  `json:"updated_at"`
	Metadata       map[string]any             `json:"metadata"`
	AvailableTools map[string]json.RawMessage `json:"available_tools"`
}

func (s *server) info(id string) info {
	s.t.Helper()
	var in info
	s.must(http.MethodGet, "/sandbox/"+id, nil, &in)
	if in.Config == nil || in.Metadata == nil || in.AvailableTools == nil || in.Type == "" {
		s.t.Fatalf("SandboxInfo with null or missing objects: %+v", in)
	}
	return in
}

// pythonClientDefaults is the create body ms-enclave's HttpSandboxManager sends when the
// user sets only the image: every field of its config model with its default, unknown
// fields included.
func pythonClientDefaults(image string) map[string]any {
	return map[string]any{
		"image": image, "command": nil, "working_dir": "/sandbox", "env_vars": map[string]any{},
		"memory_limit": "4g", "cpu_limit": 2.0, "volumes": map[string]any{}, "ports": map[string]any{},
		"network": "bridge", "network_enabled": true, "privileged": false, "remove_on_exit": true,
		"tools_config": map[string]any{}, "timeout": 30, "pull_progress": false,
		"docker_executor_workers": 4, "resource_limits": map[string]any{},
	}
}

// tarEntry is one entry of a test archive; dir entries end in "/".
type tarEntry struct {
	name, body string
	mode       int64
	typ        byte
	link       string
}

// makeTar builds an archive the way ms-enclave's put_dir does: no "./", directory entries,
// the host's uid, gid and mode.
func makeTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: e.mode, Uid: 1234, Gid: 5678, Uname: "host", Gname: "host", ModTime: time.Now()}
		switch {
		case e.typ != 0:
			hdr.Typeflag, hdr.Linkname = e.typ, e.link
		case strings.HasSuffix(e.name, "/"):
			hdr.Typeflag = tar.TypeDir
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.body))
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// codeOf is an error answer's code.
func (r response) code(t *testing.T) client.Code {
	t.Helper()
	var e struct {
		Code client.Code `json:"code"`
	}
	r.json(t, &e)
	return e.Code
}
