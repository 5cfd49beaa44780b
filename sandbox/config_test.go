package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/egress"
)

// Finding 5 (issue 9): every config field that would loosen the operator's hardening is
// refused with ErrPolicy naming the field, unless the policy allows it.
func TestPolicyRefusesLoosening(t *testing.T) {
	t.Parallel()
	allowed := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(allowed, "escape")); err != nil {
		t.Fatal(err)
	}
	hostMounts := Policy{AllowHostMounts: true, AllowedHostPaths: []string{allowed}}
	vol := func(host, bind string) map[string]VolumeMount { return map[string]VolumeMount{host: {Bind: bind}} }
	tests := []struct {
		name    string
		cfg     Config
		policy  Policy
		errSays []string
	}{
		{"user 0:0", Config{User: "0:0"}, Policy{}, []string{`user "0:0"`, "root"}},
		{"user 0", Config{User: "0"}, Policy{}, []string{`user "0"`, "root"}},
		{"user 000:1000", Config{User: "000:1000"}, Policy{}, []string{"root"}},
		{"user root", Config{User: "root"}, Policy{}, []string{`user "root"`, "allow_root_user"}},
		{"user root:root", Config{User: "root:root"}, Policy{}, []string{"user", "numeric"}},
		{"user +0", Config{User: "+0"}, Policy{}, []string{"user", "numeric"}},
		{"user with root group", Config{User: "1000:0"}, Policy{}, []string{"root"}},
		{"user name", Config{User: "sandbox"}, Policy{}, []string{"user", "may map to root"}},
		{"writable rootfs", Config{ReadOnlyRootfs: ptr(false)}, Policy{}, []string{"read_only_rootfs"}},
		{"network host", Config{NetworkEnabled: true, Network: "host"}, Policy{AllowNetwork: true}, []string{`network "host"`, `"network"`}},
		{"network HOST, network off", Config{Network: " HOST"}, Policy{}, []string{"network", "never allowed"}},
		{"network container:", Config{NetworkEnabled: true, Network: "container:abc"}, Policy{AllowNetwork: true, AllowedNetworks: []string{"bridge"}}, []string{"container:abc", "never"}},
		{"network not listed", Config{NetworkEnabled: true, Network: "corp"}, Policy{AllowNetwork: true}, []string{`network "corp"`, "allowed: bridge"}},
		{"volumes without allowed paths", Config{Volumes: vol(allowed, "/mnt")}, Policy{AllowHostMounts: true}, []string{"volumes", "allowed_host_paths"}},
		{"volume outside the allowed paths", Config{Volumes: vol("/etc", "/mnt")}, hostMounts, []string{"volumes", `"/etc"`, "not under"}},
		{"volume with ..", Config{Volumes: vol(allowed+"/../../etc", "/mnt")}, hostMounts, []string{"volumes", ".."}},
		{"volume through a symlink", Config{Volumes: vol(allowed+"/escape", "/mnt")}, hostMounts, []string{"volumes", "symlink", outside}},
		{"volume that does not exist here", Config{Volumes: vol(allowed+"/nope", "/mnt")}, hostMounts, []string{"volumes", "cannot be checked"}},
		{"volume over the agent", Config{Volumes: vol(allowed, "/.enclave/agent")}, hostMounts, []string{"volumes", "agent"}},
		{"volume over /", Config{Volumes: vol(allowed, "/")}, hostMounts, []string{"volumes", "root"}},
		{"volume over the agent's socket", Config{Volumes: vol(allowed, "/.enclave-link")}, hostMounts, []string{"volumes", "/.enclave-link"}},
		{"volume inside the agent's socket directory", Config{Volumes: vol(allowed, "/.enclave-link/x")}, hostMounts, []string{"volumes", "/.enclave-link"}},
		{"prefix is by element", Config{Volumes: vol(allowed+"x", "/mnt")}, hostMounts, []string{"not under"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Resolve(tc.cfg, tc.policy)
			if !errors.Is(err, ErrPolicy) && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want a refusal", err)
			}
			for _, s := range tc.errSays {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err %q does not mention %q", err, s)
				}
			}
		})
	}
}

