package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// These tests need no engine: what they check is settled before a sandbox would be made.

func TestNewRefusesAnOpenAPI(t *testing.T) {
	t.Parallel()
	m := sandbox.NewManager(sandbox.ManagerOptions{})
	t.Cleanup(func() { _ = m.Close(t.Context()) })
	if _, err := httpapi.New(httpapi.Config{Manager: m}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("New without a token = %v, want an error about the token", err)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	s := newServer(t, refusingCreator, nil)
	cases := []struct {
		name, method, path string
		headers            []string
		want               int
	}{
		{"health needs no token", "GET", "/health", []string{"Authorization", ""}, 200},
		{"missing token", "GET", "/sandboxes", []string{"Authorization", ""}, 401},
		{"wrong bearer", "GET", "/sandboxes", []string{"Authorization", "Bearer nope"}, 401},
		{"token as a prefix", "GET", "/sandboxes", []string{"Authorization", "Bearer " + token[:5]}, 401},
		{"basic scheme", "GET", "/sandboxes", []string{"Authorization", "Basic " + token}, 401},
		{"query api_key is never read", "GET", "/sandboxes?api_key=" + token, []string{"Authorization", ""}, 401},
		{"query token is never read", "GET", "/sandboxes?token=" + token, []string{"Authorization", ""}, 401},
		{"bearer", "GET", "/sandboxes", nil, 200},
		{"bearer scheme in any case", "GET", "/sandboxes", []string{"Authorization", "bearer " + token}, 200},
		{"X-API-Key for ms-enclave clients", "GET", "/sandboxes", []string{"Authorization", "", "X-API-Key", token}, 200},
		{"wrong X-API-Key", "GET", "/sandboxes", []string{"Authorization", "", "X-API-Key", "nope"}, 401},
		{"unknown route still needs the token", "GET", "/nope", []string{"Authorization", ""}, 401},
		{"metrics need the token", "GET", "/metrics", []string{"Authorization", ""}, 401},
		{"openapi needs the token", "GET", "/openapi.json", []string{"Authorization", ""}, 401},
		{"POST /health is not public", "POST", "/health", []string{"Authorization", ""}, 401},
		{"CORS preflight gets no pass", "OPTIONS", "/sandboxes", []string{"Authorization", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST"}, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(tc.method, tc.path, nil, tc.headers...)
			if r.status != tc.want {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, r.status, r.body, tc.want)
			}
			if tc.want == 401 && (r.detail(t) != "Unauthorized" || r.header.Get("WWW-Authenticate") == "") {
				t.Errorf("401 answer = %s (WWW-Authenticate %q), want {\"detail\":\"Unauthorized\"}", r.body, r.header.Get("WWW-Authenticate"))
			}
			for k := range r.header {
				if strings.HasPrefix(strings.ToLower(k), "access-control-") {
					t.Errorf("CORS header %s: %v; the API sends none", k, r.header[k])
				}
			}
		})
	}
}

func TestRequireTokenGuardsOtherHandlers(t *testing.T) {
	t.Parallel()
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("mcp")) })
	for _, tc := range []struct {
		name, configured, method, path, header string
		want                                   int
	}{
		{"right token", "T", "POST", "/mcp", "Bearer T", 200},
		{"wrong token", "T", "POST", "/mcp", "Bearer U", 401},
		{"no token", "T", "GET", "/sse", "", 401},
		{"health is exempt", "T", "GET", "/health", "", 200},
		{"empty configured token accepts nothing", "", "POST", "/mcp", "Bearer ", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			httpapi.RequireToken(tc.configured, inner).ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("= %d %s, want %d", rec.Code, rec.Body, tc.want)
			}
		})
	}
}

func TestHealthShape(t *testing.T) {
	t.Parallel()
	s := newServer(t, refusingCreator, nil)
	r := s.do("GET", "/health", nil) // with the token: without it, /health tells only ok or not
	var h map[string]any
	r.json(t, &h)
	for _, k := range []string{"healthy", "version", "uptime", "active_sandboxes", "system_info"} {
		if _, ok := h[k]; !ok {
			t.Errorf("health lacks %q: %s", k, r.body)
		}
	}
	if h["healthy"] != true || h["version"] != "test" {
		t.Errorf("health = %s", r.body)
	}
}

