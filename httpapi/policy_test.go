package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/httpapi"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// newPolicyServer serves the API over a manager with the operator's default config and
// policy; its docker sandboxes come from creator.
func newPolicyServer(t *testing.T, creator sandbox.Creator, defaults sandbox.Config, policy sandbox.Policy) *server {
	t.Helper()
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: defaults},
		Policy:   policy,
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: creator},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("closing the manager: %v", err)
		}
	})
	api, err := httpapi.New(httpapi.Config{Manager: m, Token: token, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close(context.Background()) })
	return newServerFor(t, api, m)
}

// Finding 5 (issue 9): a REST create (or pool config) that would loosen the operator's
// hardening is refused with 403, code "policy", a detail naming the field, and the engine is
// never reached.
func TestPolicyRESTRefusesLoosening(t *testing.T) {
	t.Parallel()
	allowed := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(allowed, "escape")); err != nil {
		t.Fatal(err)
	}
	s := newPolicyServer(t, refusingCreator, sandbox.Config{Runtime: "runsc"},
		sandbox.Policy{AllowNetwork: true, AllowHostMounts: true, AllowedHostPaths: []string{allowed}})
	mount := func(host string) map[string]any {
		return map[string]any{"volumes": map[string]any{host: map[string]string{"bind": "/mnt", "mode": "rw"}}}
	}
	tests := []struct {
		name   string
		body   map[string]any
		detail []string // substrings of the 403's detail: the field, and what is allowed
	}{
		{"runtime runsc -> runc", map[string]any{"runtime": "runc"}, []string{`runtime "runc"`, `"runsc"`}},
		{"network host", map[string]any{"network_enabled": true, "network": "host"}, []string{`network "host"`, "allowed: bridge"}},
		{"network container:", map[string]any{"network_enabled": true, "network": "container:enclave-other"}, []string{`network "container:enclave-other"`}},
		{"network not allowed", map[string]any{"network_enabled": true, "network": "corp"}, []string{`network "corp"`, "allowed: bridge"}},
		{"user 0:0", map[string]any{"user": "0:0"}, []string{`user "0:0"`, "1000:1000"}},
		{"user 0", map[string]any{"user": "0"}, []string{`user "0"`, "root"}},
		{"user root", map[string]any{"user": "root"}, []string{`user "root"`, "numeric"}},
		{"read_only_rootfs false", map[string]any{"read_only_rootfs": false}, []string{"read_only_rootfs"}},
		{"privileged", map[string]any{"privileged": true}, []string{`"privileged"`}},
		{"host path outside the allow-list", mount("/etc"), []string{"volumes", `"/etc"`, allowed}},
		{"host path with ..", mount(allowed + "/../etc"), []string{"volumes", ".."}},
		{"host path through a symlink", mount(allowed + "/escape"), []string{"volumes", "symlink"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, endpoint := range []string{"/sandbox/create?sandbox_type=docker", "/pool/initialize?pool_size=1"} {
				r := s.do(http.MethodPost, endpoint, tc.body)
				if r.status != http.StatusForbidden || r.code(t) != client.CodePolicy {
					t.Fatalf("%s = %d %s, want 403 policy", endpoint, r.status, r.body)
				}
				detail := r.detail(t)
				for _, want := range tc.detail {
					if !strings.Contains(detail, want) {
						t.Errorf("%s: detail %q does not mention %q", endpoint, detail, want)
					}
				}
			}
		})
	}
}

