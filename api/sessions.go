package api

import "time"

// The wire types of the session API (sandbox_runtime's /workspace/se/* paths): named
// sessions, each one sandbox with a workspace of a fixed size, that a client creates, fills
// with files, runs commands and code in, and deletes. The session core (session.Named)
// returns them, runtimeapi serves them and client.Sessions reads them.

// SessionInfo describes a named session.
type SessionInfo struct {
	// SessionID is the client's name for the session; it is unique per principal.
	SessionID string `json:"session_id"`
	// Size is the workspace's size limit as asked ("50M"), SizeBytes the same in bytes.
	Size      string `json:"size"`
	SizeBytes int64  `json:"size_bytes"`
	// CreatedAt and LastActive are when the session was created and last used; the
	// session ends IdleTimeout seconds after LastActive when no command runs.
	CreatedAt   time.Time `json:"created_at"`
	LastActive  time.Time `json:"last_active"`
	IdleTimeout float64   `json:"idle_timeout"`
}

// SessionFile is one entry of a session's workspace.
type SessionFile struct {
	// Name is the path relative to the workspace ("data/input.csv").
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Mode is the permission bits in octal ("0644").
	Mode     string    `json:"mode"`
	IsDir    bool      `json:"is_dir,omitempty"`
	Modified time.Time `json:"modified"`
}

// SessionFiles is a session's listing; Truncated is set when it stopped at its cap.
type SessionFiles struct {
	SessionID string        `json:"session_id"`
	Files     []SessionFile `json:"files"`
	Truncated bool          `json:"truncated,omitempty"`
}

// SessionProcess is a command running in a session.
type SessionProcess struct {
	Command   []string  `json:"command"`
	StartedAt time.Time `json:"started_at"`
}

// SessionStatus is a session's state: its size limit and what it uses, its files, its
// clock and what runs in it.
type SessionStatus struct {
	SessionInfo
	// UsedBytes is the size of the workspace's files; Files counts them (directories not
	// included). Listing stops at a cap, with Truncated set.
	UsedBytes int64 `json:"used_bytes"`
	Files     int   `json:"files"`
	Truncated bool  `json:"truncated,omitempty"`
	// Full is set when less than 1% of the size limit (or 16 KiB) is left.
	Full bool `json:"full"`
	// RunningProcesses counts the commands running now; Processes lists them.
	RunningProcesses int              `json:"running_processes"`
	Processes        []SessionProcess `json:"processes"`
	// ExpiresAt is when the session ends if nothing uses it before.
	ExpiresAt time.Time `json:"expires_at"`
}

// CommandResult is the outcome of a command or of code run in a session. A process that
// ran is a result whatever its exit: Status says how it went (success, error, timeout,
// cancelled), with ms-enclave's words.
type CommandResult struct {
	Stdout   string       `json:"stdout"`
	Stderr   string       `json:"stderr"`
	ExitCode int          `json:"exit_code"`
	Status   ResultStatus `json:"status"`
	TimedOut bool         `json:"timed_out"`
	// Truncated is set when a stream passed the output cap (its head and tail are kept).
	Truncated bool   `json:"truncated"`
	Signal    string `json:"signal,omitempty"`
	OOMKilled bool   `json:"oom_killed,omitempty"`
	// SessionFull is set when the output says a write failed for want of space ("No space
	// left on device") and the session's workspace is full (see SessionStatus.Full).
	SessionFull bool `json:"session_full,omitempty"`
	// ExecutionTime is in seconds.
	ExecutionTime float64 `json:"execution_time"`
	// Command is the argv that ran.
	Command []string `json:"command"`
	// Note says what the server saw beside the output: a timeout, a kill, a full session.
	Note string `json:"note,omitempty"`
}

// OK reports whether the command succeeded.
func (r CommandResult) OK() bool { return r.Status == ResultSuccess }

// CleanupResult lists the sessions cleanup-all ended, and those it left because a command
// was running in them (without force).
type CleanupResult struct {
	Cleaned []string `json:"cleaned"`
	Skipped []string `json:"skipped"`
}

// The request bodies.
type (
	// CreateSessionRequest creates a session; an empty Size takes the operator's default.
	CreateSessionRequest struct {
		Size string `json:"size,omitempty"`
	}
	// CreateFileRequest writes a file. Mode is octal text ("0755") or the bits as a number
	// (493); empty means 0644. Encoding "base64" carries binary content.
	CreateFileRequest struct {
		Filename string `json:"filename"`
		Content  string `json:"content"`
		Mode     any    `json:"mode,omitempty"`
		Encoding string `json:"encoding,omitempty"`
	}
	// ExecuteRequest runs Command (a program name from the operator's allow-list) with Args,
	// with no shell. Timeout is in seconds; 0 means the server's default.
	ExecuteRequest struct {
		Command string   `json:"command"`
		Args    []string `json:"args,omitempty"`
		Timeout float64  `json:"timeout,omitempty"`
	}
	// ExecuteCodeRequest saves Code and runs it as ScriptType. With a Filename the code is
	// kept in the workspace under that name; without one it runs from a temporary file. An
	// empty ScriptType is taken from the filename's extension, else python.
	ExecuteCodeRequest struct {
		Code       string  `json:"code"`
		Filename   string  `json:"filename,omitempty"`
		ScriptType string  `json:"script_type,omitempty"`
		Timeout    float64 `json:"timeout,omitempty"`
	}
)