func TestRequestIDs(t *testing.T) {
	t.Parallel()
	s := newServer(t, refusingCreator, nil)
	if got := s.do("GET", "/health", nil, "X-Request-Id", "abc-123").header.Get("X-Request-Id"); got != "abc-123" {
		t.Errorf("a sane X-Request-Id is echoed: got %q", got)
	}
	minted := s.do("GET", "/sandboxes", nil).header.Get("X-Request-Id")
	if len(minted) < 8 {
		t.Errorf("a request without an id gets one minted: got %q", minted)
	}
	if got := s.do("GET", "/health", nil, "X-Request-Id", "bad id\twith spaces").header.Get("X-Request-Id"); got == "" || strings.ContainsAny(got, " \t") {
		t.Errorf("an unsafe id is replaced: got %q", got)
	}
	if got := s.do("GET", "/nope", nil).header.Get("X-Request-Id"); got == "" {
		t.Error("error answers carry a request id too")
	}
}

// TestErrors checks the status and JSON detail of every error that needs no sandbox.
func TestErrors(t *testing.T) {
	t.Parallel()
	s := newServer(t, refusingCreator, func(c *httpapi.Config) { c.MaxJSONBytes = 1 << 10 })
	big := `{"image":"` + strings.Repeat("x", 2<<10) + `"}`
	cases := []struct {
		name, method, path string
		body               any
		want               int
		detail             string // substring
	}{
		{"unknown route", "GET", "/nope", nil, 404, "No endpoint GET /nope"},
		{"unknown nested route", "GET", "/sandbox/x/y/z", nil, 404, "No endpoint"},
		{"wrong method", "PUT", "/sandboxes", nil, 405, "allowed: GET"},
		{"wrong method on a sandbox", "PATCH", "/sandbox/abc", nil, 405, "DELETE"},
		{"get unknown sandbox", "GET", "/sandbox/nosuch", nil, 404, "not found"},
		{"stop unknown sandbox", "POST", "/sandbox/nosuch/stop", nil, 404, "not found"},
		{"delete unknown sandbox", "DELETE", "/sandbox/nosuch", nil, 404, "not found"},
		{"tools of unknown sandbox", "GET", "/sandbox/nosuch/tools", nil, 404, "not found"},
		{"files of unknown sandbox", "GET", "/sandbox/nosuch/files?path=a", nil, 404, "not found"},
		{"archive to unknown sandbox", "POST", "/sandbox/nosuch/archive?target_dir=/sandbox", "", 404, "not found"},
		{"execute in unknown sandbox", "POST", "/sandbox/tool/execute", map[string]any{"sandbox_id": "nosuch", "tool_name": "python_executor", "parameters": map[string]any{"code": "1"}}, 404, "not found"},
		{"execute without ids", "POST", "/sandbox/tool/execute", map[string]any{"parameters": map[string]any{}}, 400, "sandbox_id and tool_name"},
		{"malformed JSON", "POST", "/sandbox/create", `{"image": `, 400, "malformed JSON"},
		{"not an object", "POST", "/sandbox/create", `["image"]`, 400, "JSON object"},
		{"wrong field type", "POST", "/sandbox/create", `{"cpu_limit": "two"}`, 400, "cpu_limit"},
		{"bad tools_config", "POST", "/sandbox/create", `{"tools_config": 7}`, 400, "tools_config"},
		{"unknown tool in tools_config", "POST", "/sandbox/create", `{"tools_config": ["rm_rf"]}`, 400, "rm_rf"},
		{"oversize body", "POST", "/sandbox/create", big, 413, "limit"},
		{"privileged", "POST", "/sandbox/create", map[string]any{"privileged": true}, 403, `"privileged"`},
		{"host volumes", "POST", "/sandbox/create", map[string]any{"volumes": map[string]any{"/etc": map[string]string{"bind": "/host", "mode": "rw"}}}, 403, `"volumes"`},
		{"host volumes, older clients' form", "POST", "/sandbox/create", map[string]any{"volumes": map[string]string{"/etc": "/host"}}, 403, `"volumes"`},
		{"pool with privileged", "POST", "/pool/initialize?pool_size=1", map[string]any{"privileged": true}, 403, `"privileged"`},
		{"unknown sandbox type", "POST", "/sandbox/create?sandbox_type=vm", `{}`, 400, "vm"},
		{"bad status filter", "GET", "/sandboxes?status=happy", nil, 400, "happy"},
		{"pool execute without tool", "POST", "/pool/execute", `{}`, 400, "tool_name"},
		{"pool execute of unknown tool", "POST", "/pool/execute?tool_name=nope", `{}`, 404, "nope"},
		{"pool timeout not a number", "POST", "/pool/execute?tool_name=python_executor&timeout=soon", `{}`, 400, "timeout"},
		{"empty pool", "POST", "/pool/execute?tool_name=python_executor&timeout=0.2", `{"code":"print(1)"}`, 409, "initialize"},
		{"pool size not a number", "POST", "/pool/initialize?pool_size=many", nil, 400, "pool_size"},
		{"pool size zero", "POST", "/pool/initialize?pool_size=0", nil, 400, "pool_size"},
		{"pool size over the cap", "POST", "/pool/initialize?pool_size=1000", nil, 400, "pool_size"},
		{"download without path", "GET", "/sandbox/x/files", nil, 400, "path"},
		{"unknown tool format", "GET", "/v1/tools?format=yaml", nil, 400, "openai-strict"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(tc.method, tc.path, tc.body)
			if r.status != tc.want {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, r.status, r.body, tc.want)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if d := r.detail(t); !strings.Contains(d, tc.detail) {
				t.Errorf("detail %q does not mention %q", d, tc.detail)
			}
			if r.code(t) == "" {
				t.Errorf("error without a code: %s", r.body)
			}
		})
	}
	if got := s.do("PUT", "/sandboxes", nil).header.Get("Allow"); !strings.Contains(got, "GET") {
		t.Errorf("405 Allow = %q", got)
	}
}

