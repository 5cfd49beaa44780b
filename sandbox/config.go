package sandbox

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/egress"
)

// Default images, used when a config names none.
const (
	DefaultImage         = "enclave/python:bookworm"
	DefaultNotebookImage = "enclave/notebook:bookworm"
)

// The sandbox config is part of the API every client shares; these are its old names here.
type (
	// Config describes one sandbox (ms-enclave's DockerSandboxConfig fields and ours).
	Config = api.SandboxConfig
	// VolumeMount is one host mount in ms-enclave's shape.
	VolumeMount = api.VolumeMount
	// ToolsConfig maps enabled tool names to their options.
	ToolsConfig = api.ToolsConfig
	// EgressConfig narrows the operator's egress policy for one sandbox.
	EgressConfig = api.EgressConfig
)

// Policy is the operator's word on what sandbox configs may ask for. It wins over every
// field of a config that would loosen a sandbox's hardening: such a field is either refused
// (an ErrPolicy error naming the field and what is allowed) or clamped to the policy's
// maximum with a note in the sandbox's metadata. Its zero value is the safe default: no
// network, no privileged mode, no host mounts, no root user, a read-only root file system,
// the engine's runtime as the operator configures it, and limits no higher than the
// Default* caps below.
//
// In the serve command's --config file it is the "policy" section, with the JSON names
// below; max_memory is spelled as a size ("4g").
type Policy struct {
	// AllowNetwork lets a config turn network access on (network_enabled).
	AllowNetwork bool `json:"allow_network,omitempty"`
	// AllowedNetworks are the Docker networks a config with network access may name; empty
	// means "bridge" only. "host" and "container:..." are never allowed, listed or not: they
	// share the host's or another container's network stack.
	AllowedNetworks []string `json:"allowed_networks,omitempty"`
	// AllowPrivileged lets a config ask for privileged mode.
	AllowPrivileged bool `json:"allow_privileged,omitempty"`
	// AllowHostMounts lets a config mount host paths (volumes), but only under
	// AllowedHostPaths: with that list empty, no host path can be mounted.
	AllowHostMounts bool `json:"allow_host_mounts,omitempty"`
	// AllowedHostPaths are the host directories under which volumes may be mounted. A
	// volume's host path is cleaned, may not hold "..", must exist on the server's host, and
	// is mounted by its real path (symlinks resolved), which must also be under the list.
	AllowedHostPaths []string `json:"allowed_host_paths,omitempty"`
	// AllowRootUser lets a config run as uid or gid 0, or as a user name, which the server
	// cannot check (the image may map any name to uid 0).
	AllowRootUser bool `json:"allow_root_user,omitempty"`
	// AllowWritableRootfs lets a config set read_only_rootfs to false.
	AllowWritableRootfs bool `json:"allow_writable_rootfs,omitempty"`
	// AllowedRuntimes are OCI runtimes a request may name besides the one the operator's
	// config sets (see CheckRequest); empty means that one only.
	AllowedRuntimes []string `json:"allowed_runtimes,omitempty"`
	// AllowedImages, when not empty, lists the only images a config may name.
	AllowedImages []string `json:"allowed_images,omitempty"`
	// MaxMemory caps MemoryLimit in bytes; 0 means DefaultMaxMemory. The config file spells
	// it "max_memory": "4g".
	MaxMemory int64 `json:"-"`
	// MaxCPU caps CPULimit; 0 means DefaultMaxCPU.
	MaxCPU float64 `json:"max_cpu,omitempty"`
	// MaxPids caps PidsLimit; 0 means DefaultMaxPids.
	MaxPids int64 `json:"max_pids,omitempty"`
	// MaxOutputBytes caps the max_output_bytes option a config's tools_config gives a tool
	// (per stream, JSON-encoded); 0 means DefaultMaxOutputBytes. The operator's own tool
	// options (LocalConfig.ToolOptions) are not capped by it.
	MaxOutputBytes int64 `json:"max_output_bytes,omitempty"`
	// MaxTimeout caps a config's default tool timeout, in seconds; 0 means DefaultMaxTimeout.
	MaxTimeout float64 `json:"max_timeout,omitempty"`
	// Egress lets configs ask for a way out through the server's proxy (the config's
	// "egress"), to the destinations it lists at most, with its credentials and limits. Nil
	// refuses every config that asks.
	Egress *egress.Policy `json:"egress,omitempty"`
}

