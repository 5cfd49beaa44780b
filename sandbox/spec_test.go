package sandbox

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/enclave-mcp/enclave-mcp/egress"
)

func mustResolve(t *testing.T, c Config, p Policy) Resolved {
	t.Helper()
	r, err := Resolve(c, p)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return r
}

// TestContainerSpecHardenedDefaults pins every security default of a sandbox with no config.
func TestContainerSpecHardenedDefaults(t *testing.T) {
	t.Parallel()
	cfg, host := containerSpec(specInput{
		ID: "abc", Labels: managedLabels(Identity{ID: "inst", Host: "h", PID: 42, PIDStart: "999"}, "abc", "sess", "docker"),
		Config: mustResolve(t, Config{}, Policy{}), AgentVolume: "agentvol",
	})

	if cfg.Image != DefaultImage {
		t.Errorf("Image = %q, want the default %q", cfg.Image, DefaultImage)
	}
	wantEntry := []string{"/.enclave/agent", "agent", "--workspace", "/sandbox"}
	if !reflect.DeepEqual([]string(cfg.Entrypoint), wantEntry) {
		t.Errorf("Entrypoint = %v, want %v", cfg.Entrypoint, wantEntry)
	}
	if cfg.User != "1000:1000" {
		t.Errorf("User = %q, want non-root 1000:1000", cfg.User)
	}
	if !cfg.OpenStdin || !cfg.StdinOnce || !cfg.AttachStdin {
		t.Error("the agent's stdin must be open and close when the server detaches (StdinOnce)")
	}
	wantLabels := map[string]string{LabelManaged: "true", LabelInstance: "inst", LabelSandbox: "abc", LabelKind: "docker", LabelOwner: "sess",
		LabelHost: "h", LabelPID: "42", LabelPIDStart: "999"}
	if !reflect.DeepEqual(cfg.Labels, wantLabels) {
		t.Errorf("Labels = %v, want %v", cfg.Labels, wantLabels)
	}

	checks := []struct {
		name      string
		got, want any
	}{
		{"NetworkMode", host.NetworkMode, container.NetworkMode("none")},
		{"ReadonlyRootfs", host.ReadonlyRootfs, true},
		{"CapDrop", []string(host.CapDrop), []string{"ALL"}},
		{"CapAdd", len(host.CapAdd), 0},
		{"SecurityOpt", host.SecurityOpt, []string{"no-new-privileges", "seccomp=" + defaultSeccompJSON()}},
		{"Ulimits", host.Ulimits, []*container.Ulimit{{Name: "core", Soft: 0, Hard: 0}, {Name: "nofile", Soft: 1024, Hard: 4096}}},
		{"Privileged", host.Privileged, false},
		{"Init", *host.Init, false},
		{"AutoRemove", host.AutoRemove, true},
		{"LogConfig", host.LogConfig.Type, "none"},
		{"Memory", host.Memory, int64(DefaultMemory)},
		{"MemorySwap (no swap)", host.MemorySwap, int64(DefaultMemory)},
		{"NanoCPUs", host.NanoCPUs, int64(1e9)},
		{"PidsLimit", *host.PidsLimit, int64(DefaultPids)},
		{"workspace tmpfs", host.Tmpfs["/sandbox"], "rw,exec,nosuid,nodev,size=536870912,mode=1777,uid=1000,gid=1000"},
		{"tmp tmpfs", host.Tmpfs["/tmp"], "rw,exec,nosuid,nodev,size=67108864,mode=1777"},
		{"mounts", host.Mounts, []mount.Mount{{Type: mount.TypeVolume, Source: "agentvol", Target: "/.enclave", ReadOnly: true, VolumeOptions: &mount.VolumeOptions{NoCopy: true}}}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	for _, e := range cfg.Env {
		if strings.HasPrefix(e, "HOME=") && e != "HOME=/sandbox" {
			t.Errorf("HOME must be the writable workspace, got %s", e)
		}
	}
}

func TestContainerSpecFromConfig(t *testing.T) {
	t.Parallel()
	data := t.TempDir() // a host mount's path must exist here: its symlinks are resolved
	r := mustResolve(t, Config{
		Image: "img", WorkingDir: "/work/", MemoryLimit: "256m", CPULimit: 0.5, PidsLimit: 64,
		EnvVars: map[string]string{"B": "2", "A": "1"}, NetworkEnabled: true, ExtraHosts: map[string]string{"db": "10.0.0.2"},
		Volumes: map[string]VolumeMount{data: {Bind: "/mnt/data", Mode: "ro"}}, Runtime: "runsc", User: "root",
	}, Policy{AllowNetwork: true, AllowHostMounts: true, AllowedHostPaths: []string{data}, AllowRootUser: true})
	cfg, host := containerSpec(specInput{ID: "x", Config: r, AgentVolume: "v"})

	if got := cfg.Env[len(cfg.Env)-2:]; !reflect.DeepEqual(got, []string{"A=1", "B=2"}) {
		t.Errorf("env vars must come last, sorted: got %v", got)
	}
	if cfg.WorkingDir != "/work" || host.Tmpfs["/work"] == "" {
		t.Errorf("working dir /work/ must be cleaned and be the tmpfs workspace: %q %v", cfg.WorkingDir, host.Tmpfs)
	}
	if host.NetworkMode != "bridge" || host.Runtime != "runsc" || cfg.User != "root" {
		t.Errorf("network %q runtime %q user %q", host.NetworkMode, host.Runtime, cfg.User)
	}
	if host.Memory != 256<<20 || host.NanoCPUs != 5e8 || *host.PidsLimit != 64 {
		t.Errorf("limits: memory %d cpus %d pids %d", host.Memory, host.NanoCPUs, *host.PidsLimit)
	}
	if !reflect.DeepEqual(host.ExtraHosts, []string{"db:10.0.0.2"}) {
		t.Errorf("ExtraHosts = %v", host.ExtraHosts)
	}
	last := host.Mounts[len(host.Mounts)-1]
	if last.Type != mount.TypeBind || last.Source != data || last.Target != "/mnt/data" || !last.ReadOnly {
		t.Errorf("host mount = %+v", last)
	}
}

// TestContainerSpecSeccompPinned: every sandbox carries the default seccomp profile itself,
// so an engine whose default is unconfined still confines it. The profile is evaluated the
// way the engine does for a container with every capability dropped: the system calls that
// break out of a container's namespaces or reach the kernel keyring are not allowed.
func TestContainerSpecSeccompPinned(t *testing.T) {
	t.Parallel()
	_, host := containerSpec(specInput{ID: "x", Config: mustResolve(t, Config{}, Policy{}), AgentVolume: "v"})
	var profileJSON string
	for _, opt := range host.SecurityOpt {
		if v, ok := strings.CutPrefix(opt, "seccomp="); ok {
			if profileJSON != "" {
				t.Fatal("two seccomp options: the engine keeps only one")
			}
			profileJSON = v
		}
	}
	if profileJSON == "" {
		t.Fatalf("SecurityOpt %q pins no seccomp profile", host.SecurityOpt)
	}
	want, err := json.Marshal(seccomp.DefaultProfile())
	if err != nil {
		t.Fatal(err)
	}
	if profileJSON != string(want) {
		t.Error("the pinned profile is not moby's default profile")
	}
	if len(profileJSON) > 64<<10 {
		t.Errorf("profile is %d bytes: every create sends it", len(profileJSON))
	}

	// What the engine does with it at create: conditions resolved against this container.
	noCaps := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}}
	loaded, err := seccomp.LoadProfile(profileJSON, noCaps)
	if err != nil {
		t.Fatalf("the profile does not load: %v", err)
	}
	if loaded.DefaultAction != specs.ActErrno || loaded.DefaultErrnoRet == nil || *loaded.DefaultErrnoRet != 1 {
		t.Errorf("default action %s errno %v, want SCMP_ACT_ERRNO with EPERM", loaded.DefaultAction, loaded.DefaultErrnoRet)
	}
	allowed := map[string]bool{}
	for _, sc := range loaded.Syscalls {
		if sc.Action == specs.ActAllow && len(sc.Args) == 0 {
			for _, n := range sc.Names {
				allowed[n] = true
			}
		}
	}
	for _, name := range []string{"read", "write", "openat", "execve", "wait4", "kill"} {
		if !allowed[name] {
			t.Errorf("%s is not allowed: nothing would run", name)
		}
	}
	for _, name := range []string{"unshare", "setns", "mount", "keyctl", "add_key", "request_key", "bpf", "kexec_load", "init_module", "open_by_handle_at"} {
		if allowed[name] {
			t.Errorf("%s is allowed without capabilities", name)
		}
	}
}

