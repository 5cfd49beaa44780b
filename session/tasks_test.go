package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// blocking is a task run that waits for release or its context, reporting its context's
// end on stopped.
type blocking struct {
	release chan struct{}
	stopped chan error
}

func newBlocking() *blocking {
	return &blocking{release: make(chan struct{}), stopped: make(chan error, 1)}
}

func (b *blocking) run(ctx context.Context, progress func(sandbox.Output)) (tools.Result, error) {
	progress(sandbox.Output{Stdout: "started\n"})
	select {
	case <-b.release:
		return tools.Result{Status: tools.StatusSuccess, Output: "done"}, nil
	case <-ctx.Done():
		b.stopped <- ctx.Err()
		return tools.Result{Status: tools.StatusCancelled}, nil
	}
}

// startTask starts b as a task of owner in scope and fails unless it became one.
func startTask(t *testing.T, tasks *session.Tasks, owner, scope string, b *blocking) session.TaskView {
	t.Helper()
	v, done, err := tasks.Start(t.Context(), owner, scope, "python_executor", 0, b.run)
	if err != nil || done {
		t.Fatalf("Start: done %v, error %v; want a task", done, err)
	}
	if v.Status != session.TaskWorking || v.ID == "" {
		t.Fatalf("new task: %+v", v)
	}
	return v
}