// What the policy can allow, it does allow; and a host path is mounted by its real path.
func TestPolicyAllowsWhatItLists(t *testing.T) {
	t.Parallel()
	allowed := t.TempDir()
	if err := os.Mkdir(filepath.Join(allowed, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("data", filepath.Join(allowed, "link")); err != nil {
		t.Fatal(err)
	}
	r, err := Resolve(Config{
		User: "root", ReadOnlyRootfs: ptr(false), NetworkEnabled: true, Network: "corp",
		Volumes: map[string]VolumeMount{allowed + "/link": {Bind: "/mnt/data/", Mode: "ro"}},
	}, Policy{AllowRootUser: true, AllowWritableRootfs: true, AllowNetwork: true, AllowedNetworks: []string{"corp"},
		AllowHostMounts: true, AllowedHostPaths: []string{allowed}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]VolumeMount{filepath.Join(allowed, "data"): {Bind: "/mnt/data", Mode: "ro"}}
	if r.User != "root" || *r.ReadOnlyRootfs || r.Network != "corp" || fmt.Sprint(r.Volumes) != fmt.Sprint(want) {
		t.Errorf("resolved = user %q rootfs ro %v network %q volumes %v", r.User, *r.ReadOnlyRootfs, r.Network, r.Volumes)
	}
	if !strings.Contains(strings.Join(r.Notes, "|"), "mounted as") {
		t.Errorf("notes %v do not say the symlink was resolved", r.Notes)
	}
	// A uid alone gets its own gid (the engine would give it group 0).
	if r := mustResolve(t, Config{User: "1000"}, Policy{}); r.User != "1000:1000" || len(r.Notes) != 1 {
		t.Errorf("user 1000 resolved to %q, notes %v", r.User, r.Notes)
	}
}

// Finding 5: limits above the policy's caps are clamped, with a note; limits the engine
// would read as "none" are refused.
func TestPolicyClampsLimits(t *testing.T) {
	t.Parallel()
	tools := ToolsConfig{"shell_executor": {"max_output_bytes": 1e12, "shell": "/bin/bash"}, "python_executor": {"max_output_bytes": 1000.0}}
	r := mustResolve(t, Config{
		PidsLimit: 1 << 40, MemoryLimit: "64g", CPULimit: 64, Timeout: 1e9, ToolsConfig: tools,
	}, Policy{})
	checks := []struct {
		name      string
		got, want any
		note      string
	}{
		{"pids", r.PidsLimit, int64(DefaultMaxPids), "pids_limit"},
		{"memory", r.MemoryBytes, int64(DefaultMaxMemory), "memory_limit"},
		{"cpu", r.NanoCPUs, int64(DefaultMaxCPU * 1e9), "cpu_limit"},
		{"timeout", r.Timeout, DefaultMaxTimeout, "timeout"},
		{"max_output_bytes", r.ToolsConfig["shell_executor"]["max_output_bytes"], float64(DefaultMaxOutputBytes), "tools_config.shell_executor.max_output_bytes"},
		{"other options kept", r.ToolsConfig["shell_executor"]["shell"], "/bin/bash", ""},
		{"a lower max_output_bytes kept", r.ToolsConfig["python_executor"]["max_output_bytes"], 1000.0, ""},
	}
	notes := strings.Join(r.Notes, "|")
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
		if c.note != "" && !strings.Contains(notes, c.note) {
			t.Errorf("notes %q lack %q", notes, c.note)
		}
	}
	if tools["shell_executor"]["max_output_bytes"] != 1e12 {
		t.Error("Resolve changed the caller's tools_config in place")
	}
	// The policy's own caps, when set, are the ones applied.
	r = mustResolve(t, Config{PidsLimit: 500, ToolsConfig: ToolsConfig{"x": {"max_output_bytes": 5000.0}}, Timeout: 100},
		Policy{MaxPids: 100, MaxOutputBytes: 4096, MaxTimeout: 60})
	if r.PidsLimit != 100 || r.ToolsConfig["x"]["max_output_bytes"] != 4096.0 || r.Timeout != 60 {
		t.Errorf("policy caps: pids %d output %v timeout %v", r.PidsLimit, r.ToolsConfig["x"]["max_output_bytes"], r.Timeout)
	}

	for _, tc := range []struct {
		name  string
		cfg   Config
		field string
	}{
		{"cpu rounding to no limit", Config{CPULimit: 1e-12}, "cpu_limit"},
		{"memory past int64", Config{MemoryLimit: "1e30g"}, "memory_limit"},
		{"workspace rounding to 0 (no tmpfs limit)", Config{WorkspaceSize: "0.0001"}, "workspace_size"},
		{"tmp size NaN", Config{TmpSize: "NaN"}, "tmp_size"},
		{"tmp size infinite", Config{TmpSize: "inf"}, "tmp_size"},
	} {
		if _, err := Resolve(tc.cfg, Policy{}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig naming %s", tc.name, err, tc.field)
		}
	}
}

// Finding 5: the runtime a request names must be the operator's, or one the policy lists.
func TestCheckRequestRuntime(t *testing.T) {
	t.Parallel()
	operator := Config{Runtime: "runsc"}
	for _, tc := range []struct {
		name   string
		req    string
		policy Policy
		ok     bool
	}{
		{"none asked", "", Policy{}, true},
		{"the operator's", "runsc", Policy{}, true},
		{"runsc -> runc", "runc", Policy{}, false},
		{"listed", "runc", Policy{AllowedRuntimes: []string{"runc"}}, true},
		{"not listed", "kata", Policy{AllowedRuntimes: []string{"runc"}}, false},
	} {
		err := CheckRequest(operator, Config{Runtime: tc.req}, tc.policy)
		if tc.ok != (err == nil) || (err != nil && (!errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), `runtime "`+tc.req+`"`) ||
			!strings.Contains(err.Error(), `"runsc"`))) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

// The policy is read from the config file's "policy" section, every field of it, and a
// misspelt field is an error rather than a silently weaker policy.
func TestPolicyFromConfigFile(t *testing.T) {
	t.Parallel()
	var p Policy
	err := json.Unmarshal([]byte(`{"allow_network": true, "allowed_networks": ["corp"], "allow_privileged": true,
		"allow_host_mounts": true, "allowed_host_paths": ["/srv/data"], "allow_root_user": true, "allow_writable_rootfs": true,
		"allowed_runtimes": ["runc"], "allowed_images": ["img"], "max_memory": "3g", "max_cpu": 1.5, "max_pids": 99,
		"max_output_bytes": 65536, "max_timeout": 120}`), &p)
	want := Policy{AllowNetwork: true, AllowedNetworks: []string{"corp"}, AllowPrivileged: true, AllowHostMounts: true,
		AllowedHostPaths: []string{"/srv/data"}, AllowRootUser: true, AllowWritableRootfs: true, AllowedRuntimes: []string{"runc"},
		AllowedImages: []string{"img"}, MaxMemory: 3 << 30, MaxCPU: 1.5, MaxPids: 99, MaxOutputBytes: 65536, MaxTimeout: 120}
	if err != nil || fmt.Sprintf("%+v", p) != fmt.Sprintf("%+v", want) {
		t.Errorf("policy = %+v, %v\nwant %+v", p, err, want)
	}
	if err := json.Unmarshal([]byte(`{"max_memory": 1048576}`), &p); err != nil || p.MaxMemory != 1<<20 {
		t.Errorf("max_memory as bytes: %d, %v", p.MaxMemory, err)
	}
	for _, bad := range []string{`{"alow_root_user": true}`, `{"max_memory": "lots"}`, `{"max_pids": "many"}`} {
		if err := json.Unmarshal([]byte(bad), &p); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	for _, bad := range []Policy{{MaxPids: -1}, {AllowedHostPaths: []string{"rel"}}, {AllowedNetworks: []string{"host"}}} {
		if _, err := Resolve(Config{}, bad); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "policy.") {
			t.Errorf("policy %+v: err = %v, want ErrInvalidConfig naming the policy field", bad, err)
		}
	}
}

func TestMaxOutputBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts map[string]any
		want int
	}{
		{"absent", nil, 0},
		{"float64 from JSON", map[string]any{"max_output_bytes": float64(4096)}, 4096},
		{"int from a Go embedder", map[string]any{"max_output_bytes": 2048}, 2048},
		{"int64", map[string]any{"max_output_bytes": int64(1024)}, 1024},
		{"zero keeps the default", map[string]any{"max_output_bytes": 0}, 0},
		{"negative keeps the default", map[string]any{"max_output_bytes": -5}, 0},
		{"a string is not a number", map[string]any{"max_output_bytes": "4096"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := MaxOutputBytes(tc.opts); got != tc.want {
				t.Errorf("MaxOutputBytes(%v) = %d, want %d", tc.opts, got, tc.want)
			}
		})
	}
}

