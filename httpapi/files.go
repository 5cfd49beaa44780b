package httpapi

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// archive extracts a tar body under target_dir through the sandbox's agent. The body's size
// is bounded by session.Limits.MaxArchiveBytes inside the session core, which reads it all and checks
// every entry before writing any.
func (a *API) archive(w http.ResponseWriter, r *http.Request) {
	err := a.local(r).PutArchive(r.Context(), r.PathValue("id"), r.URL.Query().Get("target_dir"), r.Body)
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// download sends a file's bytes, or a directory as a tar of its contents.
func (a *API) download(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if p == "" {
		a.failErr(w, r, fmt.Errorf("%w: query parameter path is required", client.ErrBadRequest))
		return
	}
	d, err := a.local(r).Download(r.Context(), r.PathValue("id"), p)
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	defer d.Close()
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	name := d.Name
	if d.Dir {
		h.Set("Content-Type", "application/x-tar")
		name += ".tar"
	} else {
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatInt(d.Size, 10))
	}
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, d); err != nil && !errors.Is(err, r.Context().Err()) {
		// The status is sent: the only way left to tell the client the tar is incomplete is
		// to break the response, so it never mistakes a truncated stream for a whole one.
		a.log.Error("download failed half-way", "request_id", requestIDFrom(r.Context()), "path", p, "error", err)
		panic(http.ErrAbortHandler)
	}
}

// poolInitialize grows the principal's pool. The body (a config) is optional.
func (a *API) poolInitialize(w http.ResponseWriter, r *http.Request) {
	size := 1
	if v := r.URL.Query().Get("pool_size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			a.failErr(w, r, fmt.Errorf("%w: pool_size=%q must be a whole number", client.ErrBadRequest, v))
			return
		}
		size = n
	}
	cfg, err := a.decodeConfig(w, r)
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	typ := sandbox.Type(r.URL.Query().Get("sandbox_type"))
	ids, err := a.local(r).InitializePool(r.Context(), size, typ, cfg)
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.PoolInit{
		Message:    fmt.Sprintf("Pool initialized with %d sandboxes", len(ids)),
		PoolSize:   len(ids),
		SandboxIDs: ids,
	})
}

// poolExecute runs a tool in a free pooled sandbox. Its body is the bare tool parameters;
// the query's timeout (seconds, fractions allowed) bounds the wait for a free sandbox.
func (a *API) poolExecute(w http.ResponseWriter, r *http.Request) {
	tool := r.URL.Query().Get("tool_name")
	if tool == "" {
		a.failErr(w, r, fmt.Errorf("%w: query parameter tool_name is required", client.ErrBadRequest))
		return
	}
	wait, err := durationParam(r, "timeout")
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	params, err := a.readBody(w, r)
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	if params != nil && params[0] != '{' {
		a.failErr(w, r, fmt.Errorf("%w: the body must be the tool's parameters as a JSON object", client.ErrBadRequest))
		return
	}
	start := time.Now()
	res, err := a.local(r).ExecuteInPool(r.Context(), tool, params, wait)
	if errors.Is(err, sandbox.ErrPoolTimeout) {
		a.metrics.observePoolTimeout()
	}
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	a.metrics.ObserveTool(tool, res, time.Since(start))
	writeJSON(w, http.StatusOK, res)
}
