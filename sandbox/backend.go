package sandbox

import (
	"context"
	"io"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// Backend is where sandboxes run: a container engine, a cluster, or plain host processes.
// Whatever it is, it starts our agent as a sandbox's first process and hands over the
// agent's stdio; everything else (calls, files, jobs, tunnels, resets) is the agent's, so it
// works the same on every backend. Docker (docker.go) is the default backend; Process
// (process.go) runs agents on the host for development and fast tests.
type Backend interface {
	// Name names the backend in logs and errors: "docker", "process".
	Name() string
	// Identity is the server process that owns what this backend creates; every sandbox
	// carries its labels, so a later server can tell a dead owner's leftovers.
	Identity() Identity
	// Launch creates and starts one sandbox from spec with the agent as its first process,
	// and calls ready with the agent's stdio; ready returns once the agent has answered. On
	// any failure, ready's included, nothing of the sandbox remains when Launch returns.
	Launch(ctx context.Context, spec Spec, ready func(Streams) error) (Launched, error)
	// Stop kills a sandbox's processes and leaves the rest for Remove.
	Stop(ctx context.Context, ref string) error
	// Remove removes a sandbox and everything it holds; one that is gone already is not an
	// error.
	Remove(ctx context.Context, ref string) error
	// Inspect says whether a sandbox runs, and why it ended when it did not.
	Inspect(ctx context.Context, ref string) (State, error)
	// List finds the backend's sandboxes that carry every label in labels.
	List(ctx context.Context, labels map[string]string) ([]Listed, error)
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
	// Close releases the backend's connections; it leaves sandboxes alone.
	Close() error
}

// Relabeler is a backend whose sandboxes' labels can change after launch. A warm spare is
// launched for nobody; on a backend whose labels are the only record other servers have
// (Kubernetes, where any replica may be asked for any sandbox), it takes its owner's label
// when handed out.
type Relabeler interface {
	// Relabel sets labels on sandbox ref, leaving its other labels as they are.
	Relabel(ctx context.Context, ref string, labels map[string]string) error
}

// Spec is what a backend needs to launch a sandbox.
type Spec struct {
	// ID is the sandbox's id, unique on the backend.
	ID string
	// Labels name the sandbox's server, owner and kind (see the Label constants); a backend
	// stores them with the sandbox and lists by them.
	Labels map[string]string
	// Config is the sandbox's resolved config: image, user, limits, mounts, environment.
	Config Resolved
	// AgentArgs are appended to the agent's command line.
	AgentArgs []string
}

// Streams are the agent's stdio as the backend delivers them.
type Streams struct {
	// Stdin carries requests to the agent; closing it tells the agent to end the sandbox.
	Stdin io.WriteCloser
	// Stdout carries the agent's frames; Stderr its log.
	Stdout io.Reader
	Stderr io.Reader
	// Teardown closes the streams and everything that serves them; it must be safe to call
	// more than once, and it must make blocked reads of Stdout and Stderr return.
	Teardown func()
}

// Launched is a sandbox the backend started.
type Launched struct {
	// Ref is the backend's own name for the sandbox (a container id, a process), passed
	// back to Stop, Remove and Inspect.
	Ref string
	// Streams are the ones ready accepted.
	Streams Streams
	// Metadata is shown in the sandbox's Info: the backend's names for what it made.
	Metadata map[string]any
	// Reset is what returns the sandbox to its state at launch between pool borrowers; nil
	// means it cannot be returned (a writable root file system, or a backend that shares
	// the host's), and a pool replaces it instead.
	Reset *wire.Reset
	// RemovesOnExit says the backend removes the sandbox by itself once its agent has exited
	// (Docker's auto-removal), so a server that is exiting need not wait for the removal.
	RemovesOnExit bool
}

// State is a sandbox's state on its backend.
type State struct {
	Running bool
	// ExitCode and Error say why a sandbox that is not running ended, when known.
	ExitCode int
	Error    string
}

// Listed is one sandbox a backend found by its labels.
type Listed struct {
	Ref     string
	Labels  map[string]string
	State   string // the backend's word: running, created, exited...
	Created time.Time
}

// managedLabels are the labels every sandbox of server carries.
func managedLabels(server Identity, id, owner string, kind Type) map[string]string {
	labels := server.labels()
	labels[LabelManaged] = "true"
	labels[LabelSandbox] = id
	labels[LabelKind] = string(kind)
	if owner != "" {
		labels[LabelOwner] = owner
	}
	return labels
}