func TestResolveEgress(t *testing.T) {
	t.Parallel()
	operator := Policy{AllowNetwork: true, Egress: &egress.Policy{
		Allow:       []string{"pypi.org", "*.example.com"},
		Credentials: []egress.Credential{{Host: "api.example.com", Header: "Authorization", Value: "Bearer ${env:K}"}},
	}}
	tests := []struct {
		name      string
		cfg       Config
		policy    Policy
		errSays   string
		wantAllow []string
		wantNote  string
	}{
		{name: "no egress asked", cfg: Config{}, policy: operator},
		{name: "not enabled by the operator", cfg: Config{Egress: &EgressConfig{}}, policy: Policy{}, errSays: "policy.egress"},
		{name: "the whole policy", cfg: Config{Egress: &EgressConfig{}}, policy: operator, wantAllow: []string{"pypi.org", "*.example.com"}},
		{name: "narrowed", cfg: Config{Egress: &EgressConfig{Allow: []string{"api.example.com"}}}, policy: operator, wantAllow: []string{"api.example.com"}},
		{name: "widened", cfg: Config{Egress: &EgressConfig{Allow: []string{"evil.com"}}}, policy: operator, errSays: `"evil.com" is not within`},
		{name: "network turned off", cfg: Config{NetworkEnabled: true, Egress: &EgressConfig{}}, policy: operator,
			wantAllow: []string{"pypi.org", "*.example.com"}, wantNote: "network_enabled turned off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := Resolve(tc.cfg, tc.policy)
			if tc.errSays != "" {
				if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.errSays) {
					t.Fatalf("err = %v, want ErrPolicy saying %q", err, tc.errSays)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantAllow == nil {
				if r.Egress != nil {
					t.Fatalf("egress = %+v, want none", r.Egress)
				}
				return
			}
			if r.Egress == nil || strings.Join(r.Egress.Allow, " ") != strings.Join(tc.wantAllow, " ") {
				t.Fatalf("egress = %+v, want allow %v", r.Egress, tc.wantAllow)
			}
			if r.NetworkEnabled {
				t.Error("a sandbox with egress has network access")
			}
			if tc.wantNote != "" && !strings.Contains(strings.Join(r.Notes, "\n"), tc.wantNote) {
				t.Errorf("notes = %q, want %q", r.Notes, tc.wantNote)
			}
		})
	}
	if err := (Policy{Egress: &egress.Policy{Allow: []string{"*"}}}).validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("a policy with a bad egress entry validated: %v", err)
	}
}

func TestPolicyEgressFromTheConfigFile(t *testing.T) {
	t.Parallel()
	var p Policy
	err := json.Unmarshal([]byte(`{"egress": {"allow": ["pypi.org", "*.pythonhosted.org"], "ports": [443],
		"credentials": [{"host": "api.example.com", "header": "Authorization", "value": "Bearer ${env:API_KEY}", "placeholder_env": "API_KEY"}],
		"max_connections": 8, "max_bytes": 1000000}}`), &p)
	if err != nil || p.Egress == nil || len(p.Egress.Allow) != 2 || p.Egress.Credentials[0].PlaceholderEnv != "API_KEY" || p.Egress.MaxConnections != 8 {
		t.Fatalf("policy = %+v, %v", p.Egress, err)
	}
	if err := json.Unmarshal([]byte(`{"egress": {"alow": ["x.com"]}}`), &p); err == nil || !strings.Contains(err.Error(), "alow") {
		t.Errorf("a misspelt egress field: %v, want an error naming it", err)
	}
}
