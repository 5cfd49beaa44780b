package notebook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestClientREST checks the REST calls against a fake server: paths, methods, the token
// header, and how answers map to errors.
func TestClientREST(t *testing.T) {
	t.Parallel()
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "token s3cret" {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"message": "Forbidden", "reason": null}`))
			return
		}
		seen = append(seen, r.Method+" "+r.URL.Path)
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/api/kernels":
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"id": "k1", "name": "python3", "execution_state": "starting"}`))
		case strings.HasPrefix(r.URL.Path, "/api/kernels/gone"):
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"message": "Kernel does not exist: gone"}`))
		case r.URL.Path == "/api/kernels/k1/restart":
			_, _ = w.Write([]byte(`{"id": "k1", "name": "python3", "execution_state": "idle"}`))
		case r.URL.Path == "/api/kernels/boom/interrupt":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"message": "no way"}`))
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	var dialed []string
	dial := func(ctx context.Context, network, a string) (net.Conn, error) {
		dialed = append(dialed, a)
		return (&net.Dialer{}).DialContext(ctx, network, a)
	}
	c := NewClient(addr, "s3cret", dial)
	t.Cleanup(c.Close)
	ctx := t.Context()

	k, err := c.CreateKernel(ctx, "python3")
	if err != nil || k.ID != "k1" || k.Name != "python3" {
		t.Fatalf("create: %+v, %v", k, err)
	}
	if _, err := c.GetKernel(ctx, "gone"); !errors.Is(err, ErrKernelNotFound) {
		t.Errorf("a missing kernel: %v, want ErrKernelNotFound", err)
	}
	if k, err := c.RestartKernel(ctx, "k1"); err != nil || k.ExecutionState != "idle" {
		t.Errorf("restart: %+v, %v", k, err)
	}
	if err := c.InterruptKernel(ctx, "boom"); !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "no way") {
		t.Errorf("a server error: %v, want ErrServer with its message", err)
	}
	if err := c.DeleteKernel(ctx, "k1"); err != nil {
		t.Errorf("delete: %v", err)
	}
	if err := NewClient(addr, "wrong", dial).Ping(ctx); !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "403") {
		t.Errorf("a wrong token: %v", err)
	}
	want := []string{"POST /api/kernels", "GET /api/kernels/gone", "POST /api/kernels/k1/restart", "POST /api/kernels/boom/interrupt", "DELETE /api/kernels/k1"}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("requests %v, want %v", seen, want)
	}
	if len(dialed) == 0 || dialed[0] != addr {
		t.Errorf("connections must go through the dial function: %v", dialed)
	}
}
