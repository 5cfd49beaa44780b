// Package runtimeapi serves sandbox_runtime's session API (its /workspace/se/* paths and
// JSON shapes) on enclave-mcp's session core: a client names a session, gives it a
// workspace size, puts files in it, runs commands from the operator's allow-list and code of
// the configured script types, reads its status and deletes it. Its one job is translating
// HTTP to session.Named and errors back to HTTP; every behaviour (names per principal,
// quotas, the allow-list, script types, idle expiry) lives in the core.
//
// It is mounted beside the ms-enclave REST API on the same listener, behind the same token
// check (see Mount); GET /workspace/se/healthy needs no token and tells only whether the
// server is healthy. Errors are {"detail": "...", "code": "..."} with the REST API's codes.
package runtimeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/internal/httpjson"
	"github.com/enclave-mcp/enclave-mcp/session"
)

// Prefix is where the API lives.
const Prefix = "/workspace/se/"

// Config is what the API needs; it knows nothing about flags or listeners.
type Config struct {
	// Sessions is the session core's named sessions.
	Sessions *session.Named
	// Principal names who an authenticated request acts for (httpapi.PrincipalOf); a
	// session belongs to the principal that created it.
	Principal func(*http.Request) string
	// Check, when set, is run by GET /workspace/se/healthy: e.g. a ping of the engine.
	Check func(ctx context.Context) error
	// MaxJSONBytes caps a JSON request body (default 8 MiB); MaxUploadBytes an uploaded
	// file (default 64 MiB). Larger is 413.
	MaxJSONBytes, MaxUploadBytes int64
	Logger                       *slog.Logger
}

// API is the session API.
type API struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
}

// New builds the API.
func New(cfg Config) (*API, error) {
	if cfg.Sessions == nil || cfg.Principal == nil {
		return nil, errors.New("runtimeapi.New: the named sessions and a principal function are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxJSONBytes <= 0 {
		cfg.MaxJSONBytes = 8 << 20
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = 64 << 20
	}
	a := &API{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	routes := map[string]http.HandlerFunc{
		"POST /workspace/se/session/{session_id}":               a.create,
		"DELETE /workspace/se/session/{session_id}":             a.delete,
		"POST /workspace/se/create/{session_id}":                a.createFile,
		"GET /workspace/se/files/{session_id}":                  a.files,
		"POST /workspace/se/upload/{session_id}":                a.upload,
		"GET /workspace/se/download/{session_id}/{filename...}": a.download,
		"POST /workspace/se/execute/{session_id}":               a.execute,
		"POST /workspace/se/execute_code/{session_id}":          a.executeCode,
		"GET /workspace/se/status/{session_id}":                 a.status,
		"POST /workspace/se/cleanup-all":                        a.cleanupAll,
	}
	for pattern, h := range routes {
		a.mux.HandleFunc(pattern, h)
	}
	return a, nil
}

// Mount serves the API on mux: GET /workspace/se/healthy as it is, every other path under
// /workspace/se/ behind guard (the token check, which records the principal).
func (a *API) Mount(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	mux.Handle("GET "+Prefix+"healthy", a.wrap(http.HandlerFunc(a.healthy)))
	mux.Handle(Prefix, guard(a.wrap(http.HandlerFunc(a.route))))
}

// wrap logs each request and turns a handler's panic into a 500.
func (a *API) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &httpjson.StatusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.log.Error("session API handler panicked", "path", r.URL.Path, "panic", v)
				a.fail(sw, http.StatusInternalServerError, api.CodeInternal, "internal error")
			}
			level := slog.LevelInfo
			if strings.HasSuffix(r.URL.Path, "/healthy") {
				level = slog.LevelDebug
			}
			a.log.Log(r.Context(), level, "http request", "method", r.Method, "path", r.URL.Path, "status", sw.Code,
				"took", time.Since(start).Round(time.Microsecond))
		}()
		next.ServeHTTP(sw, r)
	})
}

