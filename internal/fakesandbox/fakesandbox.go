// Package fakesandbox is an in-memory sandbox.Sandbox for tests that check what the layers
// above the sandbox do (the session core, the faces) without a container engine. It runs
// nothing: Exec records the request and answers with the argv it was given.
package fakesandbox

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Sandbox records what it was asked to do.
type Sandbox struct {
	id  string
	typ sandbox.Type
	cfg sandbox.Resolved

	mu     sync.Mutex
	status sandbox.Status
	execs  []sandbox.ExecRequest
}

// Factory makes fake sandboxes and counts them.
type Factory struct {
	n       atomic.Int64
	mu      sync.Mutex
	created []*Sandbox
}

// Creator is a sandbox.Creator of fake sandboxes of type typ.
func (f *Factory) Creator(typ sandbox.Type) sandbox.Creator {
	return func(_ context.Context, _ string, cfg sandbox.Resolved) (sandbox.Sandbox, error) {
		sb := &Sandbox{id: fmt.Sprintf("fake%d", f.n.Add(1)), typ: typ, cfg: cfg, status: sandbox.StatusRunning}
		f.mu.Lock()
		f.created = append(f.created, sb)
		f.mu.Unlock()
		return sb, nil
	}
}

// Created lists the sandboxes made so far.
func (f *Factory) Created() []*Sandbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Sandbox(nil), f.created...)
}

// Execs lists the processes the sandbox was asked to run.
func (s *Sandbox) Execs() []sandbox.ExecRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sandbox.ExecRequest(nil), s.execs...)
}

// ID implements sandbox.Sandbox.
func (s *Sandbox) ID() string { return s.id }

// Config is the resolved config it was created with.
func (s *Sandbox) Config() sandbox.Resolved { return s.cfg }

// Info implements sandbox.Sandbox.
func (s *Sandbox) Info() sandbox.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sandbox.Info{ID: s.id, Status: s.status, Type: s.typ, Image: s.cfg.Image,
		CreatedAt: time.Unix(0, 0), UpdatedAt: time.Unix(0, 0), Metadata: map[string]any{}}
}

// Exec records req and answers with its argv joined, on stdout, after one progress report
// when onOutput is set.
func (s *Sandbox) Exec(_ context.Context, req sandbox.ExecRequest, onOutput func(sandbox.Output)) (sandbox.ExecResult, error) {
	s.mu.Lock()
	if s.status != sandbox.StatusRunning {
		s.mu.Unlock()
		return sandbox.ExecResult{}, sandbox.ErrClosed
	}
	s.execs = append(s.execs, req)
	s.mu.Unlock()
	out := strings.Join(req.Argv, " ") + "\n"
	if onOutput != nil {
		onOutput(sandbox.Output{Stdout: out})
	}
	return sandbox.ExecResult{Stdout: out, DurationMS: 1}, nil
}

// File answers every operation with an empty success.
func (s *Sandbox) File(_ context.Context, req sandbox.FileRequest) (sandbox.FileResult, error) {
	return sandbox.FileResult{Path: req.Path}, nil
}

// Jobs implements sandbox.Sandbox: there are none.
func (s *Sandbox) Jobs(context.Context) ([]sandbox.Job, error) { return nil, nil }

// KillJob implements sandbox.Sandbox: there is no such job.
func (s *Sandbox) KillJob(_ context.Context, id string) (sandbox.Job, error) {
	return sandbox.Job{}, fmt.Errorf("job %s: %w", id, sandbox.ErrNotFound)
}

// Stop implements sandbox.Sandbox.
func (s *Sandbox) Stop(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = sandbox.StatusStopped
	return nil
}

// Close implements sandbox.Sandbox.
func (s *Sandbox) Close(ctx context.Context) error { return s.Stop(ctx) }

// HandOff implements sandbox.Sandbox: nothing of a fake outlives Close, so it is Close.
func (s *Sandbox) HandOff(ctx context.Context) error { return s.Close(ctx) }