// Finding 5: limits over the operator's caps (pids_limit 2^40, memory, CPU, the default
// timeout, a tool's max_output_bytes) are clamped, a note says so in the metadata, and the
// container really runs with the clamped values: read back from the engine, and felt by the
// tools.
func TestPolicyRESTClampsLimits(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t)
	policy := sandbox.Policy{MaxPids: 64, MaxMemory: 256 << 20, MaxCPU: 0.5, MaxOutputBytes: 64 << 10, MaxTimeout: 2}
	s := newPolicyServer(t, sandbox.NewCreator(e, sandbox.TypeDocker), sandbox.Config{}, policy)

	id := s.create(map[string]any{
		"pids_limit": 1 << 40, "memory_limit": "64g", "cpu_limit": 16, "timeout": 1e9, "user": "1000",
		"tools_config": map[string]any{"shell_executor": map[string]any{"max_output_bytes": 1e12}},
	})
	notes := fmt.Sprint(s.info(id).Metadata["policy_notes"])
	for _, field := range []string{"pids_limit", "memory_limit", "cpu_limit", "timeout", "tools_config.shell_executor.max_output_bytes", "user 1000"} {
		if !strings.Contains(notes, field) {
			t.Errorf("policy_notes %q do not mention %s", notes, field)
		}
	}

	sb, err := s.manager.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	ds, ok := sb.(*sandbox.AgentSandbox)
	if !ok {
		t.Fatalf("sandbox is a %T", sb)
	}
	c, err := e.Client().ContainerInspect(t.Context(), ds.ContainerID())
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"PidsLimit", *c.HostConfig.PidsLimit, int64(64)},
		{"Memory", c.HostConfig.Memory, int64(256 << 20)},
		{"NanoCPUs", c.HostConfig.NanoCPUs, int64(5e8)},
		{"User", c.Config.User, "1000:1000"},
		{"ReadonlyRootfs", c.HostConfig.ReadonlyRootfs, true},
		{"NetworkMode", string(c.HostConfig.NetworkMode), "none"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("engine says %s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}

	t.Run("max_output_bytes is the cap", func(t *testing.T) {
		res := s.execute(id, "shell_executor", map[string]any{"command": "head -c 1000000 /dev/zero | tr '\\0' x"})
		if len(res.Output) > 80<<10 || !strings.Contains(res.Output+res.Error, "truncated") {
			t.Errorf("1 MB of output came back as %d bytes (error %q), want at most the 64 KiB cap, truncated", len(res.Output), res.Error)
		}
	})
	t.Run("timeout is the cap", func(t *testing.T) {
		start := time.Now()
		res := s.execute(id, "shell_executor", map[string]any{"command": "sleep 30"})
		if res.Status != "timeout" || time.Since(start) > 15*time.Second {
			t.Errorf("sleep 30 = %s after %v, want a timeout at the 2 s cap", res.Status, time.Since(start))
		}
	})
}

// A REST create's egress may only narrow the operator's: an entry outside it, or egress
// where the operator has none, is refused with 403 naming it, before the engine is reached.
func TestPolicyRESTEgress(t *testing.T) {
	t.Parallel()
	withEgress := sandbox.Policy{Egress: &egress.Policy{Allow: []string{"pypi.org", "*.example.com"}}}
	for _, tc := range []struct {
		name   string
		policy sandbox.Policy
		body   map[string]any
		detail string
	}{
		{"no operator egress", sandbox.Policy{}, map[string]any{"egress": map[string]any{}}, "policy.egress"},
		{"host outside", withEgress, map[string]any{"egress": map[string]any{"allow": []string{"evil.com"}}}, `"evil.com" is not within`},
		{"other wildcard", withEgress, map[string]any{"egress": map[string]any{"allow": []string{"*.co.uk"}}}, "*.co.uk"},
		{"port outside", withEgress, map[string]any{"egress": map[string]any{"ports": []int{22}}}, "port 22"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPolicyServer(t, refusingCreator, sandbox.Config{}, tc.policy)
			r := s.do(http.MethodPost, "/sandbox/create?sandbox_type=docker", tc.body)
			if r.status != http.StatusForbidden || r.code(t) != client.CodePolicy || !strings.Contains(r.detail(t), tc.detail) {
				t.Fatalf("= %d %s, want 403 policy mentioning %q", r.status, r.body, tc.detail)
			}
		})
	}
	t.Run("malformed entry", func(t *testing.T) {
		s := newPolicyServer(t, refusingCreator, sandbox.Config{}, withEgress)
		r := s.do(http.MethodPost, "/sandbox/create?sandbox_type=docker", map[string]any{"egress": map[string]any{"allow": []string{"*.com"}}})
		if r.status != http.StatusBadRequest || !strings.Contains(r.detail(t), "two labels") {
			t.Fatalf("= %d %s, want 400 explaining the entry", r.status, r.body)
		}
	})
}