// TestContainerSpecAppArmor: the AppArmor profile is named only where the engine's host has
// AppArmor, so creates on hosts without it (this one) keep working.
func TestContainerSpecAppArmor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		host HostSecurity
		want string // the apparmor option, "" for none
	}{
		{"host without AppArmor", HostSecurity{}, ""},
		{"host with AppArmor", HostSecurity{AppArmor: true}, "apparmor=docker-default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, host := containerSpec(specInput{ID: "x", Config: mustResolve(t, Config{}, Policy{}), AgentVolume: "v", Host: tc.host})
			var got []string
			for _, opt := range host.SecurityOpt {
				if strings.HasPrefix(opt, "apparmor") {
					got = append(got, opt)
				}
			}
			switch {
			case tc.want == "" && len(got) != 0:
				t.Errorf("AppArmor options %q on a host without AppArmor", got)
			case tc.want != "" && !reflect.DeepEqual(got, []string{tc.want}):
				t.Errorf("AppArmor options %q, want [%s]", got, tc.want)
			}
			if host.SecurityOpt[0] != "no-new-privileges" || !strings.HasPrefix(host.SecurityOpt[1], "seccomp=") {
				t.Errorf("the other options changed: %.60q", host.SecurityOpt)
			}
		})
	}
}

func TestParseSecurityOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts []string
		want HostSecurity
	}{
		{"this engine (20.10, no AppArmor)", []string{"name=seccomp,profile=default"}, HostSecurity{}},
		{"Ubuntu engine", []string{"name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"}, HostSecurity{AppArmor: true}},
		{"rootless", []string{"name=seccomp,profile=default", "name=rootless"}, HostSecurity{}},
		{"none", nil, HostSecurity{}},
		{"a profile named like it is not AppArmor", []string{"name=seccomp,profile=name=apparmor-ish"}, HostSecurity{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseSecurityOptions(tc.opts); got != tc.want {
				t.Errorf("ParseSecurityOptions(%q) = %+v, want %+v", tc.opts, got, tc.want)
			}
		})
	}
}

func TestResolvePolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cfg       Config
		policy    Policy
		wantErr   error
		errSays   string
		wantNote  string
		checkFunc func(*testing.T, Resolved)
	}{
		{name: "privileged refused", cfg: Config{Privileged: true}, wantErr: ErrPolicy, errSays: `"privileged"`},
		{name: "privileged allowed", cfg: Config{Privileged: true}, policy: Policy{AllowPrivileged: true}},
		{name: "host volume refused", cfg: Config{Volumes: map[string]VolumeMount{"/etc": {Bind: "/x"}}}, wantErr: ErrPolicy, errSays: `"volumes"`},
		{name: "image outside allow-list", cfg: Config{Image: "evil"}, policy: Policy{AllowedImages: []string{DefaultImage}}, wantErr: ErrPolicy, errSays: `"evil"`},
		{name: "network asked, not allowed: applied off with a note", cfg: Config{NetworkEnabled: true}, wantNote: "network_enabled ignored",
			checkFunc: func(t *testing.T, r Resolved) {
				if r.NetworkEnabled {
					t.Error("network must stay off")
				}
			}},
		{name: "ms-enclave's default 4g memory is capped, not refused", cfg: Config{MemoryLimit: "4g"}, policy: Policy{MaxMemory: 2 << 30}, wantNote: "lowered",
			checkFunc: func(t *testing.T, r Resolved) {
				if r.MemoryBytes != 2<<30 {
					t.Errorf("memory = %d", r.MemoryBytes)
				}
			}},
		{name: "bad memory size", cfg: Config{MemoryLimit: "lots"}, wantErr: ErrInvalidConfig, errSays: "memory_limit"},
		{name: "negative cpu", cfg: Config{CPULimit: -1}, wantErr: ErrInvalidConfig, errSays: "cpu_limit"},
		{name: "relative working dir", cfg: Config{WorkingDir: "rel"}, wantErr: ErrInvalidConfig, errSays: "working_dir"},
		{name: "root working dir", cfg: Config{WorkingDir: "/"}, wantErr: ErrInvalidConfig, errSays: "working_dir"},
		{name: "bad env name", cfg: Config{EnvVars: map[string]string{"A=B": "x"}}, wantErr: ErrInvalidConfig, errSays: "env_vars"},
		{name: "volume mode", cfg: Config{Volumes: map[string]VolumeMount{"/a": {Bind: "/b", Mode: "rwx"}}}, policy: Policy{AllowHostMounts: true, AllowedHostPaths: []string{"/"}}, wantErr: ErrInvalidConfig, errSays: "mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := Resolve(tc.cfg, tc.policy)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errSays) {
					t.Fatalf("err = %v, want %v mentioning %s", err, tc.wantErr, tc.errSays)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantNote != "" && !strings.Contains(strings.Join(r.Notes, "|"), tc.wantNote) {
				t.Errorf("notes %v lack %q", r.Notes, tc.wantNote)
			}
			if tc.checkFunc != nil {
				tc.checkFunc(t, r)
			}
		})
	}
}

func TestNumericUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		uid, gid string
		ok       bool
	}{
		{"1000:1000", "1000", "1000", true},
		{"1000", "1000", "1000", true},
		{"0:5", "0", "5", true},
		{"root", "0", "0", true},
		{"sandbox", "", "", false},
		{"1000:staff", "", "", false},
	}
	for _, tc := range tests {
		uid, gid, ok := NumericUser(tc.in)
		if uid != tc.uid || gid != tc.gid || ok != tc.ok {
			t.Errorf("NumericUser(%q) = %q, %q, %v; want %q, %q, %v", tc.in, uid, gid, ok, tc.uid, tc.gid, tc.ok)
		}
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	good := map[string]int64{"512m": 512 << 20, "1g": 1 << 30, "1G": 1 << 30, "64mb": 64 << 20, "100": 100, "2k": 2048, "1.5g": 3 << 29, "10b": 10}
	for in, want := range good {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "m", "-1g", "1t", "abc", "0"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) should fail", in)
		}
	}
}

func TestToolsConfigForms(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`["python_executor","shell_executor"]`, `{"python_executor":{},"shell_executor":null}`} {
		var tc ToolsConfig
		if err := tc.UnmarshalJSON([]byte(in)); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := tc.Names(); !reflect.DeepEqual(got, []string{"python_executor", "shell_executor"}) {
			t.Errorf("%s: names %v", in, got)
		}
	}
	var tc ToolsConfig
	if err := tc.UnmarshalJSON([]byte(`"python_executor"`)); err == nil {
		t.Error("a bare string must be refused")
	}
}

