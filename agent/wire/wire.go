// Package wire defines the messages exchanged between enclave-mcp and the agent that runs as
// PID 1 inside every sandbox: one JSON object per line in each direction, requests on the
// agent's stdin and responses on its stdout. Requests carry an ID; every response names the
// request it answers, so many requests can be in flight on the one stream.
//
// The package is shared by both ends and has no dependencies beyond the standard library.
package wire

import "time"

// Version is bumped whenever a message changes incompatibly. The agent announces it in its
// Ready message, and the server refuses an agent that speaks another version.
const Version = 1

// Operation names a request's kind.
type Operation string

// The operations the agent serves.
const (
	OpPing   Operation = "ping"   // answers at once, with the agent's Stats; a liveness probe
	OpExec   Operation = "exec"   // runs a process (Request.Exec)
	OpCancel Operation = "cancel" // kills the process tree of exec request Request.Target
	OpFile   Operation = "file"   // a file-system operation (Request.File)
	OpJobs   Operation = "jobs"   // lists background jobs
	OpKill   Operation = "kill"   // kills background job Request.Job and its whole tree
	// OpDial opens a connection inside the sandbox (Request.Dial), e.g. to a server listening
	// on the container's loopback. The dial request's ID names the stream from then on: the
	// agent answers with a result once connected, then sends what it reads as KindData
	// responses and the end of the stream as KindEOF, all carrying that ID.
	OpDial Operation = "dial"
	// OpData writes Request.Data to stream Request.Target. It gets no answer: a failed write
	// ends the stream with KindEOF. Data requests of one stream are applied in order.
	OpData Operation = "data"
	// OpClose closes stream Request.Target once the data sent before it is written (within
	// a few seconds). It gets no answer, and nothing more is sent on the stream.
	OpClose Operation = "close"
)

// Request is one message from the server to the agent.
type Request struct {
	ID     uint64    `json:"id"`
	Op     Operation `json:"op"`
	Exec   *Exec     `json:"exec,omitempty"`
	File   *File     `json:"file,omitempty"`
	Target uint64    `json:"target,omitempty"` // OpCancel: the ID of the exec request to cancel
	Job    string    `json:"job,omitempty"`    // OpKill: the background job to kill
	Dial   *Dial     `json:"dial,omitempty"`
	Data   []byte    `json:"data,omitempty"` // OpData: the bytes to write

	// Reset is OpReset's request.
	Reset *Reset `json:"reset,omitempty"`
	// Warm is OpWarm's request.
	Warm *Warm `json:"warm,omitempty"`
}

