package session_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/internal/fakesandbox"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
)

// handlesCore is a core on fake sandboxes of the session type, with a per-owner cap.
func handlesCore(t *testing.T, perOwner int) (*session.Core, *sandbox.Manager, *fakesandbox.Factory) {
	t.Helper()
	f := &fakesandbox.Factory{}
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {}, session.SessionType: {}},
		Creators: map[sandbox.Type]sandbox.Creator{
			sandbox.TypeDocker: f.Creator(sandbox.TypeDocker), session.SessionType: f.Creator(session.SessionType),
		},
		MaxPerOwner: perOwner,
	})
	t.Cleanup(func() { _ = m.Close(context.WithoutCancel(t.Context())) })
	core, err := session.New(session.Config{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	return core, m, f
}

// TestHandles: a handle is a sandbox of the session type owned by the credential that
// opened it; calls run in it; another owner, an unknown id and a closed handle are not
// found; handles count against the per-owner cap with the owner's REST sandboxes; the
// idle sweep ends an unused handle, never one under a call.
func TestHandles(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	t.Run("owned and closed", func(t *testing.T) {
		t.Parallel()
		core, m, _ := handlesCore(t, 0)
		h := session.NewHandles(core)
		id, err := h.Open(ctx, "token:alice")
		if err != nil {
			t.Fatal(err)
		}
		sb, err := m.GetOwned("token:alice", id)
		if err != nil || sb.Info().Type != session.SessionType {
			t.Fatalf("the handle's sandbox: %v, %v; want alice's, of the session type", sb, err)
		}
		res, err := h.Run(ctx, "token:alice", id, session.Call{Tool: "shell_executor", Args: map[string]any{"command": "echo hi"}})
		if err != nil || !res.OK() {
			t.Fatalf("run in the handle: %+v, %v", res, err)
		}
		for _, tc := range []struct{ name, owner, id string }{
			{"another owner", "token:bob", id},
			{"unknown id", "token:alice", "nope"},
			{"no owner", "", id},
		} {
			if _, err := h.Run(ctx, tc.owner, tc.id, session.Call{Tool: "shell_executor", Args: map[string]any{"command": "true"}}); !errors.Is(err, api.ErrNotFound) || !errors.Is(err, session.ErrNoHandle) {
				t.Errorf("%s: %v, want not found", tc.name, err)
			}
		}
		if err := h.Close(ctx, "token:bob", id); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("bob closes alice's handle: %v, want not found", err)
		}
		if len(h.List("token:alice")) != 1 || len(h.List("token:bob")) != 0 {
			t.Errorf("listed: alice %d, bob %d; want 1 and 0", len(h.List("token:alice")), len(h.List("token:bob")))
		}
		if err := h.Close(ctx, "token:alice", id); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Get(id); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("the sandbox outlived its close: %v", err)
		}
		if _, err := h.Run(ctx, "token:alice", id, session.Call{Tool: "shell_executor", Args: map[string]any{"command": "true"}}); !errors.Is(err, session.ErrNoHandle) {
			t.Errorf("a closed handle: %v, want not found", err)
		}
	})

	t.Run("a handle removed through REST is gone", func(t *testing.T) {
		t.Parallel()
		core, _, _ := handlesCore(t, 0)
		h := session.NewHandles(core)
		id, err := h.Open(ctx, "token:alice")
		if err != nil {
			t.Fatal(err)
		}
		if err := core.Caller("token:alice").Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Sandbox("token:alice", id); !errors.Is(err, session.ErrNoHandle) || !strings.Contains(err.Error(), "it ended") {
			t.Errorf("a handle whose sandbox was deleted: %v, want not found, ended", err)
		}
	})

	t.Run("per-owner cap", func(t *testing.T) {
		t.Parallel()
		core, _, _ := handlesCore(t, 2)
		h := session.NewHandles(core)
		if _, err := core.Caller("token:alice").Create(ctx, sandbox.TypeDocker, sandbox.Config{}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Open(ctx, "token:alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Open(ctx, "token:alice"); !errors.Is(err, api.ErrLimit) {
			t.Errorf("a third sandbox of alice's (one REST, one handle): %v, want the per-owner limit", err)
		}
		if _, err := h.Open(ctx, "token:bob"); err != nil {
			t.Errorf("bob is not held back by alice's cap: %v", err)
		}
	})

	t.Run("not idle under a call", func(t *testing.T) {
		t.Parallel()
		b := testenv.Process(t)
		m := sandbox.NewManager(sandbox.ManagerOptions{
			Defaults: map[sandbox.Type]sandbox.Config{session.SessionType: {}},
			Creators: map[sandbox.Type]sandbox.Creator{session.SessionType: sandbox.NewCreator(b, session.SessionType)},
		})
		t.Cleanup(func() { _ = m.Close(context.WithoutCancel(t.Context())) })
		core, err := session.New(session.Config{Manager: m})
		if err != nil {
			t.Fatal(err)
		}
		h := session.NewHandles(core)
		id, err := h.Open(ctx, "token:alice")
		if err != nil {
			t.Fatal(err)
		}
		sweep, stop := context.WithCancel(ctx)
		defer stop()
		go h.Sweep(sweep, 300*time.Millisecond)
		// The call outlasts the TTL several times over; the sweep must leave it be.
		res, err := h.Run(ctx, "token:alice", id, session.Call{Tool: "shell_executor", Args: map[string]any{"command": "sleep 2; echo done"}})
		if err != nil || strings.TrimSpace(res.Output) != "done" {
			t.Fatalf("a call longer than the idle TTL: %+v, %v", res, err)
		}
		if _, err := h.Sandbox("token:alice", id); err != nil {
			t.Errorf("the handle ended under its call: %v", err)
		}
		testwait.Until(t, 10*time.Second, "the handle ended once idle", func() bool {
			_, err := m.Get(id)
			return errors.Is(err, api.ErrNotFound)
		})
	})

	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		core, m, _ := handlesCore(t, 0)
		h := session.NewHandles(core)
		sweep, stop := context.WithCancel(ctx)
		defer stop()
		idle, err := h.Open(ctx, "token:alice")
		if err != nil {
			t.Fatal(err)
		}
		go h.Sweep(sweep, 300*time.Millisecond)
		testwait.Until(t, 10*time.Second, "the idle handle's sandbox removed", func() bool {
			_, err := m.Get(idle)
			return errors.Is(err, api.ErrNotFound)
		})
		if _, err := h.Sandbox("token:alice", idle); !errors.Is(err, session.ErrNoHandle) {
			t.Errorf("an expired handle: %v, want not found", err)
		}
	})
}
