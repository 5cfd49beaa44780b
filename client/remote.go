package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
)

// RemoteConfig configures a Remote.
type RemoteConfig struct {
	// BaseURL is the server's address, e.g. http://127.0.0.1:8000.
	BaseURL string
	// Token is sent as "Authorization: Bearer <token>".
	Token string
	// HTTPClient sends the requests; nil means a client without an overall timeout, since
	// tool calls may legitimately run for an hour. Bound calls with their contexts.
	HTTPClient *http.Client
}

// Remote is a Manager over the REST API of an enclave-mcp server.
type Remote struct {
	base  *url.URL
	token string
	hc    *http.Client
}

var _ api.Manager = (*Remote)(nil)

// NewRemote returns a Remote for the server at cfg.BaseURL.
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	u, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client.NewRemote: base URL %q: want http(s)://host:port", cfg.BaseURL)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	return &Remote{base: u, token: cfg.Token, hc: hc}, nil
}

// request is one call of the API.
type request struct {
	method, path string
	query        url.Values
	body         io.Reader
	contentType  string
	// ok lists statuses besides 200 whose bodies are answers, not errors.
	ok []int
}

// do sends req and returns the response of a success, or an *APIError.
func (r *Remote) do(ctx context.Context, req request) (*http.Response, error) {
	u := *r.base
	u.Path += req.path
	u.RawQuery = req.query.Encode()
	hreq, err := http.NewRequestWithContext(ctx, req.method, u.String(), req.body)
	if err != nil {
		return nil, fmt.Errorf("building request %s %s: %w", req.method, req.path, err)
	}
	if r.token != "" {
		hreq.Header.Set("Authorization", "Bearer "+r.token)
	}
	if req.contentType != "" {
		hreq.Header.Set("Content-Type", req.contentType)
	}
	hreq.Header.Set("Accept", "application/json")
	resp, err := r.hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.method, req.path, err)
	}
	if resp.StatusCode == http.StatusOK || contains(req.ok, resp.StatusCode) {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp)
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// decodeError reads an error answer: {"detail": ..., "code": ...}; a body that is not
// such JSON (a proxy's page) is kept as text.
func decodeError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &APIError{StatusCode: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	var wire struct {
		Detail json.RawMessage `json:"detail"`
		Code   Code            `json:"code"`
	}
	if json.Unmarshal(body, &wire) == nil && len(wire.Detail) > 0 {
		e.Code = wire.Code
		if json.Unmarshal(wire.Detail, &e.Detail) != nil {
			e.Detail = string(wire.Detail) // FastAPI sends a list for validation errors
		}
	} else {
		e.Detail = strings.TrimSpace(string(body))
	}
	return e
}

// call sends req and decodes a JSON answer into out (when not nil).
func (r *Remote) call(ctx context.Context, req request, out any) error {
	resp, err := r.do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", req.method, req.path, err)
	}
	return nil
}

func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding the request: %w", ErrBadRequest, err)
	}
	return bytes.NewReader(b), nil
}

func sandboxPath(id string, rest ...string) string {
	return "/sandbox/" + url.PathEscape(id) + strings.Join(rest, "")
}

// Health implements Manager. An unhealthy server answers 503 with the same body; that is a
// Health with Healthy false, not an error.
func (r *Remote) Health(ctx context.Context) (Health, error) {
	var h Health
	err := r.call(ctx, request{method: http.MethodGet, path: "/health", ok: []int{http.StatusServiceUnavailable}}, &h)
	return h, err
}

// Stats implements Manager.
func (r *Remote) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := r.call(ctx, request{method: http.MethodGet, path: "/stats"}, &st)
	return st, err
}

// Create implements Manager.
func (r *Remote) Create(ctx context.Context, typ Type, cfg Config) (string, error) {
	if typ == "" {
		typ = TypeDocker
	}
	body, err := jsonBody(cfg)
	if err != nil {
		return "", err
	}
	var out struct {
		SandboxID string `json:"sandbox_id"`
	}
	err = r.call(ctx, request{method: http.MethodPost, path: "/sandbox/create", query: url.Values{"sandbox_type": {string(typ)}},
		body: body, contentType: "application/json"}, &out)
	return out.SandboxID, err
}

// Get implements Manager.
func (r *Remote) Get(ctx context.Context, id string) (Info, error) {
	var info Info
	err := r.call(ctx, request{method: http.MethodGet, path: sandboxPath(id)}, &info)
	return info, err
}

