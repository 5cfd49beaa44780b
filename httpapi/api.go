// Package httpapi serves enclave-mcp's sandbox manager over REST, with the paths and JSON
// shapes of ms-enclave's HTTP server, so its Python HttpSandboxManager and the harnesses
// built on it work unchanged. That is its one job: every behaviour lives in the session
// core (package session), and this package maps HTTP to it and its errors back to HTTP.
//
// What it adds to ms-enclave's API: a token on every endpoint but GET /health, per-principal
// ownership of sandboxes, pools that clean a sandbox between borrowers, file download, request
// ids, JSON errors with a machine-readable code, an OpenAPI document, Prometheus metrics and
// the tool schemas in MCP and OpenAI formats.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/internal/httpjson"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// RESTOwner owns the sandboxes created through the REST API with the operator's token. MCP
// sessions own theirs under their session ids, so neither side can reach the other's.
const RESTOwner = "rest"

// Config is everything the API needs; it knows nothing about flags or listeners.
type Config struct {
	// Core is the session core the API serves, shared with the other faces. When nil, New
	// builds one from Manager, Tools, ToolOptions, Version, Logger, Check and Limits.
	Core *session.Core
	// Manager creates and tracks sandboxes; its Policy and Defaults apply to REST creates.
	Manager *sandbox.Manager
	// Tools are the tools served (the operator's enabled set); nil means tools.All().
	Tools []tools.Def
	// ToolOptions are the operator's per-tool options; they win over a create's tools_config.
	ToolOptions sandbox.ToolsConfig
	// Token is required (as "Authorization: Bearer T" or "X-API-Key: T") on every endpoint
	// but GET /health; its requests act as RESTOwner.
	Token string
	// Tokens are more accepted tokens, each its own principal (TokenOwner of its name): one
	// principal's sandboxes and named sessions are out of another's reach. At least one of
	// Token and Tokens is required.
	Tokens []Credential
	// Version is reported by /health and the OpenAPI document.
	Version string
	Logger  *slog.Logger
	// Check, when set, is run by /health: e.g. a ping of the container engine.
	Check func(ctx context.Context) error
	// MaxJSONBytes caps a JSON request body (default 8 MiB); larger is 413.
	MaxJSONBytes int64
	// Limits bound archives (default 64 MiB), downloads, pool sizes and pool waits.
	Limits session.Limits
}

// API is the REST manager API.
type API struct {
	cfg     Config
	log     *slog.Logger
	core    *session.Core
	creds   []credential
	metrics *Metrics
	mux     *http.ServeMux
	routes  []route
	exports map[schema.Format][]json.RawMessage
	openapi []byte
	// timeoutTools are the tools with a timeout parameter, which the top-level timeout of
	// POST /sandbox/tool/execute can fill in.
	timeoutTools map[string]bool
}

// route is one endpoint: its pattern, its handler and what the OpenAPI document says of it.
type route struct {
	pattern string // a ServeMux pattern: "METHOD /path/{wildcard}"
	handle  http.HandlerFunc
	public  bool // served without a token
	summary string
	query   []param
	body    bodyKind
	answer  string // the component schema of a 200, or one of the answer* kinds
}

// param is a query parameter.
type param struct {
	name, typ, desc string
	required        bool
}

// bodyKind says what a request body holds.
type bodyKind int

const (
	noBody      bodyKind = iota
	configBody           // a sandbox config, optional
	executeBody          // {sandbox_id, tool_name, parameters, timeout}
	tarBody              // a tar stream
	paramsBody           // a tool's bare parameters
)

// Answers that are not JSON component schemas.
const (
	answerFile    = "file"
	answerMetrics = "metrics"
	answerOpenAPI = "openapi"
)

