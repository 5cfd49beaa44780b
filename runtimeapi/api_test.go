package runtimeapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/runtimeapi"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
)

const token = "runtimeapi-test-token"

// server serves the session API on the process backend behind the token check, with a
// health check that fails when *unhealthy is set.
func server(t *testing.T, unhealthy *bool) string {
	t.Helper()
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(testenv.Process(t), sandbox.TypeDocker)},
	})
	core, err := session.New(session.Config{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	named, err := session.NewNamed(core, session.NamedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := runtimeapi.New(runtimeapi.Config{
		Sessions: named, Principal: httpapi.PrincipalOf, MaxJSONBytes: 4 << 10, MaxUploadBytes: 8 << 10,
		Check: func(context.Context) error {
			if *unhealthy {
				return errors.New("engine at unix:///secret/docker.sock is down")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Mount(mux, func(next http.Handler) http.Handler { return httpapi.RequireToken(token, next) })
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = named.Close(ctx)
		_ = m.Close(ctx)
	})
	return srv.URL
}

type answer struct {
	status int
	header http.Header
	body   string
}

// send sends one request; a nil header map means the token only.
func send(t *testing.T, url, method, path string, body io.Reader, header map[string]string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(data)}
}

// multipartBody is a form with the given fields; "file" is sent as a file part.
func multipartBody(t *testing.T, fields map[string]string) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for name, value := range fields {
		var w io.Writer
		var err error
		if name == "file" {
			w, err = mw.CreateFormFile("file", "from-part.txt")
		} else {
			w, err = mw.CreateFormField(name)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, value)
	}
	_ = mw.Close()
	return &buf, mw.FormDataContentType()
}

// TestHTTPFace: the face's translation of each kind of request and error to HTTP: the
// public health answer, the token, JSON errors with codes for unknown routes and methods,
// bad bodies, limits, uploads, downloads and the core's refusals.
func TestHTTPFace(t *testing.T) {
	t.Parallel()
	unhealthy := false
	url := server(t, &unhealthy)
	if a := send(t, url, "POST", "/workspace/se/session/s", strings.NewReader(`{"size": 2097152}`), nil); a.status != 200 ||
		!strings.Contains(a.body, `"size":"2M"`) {
		t.Fatalf("create with a size in bytes: %d %s", a.status, a.body)
	}
	if a := send(t, url, "POST", "/workspace/se/create/s", strings.NewReader(`{"filename": "a.txt", "content": "hello"}`), nil); a.status != 200 {
		t.Fatalf("create file: %d %s", a.status, a.body)
	}
	big := strings.Repeat("x", 9<<10)
	formOK, ctOK := multipartBody(t, map[string]string{"file": "uploaded", "filename": "dir/up.txt"})
	formNamed, ctNamed := multipartBody(t, map[string]string{"file": "by part name"})
	formNoFile, ctNoFile := multipartBody(t, map[string]string{"filename": "x"})
	formBig, ctBig := multipartBody(t, map[string]string{"file": big})

	tests := []struct {
		name, method, path string
		body               io.Reader
		header             map[string]string
		status             int
		code               string // the error's code; "" for a success
		says               string // in the body
	}{
		{"healthy needs no token", "GET", "/workspace/se/healthy", nil, map[string]string{"Authorization": ""}, 200, "", `"status":"healthy"`},
		{"no token", "GET", "/workspace/se/files/s", nil, map[string]string{"Authorization": ""}, 401, "", "Unauthorized"},
		{"wrong token", "GET", "/workspace/se/files/s", nil, map[string]string{"Authorization": "Bearer nope"}, 401, "", "Unauthorized"},
		{"unknown route", "GET", "/workspace/se/nothing", nil, nil, 404, "not_found", "No endpoint GET /workspace/se/nothing"},
		{"wrong method", "GET", "/workspace/se/execute/s", nil, nil, 405, "method_not_allowed", "allowed: POST"},
		{"malformed JSON", "POST", "/workspace/se/execute/s", strings.NewReader(`{"command": `), nil, 400, "bad_request", "malformed JSON"},
		{"body not an object", "POST", "/workspace/se/execute/s", strings.NewReader(`["ls"]`), nil, 400, "bad_request", "JSON object"},
		{"field of the wrong type", "POST", "/workspace/se/execute/s", strings.NewReader(`{"command": 7}`), nil, 400, "bad_request", `field "command"`},
		{"size of the wrong type", "POST", "/workspace/se/session/t", strings.NewReader(`{"size": true}`), nil, 400, "bad_request", "whole number of bytes"},
		{"body too large", "POST", "/workspace/se/execute/s", strings.NewReader(`{"command": "` + big + `"}`), nil, 413, "too_large", "4096-byte limit"},
		{"command not allowed", "POST", "/workspace/se/execute/s", strings.NewReader(`{"command": "bash"}`), nil, 403, "policy", "allowed commands are: "},
		{"size over the maximum", "POST", "/workspace/se/session/t", strings.NewReader(`{"size": "5G"}`), nil, 403, "policy", "maximum session size of 1G"},
		{"session in use", "POST", "/workspace/se/session/s", nil, nil, 409, "exists", `Already exists: session "s"`},
		{"unknown session", "GET", "/workspace/se/status/nope", nil, nil, 404, "not_found", "create it first"},
		{"download escaping the workspace", "GET", "/workspace/se/download/s/..%2F..%2Fetc%2Fpasswd", nil, nil, 400, "bad_request", "leaves the session's workspace"},
		{"download of a missing file", "GET", "/workspace/se/download/s/missing.txt", nil, nil, 404, "not_found", "missing.txt"},
		{"upload under the filename field", "POST", "/workspace/se/upload/s", formOK, map[string]string{"Content-Type": ctOK}, 200, "", `"name":"dir/up.txt"`},
		{"upload under the part's name", "POST", "/workspace/se/upload/s", formNamed, map[string]string{"Content-Type": ctNamed}, 200, "", `"name":"from-part.txt"`},
		{"upload without a file", "POST", "/workspace/se/upload/s", formNoFile, map[string]string{"Content-Type": ctNoFile}, 400, "bad_request", `no "file" part`},
		{"upload not multipart", "POST", "/workspace/se/upload/s", strings.NewReader("x"), map[string]string{"Content-Type": "text/plain"}, 400, "bad_request", "multipart/form-data"},
		{"upload too large", "POST", "/workspace/se/upload/s", formBig, map[string]string{"Content-Type": ctBig}, 413, "too_large", "8192-byte limit"},
		{"cleanup with a bad force", "POST", "/workspace/se/cleanup-all?force=maybe", nil, nil, 400, "bad_request", "want true or false"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := send(t, url, tc.method, tc.path, tc.body, tc.header)
			text := a.body
			var e struct{ Detail string }
			if json.Unmarshal([]byte(a.body), &e) == nil && e.Detail != "" {
				text = e.Detail
			}
			if a.status != tc.status || !strings.Contains(text, tc.says) {
				t.Fatalf("%d %s, want %d saying %q", a.status, a.body, tc.status, tc.says)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.code != "" {
				var e struct{ Detail, Code string }
				if err := json.Unmarshal([]byte(a.body), &e); err != nil || e.Code != tc.code || e.Detail == "" {
					t.Errorf("error body %s, want code %s and a detail", a.body, tc.code)
				}
			}
		})
	}

	t.Run("download", func(t *testing.T) {
		a := send(t, url, "GET", "/workspace/se/download/s/dir/up.txt", nil, nil)
		if a.status != 200 || a.body != "uploaded" || a.header.Get("Content-Type") != "application/octet-stream" ||
			a.header.Get("Content-Disposition") != `attachment; filename=up.txt` {
			t.Errorf("%d %q %v", a.status, a.body, a.header)
		}
	})
	t.Run("unhealthy says nothing more", func(t *testing.T) {
		unhealthy = true
		defer func() { unhealthy = false }()
		a := send(t, url, "GET", "/workspace/se/healthy", nil, map[string]string{"Authorization": ""})
		if a.status != 503 || strings.Contains(a.body, "secret") || !strings.Contains(a.body, "unhealthy") {
			t.Errorf("%d %s", a.status, a.body)
		}
	})
	t.Run("cleanup", func(t *testing.T) {
		a := send(t, url, "POST", "/workspace/se/cleanup-all", strings.NewReader(`{"force": true}`), nil)
		if a.status != 200 || a.body != `{"cleaned":["s"],"skipped":[]}`+"\n" {
			t.Errorf("%d %s", a.status, a.body)
		}
	})
}
