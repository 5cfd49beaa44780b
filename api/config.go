package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
)

// SandboxStatus is a sandbox's place in its life cycle.
type SandboxStatus string

// The statuses, with ms-enclave's names.
const (
	StatusInitializing SandboxStatus = "initializing"
	StatusRunning      SandboxStatus = "running"
	StatusIdle         SandboxStatus = "idle"
	StatusBusy         SandboxStatus = "busy"
	StatusStopping     SandboxStatus = "stopping"
	StatusStopped      SandboxStatus = "stopped"
	StatusError        SandboxStatus = "error"
)

// SandboxType is a sandbox's kind.
type SandboxType string

// The sandbox kinds, with ms-enclave's names.
const (
	TypeDocker   SandboxType = "docker"
	TypeNotebook SandboxType = "docker_notebook"
)

// SandboxConfig describes one sandbox. Field names follow ms-enclave's DockerSandboxConfig so that
// configs written for it (and its HTTP client's create bodies) keep working; the hardening
// fields are ours. Zero values mean "the default": see package sandbox's Resolve.
type SandboxConfig struct {
	// Image to run; any image works, with or without a shell, since the agent is injected.
	Image string `json:"image,omitempty"`
	// WorkingDir is the writable workspace, mounted as a size-limited tmpfs; relative paths
	// in tools resolve against it.
	WorkingDir string `json:"working_dir,omitempty"`
	// EnvVars are set for every process in the sandbox. Values are never echoed back.
	EnvVars map[string]string `json:"env_vars,omitempty"`
	// MemoryLimit such as "512m" or "2g"; swap is never added on top of it.
	MemoryLimit string `json:"memory_limit,omitempty"`
	// CPULimit in CPUs, e.g. 0.5 or 2.
	CPULimit float64 `json:"cpu_limit,omitempty"`
	// PidsLimit bounds the processes and threads in the sandbox (a fork bomb hits it).
	PidsLimit int64 `json:"pids_limit,omitempty"`
	// WorkspaceSize bounds the workspace tmpfs, e.g. "512m".
	WorkspaceSize string `json:"workspace_size,omitempty"`
	// TmpSize bounds the /tmp tmpfs.
	TmpSize string `json:"tmp_size,omitempty"`
	// User runs every process, as "uid:gid" or a name the image knows. Default 1000:1000.
	User string `json:"user,omitempty"`
	// ReadOnlyRootfs keeps the image's files read-only (default true).
	ReadOnlyRootfs *bool `json:"read_only_rootfs,omitempty"`
	// Runtime is the OCI runtime ("runc", or "runsc" for gVisor where installed).
	Runtime string `json:"runtime,omitempty"`
	// NetworkEnabled asks for network access; the operator's Policy decides whether it is given.
	NetworkEnabled bool `json:"network_enabled,omitempty"`
	// Network names the Docker network when network is enabled (default "bridge").
	Network string `json:"network,omitempty"`
	// ExtraHosts adds /etc/hosts entries, name to IP.
	ExtraHosts map[string]string `json:"extra_hosts,omitempty"`
	// Volumes mounts host paths: {host_path: {"bind": path, "mode": "rw"|"ro"}}. Refused unless
	// the operator allows host mounts.
	Volumes map[string]VolumeMount `json:"volumes,omitempty"`
	// Privileged is refused unless the operator allows it.
	Privileged bool `json:"privileged,omitempty"`
	// RemoveOnExit removes the container when it stops (default true).
	RemoveOnExit *bool `json:"remove_on_exit,omitempty"`
	// ToolsConfig enables tools in this sandbox, with per-tool options. ms-enclave accepts a
	// map {name: {options}} or a list of names; both decode here. Empty means every tool.
	ToolsConfig ToolsConfig `json:"tools_config,omitempty"`
	// Timeout is the default tool timeout in seconds (tools may pass their own).
	Timeout float64 `json:"timeout,omitempty"`
	// Egress gives the sandbox, which keeps no network interface, a way out through the
	// server's proxy to the hosts listed, within the operator's egress policy. An empty
	// object asks for everything that policy allows.
	Egress *EgressConfig `json:"egress,omitempty"`
}

// EgressConfig narrows the operator's egress policy for one sandbox: it can only take
// entries away, never add any.
type EgressConfig struct {
	// Allow lists destinations: "host", "*.domain" (any name below it), an IP address, or a
	// CIDR such as "10.1.0.0/16", each optionally with ":port" ("[ipv6]:port"). Empty means
	// the operator's whole list. Each entry must fall within one of the operator's.
	Allow []string `json:"allow,omitempty"`
	// Ports allowed for entries without a port; empty means the operator's.
	Ports []int `json:"ports,omitempty"`
}

// VolumeMount is one host mount in ms-enclave's shape.
type VolumeMount struct {
	Bind string `json:"bind"`
	Mode string `json:"mode,omitempty"`
}

// ToolsConfig maps enabled tool names to their options.
type ToolsConfig map[string]map[string]any

// UnmarshalJSON accepts {name: {options}}, {name: null} and ["name", ...].
func (t *ToolsConfig) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var names []string
		if err := json.Unmarshal(b, &names); err != nil {
			return fmt.Errorf("tools_config: a list must hold tool names: %w", err)
		}
		*t = make(ToolsConfig, len(names))
		for _, n := range names {
			(*t)[n] = map[string]any{}
		}
		return nil
	}
	var m map[string]map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("tools_config: want {tool_name: {options}} or [tool_name, ...]: %w", err)
	}
	*t = m
	return nil
}

// Names returns the configured tool names, sorted.
func (t ToolsConfig) Names() []string {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