// TestContainerSpecEgress: a sandbox with egress keeps no network, its agent listens for
// the proxy, programs are pointed at it, the rules are on record in a label (without the
// credential's value), and the CA bundle's directory exists only with credential rules.
func TestContainerSpecEgress(t *testing.T) {
	withCreds := Policy{Egress: &egress.Policy{Allow: []string{"api.example.com"},
		Credentials: []egress.Credential{
			{Host: "api.example.com", Header: "Authorization", Value: "Bearer ${env:SECRET_KEY}", PlaceholderEnv: "API_KEY"},
			{Host: "api.example.com", Header: "X-Literal", Value: "sk-written-in-the-policy"},
		}}}
	for _, tc := range []struct {
		name   string
		policy Policy
		bundle bool
	}{
		{"allow-list only", Policy{Egress: &egress.Policy{Allow: []string{"pypi.org"}}}, false},
		{"with a credential", withCreds, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustResolve(t, Config{Egress: &EgressConfig{}}, tc.policy)
			cfg, host := containerSpec(specInput{ID: "x", Labels: map[string]string{}, Config: r, AgentVolume: "v", AgentArgs: []string{"extra"}})
			if host.NetworkMode != "none" {
				t.Errorf("network mode %q, want none", host.NetworkMode)
			}
			if got := strings.Join(cfg.Entrypoint, " "); !strings.HasSuffix(got, "--egress-listen "+EgressProxyAddr+" extra") {
				t.Errorf("entrypoint %q does not start the egress listener", got)
			}
			env := strings.Join(cfg.Env, "\n")
			for _, want := range []string{"HTTPS_PROXY=http://" + EgressProxyAddr, "http_proxy=http://" + EgressProxyAddr, "NO_PROXY="} {
				if !strings.Contains(env, want) {
					t.Errorf("env lacks %q", want)
				}
			}
			if strings.Contains(env, "SSL_CERT_FILE="+egressBundle) != tc.bundle || (host.Tmpfs[egressDir] != "") != tc.bundle {
				t.Errorf("bundle variables %v, bundle tmpfs %q; want them %v", strings.Contains(env, "SSL_CERT_FILE"), host.Tmpfs[egressDir], tc.bundle)
			}
			var rules egress.Rules
			if err := json.Unmarshal([]byte(cfg.Labels[LabelEgress]), &rules); err != nil || len(rules.Allow) != 1 {
				t.Errorf("label %s = %q (%v), want the rules", LabelEgress, cfg.Labels[LabelEgress], err)
			}
			if strings.Contains(cfg.Labels[LabelEgress], "sk-written-in-the-policy") || strings.Contains(env, "sk-written-in-the-policy") {
				t.Errorf("a literal credential value is recorded with the container")
			}
			if tc.bundle && (!strings.Contains(env, "API_KEY="+egress.Placeholder) || !strings.Contains(cfg.Labels[LabelEgress], "${env:SECRET_KEY}")) {
				t.Errorf("placeholder or credential reference missing:\n%s\n%s", env, cfg.Labels[LabelEgress])
			}
		})
	}
}

// TestContainerSpecAgentSocket: with a socket directory, the agent connects to it (before
// any extra arguments) and the directory is mounted read-only where the agent looks
// (TestPolicyRefusesLoosening: a user's volume may not cover it).
func TestContainerSpecAgentSocket(t *testing.T) {
	t.Parallel()
	r := mustResolve(t, Config{}, Policy{})
	cfg, host := containerSpec(specInput{ID: "x", Labels: map[string]string{}, Config: r, AgentVolume: "v", AgentArgs: []string{"extra"}, AgentSocketDir: "/host/dir"})
	wantEntry := []string{AgentPath, "agent", "--workspace", "/sandbox", "--connect", AgentSocketPath, "extra"}
	if !reflect.DeepEqual([]string(cfg.Entrypoint), wantEntry) {
		t.Errorf("Entrypoint = %v, want %v", cfg.Entrypoint, wantEntry)
	}
	want := mount.Mount{Type: mount.TypeBind, Source: "/host/dir", Target: AgentSocketDir, ReadOnly: true}
	if !slices.Contains(host.Mounts, want) {
		t.Errorf("mounts %+v lack %+v", host.Mounts, want)
	}

	cfg, host = containerSpec(specInput{ID: "x", Labels: map[string]string{}, Config: r, AgentVolume: "v"})
	if slices.Contains(cfg.Entrypoint, "--connect") || slices.ContainsFunc(host.Mounts, func(m mount.Mount) bool { return m.Target == AgentSocketDir }) {
		t.Errorf("without a socket directory: entrypoint %v, mounts %+v", cfg.Entrypoint, host.Mounts)
	}
}
