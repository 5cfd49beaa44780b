package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// health needs no token. An unhealthy server answers 503 with the same body (and a detail),
// so that load balancers and people read the same answer.
func (a *API) health(w http.ResponseWriter, r *http.Request) {
	h, err := a.core.Health(r.Context())
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	status := http.StatusOK
	if !h.Healthy {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}

// statsBody is ms-enclave's stats (the caller's sandboxes) with the server's warm pools
// beside them: server-wide numbers, which name no sandbox and no owner.
type statsBody struct {
	client.Stats
	WarmPools []sandbox.WarmStats `json:"warm_pools"`
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	st, err := a.local(r).Stats(r.Context())
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	body := statsBody{Stats: st, WarmPools: a.core.Manager().Stats().Warm}
	if body.WarmPools == nil {
		body.WarmPools = []sandbox.WarmStats{}
	}
	writeJSON(w, http.StatusOK, body)
}

// create takes ms-enclave's config body. Fields it leaves out (and empty maps, which its
// client sends for every unset map) take the operator's defaults; the operator's policy then
// applies: refused fields are 403 naming the field, lowered limits and a refused network
// are notes in the sandbox's metadata.
func (a *API) create(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.decodeConfig(w, r)
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	if cfg == nil {
		cfg = &sandbox.Config{}
	}
	typ := sandbox.Type(r.URL.Query().Get("sandbox_type"))
	id, err := a.local(r).Create(r.Context(), typ, *cfg)
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"sandbox_id": id})
}

// statuses are the values GET /sandboxes?status= takes.
func statuses() []sandbox.Status {
	return []sandbox.Status{sandbox.StatusInitializing, sandbox.StatusRunning, sandbox.StatusIdle, sandbox.StatusBusy,
		sandbox.StatusStopping, sandbox.StatusStopped, sandbox.StatusError}
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	status := sandbox.Status(r.URL.Query().Get("status"))
	if status != "" && !slices.Contains(statuses(), status) {
		a.failErr(w, r, fmt.Errorf("%w: status %q is not one of %v", client.ErrBadRequest, status, statuses()))
		return
	}
	infos, err := a.local(r).List(r.Context(), status)
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, infos)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	info, err := a.local(r).Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (a *API) stop(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.local(r).Stop(r.Context(), id); err != nil {
		a.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "sandbox " + id + " stopped"})
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.local(r).Delete(r.Context(), id); err != nil {
		a.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "sandbox " + id + " deleted"})
}

func (a *API) tools(w http.ResponseWriter, r *http.Request) {
	list, err := a.local(r).Tools(r.Context(), r.PathValue("id"))
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// executeRequest is ms-enclave's ToolExecutionRequest.
type executeRequest struct {
	SandboxID  string          `json:"sandbox_id"`
	ToolName   string          `json:"tool_name"`
	Parameters json.RawMessage `json:"parameters"`
	// Timeout is null from ms-enclave's client (the real one is inside parameters); when a
	// caller sets it, it is the tool's timeout unless parameters carry their own.
	Timeout *float64 `json:"timeout"`
}

func (a *API) execute(w http.ResponseWriter, r *http.Request) {
	var req executeRequest
	ok, err := a.decodeBody(w, r, &req)
	switch {
	case err != nil:
		a.failErr(w, r, err)
		return
	case !ok || req.SandboxID == "" || req.ToolName == "":
		a.failErr(w, r, fmt.Errorf("%w: the body needs sandbox_id and tool_name (and parameters)", client.ErrBadRequest))
		return
	}
	params := a.withCallTimeout(req.ToolName, req.Parameters, req.Timeout)
	start := time.Now()
	res, err := a.local(r).ExecuteTool(r.Context(), req.SandboxID, req.ToolName, params)
	if err != nil {
		a.failErr(w, r, err)
		return
	}
	a.metrics.ObserveTool(req.ToolName, res, time.Since(start))
	writeJSON(w, http.StatusOK, res)
}

// withCallTimeout puts the request's top-level timeout into the tool's parameters when the
// tool takes one and the parameters name none; anything else is passed on unchanged (a
// malformed parameters object is the tool's to report).
func (a *API) withCallTimeout(tool string, params json.RawMessage, timeout *float64) json.RawMessage {
	if timeout == nil || *timeout <= 0 || !a.timeoutTools[tool] {
		return params
	}
	fields := map[string]json.RawMessage{}
	if len(params) > 0 && string(params) != "null" {
		if err := json.Unmarshal(params, &fields); err != nil {
			return params
		}
	}
	if _, ok := fields["timeout"]; ok {
		return params
	}
	fields["timeout"], _ = json.Marshal(*timeout)
	out, err := json.Marshal(fields)
	if err != nil {
		return params
	}
	return out
}
