package deploy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// docker runs the docker CLI with ctx and returns its trimmed stdout, or an error holding
// its stderr. env, when given, is added to the CLI's environment.
func docker(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// localSocket is the engine's socket on this machine (DOCKER_HOST's unix path, else the
// default), or "" when the engine is reached another way and cannot be mounted.
func localSocket() string {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		return "/var/run/docker.sock"
	}
	if path, ok := strings.CutPrefix(host, "unix://"); ok {
		return path
	}
	return ""
}

// buildServerImage builds the server image from this tree's binary, under a tag of its own
// that the test removes, and returns its reference.
func buildServerImage(t *testing.T) string {
	t.Helper()
	bin := testenv.Binary(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	tag := "test-" + hex.EncodeToString(b[:])
	start := time.Now()
	cmd := exec.CommandContext(t.Context(), "../scripts/build-server-image.sh", bin)
	cmd.Env = append(os.Environ(), "ENCLAVE_SERVER_TAGS="+tag)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/build-server-image.sh: %v\n%s", err, stderr.String())
	}
	ref := strings.TrimSpace(string(out))
	if ref != "enclave/enclave-mcp:"+tag {
		t.Fatalf("the script printed %q, want the image it tagged, enclave/enclave-mcp:%s", ref, tag)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := docker(ctx, nil, "rmi", "--force", ref); err != nil {
			t.Errorf("removing the test image: %v", err)
		}
	})
	t.Logf("built %s in %v", ref, time.Since(start).Round(time.Millisecond))
	return ref
}

// serverRun is one server container started from the image.
type serverRun struct {
	name string // container name, also its host name: its sandboxes carry it as enclave-mcp.host
	base string // http://127.0.0.1:PORT
}

