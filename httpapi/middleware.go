package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/internal/httpjson"
)

// Request-scoped values: the request id (for logs and the X-Request-Id header) and the
// owner the token authenticated. Both are facts about the request, not dependencies.
type (
	requestIDKey struct{}
	ownerKey     struct{}
)

// credential is one accepted token, kept only as its SHA-256, and the owner it acts for.
type credential struct {
	sum   [32]byte
	owner string
}

// Credential is one more accepted token and the name of the principal it stands for.
type Credential struct {
	Name  string
	Token string
}

// TokenOwner is the owner a named token's requests act as: its name in a namespace of its
// own ("token:NAME"), so that no token's principal can be the operator token's (RESTOwner)
// or an MCP session's.
func TokenOwner(name string) string { return "token:" + name }

var credentialNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// credentials are the accepted tokens: token (for RESTOwner, when set) and the named ones.
// Names and tokens must be unique; at least one token is required, since an open sandbox
// API is remote code execution for anyone who can reach it.
func credentials(token string, named []Credential) ([]credential, error) {
	var creds []credential
	if token != "" {
		creds = append(creds, credential{sum: sha256.Sum256([]byte(token)), owner: RESTOwner})
	}
	names := map[string]bool{}
	for i, c := range named {
		if !credentialNameRE.MatchString(c.Name) {
			return nil, fmt.Errorf("httpapi.New: token %d: name %q: want 1-64 letters, digits, '.', '_' or '-'", i+1, c.Name)
		}
		if c.Token == "" {
			return nil, fmt.Errorf("httpapi.New: token %q is empty", c.Name)
		}
		if names[c.Name] {
			return nil, fmt.Errorf("httpapi.New: two tokens are named %q", c.Name)
		}
		names[c.Name] = true
		sum := sha256.Sum256([]byte(c.Token))
		for _, other := range creds {
			if other.sum == sum {
				return nil, fmt.Errorf("httpapi.New: token %q is the same as another token: each principal needs its own", c.Name)
			}
		}
		creds = append(creds, credential{sum: sum, owner: TokenOwner(c.Name)})
	}
	if len(creds) == 0 {
		return nil, errors.New("httpapi.New: a token is required (the REST API is never served open)")
	}
	return creds, nil
}

// CheckCredentials checks a server's tokens the way New does, so a command line can refuse
// them before any other work.
func CheckCredentials(token string, tokens []Credential) error {
	_, err := credentials(token, tokens)
	return err
}

// RequireAuth guards another face (MCP, the session API) with the API's tokens, as
// RequireToken does with one: a request without one of them gets 401; one with it acts for
// the token's principal (PrincipalOf).
func (a *API) RequireAuth(next http.Handler) http.Handler {
	return authenticate(a.creds, next, next)
}

// publicEndpoint reports whether r may be served without a token: only GET /health, so
// that load balancers and ms-enclave's client can probe liveness.
func publicEndpoint(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Path == "/health"
}

// RequireToken wraps next so that every request but GET /health must carry token, as
// "Authorization: Bearer <token>" or (for ms-enclave's client) "X-API-Key: <token>". A query
// string is never read: URLs end up in logs and browser histories. Anything else gets 401
// {"detail":"Unauthorized"}. An empty token accepts nothing. Use it to guard the MCP
// endpoints with the same check as the REST API; PrincipalOf names who a request that
// passed acts for.
func RequireToken(token string, next http.Handler) http.Handler {
	var creds []credential
	if token != "" {
		creds = []credential{{sum: sha256.Sum256([]byte(token)), owner: RESTOwner}}
	}
	return authenticate(creds, next, next)
}

// requireAuth guards the API: the token on every route but GET /health, which answers
// callers without the token only whether the server is healthy; and, past the token, each
// route's body limit.
func (a *API) requireAuth(next http.Handler) http.Handler {
	return authenticate(a.creds, a.limitBody(next), http.HandlerFunc(a.publicHealth))
}