// New builds the API. It fails without a token: an open sandbox API is remote code
// execution for anyone who can reach it.
func New(cfg Config) (*API, error) {
	if cfg.Manager == nil && cfg.Core == nil {
		return nil, errors.New("httpapi.New: a session core or a sandbox manager is required")
	}
	creds, err := credentials(cfg.Token, cfg.Tokens)
	if err != nil {
		return nil, err
	}
	if cfg.Tools == nil {
		cfg.Tools = tools.All()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxJSONBytes <= 0 {
		cfg.MaxJSONBytes = 8 << 20
	}
	core := cfg.Core
	if core == nil {
		var err error
		core, err = session.New(session.Config{
			Manager: cfg.Manager, Tools: cfg.Tools, ToolOptions: cfg.ToolOptions,
			Version: cfg.Version, Limits: cfg.Limits, Logger: cfg.Logger, Check: cfg.Check,
		})
		if err != nil {
			return nil, err
		}
	}
	// The core decides: its tools, manager, version and limits are the API's.
	cfg.Tools, cfg.Manager, cfg.Version, cfg.Limits = core.ToolDefs(), core.Manager(), core.Version(), core.Limits()
	a := &API{cfg: cfg, log: cfg.Logger, core: core, metrics: NewMetrics(), mux: http.NewServeMux(), creds: creds}
	if a.exports, err = exportTools(cfg.Tools); err != nil {
		return nil, err
	}
	a.timeoutTools = map[string]bool{}
	for _, def := range cfg.Tools {
		props, err := schema.Properties(def.Params)
		if err != nil {
			return nil, fmt.Errorf("reading the parameters of tool %s: %w", def.Name, err)
		}
		a.timeoutTools[def.Name] = slices.Contains(props, "timeout")
	}
	a.routes = a.routeTable()
	for _, rt := range a.routes {
		a.mux.HandleFunc(rt.pattern, rt.handle)
	}
	if a.openapi, err = a.openAPIDocument(); err != nil {
		return nil, fmt.Errorf("building the OpenAPI document: %w", err)
	}
	return a, nil
}

// routeTable lists every endpoint; the mux and the OpenAPI document are both built from it.
func (a *API) routeTable() []route {
	return []route{
		{pattern: "GET /health", handle: a.health, public: true, answer: "Health",
			summary: "Liveness and version; needs no token. 503 with the same body when unhealthy."},
		{pattern: "GET /stats", handle: a.stats, answer: "Stats", summary: "Counts of the caller's sandboxes and pool."},
		{pattern: "POST /sandbox/create", handle: a.create, body: configBody, answer: "CreateResponse",
			summary: "Create a sandbox from a config (ms-enclave's fields; unknown fields are ignored).",
			query:   []param{{"sandbox_type", "string", "docker (default) or docker_notebook.", false}}},
		{pattern: "GET /sandboxes", handle: a.list, answer: "SandboxInfoList", summary: "The caller's sandboxes.",
			query: []param{{"status", "string", "Only sandboxes in this status.", false}}},
		{pattern: "GET /sandbox/{id}", handle: a.get, answer: "SandboxInfo", summary: "Describe a sandbox; another principal's is 404 like a missing one."},
		{pattern: "POST /sandbox/{id}/stop", handle: a.stop, answer: "OK",
			summary: "Stop a sandbox's processes; it stays listed with status stopped until deleted."},
		{pattern: "DELETE /sandbox/{id}", handle: a.delete, answer: "OK", summary: "Remove a sandbox."},
		{pattern: "POST /sandbox/tool/execute", handle: a.execute, body: executeBody, answer: "ToolResult",
			summary: "Run a tool in a sandbox. A tool that ran is a 200 whatever its status."},
		{pattern: "GET /sandbox/{id}/tools", handle: a.tools, answer: "ToolSchemas",
			summary: "The sandbox's tools as OpenAI function schemas, by name."},
		{pattern: "POST /sandbox/{id}/archive", handle: a.archive, body: tarBody, answer: "OK",
			summary: "Extract a tar (regular files and directories only) under target_dir.",
			query:   []param{{"target_dir", "string", "Where to extract; relative paths and the default are the workspace.", false}}},
		{pattern: "GET /sandbox/{id}/files", handle: a.download, answer: answerFile,
			summary: "Download a file's bytes, or a directory as a tar of its contents.",
			query:   []param{{"path", "string", "The file or directory; relative paths are the workspace's.", true}}},
		{pattern: "POST /pool/initialize", handle: a.poolInitialize, body: configBody, answer: "PoolInit",
			summary: "Grow the caller's pool of warm sandboxes; they show status idle while free.",
			query: []param{
				{"pool_size", "integer", "How many sandboxes the pool holds (default 1).", false},
				{"sandbox_type", "string", "docker (default) or docker_notebook.", false},
			}},
		{pattern: "POST /pool/execute", handle: a.poolExecute, body: paramsBody, answer: "ToolResult",
			summary: "Run a tool in a free pooled sandbox, cleaned before its next borrower (408 when none frees up in time).",
			query: []param{
				{"tool_name", "string", "The tool to run.", true},
				{"timeout", "number", "Seconds to wait for a free sandbox (fractions allowed).", false},
			}},
		{pattern: "GET /v1/tools", handle: a.toolList, answer: "ToolList",
			summary: "Every tool's schema, for function calling or MCP.",
			query:   []param{{"format", "string", "openai (default), openai-strict or mcp.", false}}},
		{pattern: "GET /openapi.json", handle: a.openAPI, answer: answerOpenAPI, summary: "This document."},
		{pattern: "GET /metrics", handle: a.metricsText, answer: answerMetrics, summary: "Prometheus metrics."},
	}
}

// Handler serves the API: request ids, access logs, the token check, panics turned into
// 500s, and JSON errors for unknown routes and methods. Mount it at "/".
func (a *API) Handler() http.Handler {
	return a.withRequestID(a.withAccessLog(a.requireAuth(a.withRecovery(http.HandlerFunc(a.route)))))
}

// Metrics are the API's counters; the MCP adapter may feed its tool calls into them too.
func (a *API) Metrics() *Metrics { return a.metrics }

// Close removes the pooled sandboxes. Other REST sandboxes belong to the manager, whose
// Close removes them.
func (a *API) Close(ctx context.Context) error { return a.core.Close(ctx) }

// local is the session core as the request's principal sees it.
func (a *API) local(r *http.Request) *session.Caller {
	return a.core.Caller(ownerFrom(r.Context()))
}

// route dispatches to the mux, answering unknown routes (404) and methods (405) with JSON
// errors instead of the mux's plain text, which ms-enclave's client cannot parse.
func (a *API) route(w http.ResponseWriter, r *http.Request) {
	h, pattern := a.mux.Handler(r)
	if sw, ok := w.(*statusWriter); ok {
		sw.route = pattern
	}
	if pattern != "" {
		a.mux.ServeHTTP(w, r)
		return
	}
	if allow, ok := httpjson.MethodNotAllowed(h, r); ok {
		w.Header().Set("Allow", allow)
		a.fail(w, r, http.StatusMethodNotAllowed, client.CodeMethodNotAllowed,
			fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
		return
	}
	a.fail(w, r, http.StatusNotFound, client.CodeNotFound,
		fmt.Sprintf("no endpoint %s %s; GET /openapi.json lists them", r.Method, r.URL.Path))
}

// durationParam reads a query parameter in seconds (fractions allowed) as a duration.
func durationParam(r *http.Request, name string) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	secs, err := strconv.ParseFloat(v, 64)
	if err != nil || !(secs > 0 && secs <= 24*3600) { // written so that NaN fails too
		return 0, fmt.Errorf("%w: query parameter %s=%q must be a positive number of seconds", client.ErrBadRequest, name, v)
	}
	return time.Duration(secs * float64(time.Second)), nil
}