// List implements Manager.
func (r *Remote) List(ctx context.Context, status Status) ([]Info, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", string(status))
	}
	var out []Info
	err := r.call(ctx, request{method: http.MethodGet, path: "/sandboxes", query: q}, &out)
	return out, err
}

// Stop implements Manager.
func (r *Remote) Stop(ctx context.Context, id string) error {
	return r.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/stop")}, nil)
}

// Delete implements Manager.
func (r *Remote) Delete(ctx context.Context, id string) error {
	return r.call(ctx, request{method: http.MethodDelete, path: sandboxPath(id)}, nil)
}

// ExecuteTool implements Manager.
func (r *Remote) ExecuteTool(ctx context.Context, id, tool string, params any) (Result, error) {
	raw, err := api.EncodeParams(params)
	if err != nil {
		return Result{}, err
	}
	body, err := jsonBody(map[string]any{"sandbox_id": id, "tool_name": tool, "parameters": raw, "timeout": nil})
	if err != nil {
		return Result{}, err
	}
	var res Result
	err = r.call(ctx, request{method: http.MethodPost, path: "/sandbox/tool/execute", body: body, contentType: "application/json"}, &res)
	return res, err
}

// Tools implements Manager.
func (r *Remote) Tools(ctx context.Context, id string) (map[string]json.RawMessage, error) {
	var out map[string]json.RawMessage
	err := r.call(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/tools")}, &out)
	return out, err
}

// PutArchive implements Manager.
func (r *Remote) PutArchive(ctx context.Context, id, targetDir string, tarball io.Reader) error {
	q := url.Values{}
	if targetDir != "" {
		q.Set("target_dir", targetDir)
	}
	var out struct {
		OK bool `json:"ok"`
	}
	err := r.call(ctx, request{method: http.MethodPost, path: sandboxPath(id, "/archive"), query: q,
		body: tarball, contentType: "application/x-tar"}, &out)
	if err == nil && !out.OK {
		err = errors.New("the server did not confirm the upload")
	}
	return err
}

// PutDir implements Manager.
func (r *Remote) PutDir(ctx context.Context, id, hostDir, targetDir string) error {
	return api.PutDir(ctx, r, id, hostDir, targetDir)
}

// Download implements Manager.
func (r *Remote) Download(ctx context.Context, id, p string) (*Download, error) {
	resp, err := r.do(ctx, request{method: http.MethodGet, path: sandboxPath(id, "/files"), query: url.Values{"path": {p}}})
	if err != nil {
		return nil, err
	}
	d := &Download{ReadCloser: resp.Body, Size: resp.ContentLength}
	if ct, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil {
		d.Dir = ct == "application/x-tar"
	}
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
		d.Name = strings.TrimSuffix(params["filename"], ".tar")
	}
	return d, nil
}

// InitializePool implements Manager.
func (r *Remote) InitializePool(ctx context.Context, size int, typ Type, cfg *Config) ([]string, error) {
	if typ == "" {
		typ = TypeDocker
	}
	req := request{method: http.MethodPost, path: "/pool/initialize",
		query: url.Values{"pool_size": {strconv.Itoa(size)}, "sandbox_type": {string(typ)}}}
	if cfg != nil {
		body, err := jsonBody(cfg)
		if err != nil {
			return nil, err
		}
		req.body, req.contentType = body, "application/json"
	}
	var out PoolInit
	err := r.call(ctx, req, &out)
	return out.SandboxIDs, err
}

// ExecuteInPool implements Manager.
func (r *Remote) ExecuteInPool(ctx context.Context, tool string, params any, wait time.Duration) (Result, error) {
	raw, err := api.EncodeParams(params)
	if err != nil {
		return Result{}, err
	}
	q := url.Values{"tool_name": {tool}}
	if wait > 0 {
		q.Set("timeout", strconv.FormatFloat(wait.Seconds(), 'f', -1, 64))
	}
	var res Result
	err = r.call(ctx, request{method: http.MethodPost, path: "/pool/execute", query: q,
		body: bytes.NewReader(raw), contentType: "application/json"}, &res)
	return res, err
}

// ExportTools fetches every tool's schema in format ("openai", "openai-strict" or "mcp";
// "" means openai): the list goes as is into a chat completion request's "tools". It is not
// part of Manager: a Local program gets the same from package schema directly.
func (r *Remote) ExportTools(ctx context.Context, format string) ([]json.RawMessage, error) {
	q := url.Values{}
	if format != "" {
		q.Set("format", format)
	}
	var out struct {
		Tools []json.RawMessage `json:"tools"`
	}
	err := r.call(ctx, request{method: http.MethodGet, path: "/v1/tools", query: q}, &out)
	return out.Tools, err
}