// authenticate serves next to requests that present one of creds, with the owner it stands
// for in the context; public serves GET /health to those that do not; the rest get 401.
func authenticate(creds []credential, next, public http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		owner, ok := match(creds, r)
		if ok {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ownerKey{}, owner)))
			return
		}
		if publicEndpoint(r) {
			public.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="enclave-mcp"`)
		if r.ContentLength != 0 {
			// Close rather than drain an unauthenticated body.
			w.Header().Set("Connection", "close")
		}
		writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": "Unauthorized"})
	})
}

// publicHealthBody is GET /health for callers without the token: whether the server is
// healthy, and nothing else. The engine's error (which may carry DOCKER_HOST, a socket path
// or an address), the version and the host's details are for token holders only; "healthy"
// is kept beside "status" for clients that read ms-enclave's field (client.Remote does).
type publicHealthBody struct {
	Status  string `json:"status"` // "ok" or "unhealthy"
	Healthy bool   `json:"healthy"`
}

// publicHealth answers GET /health without the token: 200 {"status":"ok"} or 503
// {"status":"unhealthy"}.
func (a *API) publicHealth(w http.ResponseWriter, r *http.Request) {
	h, err := a.core.Health(r.Context())
	body, status := publicHealthBody{Status: "ok", Healthy: true}, http.StatusOK
	if err != nil || !h.Healthy {
		body, status = publicHealthBody{Status: "unhealthy"}, http.StatusServiceUnavailable
	}
	writeJSON(w, status, body)
}

// PrincipalOf names who r acts for once a guard (RequireToken, or the API's own) let it
// through: the owner its token stands for; "" for a request that presented no token.
func PrincipalOf(r *http.Request) string { return ownerFrom(r.Context()) }

// limitBody caps each route's request body: a tar upload at the archive limit, anything
// else at MaxJSONBytes. A declared length over the limit is answered 413 before a byte of the
// body is read; a body without one (chunked) is cut by the reader, one byte past the limit
// so that the handlers' own checks, which name what was too large, answer first.
func (a *API) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit, what := a.cfg.MaxJSONBytes, "request body"
		if a.isUpload(r) {
			limit, what = a.archiveLimit(), "archive"
		}
		if r.ContentLength > limit {
			w.Header().Set("Connection", "close") // do not drain the rest of the body
			a.fail(w, r, http.StatusRequestEntityTooLarge, client.CodeTooLarge,
				fmt.Sprintf("the %s is %d bytes, larger than the %d-byte limit of %s %s", what, r.ContentLength, limit, r.Method, r.URL.Path))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, limit+1)
		}
		next.ServeHTTP(w, r)
	})
}

// isUpload reports whether r goes to a route whose body is a tar stream.
func (a *API) isUpload(r *http.Request) bool {
	_, pattern := a.mux.Handler(r)
	for _, rt := range a.routes {
		if rt.pattern == pattern {
			return rt.body == tarBody
		}
	}
	return false
}

// archiveLimit is the upload limit the session core applies to a tar stream.
func (a *API) archiveLimit() int64 { return a.core.Limits().MaxArchiveBytes }

// match finds the credential r presents. Tokens are compared as SHA-256 sums in constant
// time, and every credential is compared, so timing tells neither a token's length nor which
// one nearly matched.
func match(creds []credential, r *http.Request) (string, bool) {
	token, ok := presentedToken(r)
	if !ok {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	owner, found := "", false
	for _, c := range creds {
		if subtle.ConstantTimeCompare(sum[:], c.sum[:]) == 1 {
			owner, found = c.owner, true
		}
	}
	return owner, found
}

// presentedToken reads the token from the Authorization header (scheme Bearer, any case) or
// from X-API-Key.
func presentedToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
		token = strings.TrimSpace(token)
		return token, ok && strings.EqualFold(scheme, "Bearer") && token != ""
	}
	token := strings.TrimSpace(r.Header.Get("X-API-Key"))
	return token, token != ""
}

// ownerFrom is the owner the request authenticated as; "" (which owns nothing) otherwise.
func ownerFrom(ctx context.Context) string {
	owner, _ := ctx.Value(ownerKey{}).(string)
	return owner
}

// withRequestID echoes a sane X-Request-Id, or mints one, on the response and in the context.
func (a *API) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// validRequestID accepts ids that are safe to log and echo: up to 128 characters of letters,
// digits and - _ . :
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.:", c)
		if !ok {
			return false
		}
	}
	return true
}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// withAccessLog logs every request (its path, never its query: ms-enclave's clients may
// put an api_key there) and counts it by route and status.
func (a *API) withAccessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{StatusWriter: httpjson.StatusWriter{ResponseWriter: w}}
		next.ServeHTTP(sw, r)
		if sw.Code == 0 {
			sw.Code = http.StatusOK
		}
		route := sw.route
		if route == "" {
			route = "unmatched"
		}
		a.metrics.observeRequest(route, sw.Code)
		level := slog.LevelInfo
		if r.URL.Path == "/health" || r.URL.Path == "/metrics" {
			level = slog.LevelDebug // probes and scrapes would drown the log
		}
		a.log.Log(r.Context(), level, "http request", "request_id", requestIDFrom(r.Context()),
			"method", r.Method, "path", r.URL.Path, "status", sw.Code, "took", time.Since(start).Round(time.Microsecond))
	})
}

// statusWriter records the status a handler wrote and the route it matched.
type statusWriter struct {
	httpjson.StatusWriter
	route string // the matched pattern, set by API.route: the mux sets it on a copy of the request
}

// withRecovery turns a handler's panic into a 500 JSON error; http.ErrAbortHandler (a
// download that failed half-way, whose client must see a broken response) passes through.
func (a *API) withRecovery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			a.log.Error("handler panicked", "request_id", requestIDFrom(r.Context()), "path", r.URL.Path, "panic", v)
			a.fail(w, r, http.StatusInternalServerError, client.CodeInternal, "internal error")
		}()
		next.ServeHTTP(w, r)
	})
}

// PerimeterConfig is what the outermost layer of the HTTP server checks before any handler
// runs: where a request comes from (Origin) and which name it was sent to (Host).
type PerimeterConfig struct {
	// AllowedOrigins are the browser origins ("https://app.example.com", scheme, host and
	// port) whose requests are served, with CORS headers; "*" allows every origin. A request
	// carrying any other Origin header is refused 403: browsers send one on every
	// cross-origin request, and the MCP specification requires servers to check it.
	AllowedOrigins []string
	// AllowedHosts are the host names (without port) requests may be addressed to, besides
	// localhost and loopback addresses on a loopback connection. On a loopback connection any
	// other Host is refused 403 (DNS rebinding: a page whose name resolves to 127.0.0.1). On
	// other connections the Host is checked only when this list is not empty.
	AllowedHosts []string
	Logger       *slog.Logger
}

// Perimeter checks every request's Origin and Host; see PerimeterConfig.
type Perimeter struct {
	origins   map[string]bool
	anyOrigin bool
	hosts     map[string]bool
	log       *slog.Logger
}

// NewPerimeter checks cfg: an origin must be scheme://host[:port] with scheme http or https,
// a host a bare name or address.
func NewPerimeter(cfg PerimeterConfig) (*Perimeter, error) {
	p := &Perimeter{origins: map[string]bool{}, hosts: map[string]bool{}, log: cfg.Logger}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			p.anyOrigin = true
			continue
		}
		norm, ok := normalOrigin(o)
		if !ok {
			return nil, fmt.Errorf("allowed origin %q: want scheme://host[:port] with scheme http or https and no path, e.g. https://app.example.com, or *", o)
		}
		p.origins[norm] = true
	}
	for _, h := range cfg.AllowedHosts {
		norm := normalHost(h)
		if norm == "" || strings.ContainsAny(norm, "/@ ") || strings.Contains(h, "://") {
			return nil, fmt.Errorf("allowed host %q: want a host name or address without scheme or path, e.g. enclave.example.com", h)
		}
		p.hosts[norm] = true
	}
	return p, nil
}

// corsHeaders are the request headers a browser client of the API or of MCP may send.
const corsHeaders = "Authorization, Content-Type, X-API-Key, X-Request-Id, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID"

// Wrap puts the perimeter in front of next.
func (p *Perimeter) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if detail := p.refusal(r); detail != "" {
			p.log.Debug("http request refused at the perimeter", "path", r.URL.Path, "detail", detail)
			if r.ContentLength != 0 {
				w.Header().Set("Connection", "close")
			}
			writeJSON(w, http.StatusForbidden, errorBody{Detail: detail, Code: client.CodePolicy})
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" {
			h := w.Header()
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", "Mcp-Session-Id, X-Request-Id, WWW-Authenticate")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
				h.Set("Access-Control-Allow-Headers", corsHeaders)
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// refusal says why r is refused, or "" when it may pass.
func (p *Perimeter) refusal(r *http.Request) string {
	host := normalHost(r.Host)
	loopbackConn := false
	if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && addr != nil {
		loopbackConn = isLoopbackName(normalHost(addr.String()))
	}
	switch {
	case p.hosts[host]:
	case loopbackConn && isLoopbackName(host):
	case loopbackConn:
		return fmt.Sprintf("Host %s is not accepted on this loopback listener (DNS rebinding protection): "+
			"use localhost, 127.0.0.1 or [::1], or start the server with --allowed-hosts %s", quoteCut(r.Host), quoteCut(host))
	case len(p.hosts) > 0:
		return fmt.Sprintf("Host %s is not one of the server's allowed hosts (--allowed-hosts)", quoteCut(r.Host))
	}
	if values, sent := r.Header["Origin"]; sent && !p.anyOrigin {
		origin, ok := "", false
		if len(values) == 1 {
			origin, ok = normalOrigin(values[0])
		}
		if !ok || !p.origins[origin] {
			return fmt.Sprintf("Origin %s is not allowed: requests from web pages are refused unless the server is "+
				"started with --allowed-origins naming their origin", quoteCut(strings.Join(values, ", ")))
		}
	}
	return ""
}

// normalHost is a Host header or address without its port, brackets, case or trailing dot.
func normalHost(hostport string) string {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// isLoopbackName reports whether a normalised host is localhost or a loopback address.
func isLoopbackName(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// normalOrigin is an origin as scheme://host[:port], lower case and without a default port;
// false when it is no http(s) origin (e.g. "null").
func normalOrigin(origin string) (string, bool) {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return strings.ToLower(u.Scheme) + "://" + host, true
}

// quoteCut quotes a client-chosen text for an error message, cut to a sane length.
func quoteCut(s string) string {
	const limit = 200
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "..."
	}
	return strconv.Quote(s)
}