// route dispatches to the routes, answering unknown paths (404) and methods (405) in JSON.
func (a *API) route(w http.ResponseWriter, r *http.Request) {
	h, pattern := a.mux.Handler(r)
	if pattern != "" {
		a.mux.ServeHTTP(w, r)
		return
	}
	if allow, ok := httpjson.MethodNotAllowed(h, r); ok {
		w.Header().Set("Allow", allow)
		a.fail(w, http.StatusMethodNotAllowed, api.CodeMethodNotAllowed,
			fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
		return
	}
	a.fail(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no endpoint %s %s in the session API", r.Method, r.URL.Path))
}

// healthy answers whether the server is healthy, and nothing else: it needs no token.
func (a *API) healthy(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Check != nil {
		if err := a.cfg.Check(r.Context()); err != nil {
			a.log.Warn("health check failed", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unhealthy", "healthy": false})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "healthy", "healthy": true})
}

// owner is the principal r acts for; the guard refused requests without one.
func (a *API) owner(r *http.Request) string { return a.cfg.Principal(r) }

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Size json.RawMessage `json:"size"`
	}
	if err := a.decode(w, r, &body); err != nil {
		a.failErr(w, err)
		return
	}
	size, err := sizeText(body.Size)
	if err != nil {
		a.failErr(w, err)
		return
	}
	info, err := a.cfg.Sessions.Create(r.Context(), a.owner(r), r.PathValue("session_id"), size)
	a.answer(w, info, err)
}

// sizeText reads a create's size: a string ("50M") or a number of bytes.
func sizeText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		if _, err := n.Int64(); err == nil {
			return n.String(), nil
		}
	}
	return "", fmt.Errorf("%w: size must be a string such as \"50M\" or a whole number of bytes", api.ErrBadRequest)
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("session_id")
	err := a.cfg.Sessions.Delete(r.Context(), a.owner(r), id)
	a.answer(w, map[string]any{"session_id": id, "deleted": true}, err)
}

func (a *API) createFile(w http.ResponseWriter, r *http.Request) {
	var req api.CreateFileRequest
	if err := a.decode(w, r, &req); err != nil {
		a.failErr(w, err)
		return
	}
	f, err := a.cfg.Sessions.CreateFile(r.Context(), a.owner(r), r.PathValue("session_id"), req)
	a.answer(w, f, err)
}

func (a *API) files(w http.ResponseWriter, r *http.Request) {
	files, err := a.cfg.Sessions.Files(r.Context(), a.owner(r), r.PathValue("session_id"))
	a.answer(w, files, err)
}

func (a *API) download(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("filename")
	data, err := a.cfg.Sessions.Download(r.Context(), a.owner(r), r.PathValue("session_id"), name)
	if err != nil {
		a.failErr(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(name)}))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

func (a *API) execute(w http.ResponseWriter, r *http.Request) {
	var req api.ExecuteRequest
	if err := a.decode(w, r, &req); err != nil {
		a.failErr(w, err)
		return
	}
	res, err := a.cfg.Sessions.Execute(r.Context(), a.owner(r), r.PathValue("session_id"), req)
	a.answer(w, res, err)
}

func (a *API) executeCode(w http.ResponseWriter, r *http.Request) {
	var req api.ExecuteCodeRequest
	if err := a.decode(w, r, &req); err != nil {
		a.failErr(w, err)
		return
	}
	res, err := a.cfg.Sessions.ExecuteCode(r.Context(), a.owner(r), r.PathValue("session_id"), req)
	a.answer(w, res, err)
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	st, err := a.cfg.Sessions.Status(r.Context(), a.owner(r), r.PathValue("session_id"))
	a.answer(w, st, err)
}

// cleanupAll ends the caller's sessions; force (query or body) ends those running a
// command too.
func (a *API) cleanupAll(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Force bool `json:"force"`
	}
	if err := a.decode(w, r, &body); err != nil {
		a.failErr(w, err)
		return
	}
	force := body.Force
	if v := r.URL.Query().Get("force"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			a.failErr(w, fmt.Errorf("%w: force=%q: want true or false", api.ErrBadRequest, v))
			return
		}
		force = force || b
	}
	res, err := a.cfg.Sessions.CleanupAll(r.Context(), a.owner(r), force)
	a.answer(w, res, err)
}

// answer writes v, or err as an error.
func (a *API) answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		a.failErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// decode reads an optional JSON object body of at most MaxJSONBytes into v. Unknown
// fields are ignored: sandbox_runtime's clients send fields of their own.
func (a *API) decode(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > a.cfg.MaxJSONBytes {
		w.Header().Set("Connection", "close")
		return fmt.Errorf("%w: the request body is %d bytes, larger than the %d-byte limit", api.ErrTooLarge, r.ContentLength, a.cfg.MaxJSONBytes)
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxJSONBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return fmt.Errorf("%w: the request body is larger than the %d-byte limit", api.ErrTooLarge, a.cfg.MaxJSONBytes)
		}
		return fmt.Errorf("%w: reading the request body: %w", api.ErrBadRequest, err)
	}
	data = []byte(strings.TrimSpace(string(data)))
	if len(data) == 0 || string(data) == "null" {
		return nil
	}
	if data[0] != '{' {
		return fmt.Errorf("%w: the request body must be a JSON object", api.ErrBadRequest)
	}
	if err := json.Unmarshal(data, v); err != nil {
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
			return fmt.Errorf("%w: field %q must be %s, got a JSON %s", api.ErrBadRequest, te.Field, te.Type.Kind(), te.Value)
		}
		return fmt.Errorf("%w: malformed JSON: %w", api.ErrBadRequest, err)
	}
	return nil
}