// UnmarshalJSON reads the config file's "policy" section. Unknown fields are an error: a
// misspelt policy field silently ignored would leave the operator with a policy other than
// the one written. max_memory takes a size ("4g") or a number of bytes.
func (p *Policy) UnmarshalJSON(b []byte) error {
	type plain Policy // without this method
	var in struct {
		plain
		MaxMemory json.RawMessage `json:"max_memory"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	*p = Policy(in.plain)
	raw := bytes.TrimSpace(in.MaxMemory)
	switch {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("policy.max_memory: %w", err)
		}
		n, err := ParseSize(s)
		if err != nil {
			return fmt.Errorf("policy.max_memory: %w", err)
		}
		p.MaxMemory = n
	default:
		if err := json.Unmarshal(raw, &p.MaxMemory); err != nil {
			return fmt.Errorf("policy.max_memory: want a size such as \"4g\" or a number of bytes: %w", err)
		}
	}
	return nil
}

// Default limits. They are what an untrusted agent gets unless a config asks for less; the
// Max* values are the caps a config cannot pass unless the operator's Policy raises them.
const (
	DefaultWorkingDir    = "/sandbox"
	DefaultMemory        = 1 << 30
	DefaultMaxMemory     = 4 << 30
	DefaultCPU           = 1.0
	DefaultMaxCPU        = 2.0
	DefaultPids          = 256
	DefaultMaxPids       = 1024
	DefaultWorkspaceSize = 512 << 20
	DefaultTmpSize       = 64 << 20
	DefaultUser          = "1000:1000"
	DefaultTimeout       = 30.0
	// DefaultMaxTimeout is the tools' own ceiling on a call's timeout.
	DefaultMaxTimeout = 3600.0
	// DefaultMaxOutputBytes is four times the agent's default per-stream cap (1 MiB): a
	// result holds two streams, so one call costs the server at most about 8 MiB.
	DefaultMaxOutputBytes = 4 << 20
	// minCPU is the engine's smallest CPU limit; below it NanoCPUs rounds to 0, which the
	// engine reads as "no limit".
	minCPU = 0.01
)

// ErrPolicy marks a config the operator's Policy refuses; callers answer it with 403.
var ErrPolicy = api.ErrPolicy

// ErrInvalidConfig marks a config that cannot be understood; callers answer it with 400.
var ErrInvalidConfig = api.ErrInvalidConfig

// Resolved is a Config after defaults and policy: every limit is a number the engine takes.
type Resolved struct {
	Config
	MemoryBytes    int64
	WorkspaceBytes int64
	TmpBytes       int64
	NanoCPUs       int64
	// Notes say where policy changed what was asked, e.g. network turned off; they are kept in
	// the sandbox's metadata so the caller can see them.
	Notes []string
	// Egress is the sandbox's way out through the server's proxy, when its config asked for
	// one: the operator's egress policy narrowed by the config.
	Egress *egress.Rules
}

// note records that policy changed what was asked.
func (r *Resolved) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Resolve applies defaults and the operator's policy to c. Each field that would loosen the
// sandbox's hardening is either refused or clamped:
//
//   - Refused (an ErrPolicy error naming the field and what is allowed) when no smaller value
//     of the same field would do what was asked: privileged, an image outside the allow-list,
//     host mounts outside the allowed paths, a root or unchecked user, a writable root file
//     system, a network other than those allowed. Running the code some other way than it
//     asked would surprise it later, far from the cause.
//   - Clamped to the policy's cap, with a note, when the field is a limit: memory, CPU,
//     processes, the default tool timeout, a tool's max_output_bytes; and network_enabled,
//     which is a limit too (none). ms-enclave's client sends network_enabled:true,
//     memory_limit:"4g" and cpu_limit:2.0 on every create, and code that ran under a higher
//     limit runs the same under a lower one until it hits it.
//
// The runtime is checked by CheckRequest, which knows the operator's own config.
func Resolve(c Config, p Policy) (Resolved, error) {
	r := Resolved{Config: c}
	if err := p.validate(); err != nil {
		return r, err
	}
	if r.Image == "" {
		r.Image = DefaultImage
	}
	if len(p.AllowedImages) > 0 && !slices.Contains(p.AllowedImages, r.Image) {
		return r, fmt.Errorf("%w: image %q is not in the allowed images (%s)", ErrPolicy, r.Image, strings.Join(p.AllowedImages, ", "))
	}
	if r.Privileged && !p.AllowPrivileged {
		return r, fmt.Errorf("%w: privileged mode is disabled by the operator (field \"privileged\")", ErrPolicy)
	}
	if r.ReadOnlyRootfs == nil {
		r.ReadOnlyRootfs = ptr(true)
	}
	if !*r.ReadOnlyRootfs && !p.AllowWritableRootfs {
		return r, fmt.Errorf("%w: read_only_rootfs false is not allowed: the operator keeps the image's files read-only "+
			"(write to the working directory or /tmp instead)", ErrPolicy)
	}
	if r.RemoveOnExit == nil {
		r.RemoveOnExit = ptr(true)
	}
	if r.WorkingDir == "" {
		r.WorkingDir = DefaultWorkingDir
	}
	if !path.IsAbs(r.WorkingDir) || path.Clean(r.WorkingDir) == "/" {
		return r, fmt.Errorf("%w: working_dir %q must be an absolute path other than /", ErrInvalidConfig, r.WorkingDir)
	}
	r.WorkingDir = path.Clean(r.WorkingDir)

	steps := []func(*Resolved, Policy) error{
		resolveUser, resolveNetwork, resolveEgress, resolveVolumes, resolveSizes, resolveCPU, resolvePids, resolveTimeout, resolveToolOptions,
	}
	for _, step := range steps {
		if err := step(&r, p); err != nil {
			return r, err
		}
	}
	for k := range r.EnvVars {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return r, fmt.Errorf("%w: env_vars: %q is not a valid variable name", ErrInvalidConfig, k)
		}
	}
	return r, nil
}

// CheckRequest refuses what a request (a REST create or pool config) asks for that only the
// operator's own config may set. operator is the operator's config for the sandbox type;
// Resolve applies every other rule to the merged config afterwards.
//
// The runtime is refused rather than clamped: it is the isolation boundary itself (gVisor's
// runsc against plain runc), so a sandbox never runs under one the operator did not choose,
// and one that asked for a runtime by name would be misled by getting another.
func CheckRequest(operator, req Config, p Policy) error {
	if req.Runtime == "" || req.Runtime == operator.Runtime || slices.Contains(p.AllowedRuntimes, req.Runtime) {
		return nil
	}
	allowed := append([]string{runtimeName(operator.Runtime)}, p.AllowedRuntimes...)
	return fmt.Errorf("%w: runtime %q is not allowed: sandboxes run with %s (allowed: %s; the operator's policy.allowed_runtimes lists others)",
		ErrPolicy, req.Runtime, runtimeName(operator.Runtime), strings.Join(allowed, ", "))
}

func runtimeName(rt string) string {
	if rt == "" {
		return "the engine's default runtime"
	}
	return strconv.Quote(rt)
}

// validate checks the policy itself, so that a mistake in it fails at start (the serve
// command resolves its default config once before serving) rather than weakening it.
func (p Policy) validate() error {
	bad := func(field string, v any) error {
		return fmt.Errorf("%w: policy.%s %v must not be negative", ErrInvalidConfig, field, v)
	}
	switch {
	case p.MaxMemory < 0:
		return bad("max_memory", p.MaxMemory)
	case p.MaxCPU < 0 || math.IsNaN(p.MaxCPU):
		return bad("max_cpu", p.MaxCPU)
	case p.MaxPids < 0:
		return bad("max_pids", p.MaxPids)
	case p.MaxOutputBytes < 0:
		return bad("max_output_bytes", p.MaxOutputBytes)
	case p.MaxTimeout < 0 || math.IsNaN(p.MaxTimeout):
		return bad("max_timeout", p.MaxTimeout)
	}
	for _, prefix := range p.AllowedHostPaths {
		if !path.IsAbs(prefix) || hasDotDot(prefix) {
			return fmt.Errorf("%w: policy.allowed_host_paths: %q must be an absolute path without \"..\"", ErrInvalidConfig, prefix)
		}
	}
	if p.Egress != nil {
		if err := p.Egress.Validate(); err != nil {
			return err
		}
	}
	for _, n := range p.AllowedNetworks {
		if sharesNamespace(n) {
			return fmt.Errorf("%w: policy.allowed_networks: %q shares the host's or another container's network and is never allowed", ErrInvalidConfig, n)
		}
	}
	return nil
}

// resolveUser refuses root. The user must be a numeric "uid:gid" with neither 0 unless the
// policy allows root: a user name is refused too, since the image's /etc/passwd decides its
// uid (and may say 0). A uid alone is completed with the same gid, because the engine gives
// a uid that its image does not list group 0.
func resolveUser(r *Resolved, p Policy) error {
	if r.User == "" {
		r.User = DefaultUser
	}
	if p.AllowRootUser {
		return nil
	}
	uidStr, gidStr, hasGID := strings.Cut(r.User, ":")
	if !hasGID {
		gidStr = uidStr
	}
	uid, uidErr := strconv.ParseUint(uidStr, 10, 32)
	gid, gidErr := strconv.ParseUint(gidStr, 10, 32)
	switch {
	case uidErr != nil || gidErr != nil:
		return fmt.Errorf("%w: user %q is not allowed: give a numeric non-root \"uid:gid\" such as %q (a user name may map to root in the image; "+
			"the operator's policy.allow_root_user lifts this)", ErrPolicy, r.User, DefaultUser)
	case uid == 0 || gid == 0:
		return fmt.Errorf("%w: user %q runs as root (uid or gid 0), which the operator does not allow: give a non-root \"uid:gid\" such as %q",
			ErrPolicy, r.User, DefaultUser)
	}
	if canonical := fmt.Sprintf("%d:%d", uid, gid); canonical != r.User {
		r.note("user %s applied as %s", r.User, canonical)
		r.User = canonical
	}
	return nil
}

// sharesNamespace reports whether a network mode joins the host's or another container's
// network stack.
func sharesNamespace(network string) bool {
	n := strings.ToLower(strings.TrimSpace(network))
	return n == "host" || strings.HasPrefix(n, "container:")
}

// resolveNetwork turns network access off unless allowed (clamped: "none" is a limit), and
// refuses a network outside the allowed ones: a different network is not a smaller amount of
// the same thing. "host" and "container:..." are refused even when network access is off.
func resolveNetwork(r *Resolved, p Policy) error {
	if sharesNamespace(r.Network) {
		return fmt.Errorf("%w: network %q is never allowed: it shares the host's or another container's network stack "+
			"(field \"network\"; allowed: %s)", ErrPolicy, r.Network, strings.Join(allowedNetworks(p), ", "))
	}
	if r.NetworkEnabled && !p.AllowNetwork {
		r.NetworkEnabled = false
		r.note("network_enabled ignored: the operator has not allowed network access")
	}
	if !r.NetworkEnabled {
		return nil
	}
	allowed := allowedNetworks(p)
	if r.Network == "" {
		r.Network = allowed[0]
	}
	if r.Network != "none" && !slices.Contains(allowed, r.Network) {
		return fmt.Errorf("%w: network %q is not allowed (field \"network\"; allowed: %s)", ErrPolicy, r.Network, strings.Join(allowed, ", "))
	}
	return nil
}

// resolveEgress narrows the operator's egress policy by the config's, refusing what would
// widen it. A sandbox with egress has no network interface: network_enabled is turned off,
// with a note, since the proxy is then its only way out.
func resolveEgress(r *Resolved, p Policy) error {
	if r.Config.Egress == nil {
		return nil
	}
	if p.Egress == nil {
		return fmt.Errorf("%w: egress is not enabled by the operator (field \"egress\"; the operator's policy.egress lists what sandboxes may reach)", ErrPolicy)
	}
	rules, err := p.Egress.Narrow(*r.Config.Egress)
	if err != nil {
		return err
	}
	if r.NetworkEnabled {
		r.NetworkEnabled, r.Network = false, ""
		r.note("network_enabled turned off: the sandbox reaches only its egress allow-list, through the server's proxy")
	}
	r.Egress = &rules
	return nil
}

func allowedNetworks(p Policy) []string {
	if len(p.AllowedNetworks) == 0 {
		return []string{"bridge"}
	}
	return p.AllowedNetworks
}

// resolveVolumes refuses host mounts unless the policy allows them under its allowed paths.
// Each host path is taken by its real path on this host (symlinks resolved), which is what
// gets mounted: a symlink planted under an allowed directory (by a sandbox that has it
// mounted read-write, say) cannot lead a later mount elsewhere. A path that does not exist
// here cannot be checked and is refused; so host mounts need the engine on this host.
func resolveVolumes(r *Resolved, p Policy) error {
	if len(r.Volumes) == 0 {
		return nil
	}
	if !p.AllowHostMounts {
		return fmt.Errorf("%w: host volumes are disabled by the operator (field \"volumes\")", ErrPolicy)
	}
	if len(p.AllowedHostPaths) == 0 {
		return fmt.Errorf("%w: volumes: the operator allows host mounts but lists no host paths for them (policy.allowed_host_paths)", ErrPolicy)
	}
	out := make(map[string]VolumeMount, len(r.Volumes))
	for _, hostPath := range slices.Sorted(maps.Keys(r.Volumes)) {
		v := r.Volumes[hostPath]
		if !path.IsAbs(hostPath) || !path.IsAbs(v.Bind) {
			return fmt.Errorf("%w: volumes: host path %q and bind %q must be absolute", ErrInvalidConfig, hostPath, v.Bind)
		}
		if hasDotDot(hostPath) {
			return fmt.Errorf("%w: volumes: host path %q must not contain \"..\" (allowed under: %s)",
				ErrPolicy, hostPath, strings.Join(p.AllowedHostPaths, ", "))
		}
		if hasDotDot(v.Bind) || strings.ContainsRune(hostPath+v.Bind, 0) {
			return fmt.Errorf("%w: volumes: host path %q and bind %q must not contain \"..\" or NUL", ErrInvalidConfig, hostPath, v.Bind)
		}
		if v.Mode != "" && v.Mode != "rw" && v.Mode != "ro" {
			return fmt.Errorf("%w: volumes: mode %q for %q must be \"rw\" or \"ro\"", ErrInvalidConfig, v.Mode, hostPath)
		}
		bind := path.Clean(v.Bind)
		if bind == "/" || within(bind, AgentDir) || within(bind, AgentSocketDir) {
			return fmt.Errorf("%w: volumes: bind %q would cover the root or the sandbox's agent (%s, %s)", ErrPolicy, v.Bind, AgentDir, AgentSocketDir)
		}
		real, err := allowedHostPath(path.Clean(hostPath), p.AllowedHostPaths)
		if err != nil {
			return err
		}
		if _, dup := out[real]; dup {
			return fmt.Errorf("%w: volumes: two host paths lead to %s", ErrInvalidConfig, real)
		}
		if real != hostPath {
			r.note("volumes: host path %s mounted as %s", hostPath, real)
		}
		out[real] = VolumeMount{Bind: bind, Mode: v.Mode}
	}
	r.Volumes = out
	return nil
}

// allowedHostPath returns hostPath's real path when both it and the real path are within one
// of the allowed prefixes (each compared by its own real path too, so an operator may list a
// path that is itself a symlink).
func allowedHostPath(hostPath string, prefixes []string) (string, error) {
	refuse := func(why string) error {
		return fmt.Errorf("%w: volumes: host path %q %s (allowed under: %s)", ErrPolicy, hostPath, why, strings.Join(prefixes, ", "))
	}
	if !slices.ContainsFunc(prefixes, func(pre string) bool { return within(hostPath, path.Clean(pre)) }) {
		return "", refuse("is not under an allowed host path")
	}
	real, err := filepath.EvalSymlinks(hostPath)
	if err != nil {
		return "", refuse(fmt.Sprintf("cannot be checked on this host (%v)", err))
	}
	ok := slices.ContainsFunc(prefixes, func(pre string) bool {
		realPre, err := filepath.EvalSymlinks(pre)
		if err != nil {
			realPre = path.Clean(pre)
		}
		return within(real, realPre)
	})
	if !ok {
		return "", refuse(fmt.Sprintf("leads through a symlink to %s, outside the allowed host paths", real))
	}
	return real, nil
}

// within reports whether p is dir or below it; both are clean absolute paths.
func within(p, dir string) bool {
	return dir == "/" || p == dir || strings.HasPrefix(p, dir+"/")
}

// hasDotDot reports whether a slash-separated path has a ".." element.
func hasDotDot(p string) bool {
	return slices.Contains(strings.Split(p, "/"), "..")
}

// resolveSizes reads memory_limit (clamped to the policy's cap) and the tmpfs sizes. The
// tmpfs sizes are not capped: their pages count against the memory limit.
func resolveSizes(r *Resolved, p Policy) error {
	maxMem := cmp.Or(p.MaxMemory, DefaultMaxMemory)
	var err error
	if r.MemoryBytes, err = sizeOrDefault("memory_limit", r.MemoryLimit, DefaultMemory); err != nil {
		return err
	}
	if r.MemoryBytes > maxMem {
		r.note("memory_limit %s lowered to the operator's cap of %s", r.MemoryLimit, formatSize(maxMem))
		r.MemoryBytes = maxMem
	}
	if r.MemoryBytes < 16<<20 {
		return fmt.Errorf("%w: memory_limit %q is below the 16m minimum", ErrInvalidConfig, r.MemoryLimit)
	}
	if r.WorkspaceBytes, err = sizeOrDefault("workspace_size", r.WorkspaceSize, DefaultWorkspaceSize); err != nil {
		return err
	}
	if r.TmpBytes, err = sizeOrDefault("tmp_size", r.TmpSize, DefaultTmpSize); err != nil {
		return err
	}
	return nil
}

// resolveCPU clamps cpu_limit to the policy's cap and refuses one so small that the engine
// would read it as no limit at all.
func resolveCPU(r *Resolved, p Policy) error {
	maxCPU := cmp.Or(p.MaxCPU, DefaultMaxCPU)
	cpu := r.CPULimit
	switch {
	case cpu < 0 || math.IsNaN(cpu):
		return fmt.Errorf("%w: cpu_limit %v must be > 0", ErrInvalidConfig, cpu)
	case cpu == 0:
		cpu = DefaultCPU
	case cpu < minCPU:
		return fmt.Errorf("%w: cpu_limit %v is below the engine's minimum of %v CPUs", ErrInvalidConfig, cpu, minCPU)
	case cpu > maxCPU:
		r.note("cpu_limit %v lowered to the operator's cap of %v", cpu, maxCPU)
		cpu = maxCPU
	}
	r.CPULimit = cpu
	r.NanoCPUs = int64(cpu * 1e9)
	return nil
}

// resolvePids clamps pids_limit to the policy's cap.
func resolvePids(r *Resolved, p Policy) error {
	maxPids := cmp.Or(p.MaxPids, DefaultMaxPids)
	switch {
	case r.PidsLimit < 0:
		return fmt.Errorf("%w: pids_limit %d must be > 0", ErrInvalidConfig, r.PidsLimit)
	case r.PidsLimit == 0:
		r.PidsLimit = DefaultPids
	case r.PidsLimit > maxPids:
		r.note("pids_limit %d lowered to the operator's cap of %d", r.PidsLimit, maxPids)
		r.PidsLimit = maxPids
	}
	return nil
}

// resolveTimeout clamps the default tool timeout to the policy's cap.
func resolveTimeout(r *Resolved, p Policy) error {
	maxTimeout := cmp.Or(p.MaxTimeout, DefaultMaxTimeout)
	switch {
	case r.Timeout < 0 || math.IsNaN(r.Timeout):
		return fmt.Errorf("%w: timeout %v must be >= 0 seconds", ErrInvalidConfig, r.Timeout)
	case r.Timeout == 0:
		r.Timeout = DefaultTimeout
	case r.Timeout > maxTimeout:
		r.note("timeout %vs lowered to the operator's cap of %vs", r.Timeout, maxTimeout)
		r.Timeout = maxTimeout
	}
	return nil
}

// resolveToolOptions clamps each tool's max_output_bytes option to the policy's cap: the
// server holds a call's whole output in memory. The options are copied, never changed in
// place, since the caller's config may share them.
func resolveToolOptions(r *Resolved, p Policy) error {
	maxOut := cmp.Or(p.MaxOutputBytes, DefaultMaxOutputBytes)
	var out ToolsConfig
	for _, name := range r.ToolsConfig.Names() {
		n, ok := number(r.ToolsConfig[name]["max_output_bytes"])
		if !ok || n <= float64(maxOut) {
			continue
		}
		if out == nil {
			out = maps.Clone(r.ToolsConfig)
		}
		opts := maps.Clone(out[name])
		opts["max_output_bytes"] = float64(maxOut)
		out[name] = opts
		r.note("tools_config.%s.max_output_bytes %v lowered to the operator's cap of %d", name, n, maxOut)
	}
	if out != nil {
		r.ToolsConfig = out
	}
	return nil
}

// number reads a JSON-decoded or Go number option.
// MaxOutputBytes reads a tool's max_output_bytes option: a positive number of any Go
// numeric type or JSON number (a Go embedder's int as much as a decoded config's float64),
// else 0, the sandbox's default.
func MaxOutputBytes(opts map[string]any) int {
	if n, ok := number(opts["max_output_bytes"]); ok && n > 0 {
		return int(n)
	}
	return 0
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

func ptr[T any](v T) *T { return &v }

func sizeOrDefault(field, s string, def int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	n, err := ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, field, err)
	}
	return n, nil
}

// ParseSize reads a size the way Docker's CLI does: a number with an optional unit b, k, m, g
// (powers of 1024, case-insensitive, an optional trailing "b" as in "512mb").
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "ib")
	if len(t) > 1 && strings.HasSuffix(t, "b") && strings.ContainsAny(t[len(t)-2:len(t)-1], "kmg") {
		t = t[:len(t)-1]
	}
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'b':
			t = t[:len(t)-1]
		case 'k':
			mult, t = 1<<10, t[:len(t)-1]
		case 'm':
			mult, t = 1<<20, t[:len(t)-1]
		case 'g':
			mult, t = 1<<30, t[:len(t)-1]
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	// NaN, infinities, sizes past int64 and sizes under one byte are refused: converted, they
	// would come out as a negative size or 0, which a tmpfs reads as "no limit".
	n := f * float64(mult)
	if err != nil || !(n >= 1) || n >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional unit b, k, m or g (e.g. 512m)", s)
	}
	return int64(n), nil
}

func formatSize(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dg", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dm", n>>20)
	default:
		return strconv.FormatInt(n, 10)
	}
}
