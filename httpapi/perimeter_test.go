package httpapi_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
)

// Issue 9, finding 6: the perimeter's rules, one request at a time, on loopback and other
// connections (cmd/enclave-mcp's TestHTTPOriginAndHostChecks runs them against the server).

func TestPerimeterRules(t *testing.T) {
	t.Parallel()
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000}
	public := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 8000}
	open, err := httpapi.NewPerimeter(httpapi.PerimeterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	listed, err := httpapi.NewPerimeter(httpapi.PerimeterConfig{
		AllowedOrigins: []string{"https://app.example.com", "http://localhost:5173"},
		AllowedHosts:   []string{"Enclave.Example.com."},
	})
	if err != nil {
		t.Fatal(err)
	}
	anyOrigin, err := httpapi.NewPerimeter(httpapi.PerimeterConfig{AllowedOrigins: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		p      *httpapi.Perimeter
		local  net.Addr
		host   string
		origin []string
		want   int
	}{
		{"loopback, localhost", open, loopback, "localhost:8000", nil, 200},
		{"loopback, 127.0.0.1", open, loopback, "127.0.0.1:8000", nil, 200},
		{"loopback, [::1]", open, loopback, "[::1]:8000", nil, 200},
		{"loopback, other 127/8", open, loopback, "127.1.2.3", nil, 200},
		{"loopback, rebinding name", open, loopback, "evil.example:8000", nil, 403},
		{"loopback, localhost-looking name", open, loopback, "localhost.evil.example", nil, 403},
		{"loopback, LAN address", open, loopback, "192.168.1.5:8000", nil, 403},
		{"loopback, listed host", listed, loopback, "enclave.example.com:8000", nil, 200},
		{"public, any host when none listed", open, public, "whatever.example", nil, 200},
		{"public, listed host", listed, public, "ENCLAVE.example.com", nil, 200},
		{"public, unlisted host when hosts are listed", listed, public, "other.example", nil, 403},
		{"no origin list, any origin refused", open, loopback, "localhost", []string{"http://localhost:8000"}, 403},
		{"listed origin", listed, loopback, "localhost", []string{"https://app.example.com"}, 200},
		{"listed origin, other case and default port", listed, loopback, "localhost", []string{"HTTPS://App.Example.Com:443"}, 200},
		{"listed origin, other port", listed, loopback, "localhost", []string{"https://app.example.com:8443"}, 403},
		{"listed origin, other scheme", listed, loopback, "localhost", []string{"http://app.example.com"}, 403},
		{"origin null", listed, loopback, "localhost", []string{"null"}, 403},
		{"empty origin header", listed, loopback, "localhost", []string{""}, 403},
		{"two origin headers", listed, loopback, "localhost", []string{"https://app.example.com", "https://evil.example"}, 403},
		{"star allows any origin", anyOrigin, loopback, "localhost", []string{"https://evil.example"}, 200},
		{"star does not open the host check", anyOrigin, loopback, "evil.example", nil, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodGet, "/health", nil)
			req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, tc.local))
			req.Host = tc.host
			if tc.origin != nil {
				req.Header["Origin"] = tc.origin
			}
			rec := httptest.NewRecorder()
			tc.p.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })).ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("= %d %s, want %d", rec.Code, rec.Body, tc.want)
			}
			if rec.Code == 403 && !strings.Contains(rec.Body.String(), `"detail"`) {
				t.Errorf("403 without a JSON detail: %s", rec.Body)
			}
		})
	}
}

func TestNewPerimeterRefusesBadLists(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  httpapi.PerimeterConfig
		want string
	}{
		{"origin without scheme", httpapi.PerimeterConfig{AllowedOrigins: []string{"app.example.com"}}, "allowed origin"},
		{"origin with a path", httpapi.PerimeterConfig{AllowedOrigins: []string{"https://app.example.com/x"}}, "allowed origin"},
		{"origin of another scheme", httpapi.PerimeterConfig{AllowedOrigins: []string{"file:///x"}}, "allowed origin"},
		{"host with a scheme", httpapi.PerimeterConfig{AllowedHosts: []string{"https://enclave.example.com"}}, "allowed host"},
		{"host with a path", httpapi.PerimeterConfig{AllowedHosts: []string{"enclave.example.com/x"}}, "allowed host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := httpapi.NewPerimeter(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("= %v, want an error naming the %s", err, tc.want)
			}
		})
	}
}

// TestHealthWithoutTokenIsBare: the API's own /health answers callers without the token
// with nothing but the status, even when the engine check's error names DOCKER_HOST.
func TestHealthWithoutTokenIsBare(t *testing.T) {
	t.Parallel()
	s := newServer(t, refusingCreator, func(c *httpapi.Config) {
		c.Check = func(context.Context) error {
			return &net.OpError{Op: "dial", Net: "unix", Err: errString("DOCKER_HOST=unix:///srv/secret/docker.sock: no such file")}
		}
	})
	bare := s.do("GET", "/health", nil, "Authorization", "")
	if bare.status != 503 || strings.TrimSpace(string(bare.body)) != `{"status":"unhealthy","healthy":false}` {
		t.Errorf("without the token = %d %s", bare.status, bare.body)
	}
	full := s.do("GET", "/health", nil)
	if full.status != 503 || !strings.Contains(string(full.body), "DOCKER_HOST") {
		t.Errorf("with the token = %d %s, want the engine's error", full.status, full.body)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