func TestListStartsEmptyAsAnArray(t *testing.T) {
	t.Parallel()
	s := newServer(t, refusingCreator, nil)
	r := s.do("GET", "/sandboxes", nil)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("empty list = %d %s, want 200 []", r.status, r.body)
	}
	var st map[string]any
	s.must("GET", "/stats", nil, &st)
	if st["total_sandboxes"] != 0.0 || st["status_counts"] == nil {
		t.Errorf("stats = %v", st)
	}
}

func TestOpenAPIListsEveryRoute(t *testing.T) {
	t.Parallel()
	s := newServer(t, refusingCreator, nil)
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	s.must("GET", "/openapi.json", nil, &doc)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q", doc.OpenAPI)
	}
	want := []string{
		"GET /health", "GET /stats", "POST /sandbox/create", "GET /sandboxes", "GET /sandbox/{id}",
		"POST /sandbox/{id}/stop", "DELETE /sandbox/{id}", "POST /sandbox/tool/execute", "GET /sandbox/{id}/tools",
		"POST /sandbox/{id}/archive", "GET /sandbox/{id}/files", "POST /pool/initialize", "POST /pool/execute",
		"GET /openapi.json", "GET /metrics", "GET /v1/tools",
	}
	var got []string
	for p, ops := range doc.Paths {
		for m := range ops {
			got = append(got, strings.ToUpper(m)+" "+p)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("documented routes:\n%v\nwant:\n%v", got, want)
	}
	for _, def := range tools.All() {
		var params struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(doc.Components.Schemas[def.Name+"_parameters"], &params); err != nil || params.Type != "object" {
			t.Errorf("no generated parameter schema for %s (%v)", def.Name, err)
		}
	}
}

func TestToolExports(t *testing.T) {
	t.Parallel()
	s := newServer(t, refusingCreator, nil)
	for _, format := range []string{"", "openai", "openai-strict", "mcp"} {
		t.Run("format="+format, func(t *testing.T) {
			var out struct {
				Format string            `json:"format"`
				Tools  []json.RawMessage `json:"tools"`
			}
			s.must("GET", "/v1/tools?format="+format, nil, &out)
			if len(out.Tools) != len(tools.All()) {
				t.Fatalf("%d tools, want %d", len(out.Tools), len(tools.All()))
			}
			for _, raw := range out.Tools {
				var tool struct {
					Type     string `json:"type"`
					Name     string `json:"name"`
					Input    any    `json:"inputSchema"`
					Function struct {
						Name       string         `json:"name"`
						Parameters map[string]any `json:"parameters"`
						Strict     bool           `json:"strict"`
					} `json:"function"`
				}
				if err := json.Unmarshal(raw, &tool); err != nil {
					t.Fatal(err)
				}
				switch format {
				case "mcp":
					if tool.Name == "" || tool.Input == nil {
						t.Errorf("not an MCP tool: %s", raw)
					}
				default:
					if tool.Type != "function" || tool.Function.Name == "" || tool.Function.Parameters["type"] != "object" ||
						tool.Function.Strict != (format == "openai-strict") {
						t.Errorf("not an OpenAI %s tool: %s", format, raw)
					}
				}
			}
		})
	}
}
