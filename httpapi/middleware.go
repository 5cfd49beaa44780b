package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
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

// publicEndpoint reports whether r may be served without a token: only GET /health, so
// that load balancers and ms-enclave's client can probe liveness.
func publicEndpoint(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Path == "/health"
}

// RequireToken wraps next so that every request but GET /health must carry token, as
// "Authorization: Bearer <token>" or (for ms-enclave's client) "X-API-Key: <token>". A query
// string is never read: URLs end up in logs and browser histories. Anything else gets 401
// {"detail":"Unauthorized"}. An empty token accepts nothing. Use it to guard the MCP
// endpoints with the same check as the REST API.
func RequireToken(token string, next http.Handler) http.Handler {
	var creds []credential
	if token != "" {
		creds = []credential{{sum: sha256.Sum256([]byte(token)), owner: RESTOwner}}
	}
	return authenticate(creds, next)
}

func (a *API) requireAuth(next http.Handler) http.Handler { return authenticate(a.creds, next) }

func authenticate(creds []credential, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if publicEndpoint(r) {
			next.ServeHTTP(w, r)
			return
		}
		owner, ok := match(creds, r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="enclave-mcp"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": "Unauthorized"})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ownerKey{}, owner)))
	})
}

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
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		route := sw.route
		if route == "" {
			route = "unmatched"
		}
		a.metrics.observeRequest(route, sw.code)
		level := slog.LevelInfo
		if r.URL.Path == "/health" || r.URL.Path == "/metrics" {
			level = slog.LevelDebug // probes and scrapes would drown the log
		}
		a.log.Log(r.Context(), level, "http request", "request_id", requestIDFrom(r.Context()),
			"method", r.Method, "path", r.URL.Path, "status", sw.code, "took", time.Since(start).Round(time.Microsecond))
	})
}

// statusWriter records the status a handler wrote. Unwrap lets http.ResponseController reach
// the connection's Flush for streamed downloads.
type statusWriter struct {
	http.ResponseWriter
	code  int
	route string // the matched pattern, set by API.route: the mux sets it on a copy of the request
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

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
