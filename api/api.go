// Package api is the contract between enclave-mcp's sandbox manager and the programs that
// drive it: the Manager interface (ms-enclave's manager methods), the sandbox config, the
// tool result and the other wire types, and the sentinel errors callers branch on.
//
// It imports only the standard library, so that both implementations of Manager can share
// it without dragging in each other's dependencies: the in-process one (package session,
// over Docker) and the REST client (package client, over HTTP). Packages sandbox, tools and
// client re-export these types under their old names.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Manager creates sandboxes, runs tools in them and moves files in and out, for one
// principal: it sees only the sandboxes it created. session.Caller implements it in
// process, client.Remote over the REST API; a program picks one by configuration.
type Manager interface {
	// Health reports whether the manager works; it needs no credentials over HTTP.
	Health(ctx context.Context) (Health, error)
	// Stats counts the principal's sandboxes.
	Stats(ctx context.Context) (Stats, error)
	// Create makes a sandbox of type typ ("" means docker) and returns its id. Fields cfg
	// leaves empty take the operator's defaults; the operator's policy is applied.
	Create(ctx context.Context, typ SandboxType, cfg SandboxConfig) (string, error)
	// Get describes a sandbox; an unknown id (or another principal's) is ErrNotFound.
	Get(ctx context.Context, id string) (SandboxInfo, error)
	// List describes the principal's sandboxes, only those in status when it is not empty.
	List(ctx context.Context, status SandboxStatus) ([]SandboxInfo, error)
	// Stop stops a sandbox's processes; Get still describes it (status stopped).
	Stop(ctx context.Context, id string) error
	// Delete removes a sandbox.
	Delete(ctx context.Context, id string) error
	// ExecuteTool runs a tool in a sandbox. params is the tool's arguments: a struct, a map or
	// a json.RawMessage. A tool that ran, whatever its outcome, is a ToolResult; bad
	// arguments are a ToolResult with status error, as a model would get them.
	ExecuteTool(ctx context.Context, id, tool string, params any) (ToolResult, error)
	// Tools lists the tools a sandbox offers, as OpenAI function-calling schemas by name.
	Tools(ctx context.Context, id string) (map[string]json.RawMessage, error)
	// PutArchive extracts a tar stream under targetDir in the sandbox (the workspace when
	// empty). Only regular files and directories are accepted.
	PutArchive(ctx context.Context, id, targetDir string, tarball io.Reader) error
	// PutDir copies the contents of a host directory under targetDir in the sandbox.
	PutDir(ctx context.Context, id, hostDir, targetDir string) error
	// Download reads a file, or a directory as a tar stream, out of a sandbox. The caller
	// must close the Download.
	Download(ctx context.Context, id, path string) (*Download, error)
	// InitializePool grows the principal's pool of sandboxes of type typ to size and returns
	// the ids of its sandboxes (status idle while free). cfg may be nil.
	InitializePool(ctx context.Context, size int, typ SandboxType, cfg *SandboxConfig) ([]string, error)
	// ExecuteInPool runs a tool in a free pooled sandbox, waiting up to wait (0: the default)
	// for one; the sandbox is cleaned before its next borrower gets it.
	ExecuteInPool(ctx context.Context, tool string, params any, wait time.Duration) (ToolResult, error)
}

// SandboxInfo describes a sandbox in ms-enclave's SandboxInfo shape. Config shows the
// resolved config with environment values redacted; Config, Metadata and AvailableTools are
// never nil (ms-enclave's client refuses null there).
type SandboxInfo struct {
	ID        string         `json:"id"`
	Status    SandboxStatus  `json:"status"`
	Type      SandboxType    `json:"type"`
	Config    map[string]any `json:"config"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
	Metadata  map[string]any `json:"metadata"`
	// AvailableTools maps each tool the sandbox offers to its OpenAI function schema.
	AvailableTools map[string]json.RawMessage `json:"available_tools"`
}

// Health is the answer of GET /health.
type Health struct {
	Healthy bool   `json:"healthy"`
	Version string `json:"version"`
	// Uptime in seconds.
	Uptime          float64        `json:"uptime"`
	ActiveSandboxes int            `json:"active_sandboxes"`
	SystemInfo      map[string]any `json:"system_info"`
	// Detail says what is wrong when Healthy is false.
	Detail string `json:"detail,omitempty"`
}

// Stats counts a principal's sandboxes, in the shape of ms-enclave's stats.
type Stats struct {
	ManagerType    string         `json:"manager_type"`
	TotalSandboxes int            `json:"total_sandboxes"`
	StatusCounts   map[string]int `json:"status_counts"`
	SandboxTypes   map[string]int `json:"sandbox_types"`
	Running        int            `json:"running"`
	PoolSize       int            `json:"pool_size"`
	PoolAvailable  int            `json:"pool_available"`
	Uptime         float64        `json:"uptime"`
}

// PoolInit is the answer of POST /pool/initialize.
type PoolInit struct {
	Message    string   `json:"message"`
	PoolSize   int      `json:"pool_size"`
	SandboxIDs []string `json:"sandbox_ids"`
}

// Download is a file or a directory read out of a sandbox. Dir tells which: a directory's
// body is a tar stream of its contents (names relative to it, no leading "./").
type Download struct {
	io.ReadCloser
	// Name is the base name of the path downloaded.
	Name string
	Dir  bool
	// Size is the body's length in bytes, or -1 when unknown (a directory's tar stream).
	Size int64
}

// EncodeParams encodes a tool's arguments as ExecuteTool and ExecuteInPool take them: a
// json.RawMessage or []byte as is, nil as {}, anything else through encoding/json (an
// error there is ErrBadRequest).
func EncodeParams(params any) (json.RawMessage, error) {
	switch p := params.(type) {
	case nil:
		return json.RawMessage("{}"), nil
	case json.RawMessage:
		return p, nil
	case []byte:
		return p, nil
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding tool parameters: %w", ErrBadRequest, err)
	}
	return raw, nil
}
