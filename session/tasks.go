package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// Tasks are tool calls that outlive the request that started them: a face starts a call
// with Start, which waits a while for it; a call still running then goes on as a task, on a
// context of its own (not the request's, so the client may disconnect), and the client
// polls it with Get, reads its output so far, cancels it with Cancel, and reads its result
// once it ends. A task belongs to the owner that started it: to any other owner it is not
// found, like an id that never existed. It also belongs to a scope, the MCP session or
// sandbox handle it runs in: when that ends (EndScope), its running tasks are cancelled.
//
// A task's call may ask its client for input (Ask): the task is then input_required,
// showing what it asks on Get, until Answer has brought a response to each request; the
// call then goes on with them.
//
// Bounds: an owner has at most TaskLimits.MaxLive running tasks (more are refused with
// api.ErrLimit); a finished task is kept for TaskLimits.Keep after it ends, and an owner's
// finished tasks beyond TaskLimits.MaxKept are dropped oldest first; a task keeps the last
// TaskLimits.OutputTail bytes of each of its stdout and stderr while it runs.
type Tasks struct {
	limits TaskLimits

	mu   sync.Mutex
	byID map[string]*task
}

// TaskLimits bound the tasks of one owner. Zero fields take the defaults.
type TaskLimits struct {
	// MaxLive caps an owner's running tasks (default 16).
	MaxLive int
	// Keep is how long a finished task, and its result, stays readable (default 10 min).
	Keep time.Duration
	// MaxKept caps an owner's finished tasks kept (default 16); the oldest go first. A
	// kept result is at most what a tool returns (its output cap).
	MaxKept int
	// OutputTail is how much of the latest stdout, and of stderr, a running task keeps for
	// polling (default 64 KiB each).
	OutputTail int
}

func (l TaskLimits) withDefaults() TaskLimits {
	if l.MaxLive <= 0 {
		l.MaxLive = 16
	}
	if l.Keep <= 0 {
		l.Keep = 10 * time.Minute
	}
	if l.MaxKept <= 0 {
		l.MaxKept = 16
	}
	if l.OutputTail <= 0 {
		l.OutputTail = 64 << 10
	}
	return l
}

// TaskStatus is where a task is in its life.
type TaskStatus string

// The statuses of a task. Working and InputRequired are the ones that change.
const (
	TaskWorking       TaskStatus = "working"
	TaskInputRequired TaskStatus = "input_required" // its call waits for its client's answers (Ask)
	TaskCompleted     TaskStatus = "completed"      // the tool ran: the result says how it went
	TaskFailed        TaskStatus = "failed"         // the call could not run: Err says why
	TaskCancelled     TaskStatus = "cancelled"
)

// Terminal reports whether s is final.
func (s TaskStatus) Terminal() bool { return s != TaskWorking && s != TaskInputRequired }

// ErrNoTask is the error of a task id that is not one of the caller's tasks (or was
// dropped after TaskLimits.Keep).
var ErrNoTask = fmt.Errorf("no such task: %w", api.ErrNotFound)

// TaskView is a task as a caller sees it at one moment.
type TaskView struct {
	ID      string
	Tool    string
	Status  TaskStatus
	Created time.Time
	Updated time.Time
	// Ended is when it reached its final status; zero while working.
	Ended time.Time
	// Keep is how long it stays readable after Ended.
	Keep time.Duration
	// Result is the tool's result once Completed.
	Result tools.Result
	// Err is why it Failed, or why it was cancelled.
	Err error
	// Stdout and Stderr are the latest output of a running call (the last
	// TaskLimits.OutputTail bytes of each); Dropped counts the bytes before them.
	Stdout, Stderr string
	Dropped        int64
	// InputRequests are what an InputRequired task asks its client, by key, the ones not
	// answered yet (Ask).
	InputRequests map[string]any
}

// task is one task; its fields after the constants are guarded by mu.
type task struct {
	id, owner, scope, tool string
	created                time.Time
	done                   chan struct{}

	mu       sync.Mutex
	status   TaskStatus
	updated  time.Time
	ended    time.Time
	res      tools.Result
	err      error
	stdout   []byte
	stderr   []byte
	dropped  int64
	cancel   context.CancelFunc
	cancelBy error // why it was cancelled, once it was
	forget   bool  // drop it as soon as it ends: no one can read it any more
	// An Ask in progress: the requests not answered yet, the answers so far, and answered,
	// closed once every request has its answer. asked is closed on the first Ask.
	pending  map[string]any
	answers  map[string]json.RawMessage
	answered chan struct{}
	asked    chan struct{}
}

