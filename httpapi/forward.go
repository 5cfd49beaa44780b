package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
)

// Replicas. Several servers may share a cluster and nothing else (the Kubernetes backend):
// a sandbox's agent stream is held by the replica that created it, for the sandbox's whole
// life. A REST or stateless-MCP request may reach any replica; one that names a sandbox this
// replica does not hold is forwarded, once, to the replica that does, which Peers finds from
// the sandbox's own record on the cluster. That replica checks the token and the owner as
// for any request. Session-bearing MCP clients are never forwarded: their session lives on
// one replica, and they must stay on it.

// Peers locates the replica that holds a sandbox (kube.Kube).
type Peers interface {
	// Locate returns the base URL of the other replica that holds sandbox id for owner, or
	// "" when none does (no such sandbox, another owner's, or this replica's own).
	Locate(ctx context.Context, id, owner string) (string, error)
	// Unreachable says that the replica Locate named for id did not answer.
	Unreachable(id string)
}

// ForwardedHeader marks a request a replica forwarded, with the forwarding replica's
// instance. A request that carries it is served where it arrives, never forwarded again.
const ForwardedHeader = "Enclave-Forwarded-By"

// forwardDialTimeout bounds connecting to another replica; the call itself may last as long
// as the tool's timeout, and is not bounded here.
const forwardDialTimeout = 5 * time.Second

type forwardTarget struct{}

// Forward wraps next (the server's handler: REST, MCP and the rest) so that a REST request
// naming a sandbox, or a stateless MCP tools/call naming a sandbox handle, that this
// replica does not hold goes to the replica that does. self names this replica in
// ForwardedHeader. Everything else, and everything when peers is nil, goes to next.
func (a *API) Forward(next http.Handler, peers Peers, self string) http.Handler {
	if peers == nil {
		return next
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DialContext = (&net.Dialer{Timeout: forwardDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	transport.Proxy = nil // replicas reach each other directly, never through HTTP_PROXY
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(pr.In.Context().Value(forwardTarget{}).(*url.URL))
			pr.SetXForwarded()
			pr.Out.Header.Set(ForwardedHeader, self)
		},
		Transport: transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			id := r.Context().Value(forwardID{}).(string)
			peers.Unreachable(id)
			a.fail(w, r, http.StatusBadGateway, client.CodeEngine, fmt.Sprintf(
				"sandbox %q is held by another server replica, which did not answer (%v); a replica's sandboxes end with it, so create a new one if this persists", id, err))
		},
	}
	forward := a.RequireAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := a.sandboxNamed(r)
		if id == "" {
			next.ServeHTTP(w, r)
			return
		}
		if _, err := a.core.Manager().Get(id); err == nil {
			next.ServeHTTP(w, r)
			return
		}
		target, err := peers.Locate(r.Context(), id, ownerFrom(r.Context()))
		if err != nil {
			a.fail(w, r, http.StatusBadGateway, client.CodeEngine, fmt.Sprintf("looking up sandbox %q on the cluster: %v", id, err))
			return
		}
		if target == "" {
			next.ServeHTTP(w, r) // answered here: not found, as for any unknown id
			return
		}
		u, err := url.Parse(target)
		if err != nil {
			a.fail(w, r, http.StatusBadGateway, client.CodeEngine, fmt.Sprintf("sandbox %q names its replica by a bad URL: %v", id, err))
			return
		}
		a.log.Debug("forwarding to the replica that holds the sandbox", "sandbox", id, "replica", u.Host, "request_id", requestIDFrom(r.Context()))
		ctx := context.WithValue(context.WithValue(r.Context(), forwardTarget{}, u), forwardID{}, id)
		proxy.ServeHTTP(w, r.WithContext(ctx))
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(ForwardedHeader) != "" || !forwardable(r) {
			next.ServeHTTP(w, r)
			return
		}
		forward.ServeHTTP(w, r)
	})
}

type forwardID struct{}

// forwardable says whether r may name a sandbox another replica holds: the REST routes
// under /sandbox/ (but create), and stateless MCP posts (no Mcp-Session-Id).
func forwardable(r *http.Request) bool {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/sandbox/"); ok {
		return rest != "create"
	}
	return r.URL.Path == "/mcp" && r.Method == http.MethodPost && r.Header.Get("Mcp-Session-Id") == ""
}

// sandboxNamed is the sandbox a forwardable request names, or "": the path's {id}, the
// sandbox_id of POST /sandbox/tool/execute, or the handle argument of an MCP tools/call.
// A body it reads is put back for the handler that serves the request.
func (a *API) sandboxNamed(r *http.Request) string {
	if r.URL.Path == "/mcp" {
		var msg struct {
			Method string `json:"method"`
			Params struct {
				Arguments map[string]json.RawMessage `json:"arguments"`
			} `json:"params"`
		}
		if !a.peekJSON(r, &msg) || msg.Method != "tools/call" {
			return ""
		}
		var id string
		_ = json.Unmarshal(msg.Params.Arguments["sandbox"], &id)
		return id
	}
	rest := strings.TrimPrefix(r.URL.Path, "/sandbox/")
	if rest == "tool/execute" {
		var req struct {
			SandboxID string `json:"sandbox_id"`
		}
		if !a.peekJSON(r, &req) {
			return ""
		}
		return req.SandboxID
	}
	id, _, _ := strings.Cut(rest, "/")
	if id, err := url.PathUnescape(id); err == nil {
		return id
	}
	return ""
}

// peekJSON decodes r's body into v without consuming it: up to the API's JSON limit, after
// which the body is left to the handler (which refuses it).
func (a *API) peekJSON(r *http.Request, v any) bool {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength > a.cfg.MaxJSONBytes {
		return false
	}
	head, err := io.ReadAll(io.LimitReader(r.Body, a.cfg.MaxJSONBytes+1))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
	if err != nil || int64(len(head)) > a.cfg.MaxJSONBytes {
		return false
	}
	return json.Unmarshal(head, v) == nil
}