// Dial asks the agent to open a connection from inside the sandbox.
type Dial struct {
	// Network is "tcp", "tcp4", "tcp6" or "unix".
	Network string `json:"network"`
	// Address is host:port, or a socket path for unix.
	Address string `json:"address"`
	// TimeoutMS bounds the connect; zero means DefaultDialTimeout.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// DefaultDialTimeout bounds a connect when Dial.TimeoutMS is zero.
const DefaultDialTimeout = 10 * time.Second

// MaxStreamBuffer caps the bytes either end holds for one stream that its reader has not
// taken yet. Passing it fails that stream, never the agent's connection.
const MaxStreamBuffer = 64 << 20

// Exec asks the agent to run one process.
type Exec struct {
	// Argv is the program and its arguments; Argv[0] is looked up in PATH when it has no slash.
	Argv []string `json:"argv"`
	// Env holds KEY=VALUE pairs added to (and overriding) the agent's own environment.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; empty means the workspace. Relative paths resolve against
	// the workspace.
	Dir string `json:"dir,omitempty"`
	// Stdin is written to the process's standard input, which is then closed. Without it the
	// process reads /dev/null.
	Stdin []byte `json:"stdin,omitempty"`
	// TimeoutMS bounds the run; when it passes, the whole process tree is killed and the
	// result has TimedOut set. Zero means no limit (background jobs only should use it).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// MaxOutputBytes caps each of stdout and stderr by its JSON-encoded size (control
	// characters count as the six bytes of their \u escape). What passes the cap is dropped
	// from the middle: the head and the tail are kept. Zero means DefaultMaxOutputBytes.
	MaxOutputBytes int `json:"max_output_bytes,omitempty"`
	// StreamIntervalMS, when positive, makes the agent send Output messages with the output
	// produced so far at most this often while the process runs.
	StreamIntervalMS int64 `json:"stream_interval_ms,omitempty"`
	// Fork asks for Argv, a Python interpreter run as [python, "-"] with its script in Stdin,
	// to be served by a process forked from the sandbox's resident interpreter, which has
	// the image's heavy modules (numpy, pandas, matplotlib) imported already: the same
	// result, without the start-up and the imports. The agent starts the resident
	// interpreter after the first such request and starts Argv itself whenever none is ready,
	// so the result never depends on it. Ignored with Background, and when Env sets a
	// PYTHON* variable (which the resident interpreter did not start with).
	Fork bool `json:"fork,omitempty"`
	// Background starts the process as a job and answers at once with its JobID; the job
	// keeps running until it exits, is killed with OpKill, or the sandbox ends.
	Background bool `json:"background,omitempty"`
}

// DefaultMaxOutputBytes is the per-stream output cap used when Exec.MaxOutputBytes is zero.
const DefaultMaxOutputBytes = 1 << 20

// FileAction names a file operation.
type FileAction string

// The file operations the agent serves. None of them goes through a shell.
const (
	FileRead   FileAction = "read"   // Data holds the content (up to MaxBytes)
	FileWrite  FileAction = "write"  // writes Data, creating or truncating (or appending)
	FileCreate FileAction = "create" // like write, but fails with CodeExists if the path exists
	FileDelete FileAction = "delete" // removes a file, or a directory (Recursive for non-empty)
	FileList   FileAction = "list"   // Entries holds the directory's entries, sorted by name
	FileExists FileAction = "exists" // Exists tells; never an error for a missing path
	FileMkdir  FileAction = "mkdir"  // creates a directory and its parents
	FileStat   FileAction = "stat"   // Info describes the path (without following a final symlink)
	FileStatFS FileAction = "statfs" // FS describes the file system that holds the path
)

// File asks the agent for one file-system operation.
type File struct {
	Action FileAction `json:"action"`
	// Path is absolute, or relative to the workspace. It is used as given: no shell, no glob.
	Path string `json:"path"`
	// Data is the content for write and create.
	Data []byte `json:"data,omitempty"`
	// Append makes write add to the end instead of truncating.
	Append bool `json:"append,omitempty"`
	// Mode is the permission bits for new files and directories; zero means 0644 / 0755.
	Mode uint32 `json:"mode,omitempty"`
	// Recursive lets delete remove a non-empty directory.
	Recursive bool `json:"recursive,omitempty"`
	// MaxBytes caps how much read returns; zero means DefaultMaxReadBytes. Truncated tells.
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// DefaultMaxReadBytes is the read cap used when File.MaxBytes is zero.
const DefaultMaxReadBytes = 8 << 20

// A directory listing stops, with Truncated set, at MaxListEntries entries or once its
// names and link targets reach MaxListBytes: the answer stays well inside the frame limit
// the server applies to listings, however many files a sandbox makes.
const (
	MaxListEntries = 20000
	MaxListBytes   = 4 << 20
)

// Kind tells what a Response carries.
type Kind string

// The kinds of response.
const (
	KindReady  Kind = "ready"  // sent once, unsolicited, when the agent starts (ID 0)
	KindResult Kind = "result" // the final answer to a request
	KindOutput Kind = "output" // a streaming chunk of a running exec request
	KindError  Kind = "error"  // the request failed; Error and Code say why
	KindData   Kind = "data"   // bytes read from stream ID (Response.Data)
	// KindEOF ends stream ID: the other side closed it, or (with Error set) it failed.
	KindEOF Kind = "eof"
	// KindOpen announces a stream the agent opened itself: a program in the sandbox
	// connected to the agent's egress listener (Ready.Egress). Its ID has AgentStream set,
	// and the agent's IDs only increase. From then on the stream is like a dial's: data and
	// EOF both ways, OpData and OpClose from the server. The agent does not read the bytes:
	// what they mean (an HTTP proxy request) is for the server.
	KindOpen Kind = "open"
)

// AgentStream marks the IDs of streams the agent opens (KindOpen), so that they never meet
// the server's request IDs, which count up from 1.
const AgentStream uint64 = 1 << 63

// Code classifies an error so the server can branch on it without reading text.
type Code string

// The error codes.
const (
	CodeInvalid    Code = "invalid"    // the request itself is wrong (missing argv, unknown op, ...)
	CodeNotFound   Code = "not_found"  // a path, program, job or request that does not exist
	CodeExists     Code = "exists"     // create on an existing path
	CodeIsDir      Code = "is_dir"     // a file operation on a directory
	CodeNotDir     Code = "not_dir"    // list on a file, or a path through a file
	CodeNotEmpty   Code = "not_empty"  // delete of a non-empty directory without Recursive
	CodePermission Code = "permission" // EACCES, EPERM, or a read-only file system
	CodeNoSpace    Code = "no_space"   // ENOSPC or a quota
	CodeTooLarge   Code = "too_large"  // the data is larger than allowed
	CodeInternal   Code = "internal"   // anything else
)

// Response is one message from the agent to the server.
type Response struct {
	ID     uint64      `json:"id"`
	Kind   Kind        `json:"kind"`
	Error  string      `json:"error,omitempty"`
	Code   Code        `json:"code,omitempty"`
	Ready  *Ready      `json:"ready,omitempty"`
	Exec   *ExecResult `json:"exec,omitempty"`
	Output *Output     `json:"output,omitempty"`
	File   *FileResult `json:"file,omitempty"`
	Jobs   []Job       `json:"jobs,omitempty"`
	Data   []byte      `json:"data,omitempty"` // KindData: bytes read from the stream

	// Reset answers OpReset.
	Reset *ResetResult `json:"reset,omitempty"`
	// Warm answers OpWarm.
	Warm *WarmResult `json:"warm,omitempty"`

	// Stats answers OpPing: what the agent itself costs right now.
	Stats *AgentStats `json:"stats,omitempty"`
}

// AgentStats is the agent process's own footprint, as its Go runtime sees it.
type AgentStats struct {
	Goroutines int    `json:"goroutines"`
	Procs      int    `json:"procs"`       // GOMAXPROCS: the runtime starts a GC worker per P at its first collection
	HeapBytes  uint64 `json:"heap_bytes"`  // live and not yet swept heap objects
	TotalBytes uint64 `json:"total_bytes"` // everything the runtime has mapped (an upper bound of its RSS)
	// ResidentPython counts the resident Python interpreters ready to fork calls.
	ResidentPython int `json:"resident_python"`
}

// Ready is the agent's greeting.
type Ready struct {
	Version   int    `json:"version"`
	PID       int    `json:"pid"`
	UID       int    `json:"uid"`
	GID       int    `json:"gid"`
	Workspace string `json:"workspace"`
	// Egress is the address of the agent's egress listener, when it was asked for one.
	Egress string `json:"egress,omitempty"`
}

// ExecResult reports a finished (or, for Background, started) process. A process that ran
// is always a result, whatever its exit; KindError is only for a process that could not start.
type ExecResult struct {
	PID      int    `json:"pid"`
	ExitCode int    `json:"exit_code"`        // -1 when killed by a signal
	Signal   string `json:"signal,omitempty"` // e.g. "SIGKILL" when killed by a signal
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	// Truncated is set when either stream passed MaxOutputBytes; OmittedBytes counts the raw
	// bytes dropped from both.
	Truncated    bool  `json:"truncated,omitempty"`
	OmittedBytes int64 `json:"omitted_bytes,omitempty"`
	// DurationMS is the wall time from start to the end of the whole process tree.
	DurationMS float64 `json:"duration_ms"`
	TimedOut   bool    `json:"timed_out,omitempty"`
	Cancelled  bool    `json:"cancelled,omitempty"`
	// Stopped is set with Cancelled when the kill came from the agent shutting down (the
	// container was stopped, or the engine restarted), not from a cancel request.
	Stopped bool `json:"stopped,omitempty"`
	// OOMKilled is set when the kernel's OOM killer fired in the sandbox during the run and
	// the process died of SIGKILL.
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Reaped counts processes the command left behind (background children, setsid'd
	// descendants) that the agent killed when the command ended.
	Reaped int `json:"reaped,omitempty"`
	// Forked says the process was forked from the resident interpreter (Exec.Fork).
	Forked bool `json:"forked,omitempty"`
	// JobID is set for Background requests.
	JobID string `json:"job_id,omitempty"`
}

// Output is a streaming chunk: the bytes each stream produced since the previous chunk.
type Output struct {
	Stdout string `json:"stdout,omitempty"`
	Stderr string `json:"stderr,omitempty"`
}

// FileResult answers a File request.
type FileResult struct {
	Path      string     `json:"path"` // the absolute, cleaned path the operation used
	Exists    bool       `json:"exists,omitempty"`
	Data      []byte     `json:"data,omitempty"`
	Truncated bool       `json:"truncated,omitempty"`
	Written   int64      `json:"written,omitempty"`
	Entries   []FileInfo `json:"entries,omitempty"`
	Info      *FileInfo  `json:"info,omitempty"`
	FS        *FSInfo    `json:"fs,omitempty"`
}

// FSInfo describes a file system (statfs): its size, its free bytes, and the free bytes an
// unprivileged process may use.
type FSInfo struct {
	Total int64 `json:"total"`
	Free  int64 `json:"free"`
	Avail int64 `json:"avail"`
}

// FileInfo describes one file-system entry.
type FileInfo struct {
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"` // as ls shows it, e.g. "-rw-r--r--"
	IsDir   bool      `json:"is_dir,omitempty"`
	Link    string    `json:"link,omitempty"` // a symlink's target
	ModTime time.Time `json:"mod_time"`
}

// Job describes a background job.
type Job struct {
	ID      string    `json:"id"`
	PID     int       `json:"pid"`
	Argv    []string  `json:"argv"`
	Started time.Time `json:"started"`
	Running bool      `json:"running"`
	// ExitCode and Signal are set once the job has ended.
	ExitCode int    `json:"exit_code,omitempty"`
	Signal   string `json:"signal,omitempty"`
}

// OpWarm readies the sandbox for its first calls ahead of them (Request.Warm), in the
// background: the agent answers at once, or once it is done if asked to wait. A pool's spare gets it, so that the first
// python_executor call of the session it goes to is forked from a resident interpreter
// that has its imports done, instead of starting one.
const OpWarm Operation = "warm"

// Warm asks the agent for an OpWarm.
type Warm struct {
	// Python names the interpreter (looked up in PATH, e.g. "python3") whose resident
	// process to start; empty starts none. An image without it is not an error: the result
	// says what was started.
	Python string `json:"python,omitempty"`
	// Wait answers only once the interpreter is ready to fork calls, or has failed (within
	// a minute).
	Wait bool `json:"wait,omitempty"`
	// Light starts the interpreter without the heavy modules it would import (numpy,
	// pandas, matplotlib): a few megabytes instead of tens, for a pool's reserve. A call that
	// imports one of them makes the agent start a full interpreter in its place.
	Light bool `json:"light,omitempty"`
}

// WarmResult says what an OpWarm started.
type WarmResult struct {
	// Python is the resident interpreter's path, empty when none was started (the image has
	// no such program, or forking is disabled after repeated failures). With Warm.Wait,
	// Ready says whether it became ready to fork calls.
	Python string `json:"python,omitempty"`
	Ready  bool   `json:"ready,omitempty"`
}

// OpReset returns the sandbox to the state it started in, for a pool's next borrower
// (Request.Reset): every process but the agent dies, whatever session, group or environment
// it has; the directories named are emptied; with SysVIPC the System V IPC objects go too;
// and the agent forgets its background jobs. Response.Reset says what went.
const OpReset Operation = "reset"

// Reset asks the agent for an OpReset.
type Reset struct {
	// Dirs are emptied: every entry in them is removed, without following symlinks, except
	// other file systems mounted inside them (an operator's volume), which are left as they
	// are. Each must be an absolute, clean path other than "/"; a missing one is skipped.
	Dirs []string `json:"dirs"`
	// SysVIPC also removes every System V shared memory segment, message queue and
	// semaphore set. The agent refuses it unless it is PID 1, the init of the sandbox's own
	// namespaces: anywhere else the objects would belong to other programs.
	SysVIPC bool `json:"sysv_ipc,omitempty"`
}

// MaxResetReport caps each list in a ResetResult; the counts are complete.
const MaxResetReport = 64

// ResetResult says what an OpReset killed and removed.
type ResetResult struct {
	// Killed counts the processes killed; KilledNames lists the first of them as "pid name".
	Killed      int      `json:"killed"`
	KilledNames []string `json:"killed_names,omitempty"`
	// Removed counts the file-system entries removed, each directory's content included;
	// RemovedPaths lists the first of the top-level ones.
	Removed      int      `json:"removed"`
	RemovedPaths []string `json:"removed_paths,omitempty"`
	// KeptMounts lists file systems mounted inside Dirs, left as they were.
	KeptMounts []string `json:"kept_mounts,omitempty"`
	// IPCRemoved counts the System V IPC objects removed.
	IPCRemoved int `json:"ipc_removed,omitempty"`
	// JobsForgotten counts the background jobs dropped from the job list.
	JobsForgotten int     `json:"jobs_forgotten,omitempty"`
	DurationMS    float64 `json:"duration_ms"`
}
