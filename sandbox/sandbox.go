// Package sandbox runs untrusted code in sandboxes. A Sandbox is an isolated environment
// with our agent as its first process; a Backend (backend.go) creates it and hands over the
// agent's stdio, and AgentSandbox (agentsandbox.go) speaks to the agent over it, the same on
// every backend. Docker (docker.go: hardened containers) is the default backend and this is
// the only package that talks to Docker; Process (process.go) runs agents as host processes
// for development and engine-free tests. Above the backends: configs and the operator's
// policy (config.go), the Manager that owns every sandbox of a server (manager.go), warm
// spares (warm.go), ms-enclave's reusable pools (pool.go) and reaping of dead servers'
// sandboxes (reap.go).
package sandbox

import (
	"context"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/api"
)

// Sandbox is one isolated environment that runs processes and file operations.
type Sandbox interface {
	// ID is the sandbox's short random id.
	ID() string
	// Info describes the sandbox; it never holds secret values.
	Info() Info
	// Exec runs a process to completion (or starts a background job). A process that ran is a
	// result whatever its exit; an error means it could not run. Cancelling ctx kills the
	// process tree and returns a result with Cancelled set.
	Exec(ctx context.Context, req ExecRequest, onOutput func(Output)) (ExecResult, error)
	// File performs one file operation without a shell.
	File(ctx context.Context, req FileRequest) (FileResult, error)
	// Jobs lists the background jobs started with ExecRequest.Background.
	Jobs(ctx context.Context) ([]Job, error)
	// KillJob kills a background job's whole process tree and returns its final state.
	KillJob(ctx context.Context, id string) (Job, error)
	// Stop stops the sandbox's processes; Info still answers afterwards.
	Stop(ctx context.Context) error
	// Close stops the sandbox and removes everything it holds on the engine. It is safe to
	// call more than once.
	Close(ctx context.Context) error
	// HandOff is Close for a server that is exiting: where the backend removes the sandbox by
	// itself once its agent has exited (Docker's auto-removal), it ends the agent and returns
	// without waiting for the removal; elsewhere it is Close.
	HandOff(ctx context.Context) error
}

// The agent's request and result types are the sandbox API's own: one definition, shared by
// both ends of the wire.
type (
	ExecRequest = wire.Exec
	ExecResult  = wire.ExecResult
	Output      = wire.Output
	FileRequest = wire.File
	FileResult  = wire.FileResult
	FileInfo    = wire.FileInfo
	FSInfo      = wire.FSInfo
	Job         = wire.Job
)

// Status and Type are part of the API every client shares; these are their old names here.
type (
	// Status is a sandbox's place in its life cycle.
	Status = api.SandboxStatus
	// Type is a sandbox's kind.
	Type = api.SandboxType
)

// The statuses, with ms-enclave's names.
const (
	StatusInitializing = api.StatusInitializing
	StatusRunning      = api.StatusRunning
	StatusIdle         = api.StatusIdle
	StatusBusy         = api.StatusBusy
	StatusStopping     = api.StatusStopping
	StatusStopped      = api.StatusStopped
	StatusError        = api.StatusError
)

// The sandbox kinds, with ms-enclave's names.
const (
	TypeDocker   = api.TypeDocker
	TypeNotebook = api.TypeNotebook
)

// Info describes a sandbox, in the shape of ms-enclave's SandboxInfo.
type Info struct {
	ID        string    `json:"id"`
	Status    Status    `json:"status"`
	Type      Type      `json:"type"`
	Image     string    `json:"image"`
	Owner     string    `json:"owner,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// LastUsedAt is when a call last started or ended; idle expiry counts from it.
	LastUsedAt time.Time      `json:"last_used_at"`
	Metadata   map[string]any `json:"metadata"`
}

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrNotFound: no such sandbox, file, program or job.
	ErrNotFound = api.ErrNotFound
	// ErrClosed: the sandbox was stopped or removed, or its container died.
	ErrClosed = api.ErrClosed
	// ErrEngine: the container engine could not be reached or refused a call.
	ErrEngine = api.ErrEngine
)

// AgentError is a failure the agent reported; Code says what kind.
type AgentError struct {
	Code    wire.Code
	Message string
}

func (e *AgentError) Error() string { return e.Message }

// Is lets errors.Is(err, ErrNotFound) match an agent's not_found.
func (e *AgentError) Is(target error) bool {
	return target == ErrNotFound && e.Code == wire.CodeNotFound
}

// APICode classifies the agent's failure for the API (see api.CodeOf): a failure of the
// request (a missing file, a directory where a file was expected) is the caller's to fix.
func (e *AgentError) APICode() api.Code {
	switch e.Code {
	case wire.CodeNotFound:
		return api.CodeNotFound
	case wire.CodePermission:
		return api.CodePermission
	case wire.CodeNoSpace:
		return api.CodeNoSpace
	case wire.CodeTooLarge:
		return api.CodeTooLarge
	case wire.CodeInternal:
		return api.CodeInternal
	}
	return api.CodeBadRequest // invalid, exists, is_dir, not_dir, not_empty: the request's fault
}

// lifecycle tracks a sandbox's status, busy count and timestamps; it is embedded by backends.
type lifecycle struct {
	mu        sync.Mutex
	status    Status
	busy      int
	errMsg    string
	createdAt time.Time
	updatedAt time.Time
	lastUsed  time.Time
}

func (l *lifecycle) set(s Status, errMsg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status, l.errMsg, l.updatedAt = s, errMsg, time.Now()
}

// enter marks the start of a call; it fails once the sandbox is stopping or gone.
func (l *lifecycle) enter() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.status {
	case StatusRunning, StatusIdle, StatusBusy:
	default:
		return ErrClosed
	}
	l.busy++
	l.status, l.updatedAt, l.lastUsed = StatusBusy, time.Now(), time.Now()
	return nil
}

func (l *lifecycle) leave() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.busy--
	if l.busy == 0 && l.status == StatusBusy {
		l.status = StatusRunning
	}
	l.updatedAt, l.lastUsed = time.Now(), time.Now()
}

// lastUse is when a call last started or ended, and whether one runs now.
func (l *lifecycle) lastUse() (at time.Time, busy bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastUsed, l.busy > 0
}

// fill copies the life-cycle fields into info.
func (l *lifecycle) fill(info *Info) (errMsg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	info.Status, info.CreatedAt, info.UpdatedAt, info.LastUsedAt = l.status, l.createdAt, l.updatedAt, l.lastUsed
	return l.errMsg
}

// The file actions, re-exported so callers need not import the wire package.
const (
	FileRead   = wire.FileRead
	FileWrite  = wire.FileWrite
	FileCreate = wire.FileCreate
	FileDelete = wire.FileDelete
	FileList   = wire.FileList
	FileExists = wire.FileExists
	FileMkdir  = wire.FileMkdir
	FileStat   = wire.FileStat
	FileStatFS = wire.FileStatFS
)