// runServer starts image with the host engine's socket mounted, the token in its
// environment, the chart's args and config file, and the chart's hardening (read-only root,
// /tmp a tmpfs, no capabilities). extra are docker run flags (--user, --group-add). It
// stops the container when the test ends (the server removes its sandboxes on SIGTERM),
// removes it whatever happened, and checks that no sandbox of it is left.
func runServer(t *testing.T, image, socket, token, configFile string, args, extra []string) serverRun {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "enclave-mcp-image-test-" + hex.EncodeToString(b[:])
	run := []string{
		"run", "--detach", "--name", name, "--hostname", name,
		"--label", "enclave-mcp.test=" + t.Name(),
		// The token is copied from the CLI's environment, so it is not on a command line.
		"--env", "ENCLAVE_MCP_TOKEN",
		"--volume", socket + ":/var/run/docker.sock",
		"--volume", configFile + ":/etc/enclave-mcp/config.json:ro",
		"--read-only", "--tmpfs", "/tmp",
		"--cap-drop", "ALL", "--security-opt", "no-new-privileges",
		"--publish", "127.0.0.1::8000",
	}
	run = append(run, extra...)
	run = append(run, image)
	run = append(run, args...)
	if _, err := docker(t.Context(), []string{"ENCLAVE_MCP_TOKEN=" + token}, run...); err != nil {
		t.Fatalf("starting the server image: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := docker(ctx, nil, "stop", "--time", "40", name); err != nil {
			t.Errorf("stopping the server: %v", err)
		}
		if t.Failed() {
			logs, _ := exec.CommandContext(ctx, "docker", "logs", name).CombinedOutput()
			t.Logf("server logs:\n%s", logs)
		}
		if _, err := docker(ctx, nil, "rm", "--force", "--volumes", name); err != nil {
			t.Errorf("removing the server container: %v", err)
		}
		// Its sandboxes are labelled with its host name, which is the container's name.
		deadline := time.Now().Add(15 * time.Second)
		for {
			left, err := docker(ctx, nil, "ps", "--all", "--quiet", "--filter", "label="+sandbox.LabelHost+"="+name)
			if err != nil {
				t.Errorf("listing the server's sandboxes: %v", err)
				return
			}
			if left == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("the server left sandboxes behind: %s", strings.Fields(left))
				_, _ = docker(ctx, nil, append([]string{"rm", "--force"}, strings.Fields(left)...)...)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	port, err := docker(t.Context(), nil, "port", name, "8000/tcp")
	if err != nil {
		t.Fatalf("finding the server's port: %v", err)
	}
	// "127.0.0.1:49153", possibly one line per address family.
	hostPort := strings.Fields(port)[0]
	return serverRun{name: name, base: "http://" + hostPort}
}

// request sends method path to the server, with the token when given, and returns the
// status and body.
func (s serverRun) request(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return res.StatusCode, data
}

// waitHealthy polls GET /health, without a token, until it answers 200; it fails the test
// after a deadline, or at once when the container has exited.
func (s serverRun) waitHealthy(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.base+"/health", nil)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				var h struct {
					Status  string `json:"status"`
					Healthy bool   `json:"healthy"`
				}
				if err := json.Unmarshal(body, &h); err != nil || !h.Healthy {
					t.Fatalf("GET /health answered 200 with %s, want healthy", body)
				}
				return time.Since(start)
			}
			last = fmt.Sprintf("%d %s", res.StatusCode, body)
		} else {
			last = err.Error()
		}
		if state, _ := docker(t.Context(), nil, "inspect", "--format", "{{.State.Status}}", s.name); state == "exited" {
			t.Fatalf("the server exited before answering /health (last: %s)", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET /health did not answer 200 within 60 s (last: %s)", last)
	return 0
}

// chartRun is what the chart gives the server with its default values: its args and its
// config file, written to a file the container can mount.
func chartRun(t *testing.T) ([]string, string) {
	t.Helper()
	r := render(t)
	_, c := r.deployment(t)
	args := c.Args
	// The port the test publishes is the chart's default container port.
	if !strings.Contains(strings.Join(args, " "), "--http :8000") {
		t.Fatalf("the chart's args %q do not serve on :8000", args)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte(r["ConfigMap"].Data["config.json"]), 0o644); err != nil {
		t.Fatal(err)
	}
	// No warm sandboxes: the test creates the one it uses.
	return append(slices.Clone(args), "--warm=0"), path
}

// TestIntegrationServerImage builds the server image, starts it the way the chart does, with
// the host engine's socket mounted, and checks the done criteria of a deployment: /health
// answers without a token, the API needs the token, and a sandbox created through the REST
// API runs a command (on the host's engine, from inside the container). Then, as the
// image's non-root user with the socket's group, /health still finds the engine healthy.
func TestIntegrationServerImage(t *testing.T) {
	testenv.RequireDocker(t)
	socket := localSocket()
	if socket == "" {
		t.Skipf("DOCKER_HOST=%s is not a local socket: the test mounts the engine's socket into the server's container", os.Getenv("DOCKER_HOST"))
	}
	image := buildServerImage(t)
	args, configFile := chartRun(t)
	const token = "image-test-token-0123456789abcdef"

	t.Run("root", func(t *testing.T) {
		s := runServer(t, image, socket, token, configFile, args, nil)
		t.Logf("/health answered 200 %v after the container started", s.waitHealthy(t).Round(time.Millisecond))

		for _, tc := range []struct {
			method, path, token string
			want                int
		}{
			{http.MethodGet, "/sandboxes", "", http.StatusUnauthorized},
			{http.MethodGet, "/sandboxes", "wrong-token", http.StatusUnauthorized},
			{http.MethodGet, "/sandboxes", token, http.StatusOK},
			{http.MethodPost, "/mcp", "", http.StatusUnauthorized},
		} {
			if got, body := s.request(t, tc.method, tc.path, tc.token, nil); got != tc.want {
				t.Errorf("%s %s (token %q): %d %s, want %d", tc.method, tc.path, tc.token, got, body, tc.want)
			}
		}

		t.Run("sandbox", func(t *testing.T) {
			if _, err := docker(t.Context(), nil, "image", "inspect", sandbox.DefaultImage); err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("image %s is missing under CI; make test should have built it: %v", sandbox.DefaultImage, err)
				}
				t.Skipf("image %s is missing: build it with `enclave-mcp images build --missing` (make test does)", sandbox.DefaultImage)
			}
			status, body := s.request(t, http.MethodPost, "/sandbox/create?sandbox_type=docker", token, map[string]any{})
			var created struct {
				ID string `json:"sandbox_id"`
			}
			if status != http.StatusOK || json.Unmarshal(body, &created) != nil || created.ID == "" {
				t.Fatalf("POST /sandbox/create: %d %s", status, body)
			}
			status, body = s.request(t, http.MethodPost, "/sandbox/tool/execute", token, map[string]any{
				"sandbox_id": created.ID, "tool_name": "shell_executor",
				"parameters": map[string]any{"command": "echo hello from $(hostname)"},
			})
			var res struct {
				Status string `json:"status"`
				Output string `json:"output"`
			}
			if status != http.StatusOK || json.Unmarshal(body, &res) != nil || res.Status != "success" || !strings.HasPrefix(res.Output, "hello from ") {
				t.Errorf("shell_executor echo: %d %s", status, body)
			}
			if status, body := s.request(t, http.MethodDelete, "/sandbox/"+url.PathEscape(created.ID), token, nil); status != http.StatusOK {
				t.Errorf("DELETE /sandbox/%s: %d %s", created.ID, status, body)
			}
		})
	})

	t.Run("non-root with the socket's group", func(t *testing.T) {
		var st syscall.Stat_t
		if err := syscall.Stat(socket, &st); err != nil {
			t.Fatalf("stat %s: %v", socket, err)
		}
		if st.Gid == 0 {
			t.Skipf("%s belongs to group 0: a non-root user would need root's group", socket)
		}
		s := runServer(t, image, socket, token, configFile, args,
			[]string{"--user", "10001:10001", "--group-add", strconv.FormatUint(uint64(st.Gid), 10)})
		s.waitHealthy(t)
		if got, body := s.request(t, http.MethodGet, "/sandboxes", token, nil); got != http.StatusOK {
			t.Errorf("GET /sandboxes as the non-root user: %d %s", got, body)
		}
	})
}
