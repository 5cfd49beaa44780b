package sandbox

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/api"
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
)

// Policy is the operator's word on what sandbox configs may ask for. Its zero value is the
// safe default: no network, no privileged mode, no host mounts, no limits above the caps.
type Policy struct {
	AllowNetwork    bool
	AllowPrivileged bool
	AllowHostMounts bool
	// MaxMemory caps MemoryLimit in bytes; 0 means DefaultMaxMemory.
	MaxMemory int64
	// MaxCPU caps CPULimit; 0 means the default cap.
	MaxCPU float64
	// AllowedImages, when not empty, lists the only images a config may name.
	AllowedImages []string
}

// Default limits. They are what an untrusted agent gets unless a config asks for less.
const (
	DefaultWorkingDir    = "/sandbox"
	DefaultMemory        = 1 << 30
	DefaultMaxMemory     = 4 << 30
	DefaultCPU           = 1.0
	DefaultMaxCPU        = 2.0
	DefaultPids          = 256
	DefaultWorkspaceSize = 512 << 20
	DefaultTmpSize       = 64 << 20
	DefaultUser          = "1000:1000"
	DefaultTimeout       = 30.0
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
}

// Resolve applies defaults and the operator's policy to c. Asking for something dangerous
// that the policy does not allow (privileged, host mounts, an image outside the allow-list)
// is an ErrPolicy error naming the field; asking for network or more memory than allowed is
// not an error, because ms-enclave's client sends network_enabled:true and memory_limit:"4g"
// on every create: the policy's value is applied and a note says so.
func Resolve(c Config, p Policy) (Resolved, error) {
	r := Resolved{Config: c}
	if r.Image == "" {
		r.Image = DefaultImage
	}
	if len(p.AllowedImages) > 0 && !slices.Contains(p.AllowedImages, r.Image) {
		return r, fmt.Errorf("%w: image %q is not in the allowed images (%s)", ErrPolicy, r.Image, strings.Join(p.AllowedImages, ", "))
	}
	if r.Privileged && !p.AllowPrivileged {
		return r, fmt.Errorf("%w: privileged mode is disabled by the operator (field \"privileged\")", ErrPolicy)
	}
	if len(r.Volumes) > 0 && !p.AllowHostMounts {
		return r, fmt.Errorf("%w: host volumes are disabled by the operator (field \"volumes\")", ErrPolicy)
	}
	if r.WorkingDir == "" {
		r.WorkingDir = DefaultWorkingDir
	}
	if !path.IsAbs(r.WorkingDir) || path.Clean(r.WorkingDir) == "/" {
		return r, fmt.Errorf("%w: working_dir %q must be an absolute path other than /", ErrInvalidConfig, r.WorkingDir)
	}
	r.WorkingDir = path.Clean(r.WorkingDir)
	for hostPath, v := range r.Volumes {
		if !path.IsAbs(hostPath) || !path.IsAbs(v.Bind) {
			return r, fmt.Errorf("%w: volumes: host path %q and bind %q must be absolute", ErrInvalidConfig, hostPath, v.Bind)
		}
		if v.Mode != "" && v.Mode != "rw" && v.Mode != "ro" {
			return r, fmt.Errorf("%w: volumes: mode %q for %q must be \"rw\" or \"ro\"", ErrInvalidConfig, v.Mode, hostPath)
		}
	}

	maxMem := p.MaxMemory
	if maxMem == 0 {
		maxMem = DefaultMaxMemory
	}
	var err error
	if r.MemoryBytes, err = sizeOrDefault("memory_limit", r.MemoryLimit, DefaultMemory); err != nil {
		return r, err
	}
	if r.MemoryBytes > maxMem {
		r.Notes = append(r.Notes, fmt.Sprintf("memory_limit %s lowered to the operator's cap of %s", r.MemoryLimit, formatSize(maxMem)))
		r.MemoryBytes = maxMem
	}
	if r.MemoryBytes < 16<<20 {
		return r, fmt.Errorf("%w: memory_limit %q is below the 16m minimum", ErrInvalidConfig, r.MemoryLimit)
	}
	if r.WorkspaceBytes, err = sizeOrDefault("workspace_size", r.WorkspaceSize, DefaultWorkspaceSize); err != nil {
		return r, err
	}
	if r.TmpBytes, err = sizeOrDefault("tmp_size", r.TmpSize, DefaultTmpSize); err != nil {
		return r, err
	}

	maxCPU := p.MaxCPU
	if maxCPU == 0 {
		maxCPU = DefaultMaxCPU
	}
	cpu := r.CPULimit
	switch {
	case cpu < 0:
		return r, fmt.Errorf("%w: cpu_limit %v must be > 0", ErrInvalidConfig, cpu)
	case cpu == 0:
		cpu = DefaultCPU
	case cpu > maxCPU:
		r.Notes = append(r.Notes, fmt.Sprintf("cpu_limit %v lowered to the operator's cap of %v", cpu, maxCPU))
		cpu = maxCPU
	}
	r.CPULimit = cpu
	r.NanoCPUs = int64(cpu * 1e9)

	switch {
	case r.PidsLimit < 0:
		return r, fmt.Errorf("%w: pids_limit %d must be > 0", ErrInvalidConfig, r.PidsLimit)
	case r.PidsLimit == 0:
		r.PidsLimit = DefaultPids
	}
	if r.User == "" {
		r.User = DefaultUser
	}
	if r.ReadOnlyRootfs == nil {
		r.ReadOnlyRootfs = ptr(true)
	}
	if r.RemoveOnExit == nil {
		r.RemoveOnExit = ptr(true)
	}
	if r.NetworkEnabled && !p.AllowNetwork {
		r.NetworkEnabled = false
		r.Notes = append(r.Notes, "network_enabled ignored: the operator has not allowed network access")
	}
	if r.NetworkEnabled && r.Network == "" {
		r.Network = "bridge"
	}
	if r.Timeout < 0 {
		return r, fmt.Errorf("%w: timeout %v must be >= 0 seconds", ErrInvalidConfig, r.Timeout)
	}
	if r.Timeout == 0 {
		r.Timeout = DefaultTimeout
	}
	for k := range r.EnvVars {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return r, fmt.Errorf("%w: env_vars: %q is not a valid variable name", ErrInvalidConfig, k)
		}
	}
	return r, nil
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
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional unit b, k, m or g (e.g. 512m)", s)
	}
	return int64(f * float64(mult)), nil
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