// ErrTaskCancelled is the reason of a task its client cancelled.
var ErrTaskCancelled = errors.New("cancelled by its client")

// ErrScopeEnded is the reason of a task whose session or sandbox handle ended under it.
var ErrScopeEnded = errors.New("its MCP session or sandbox handle ended")

// NewTasks returns an empty registry.
func NewTasks(limits TaskLimits) *Tasks {
	return &Tasks{limits: limits.withDefaults(), byID: map[string]*task{}}
}

// Tasks is the Core's task registry, shared by every face.
func (c *Core) Tasks() *Tasks { return c.tasks }

// TaskRun is a call a task runs: ctx ends when the task is cancelled or its scope ends;
// progress receives the call's output while it runs.
type TaskRun func(ctx context.Context, progress func(sandbox.Output)) (tools.Result, error)

// Start runs fn for owner in scope on a context detached from ctx (keeping its values), and
// waits up to wait for it (wait <= 0: not at all). A call that ends in time is returned as it ended, with no task
// left behind (done is true). Otherwise (or as soon as it asks for input: only a task can
// be answered) it goes on as a task, already readable by Get when
// Start returns, and Start returns its view (done is false). ctx ending (the client went
// away) stops the wait, not the call. An owner at TaskLimits.MaxLive running tasks is
// refused with api.ErrLimit before anything runs.
func (t *Tasks) Start(ctx context.Context, owner, scope, tool string, wait time.Duration, fn TaskRun) (view TaskView, done bool, err error) {
	now := time.Now()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	tk := &task{
		id: newTaskID(), owner: owner, scope: scope, tool: tool, created: now, done: make(chan struct{}),
		status: TaskWorking, updated: now, cancel: cancel, asked: make(chan struct{}),
	}
	runCtx = context.WithValue(runCtx, taskKey{}, tk)
	if err := t.add(tk, now); err != nil {
		cancel()
		return TaskView{}, false, err
	}
	if wait <= 0 {
		v := tk.view(t.limits.Keep) // as created: working, whatever the call does at once
		go t.run(runCtx, tk, fn)
		return v, false, nil
	}
	go t.run(runCtx, tk, fn)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-tk.done:
		t.mu.Lock()
		delete(t.byID, tk.id) // answered in full: no task was ever handed out
		t.mu.Unlock()
		v := tk.view(t.limits.Keep)
		if v.Status == TaskFailed {
			return v, true, v.Err
		}
		return v, true, nil
	case <-timer.C:
	case <-tk.asked:
	case <-ctx.Done():
	}
	return tk.view(t.limits.Keep), false, nil
}

// add registers tk, dropping expired tasks first; it refuses an owner at its live limit.
func (t *Tasks) add(tk *task, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(now)
	live := 0
	for _, other := range t.byID {
		if other.owner == tk.owner && !other.currentStatus().Terminal() {
			live++
		}
	}
	if live >= t.limits.MaxLive {
		return fmt.Errorf("%d tasks of this caller are running, the limit; wait for one to end or cancel one (tasks/cancel): %w",
			live, api.ErrLimit)
	}
	t.byID[tk.id] = tk
	return nil
}

// pruneLocked drops tasks finished longer than Keep ago, and each owner's finished tasks
// beyond MaxKept, oldest first; t.mu is held.
func (t *Tasks) pruneLocked(now time.Time) {
	finished := map[string][]*task{}
	for id, tk := range t.byID {
		tk.mu.Lock()
		ended := tk.ended
		tk.mu.Unlock()
		switch {
		case ended.IsZero():
		case now.Sub(ended) > t.limits.Keep:
			delete(t.byID, id)
		default:
			finished[tk.owner] = append(finished[tk.owner], tk)
		}
	}
	for _, list := range finished {
		for len(list) > t.limits.MaxKept {
			oldest := 0
			for i, tk := range list {
				if tk.endedAt().Before(list[oldest].endedAt()) {
					oldest = i
				}
			}
			delete(t.byID, list[oldest].id)
			list = append(list[:oldest], list[oldest+1:]...)
		}
	}
}

