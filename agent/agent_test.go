package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
)

// These tests run the agent in the test process itself, as a child subreaper, and drive it
// through pipes the way the server drives it through a container's stdio. They must not use
// os/exec while an agent runs: its reaper would collect exec.Cmd's children first.

// responseWait bounds every wait for an answer, so a broken agent fails a test instead of
// hanging it.
const responseWait = 20 * time.Second

// testAgent is a small protocol client around one Run.
type testAgent struct {
	t         *testing.T
	workspace string
	in        *io.PipeWriter
	cancel    context.CancelFunc
	done      chan error // Run's result
	ready     wire.Response
	stopped   bool // by stop, which the test's goroutine alone calls

	mu     sync.Mutex
	nextID uint64
	inbox  map[uint64]chan wire.Response
	stray  chan wire.Response // responses no request waits for: ready, ID-0 errors
}

func startAgent(t *testing.T) *testAgent {
	t.Helper()
	return startAgentWith(t, Options{})
}

// startAgentWith starts an agent with opts; its workspace and logger are the test's.
func startAgentWith(t *testing.T, opts Options) *testAgent {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	a := &testAgent{
		t:         t,
		workspace: t.TempDir(),
		in:        inW,
		cancel:    cancel,
		done:      make(chan error, 1),
		inbox:     make(map[uint64]chan wire.Response),
		stray:     make(chan wire.Response, 16),
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() {
		opts.Workspace, opts.Logger = a.workspace, log
		err := Run(ctx, inR, outW, opts)
		outW.Close()
		a.done <- err
	}()
	go a.readResponses(outR)
	select {
	case a.ready = <-a.stray:
	case <-time.After(responseWait):
		t.Fatal("no ready message")
	}
	t.Cleanup(a.stop)
	return a
}

func (a *testAgent) readResponses(out io.Reader) {
	dec := json.NewDecoder(out)
	for {
		var resp wire.Response
		if err := dec.Decode(&resp); err != nil {
			return
		}
		a.mu.Lock()
		ch := a.inbox[resp.ID]
		a.mu.Unlock()
		if ch == nil {
			ch = a.stray
		}
		ch <- resp
	}
}

// stop closes the agent's input and waits for Run to return; later calls do nothing.
func (a *testAgent) stop() {
	if a.stopped {
		return
	}
	a.stopped = true
	a.in.Close()
	select {
	case <-a.done:
	case <-time.After(responseWait):
		a.t.Error("Run did not return after its input closed")
	}
	a.cancel()
}

// send sends req under a fresh ID and returns the channel its responses arrive on.
func (a *testAgent) send(req wire.Request) (uint64, <-chan wire.Response) {
	a.mu.Lock()
	a.nextID++
	req.ID = a.nextID
	ch := make(chan wire.Response, 1024)
	a.inbox[req.ID] = ch
	a.mu.Unlock()
	a.sendRaw(req)
	return req.ID, ch
}

func (a *testAgent) sendRaw(v any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	if s, ok := v.(string); ok {
		_, err = io.WriteString(a.in, s)
	} else {
		err = json.NewEncoder(a.in).Encode(v)
	}
	if err != nil {
		a.t.Errorf("sending request: %v", err)
	}
}

// await collects a request's streamed output until its final response.
func (a *testAgent) await(ch <-chan wire.Response) (final wire.Response, outputs []wire.Output) {
	a.t.Helper()
	deadline := time.After(responseWait)
	for {
		select {
		case resp := <-ch:
			if resp.Kind == wire.KindOutput {
				outputs = append(outputs, *resp.Output)
				continue
			}
			return resp, outputs
		case <-deadline:
			a.t.Fatal("no response")
		}
	}
}

func (a *testAgent) call(req wire.Request) wire.Response {
	a.t.Helper()
	_, ch := a.send(req)
	resp, _ := a.await(ch)
	return resp
}

// exec runs a command that must produce a result (not an error).
func (a *testAgent) exec(spec wire.Exec) wire.ExecResult {
	a.t.Helper()
	resp := a.call(wire.Request{Op: wire.OpExec, Exec: &spec})
	if resp.Kind != wire.KindResult || resp.Exec == nil {
		a.t.Fatalf("exec %q: got %+v, want a result", spec.Argv, resp)
	}
	return *resp.Exec
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

var tagSeq atomic.Int64

// newTag returns an environment entry to mark a test's processes, so the test can look
// for survivors in /proc without trusting the agent's own marker.
func newTag() string {
	return fmt.Sprintf("AGENT_TEST_TAG=%d-%d", os.Getpid(), tagSeq.Add(1))
}

// tagged lists the live processes carrying tag.
func tagged(tag string) []int {
	var pids []int
	for _, p := range readProcs() {
		if !p.dead && p.pid != os.Getpid() && environHas(p, tag) {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

func TestReady(t *testing.T) {
	a := startAgent(t)
	r := a.ready
	if r.Kind != wire.KindReady || r.ID != 0 || r.Ready == nil {
		t.Fatalf("first message = %+v, want ready", r)
	}
	want := wire.Ready{Version: wire.Version, PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid(), Workspace: a.workspace}
	if *r.Ready != want {
		t.Errorf("ready = %+v, want %+v", *r.Ready, want)
	}
}

func TestRequests(t *testing.T) {
	a := startAgent(t)
	tests := []struct {
		name    string
		req     wire.Request
		kind    wire.Kind
		code    wire.Code
		mention string // a substring the error must contain
	}{
		{"ping", wire.Request{Op: wire.OpPing}, wire.KindResult, "", ""},
		{"unknown op", wire.Request{Op: "launch"}, wire.KindError, wire.CodeInvalid, "ping, exec, cancel, file, jobs, kill"},
		{"exec without exec", wire.Request{Op: wire.OpExec}, wire.KindError, wire.CodeInvalid, "exec"},
		{"empty argv", wire.Request{Op: wire.OpExec, Exec: &wire.Exec{}}, wire.KindError, wire.CodeInvalid, "argv"},
		{"program not found", wire.Request{Op: wire.OpExec, Exec: &wire.Exec{Argv: []string{"no-such-program-xyz"}}},
			wire.KindError, wire.CodeNotFound, "no-such-program-xyz"},
		{"path not found", wire.Request{Op: wire.OpExec, Exec: &wire.Exec{Argv: []string{"./missing.sh"}}},
			wire.KindError, wire.CodeNotFound, "./missing.sh"},
		{"missing dir", wire.Request{Op: wire.OpExec, Exec: &wire.Exec{Argv: []string{"true"}, Dir: "nope"}},
			wire.KindError, wire.CodeNotFound, "nope"},
		{"bad env", wire.Request{Op: wire.OpExec, Exec: &wire.Exec{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}},
			wire.KindError, wire.CodeInvalid, "NOEQUALS"},
		{"negative timeout", wire.Request{Op: wire.OpExec, Exec: &wire.Exec{Argv: []string{"true"}, TimeoutMS: -1}},
			wire.KindError, wire.CodeInvalid, "negative"},
		{"cancel nothing", wire.Request{Op: wire.OpCancel, Target: 9999}, wire.KindError, wire.CodeNotFound, "9999"},
		{"kill no job", wire.Request{Op: wire.OpKill, Job: "job-42"}, wire.KindError, wire.CodeNotFound, "job-42"},
		{"jobs when none", wire.Request{Op: wire.OpJobs}, wire.KindResult, "", ""},
		{"file without file", wire.Request{Op: wire.OpFile}, wire.KindError, wire.CodeInvalid, "file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := a.call(tc.req)
			if resp.Kind != tc.kind || resp.Code != tc.code {
				t.Fatalf("got kind %q code %q (%q), want %q %q", resp.Kind, resp.Code, resp.Error, tc.kind, tc.code)
			}
			if !strings.Contains(resp.Error, tc.mention) {
				t.Errorf("error %q does not mention %q", resp.Error, tc.mention)
			}
		})
	}
}

func TestUndecodableRequestKeepsServing(t *testing.T) {
	a := startAgent(t)
	a.sendRaw(`{"op":"ping","id":"seven"}` + "\n")
	select {
	case resp := <-a.stray:
		if resp.Kind != wire.KindError || resp.Code != wire.CodeInvalid || resp.ID != 0 {
			t.Errorf("got %+v, want an invalid error for ID 0", resp)
		}
	case <-time.After(responseWait):
		t.Fatal("no error response")
	}
	if resp := a.call(wire.Request{Op: wire.OpPing}); resp.Kind != wire.KindResult {
		t.Errorf("ping after a bad request: %+v", resp)
	}
}

func TestSyntaxErrorEndsRun(t *testing.T) {
	a := startAgent(t)
	a.sendRaw("{this is not json}\n")
	select {
	case err := <-a.done:
		if err == nil || !strings.Contains(err.Error(), "decoding request") {
			t.Errorf("Run returned %v, want a decoding error", err)
		}
		a.done <- err // for the cleanup's wait
	case <-time.After(responseWait):
		t.Fatal("Run did not return")
	}
}

// TestRunCleansUp checks that however Run stops, nothing it started survives it.
func TestRunCleansUp(t *testing.T) {
	for _, how := range []string{"eof", "context"} {
		t.Run(how, func(t *testing.T) {
			a := startAgent(t)
			tag := newTag()
			job := a.exec(wire.Exec{Argv: sh("sleep 30 & sleep 30"), Env: []string{tag}, Background: true})
			if job.JobID == "" {
				t.Fatalf("background exec: %+v", job)
			}
			_, running := a.send(wire.Request{Op: wire.OpExec, Exec: &wire.Exec{
				Argv: sh("echo started; setsid sleep 30 & sleep 30"), Env: []string{tag}, StreamIntervalMS: 10}})
			if first := <-running; first.Kind != wire.KindOutput {
				t.Fatalf("want output first, got %+v", first)
			}
			if !testwait.Poll(5*time.Second, func() bool { return len(tagged(tag)) >= 4 }) {
				t.Fatalf("expected 4 tagged processes, have %v", tagged(tag))
			}

			want := error(nil)
			if how == "eof" {
				a.in.Close()
			} else {
				a.cancel()
				want = context.Canceled
			}
			select {
			case err := <-a.done:
				if !errors.Is(err, want) || (want == nil && err != nil) {
					t.Errorf("Run returned %v, want %v", err, want)
				}
				a.done <- err
			case <-time.After(responseWait):
				t.Fatal("Run did not return")
			}
			if left := tagged(tag); len(left) > 0 {
				t.Errorf("processes left after Run returned: %v", left)
			}
			if how == "eof" {
				// The exec in flight still answers, as cancelled.
				final, _ := a.await(running)
				if final.Exec == nil || !final.Exec.Cancelled {
					t.Errorf("in-flight exec answered %+v, want cancelled", final)
				}
			}
		})
	}
}