func TestTasks(t *testing.T) {
	t.Run("a call that ends in time leaves no task", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{})
		v, done, err := tasks.Start(t.Context(), "alice", "s1", "python_executor", time.Hour,
			func(context.Context, func(sandbox.Output)) (tools.Result, error) {
				return tools.Result{Status: tools.StatusSuccess, Output: "42"}, nil
			})
		if err != nil || !done || v.Result.Output != "42" {
			t.Fatalf("got %+v, done %v, error %v", v, done, err)
		}
		if _, err := tasks.Get("alice", v.ID); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("Get after a synchronous call: %v, want not found", err)
		}
	})

	t.Run("a call that panics fails, in time or as a task, and the process goes on", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{})
		boom := func(context.Context, func(sandbox.Output)) (tools.Result, error) { panic("boom") }
		if _, done, err := tasks.Start(t.Context(), "alice", "s1", "x", time.Hour, boom); !done || !errors.Is(err, session.ErrTaskPanicked) {
			t.Errorf("in time: done %v, error %v; want done with ErrTaskPanicked", done, err)
		}
		v, done, err := tasks.Start(t.Context(), "alice", "s1", "x", 0, boom)
		if err != nil || done {
			t.Fatalf("Start: done %v, error %v; want a task", done, err)
		}
		got, err := tasks.Wait(t.Context(), "alice", v.ID)
		if err != nil || got.Status != session.TaskFailed || !errors.Is(got.Err, session.ErrTaskPanicked) || !strings.Contains(got.Err.Error(), "boom") {
			t.Errorf("as a task: %+v, %v; want failed with ErrTaskPanicked and the panic's value", got, err)
		}
	})

	t.Run("a call that asks for input is a task at once, input_required until every answer came", func(t *testing.T) {
		if _, err := session.Ask(t.Context(), map[string]any{"q": 1}); !errors.Is(err, session.ErrNoInput) {
			t.Errorf("Ask outside a task: %v, want ErrNoInput", err)
		}
		tasks := session.NewTasks(session.TaskLimits{})
		ask := func(ctx context.Context, _ func(sandbox.Output)) (tools.Result, error) {
			answers, err := session.Ask(ctx, map[string]any{"a": "first?", "b": "second?"})
			if err != nil {
				return tools.Result{}, err
			}
			return tools.Result{Status: tools.StatusSuccess, Output: string(answers["a"]) + string(answers["b"])}, nil
		}
		v, done, err := tasks.Start(t.Context(), "alice", "s1", "x", time.Hour, ask) // returns at the question, not in an hour
		if err != nil || done {
			t.Fatalf("Start: done %v, error %v; want a task", done, err)
		}
		testwait.Until(t, 10*time.Second, "the task to ask", func() bool {
			got, _ := tasks.Get("alice", v.ID)
			return got.Status == session.TaskInputRequired
		})
		for _, step := range []struct {
			answers map[string]json.RawMessage
			left    []string
		}{
			{map[string]json.RawMessage{"zz": []byte(`1`)}, []string{"a", "b"}}, // not asked: ignored
			{map[string]json.RawMessage{"a": []byte(`"A"`)}, []string{"b"}},
			{map[string]json.RawMessage{"a": []byte(`"again"`)}, []string{"b"}}, // answered already: ignored
		} {
			if err := tasks.Answer("alice", v.ID, step.answers); err != nil {
				t.Fatal(err)
			}
			got, _ := tasks.Get("alice", v.ID)
			if got.Status != session.TaskInputRequired || len(got.InputRequests) != len(step.left) {
				t.Fatalf("after answering %s: %s asking %v; want input_required asking %v", step.answers, got.Status, got.InputRequests, step.left)
			}
			for _, key := range step.left {
				if _, ok := got.InputRequests[key]; !ok {
					t.Errorf("after answering %s, %q is not asked any more", step.answers, key)
				}
			}
		}
		if err := tasks.Answer("bob", v.ID, map[string]json.RawMessage{"b": []byte(`"B"`)}); !errors.Is(err, session.ErrNoTask) {
			t.Errorf("Answer by another owner: %v, want ErrNoTask", err)
		}
		if err := tasks.Answer("alice", v.ID, map[string]json.RawMessage{"b": []byte(`"B"`)}); err != nil {
			t.Fatal(err)
		}
		got, err := tasks.Wait(t.Context(), "alice", v.ID)
		if err != nil || got.Status != session.TaskCompleted || got.Result.Output != `"A""B"` || got.InputRequests != nil {
			t.Errorf("after every answer: %+v, %v", got, err)
		}
	})

	t.Run("a long call becomes a task: its owner polls output and result, others find nothing", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{})
		b := newBlocking()
		v := startTask(t, tasks, "alice", "s1", b)
		testwait.Until(t, 10*time.Second, "the task's first output", func() bool { got, _ := tasks.Get("alice", v.ID); return got.Stdout != "" })
		got, err := tasks.Get("alice", v.ID)
		if err != nil || got.Status != session.TaskWorking || got.Stdout != "started\n" {
			t.Fatalf("working task: %+v, %v", got, err)
		}
		for _, other := range []string{"bob", ""} {
			if _, err := tasks.Get(other, v.ID); !errors.Is(err, session.ErrNoTask) {
				t.Errorf("Get by %q: %v, want ErrNoTask", other, err)
			}
			if err := tasks.Cancel(other, v.ID); !errors.Is(err, session.ErrNoTask) {
				t.Errorf("Cancel by %q: %v, want ErrNoTask", other, err)
			}
		}
		close(b.release)
		end, err := tasks.Wait(t.Context(), "alice", v.ID)
		if err != nil || end.Status != session.TaskCompleted || end.Result.Output != "done" || end.Ended.IsZero() {
			t.Fatalf("ended task: %+v, %v", end, err)
		}
		if end.Stdout != "" {
			t.Errorf("a finished task still holds its output tail %q (the result has it)", end.Stdout)
		}
	})

	t.Run("the client going away does not stop the call", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{})
		b := newBlocking()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		v, done, err := tasks.Start(ctx, "alice", "s1", "python_executor", time.Hour, b.run)
		if err != nil || done {
			t.Fatalf("Start on an ended request: done %v, %v", done, err)
		}
		close(b.release)
		if end, err := tasks.Wait(t.Context(), "alice", v.ID); err != nil || end.Status != session.TaskCompleted {
			t.Fatalf("after the request ended: %+v, %v", end, err)
		}
	})

	for _, tc := range []struct {
		name string
		stop func(tasks *session.Tasks, id string) error
		why  error
	}{
		{"cancel stops the call", func(tasks *session.Tasks, id string) error { return tasks.Cancel("alice", id) }, session.ErrTaskCancelled},
		{"its scope ending stops the call", func(tasks *session.Tasks, _ string) error { tasks.EndScope("s1", false); return nil }, session.ErrScopeEnded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tasks := session.NewTasks(session.TaskLimits{})
			b := newBlocking()
			other := newBlocking() // another scope's task runs on
			v := startTask(t, tasks, "alice", "s1", b)
			w := startTask(t, tasks, "alice", "s2", other)
			if err := tc.stop(tasks, v.ID); err != nil {
				t.Fatal(err)
			}
			if err := <-b.stopped; !errors.Is(err, context.Canceled) {
				t.Fatalf("the call's context: %v", err)
			}
			end, err := tasks.Wait(t.Context(), "alice", v.ID)
			if err != nil || end.Status != session.TaskCancelled || !errors.Is(end.Err, tc.why) {
				t.Fatalf("stopped task: %+v, %v", end, err)
			}
			if err := tasks.Cancel("alice", v.ID); err != nil {
				t.Errorf("cancelling an ended task: %v, want nothing", err)
			}
			if got, _ := tasks.Get("alice", w.ID); got.Status != session.TaskWorking {
				t.Errorf("the other scope's task: %s, want working", got.Status)
			}
			close(other.release)
		})
	}

	t.Run("a scope that ends forgetting drops its tasks once they end", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{})
		b, done := newBlocking(), newBlocking()
		v := startTask(t, tasks, "alice", "s1", b)
		w := startTask(t, tasks, "alice", "s1", done)
		close(done.release)
		if _, err := tasks.Wait(t.Context(), "alice", w.ID); err != nil {
			t.Fatal(err)
		}
		tasks.EndScope("s1", true)
		if _, err := tasks.Get("alice", w.ID); !errors.Is(err, session.ErrNoTask) {
			t.Errorf("an ended task of the ended scope: %v, want dropped at once", err)
		}
		if err := <-b.stopped; !errors.Is(err, context.Canceled) {
			t.Fatalf("the running call's context: %v", err)
		}
		testwait.Until(t, 10*time.Second, "the cancelled task dropped", func() bool {
			_, err := tasks.Get("alice", v.ID)
			return errors.Is(err, session.ErrNoTask)
		})
		if tasks.Running("s1") {
			t.Errorf("the ended scope still has a task running")
		}
	})

	t.Run("a call that cannot run fails", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{})
		release := make(chan struct{})
		v, _, _ := tasks.Start(t.Context(), "alice", "s1", "python_executor", 0,
			func(context.Context, func(sandbox.Output)) (tools.Result, error) {
				<-release
				return tools.Result{}, errors.New("could not start the sandbox")
			})
		close(release)
		end, err := tasks.Wait(t.Context(), "alice", v.ID)
		if err != nil || end.Status != session.TaskFailed || end.Err == nil {
			t.Fatalf("got %+v, %v", end, err)
		}
	})

	t.Run("an owner's running tasks are capped", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{MaxLive: 2})
		b := newBlocking()
		startTask(t, tasks, "alice", "s1", b)
		startTask(t, tasks, "alice", "s1", b)
		_, _, err := tasks.Start(t.Context(), "alice", "s1", "python_executor", 0, b.run)
		if !errors.Is(err, api.ErrLimit) || !strings.Contains(err.Error(), "tasks/cancel") {
			t.Fatalf("third task: %v, want api.ErrLimit with advice", err)
		}
		startTask(t, tasks, "bob", "s2", b) // another owner has its own cap
		close(b.release)
	})

	t.Run("output keeps only its tail", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{OutputTail: 8})
		release := make(chan struct{})
		v, _, _ := tasks.Start(t.Context(), "alice", "s1", "python_executor", 0,
			func(_ context.Context, progress func(sandbox.Output)) (tools.Result, error) {
				progress(sandbox.Output{Stdout: "0123456789", Stderr: "ab"})
				progress(sandbox.Output{Stdout: "XY"})
				<-release
				return tools.Result{}, nil
			})
		defer close(release)
		testwait.Until(t, 10*time.Second, "the second output", func() bool { got, _ := tasks.Get("alice", v.ID); return strings.HasSuffix(got.Stdout, "XY") })
		got, _ := tasks.Get("alice", v.ID)
		if got.Stdout != "456789XY" || got.Stderr != "ab" || got.Dropped != 4 {
			t.Fatalf("tail: stdout %q stderr %q dropped %d", got.Stdout, got.Stderr, got.Dropped)
		}
	})

	t.Run("finished tasks are dropped after Keep", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{Keep: time.Millisecond})
		b := newBlocking()
		v := startTask(t, tasks, "alice", "s1", b)
		close(b.release)
		if _, err := tasks.Wait(t.Context(), "alice", v.ID); err != nil {
			t.Fatal(err)
		}
		testwait.Until(t, 10*time.Second, "the finished task dropped", func() bool { _, err := tasks.Get("alice", v.ID); return errors.Is(err, session.ErrNoTask) })
	})

	t.Run("an owner's finished tasks beyond MaxKept go oldest first", func(t *testing.T) {
		tasks := session.NewTasks(session.TaskLimits{MaxKept: 1})
		var ids []string
		for range 2 {
			b := newBlocking()
			v := startTask(t, tasks, "alice", "s1", b)
			close(b.release)
			if _, err := tasks.Wait(t.Context(), "alice", v.ID); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, v.ID)
		}
		if _, err := tasks.Get("alice", ids[0]); !errors.Is(err, session.ErrNoTask) {
			t.Errorf("oldest finished task: %v, want dropped", err)
		}
		if _, err := tasks.Get("alice", ids[1]); err != nil {
			t.Errorf("newest finished task: %v, want kept", err)
		}
	})
}