func (t *Tasks) run(ctx context.Context, tk *task, fn TaskRun) {
	defer close(tk.done)
	res, err := runGuarded(ctx, fn, tk.record(t.limits.OutputTail))
	if tk.finish(res, err) {
		t.mu.Lock()
		delete(t.byID, tk.id)
		t.mu.Unlock()
	}
}

// runGuarded runs fn, turning a panic into an error: a task's call runs on a goroutine of
// its own, where a panic would otherwise end the whole server rather than the one call (a
// synchronous call's panic is recovered by the face's SDK). The task then fails, with the
// panic as its reason.
func runGuarded(ctx context.Context, fn TaskRun, progress func(sandbox.Output)) (res tools.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = tools.Result{}, fmt.Errorf("%w: %v", ErrTaskPanicked, p)
		}
	}()
	return fn(ctx, progress)
}

// ErrTaskPanicked is the reason of a task whose call panicked.
var ErrTaskPanicked = errors.New("the call failed inside the server (it panicked)")

// finish records how tk's call ended, and reports whether tk is to be forgotten.
func (tk *task) finish(res tools.Result, err error) (forget bool) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	tk.cancel()
	now := time.Now()
	tk.updated, tk.ended = now, now
	tk.stdout, tk.stderr = nil, nil // the result has the whole output
	switch {
	case tk.cancelBy != nil:
		tk.status, tk.err = TaskCancelled, tk.cancelBy
	case err != nil:
		tk.status, tk.err = TaskFailed, err
	default:
		tk.status, tk.res = TaskCompleted, res
	}
	return tk.forget
}

// record keeps the tail of a running call's output.
func (tk *task) record(limit int) func(sandbox.Output) {
	keep := func(buf []byte, s string) []byte {
		buf = append(buf, s...)
		if over := len(buf) - limit; over > 0 {
			tk.dropped += int64(over)
			buf = append(buf[:0:0], buf[over:]...)
		}
		return buf
	}
	return func(out sandbox.Output) {
		tk.mu.Lock()
		defer tk.mu.Unlock()
		if tk.status.Terminal() {
			return
		}
		tk.stdout = keep(tk.stdout, out.Stdout)
		tk.stderr = keep(tk.stderr, out.Stderr)
		tk.updated = time.Now()
	}
}

func (tk *task) currentStatus() TaskStatus {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return tk.status
}

func (tk *task) endedAt() time.Time {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return tk.ended
}

func (tk *task) view(keep time.Duration) TaskView {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	v := TaskView{
		ID: tk.id, Tool: tk.tool, Status: tk.status, Created: tk.created, Updated: tk.updated, Ended: tk.ended,
		Keep: keep, Result: tk.res, Err: tk.err, Stdout: string(tk.stdout), Stderr: string(tk.stderr), Dropped: tk.dropped,
	}
	if tk.status == TaskInputRequired {
		v.InputRequests = maps.Clone(tk.pending)
	}
	return v
}

// find is owner's task id, or ErrNoTask.
func (t *Tasks) find(owner, id string) (*task, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(time.Now())
	tk := t.byID[id]
	if tk == nil || owner == "" || tk.owner != owner {
		return nil, fmt.Errorf("task %q: %w", id, ErrNoTask)
	}
	return tk, nil
}

// Get is owner's task id as it is now.
func (t *Tasks) Get(owner, id string) (TaskView, error) {
	tk, err := t.find(owner, id)
	if err != nil {
		return TaskView{}, err
	}
	return tk.view(t.limits.Keep), nil
}

// Cancel asks owner's task id to stop: its call's context ends, which kills the call's
// process tree, and the task is cancelled once the call has returned. Cancelling a task that
// already ended does nothing.
func (t *Tasks) Cancel(owner, id string) error {
	tk, err := t.find(owner, id)
	if err != nil {
		return err
	}
	tk.stop(ErrTaskCancelled)
	return nil
}

// stop cancels tk's call for why, unless it already ended.
func (tk *task) stop(why error) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.status.Terminal() || tk.cancelBy != nil {
		return
	}
	tk.cancelBy = why
	tk.updated = time.Now()
	tk.cancel()
}

