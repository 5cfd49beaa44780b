// Package client is the Go client of enclave-mcp's REST API (ms-enclave's manager API):
// Remote implements api.Manager over HTTP, the way ms-enclave's HttpSandboxManager does.
// The same interface has an in-process implementation, session.Caller (ms-enclave's
// LocalSandboxManager), so a program picks one by configuration and is otherwise unchanged.
//
// The interface and its wire types live in package api and are re-exported here, so a
// program that only talks to a server imports this package alone: it links neither the
// Docker SDK nor the sandbox or notebook packages.
package client

import (
	"io"

	"github.com/enclave-mcp/enclave-mcp/api"
)

// The manager interface and its wire types, from package api.
type (
	// Manager creates sandboxes, runs tools in them and moves files in and out, for one
	// principal: it sees only the sandboxes it created.
	Manager = api.Manager
	// Info describes a sandbox in ms-enclave's SandboxInfo shape.
	Info = api.SandboxInfo
	// Health is the answer of GET /health.
	Health = api.Health
	// Stats counts a principal's sandboxes, in the shape of ms-enclave's stats.
	Stats = api.Stats
	// PoolInit is the answer of POST /pool/initialize.
	PoolInit = api.PoolInit
	// Download is a file or a directory read out of a sandbox.
	Download = api.Download
	// Config describes one sandbox, with ms-enclave's field names.
	Config = api.SandboxConfig
	// VolumeMount is one host mount in ms-enclave's shape.
	VolumeMount = api.VolumeMount
	// ToolsConfig maps enabled tool names to their options.
	ToolsConfig = api.ToolsConfig
	// Type is a sandbox's kind.
	Type = api.SandboxType
	// Status is a sandbox's place in its life cycle.
	Status = api.SandboxStatus
	// Result is what a tool returns, in ms-enclave's ToolResult shape.
	Result = api.ToolResult
	// ResultStatus is a tool result's outcome.
	ResultStatus = api.ResultStatus
)

// The sandbox kinds, with ms-enclave's names.
const (
	TypeDocker   = api.TypeDocker
	TypeNotebook = api.TypeNotebook
)

// TarDir writes the contents of a host directory to w as a tar stream, shaped like
// ms-enclave's put_dir; see api.TarDir.
func TarDir(dir string, w io.Writer) error { return api.TarDir(dir, w) }