// EndScope cancels every running task of scope (an MCP session or a sandbox handle that
// ended) and returns without waiting for them. With forget, its tasks are dropped as soon
// as they have ended (an MCP session's: no one can ask for them any more); otherwise their
// owners read them as cancelled until TaskLimits.Keep after they end (a handle's: its
// token still asks).
func (t *Tasks) EndScope(scope string, forget bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, tk := range t.byID {
		if tk.scope != scope {
			continue
		}
		tk.stop(ErrScopeEnded)
		if forget && !tk.mark() {
			delete(t.byID, id)
		}
	}
}

// mark sets tk to be forgotten when it ends, and reports whether it is still running.
func (tk *task) mark() (running bool) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	tk.forget = true
	return !tk.status.Terminal()
}

// Running reports whether scope has a task still running.
func (t *Tasks) Running(scope string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tk := range t.byID {
		if tk.scope == scope && !tk.currentStatus().Terminal() {
			return true
		}
	}
	return false
}

// Wait blocks until owner's task id has ended or ctx ends.
func (t *Tasks) Wait(ctx context.Context, owner, id string) (TaskView, error) {
	tk, err := t.find(owner, id)
	if err != nil {
		return TaskView{}, err
	}
	select {
	case <-tk.done:
	case <-ctx.Done():
		return TaskView{}, ctx.Err()
	}
	return tk.view(t.limits.Keep), nil
}

// taskKey carries a task's call's task in its context, for Ask.
type taskKey struct{}

// ErrNoInput is Ask's error for a call that can ask its client nothing: neither a task's
// nor one of a multi round-trip request (a Round).
var ErrNoInput = errors.New("this call needs answers from its client, which it cannot ask here: " +
	"call it as a task (declare the MCP tasks extension), or over protocol 2026-07-28 (multi round-trip requests)")

// Ask asks the client of the call ctx is for input: requests, by key, each opaque here (a
// face's request, such as an MCP elicitation), keys unique within the call.
//
// In a task's call, the task is input_required, showing the requests not answered yet on
// Get, until Answer has brought a response to each; Ask then returns the responses by
// key, and the task is working again. It returns ctx's error when the task is cancelled
// or its scope ends first.
//
// In a call of a multi round-trip request (WithRound; mrtr.go), Ask returns the round's
// answers when it has one to each request, and otherwise *InputRequired, which the call
// must return (wrapped or not): its client is asked, and the call runs again with the
// answers. A request whose kind the client did not declare is *MissingCapability.
//
// Elsewhere (or with no requests) it returns ErrNoInput.
func Ask(ctx context.Context, requests map[string]any) (map[string]json.RawMessage, error) {
	if len(requests) == 0 {
		return nil, ErrNoInput
	}
	tk, _ := ctx.Value(taskKey{}).(*task)
	if tk == nil {
		if r := RoundFrom(ctx); r != nil {
			return r.ask(requests)
		}
		return nil, ErrNoInput
	}
	answered := tk.ask(requests)
	select {
	case <-answered:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	tk.mu.Lock()
	defer tk.mu.Unlock()
	out := tk.answers
	tk.answers = nil
	return out, nil
}

// ask puts tk in input_required with requests pending, and returns the channel closed
// once they are all answered.
func (tk *task) ask(requests map[string]any) <-chan struct{} {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	tk.pending, tk.answers, tk.answered = maps.Clone(requests), map[string]json.RawMessage{}, make(chan struct{})
	if !tk.status.Terminal() {
		tk.status = TaskInputRequired
	}
	tk.updated = time.Now()
	select {
	case <-tk.asked:
	default:
		close(tk.asked)
	}
	return tk.answered
}

// Answer brings owner's task id responses to what it asked (Ask), by key: each response
// to a request still pending is taken, and others (a key it did not ask, one answered
// already, a task asking nothing) are ignored. Once every request has its response, the
// task is working again.
func (t *Tasks) Answer(owner, id string, responses map[string]json.RawMessage) error {
	tk, err := t.find(owner, id)
	if err != nil {
		return err
	}
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.status != TaskInputRequired {
		return nil
	}
	for key, r := range responses {
		if _, ok := tk.pending[key]; ok {
			tk.answers[key] = r
			delete(tk.pending, key)
		}
	}
	tk.updated = time.Now()
	if len(tk.pending) == 0 {
		tk.status = TaskWorking
		close(tk.answered)
	}
	return nil
}

// newTaskID is an unguessable task id.
func newTaskID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "task-" + hex.EncodeToString(b[:])
}
