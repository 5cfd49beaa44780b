package mcp_test

// Shared helpers of the end-to-end tests: they run the real, statically built enclave-mcp
// binary as a subprocess ("enclave-mcp serve") and speak MCP to it over its stdin/stdout,
// either through mark3labs/mcp-go's client (e2eServer) or as raw JSON-RPC lines (e2eRaw).
//
// Leak checks: a server's sandbox containers are identified from inside (the container ID in
// /proc/self/mountinfo), never by "every managed container", because other packages' tests
// may run in parallel against the same engine. After the server exits each of those
// containers must disappear within a few seconds.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/mcp"
)

const (
	// e2eCallTimeout bounds one tool call; every call in these tests is expected to finish
	// far sooner.
	e2eCallTimeout = 90 * time.Second
	// e2eGoneTimeout bounds how long a container may linger after its server exited.
	e2eGoneTimeout = 10 * time.Second
	// e2eExitTimeout bounds how long a server may take to exit once its stdin closed.
	e2eExitTimeout = 15 * time.Second
)

// e2eResult is a tool result's structuredContent, as documented.
type e2eResult struct {
	Status        string         `json:"status"`
	ToolName      string         `json:"tool_name"`
	Output        string         `json:"output"`
	Error         string         `json:"error"`
	ExecutionTime float64        `json:"execution_time"`
	ExitCode      *int           `json:"exit_code"`
	Signal        string         `json:"signal"`
	Truncated     bool           `json:"truncated"`
	OOMKilled     bool           `json:"oom_killed"`
	Metadata      map[string]any `json:"metadata"`
	Timestamp     string         `json:"timestamp"`
}

// e2eOutcome is one tool call as the client saw it.
type e2eOutcome struct {
	Raw     *mcpgo.CallToolResult
	Text    string     // every text content, concatenated
	IsError bool       // the result's isError
	S       *e2eResult // structuredContent; nil when the result carries none
}

// String describes the outcome for failure messages, with long texts cut.
func (o e2eOutcome) String() string {
	status := "<no structuredContent>"
	if o.S != nil {
		status = fmt.Sprintf("status=%s exit_code=%v signal=%q truncated=%v oom_killed=%v", o.S.Status, derefInt(o.S.ExitCode), o.S.Signal, o.S.Truncated, o.S.OOMKilled)
	}
	return fmt.Sprintf("isError=%v %s text=%q", o.IsError, status, e2eCut(o.Text, 600))
}

func derefInt(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func e2eCut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n/2] + fmt.Sprintf("…[%d bytes]…", len(s)-n) + s[len(s)-n/2:]
}

// e2eServer is an enclave-mcp stdio server driven by mark3labs/mcp-go's client.
type e2eServer struct {
	t      testing.TB
	Client *mcpclient.Client
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	// ProtocolVersion is the version the client and server agreed on.
	ProtocolVersion string

	mu          sync.Mutex
	usedSandbox bool              // some call reached the sandbox
	containers  map[string]string // container IDs this server's session was seen in → instance label

	closeOnce sync.Once
}

// e2eStart starts "enclave-mcp serve" with extra flags, connects and initializes with the
// client's default (newest) protocol version. The server is closed, and its containers
// checked for leaks, when the test ends.
func e2eStart(t testing.TB, extraArgs ...string) *e2eServer {
	t.Helper()
	return e2eStartVersion(t, "", extraArgs...)
}

// e2eStartVersion is e2eStart asking for protocol version (empty: the client's newest).
func e2eStartVersion(t testing.TB, version string, extraArgs ...string) *e2eServer {
	t.Helper()
	testenv.RequireDocker(t)
	bin := testenv.Binary(t)
	s := &e2eServer{t: t, stderr: &syncbuf.Buffer{}, containers: map[string]string{}}
	args := append([]string{"serve", "--log-level", "debug"}, extraArgs...)
	if rt := testenv.Runtime(); rt != "" {
		args = append(args, "--runtime", rt)
	}
	tr := transport.NewStdioWithOptions(bin, nil, args,
		transport.WithCommandFunc(func(_ context.Context, command string, env, args []string) (*exec.Cmd, error) {
			// Not CommandContext: the server's life is ended by closing its stdin, which
			// is what is under test.
			cmd := exec.Command(command, args...)
			cmd.Env = append(os.Environ(), env...)
			cmd.Stderr = s.stderr
			s.cmd = cmd
			return cmd, nil
		}))
	if err := tr.Start(context.Background()); err != nil {
		t.Fatalf("starting %s serve: %v", bin, err)
	}
	s.Client = mcpclient.NewClient(tr)
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("server stderr (tail):\n%s", e2eTail(s.stderr.String(), 6000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client.Start(ctx); err != nil {
		t.Fatalf("starting the client: %v", err)
	}
	var init mcpgo.InitializeRequest
	init.Params.ClientInfo = mcpgo.Implementation{Name: "enclave-e2e", Version: "0"}
	init.Params.ProtocolVersion = version
	ir, err := s.Client.Initialize(ctx, init)
	if err != nil {
		t.Fatalf("initialize: %v\nstderr:\n%s", err, s.stderr.String())
	}
	s.ProtocolVersion = ir.ProtocolVersion
	return s
}

func e2eTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// Call calls a tool and returns its outcome; a JSON-RPC or transport error fails the test.
func (s *e2eServer) Call(t testing.TB, name string, args map[string]any) e2eOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eCallTimeout)
	defer cancel()
	out, err := s.CallCtx(ctx, t, name, args, nil)
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out
}

// CallCtx calls a tool with ctx and an optional _meta; it returns JSON-RPC errors.
func (s *e2eServer) CallCtx(ctx context.Context, t testing.TB, name string, args map[string]any, meta *mcpgo.Meta) (e2eOutcome, error) {
	t.Helper()
	var req mcpgo.CallToolRequest
	req.Params.Name = name
	req.Params.Arguments = args
	req.Params.Meta = meta
	res, err := s.Client.CallTool(ctx, req)
	if err != nil {
		return e2eOutcome{}, err
	}
	out := e2eDecode(t, name, res)
	if out.S != nil {
		s.mu.Lock()
		s.usedSandbox = true
		s.mu.Unlock()
	}
	return out, nil
}

// e2eDecode turns a mcp-go result into an outcome and checks the documented shape: text
// content is the output then the error text, structuredContent has every field, and isError
// is set exactly for non-success. Links to workspace files the call wrote may follow.
func e2eDecode(t testing.TB, tool string, res *mcpgo.CallToolResult) e2eOutcome {
	t.Helper()
	out := e2eOutcome{Raw: res, IsError: res.IsError}
	for _, c := range res.Content {
		if tc, ok := mcpgo.AsTextContent(c); ok {
			out.Text += tc.Text
		} else if link, ok := c.(mcpgo.ResourceLink); ok && strings.HasPrefix(link.URI, mcp.WorkspaceURIPrefix) {
			continue
		} else {
			t.Errorf("%s: unexpected content of type %T", tool, c)
		}
	}
	if res.StructuredContent == nil {
		return out
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatalf("%s: re-encoding structuredContent: %v", tool, err)
	}
	e2eCheckShape(t, tool, raw, out.Text, out.IsError)
	var r e2eResult
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s: structuredContent %s: %v", tool, e2eCut(string(raw), 400), err)
	}
	out.S = &r
	return out
}

// e2eCheckShape checks one structuredContent (raw JSON) against the documented contract.
func e2eCheckShape(t testing.TB, tool string, raw []byte, text string, isError bool) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Errorf("%s: structuredContent is not an object: %v", tool, err)
		return
	}
	for _, k := range []string{"status", "tool_name", "output", "error", "execution_time", "truncated", "metadata", "timestamp"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("%s: structuredContent lacks %q: %s", tool, k, e2eCut(string(raw), 400))
		}
	}
	var r e2eResult
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Errorf("%s: structuredContent: %v", tool, err)
		return
	}
	switch r.Status {
	case "success", "error", "timeout", "cancelled":
	default:
		t.Errorf("%s: status %q is not one of success, error, timeout, cancelled", tool, r.Status)
	}
	if r.ToolName != tool {
		t.Errorf("tool_name = %q, want %q", r.ToolName, tool)
	}
	if isError != (r.Status != "success") {
		t.Errorf("%s: isError = %v with status %q", tool, isError, r.Status)
	}
	if _, err := time.Parse(time.RFC3339Nano, r.Timestamp); err != nil {
		t.Errorf("%s: timestamp %q: %v", tool, r.Timestamp, err)
	}
	if r.ExecutionTime < 0 {
		t.Errorf("%s: negative execution_time %v", tool, r.ExecutionTime)
	}
	want := r.Output
	if r.Error != "" {
		if want != "" && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		want += r.Error
	}
	if want == "" {
		want = "(no output)"
		if r.Status != "success" {
			want = r.Status
		}
	}
	if text != want {
		t.Errorf("%s: text content is not output then error:\n text: %q\n want: %q", tool, e2eCut(text, 300), e2eCut(want, 300))
	}
}

// MustSucceed calls a tool and fails the test unless it succeeded.
func (s *e2eServer) MustSucceed(t testing.TB, name string, args map[string]any) e2eOutcome {
	t.Helper()
	out := s.Call(t, name, args)
	if out.IsError || out.S == nil || out.S.Status != "success" {
		t.Fatalf("%s %s: want success, got %s", name, e2eCut(fmt.Sprint(args), 200), out)
	}
	return out
}

// Shell runs a shell command line and returns the outcome.
func (s *e2eServer) Shell(t testing.TB, command string, timeout float64) e2eOutcome {
	t.Helper()
	args := map[string]any{"command": command}
	if timeout > 0 {
		args["timeout"] = timeout
	}
	return s.Call(t, "shell_executor", args)
}

// Exists reports file_operation exists's answer for path ("exists" or "does not exist").
func (s *e2eServer) Exists(t testing.TB, path string) string {
	t.Helper()
	out := s.MustSucceed(t, "file_operation", map[string]any{"operation": "exists", "file_path": path})
	return strings.TrimSpace(out.S.Output)
}

// containerIDPattern finds a container ID in /proc/self/mountinfo (the engine bind-mounts
// /etc/hostname and friends from /var/lib/docker/containers/ID/) or in /proc/self/cgroup.
var containerIDPattern = regexp.MustCompile(`(?:containers/|docker[/-])([0-9a-f]{64})`)

// ContainerID returns the ID of the container the session's sandbox runs in, asked from
// inside, and records it for the leak check at Close.
func (s *e2eServer) ContainerID(t testing.TB) string {
	t.Helper()
	out := s.MustSucceed(t, "shell_executor", map[string]any{"command": "cat /proc/self/mountinfo /proc/self/cgroup"})
	m := containerIDPattern.FindStringSubmatch(out.S.Output)
	if m == nil {
		if ids := s.recordFromLog(t); len(ids) > 0 {
			return ids[len(ids)-1]
		}
		t.Fatalf("no container ID in the sandbox's mountinfo/cgroup:\n%s", e2eCut(out.S.Output, 2000))
	}
	id := m[1]
	s.record(t, id)
	return id
}

// sandboxLogPattern finds the sandboxes a server created in its (debug) log. Under gVisor the
// container's ID cannot be read from inside, so the leak check learns it from there.
var sandboxLogPattern = regexp.MustCompile(`sandbox created sandbox=([0-9a-f]{12})`)

// recordFromLog records the containers of the sandboxes the server's log names that still
// exist, and returns their IDs, oldest first.
func (s *e2eServer) recordFromLog(t testing.TB) []string {
	t.Helper()
	var ids []string
	for _, m := range sandboxLogPattern.FindAllStringSubmatch(s.stderr.String(), -1) {
		if c := e2eInspect(t, "enclave-"+m[1]); c != nil {
			s.record(t, c.ID)
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// record remembers container id, and its server instance's label, for the leak check.
func (s *e2eServer) record(t testing.TB, id string) {
	t.Helper()
	instance := ""
	if c := e2eInspect(t, id); c != nil {
		instance = c.Config.Labels["enclave-mcp.instance"]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[id]; !ok || instance != "" {
		s.containers[id] = instance
	}
}

// Close closes the client (which closes the server's stdin), waits for the server to exit and
// checks that every container its session was seen in is removed.
func (s *e2eServer) Close() {
	s.closeOnce.Do(func() {
		t := s.t
		s.mu.Lock()
		used := s.usedSandbox
		s.mu.Unlock()
		if used {
			// Learn the sandbox's container, so that its removal can be checked.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			var req mcpgo.CallToolRequest
			req.Params.Name = "shell_executor"
			req.Params.Arguments = map[string]any{"command": "cat /proc/self/mountinfo /proc/self/cgroup"}
			if res, err := s.Client.CallTool(ctx, req); err == nil && !res.IsError && len(res.Content) > 0 {
				if tc, ok := mcpgo.AsTextContent(res.Content[0]); ok {
					if m := containerIDPattern.FindStringSubmatch(tc.Text); m != nil {
						s.record(t, m[1])
					} else {
						s.recordFromLog(t)
					}
				}
			}
			cancel()
		}
		if err := s.Client.Close(); err != nil {
			t.Logf("closing the client: %v", err)
		}
		if s.cmd != nil && s.cmd.ProcessState == nil {
			t.Errorf("the server process has not exited after the client closed")
		}
		s.mu.Lock()
		ids := make([]string, 0, len(s.containers))
		instances := map[string]bool{}
		for id, instance := range s.containers {
			ids = append(ids, id)
			if instance != "" {
				instances[instance] = true
			}
		}
		s.mu.Unlock()
		if used && len(ids) == 0 {
			t.Errorf("leak check: the session used a sandbox but its container could not be identified")
		}
		for _, id := range ids {
			e2eAssertGone(t, id)
		}
		for instance := range instances {
			e2eAssertInstanceGone(t, instance)
		}
		if len(ids) > 0 {
			t.Logf("leak check: container(s) %.12s removed after the server exited", ids)
		}
	})
}

// e2eContainer is what docker inspect says of a container, or nil when it does not exist.
type e2eContainer struct {
	ID      string
	Created time.Time
	State   struct{ Status string }
	Config  struct{ Labels map[string]string }
}

func e2eInspect(t testing.TB, id string) *e2eContainer {
	t.Helper()
	out, err := exec.Command("docker", "container", "inspect", id).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && (strings.Contains(string(ee.Stderr), "No such") || strings.Contains(string(ee.Stderr), "not found")) {
			return nil
		}
		t.Fatalf("docker inspect %s: %v %s", id, err, func() string {
			if ee != nil {
				return string(ee.Stderr)
			}
			return ""
		}())
	}
	var list []e2eContainer
	if err := json.Unmarshal(out, &list); err != nil || len(list) != 1 {
		t.Fatalf("docker inspect %s: %v (%d entries)", id, err, len(list))
	}
	return &list[0]
}

// e2eAssertGone polls until container id no longer exists.
func e2eAssertGone(t testing.TB, id string) {
	t.Helper()
	deadline := time.Now().Add(e2eGoneTimeout)
	for {
		c := e2eInspect(t, id)
		if c == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("leaked container %.12s (state %s, labels %v) still exists %v after its server exited", id, c.State.Status, c.Config.Labels, e2eGoneTimeout)
			e2eRemove(t, id)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// e2eInstanceContainers lists the containers, any state, labelled with a server instance.
func e2eInstanceContainers(t testing.TB, instance string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--no-trunc", "--filter", "label=enclave-mcp.instance="+instance).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	return strings.Fields(string(out))
}

// e2eAssertInstanceGone polls until no container of a server instance exists: it catches
// containers of that server that the test never saw (replacements, helpers).
func e2eAssertInstanceGone(t testing.TB, instance string) {
	t.Helper()
	var left []string
	if !testwait.Poll(e2eGoneTimeout, func() bool {
		left = e2eInstanceContainers(t, instance)
		return len(left) == 0
	}) {
		for _, id := range left {
			if c := e2eInspect(t, id); c != nil {
				t.Errorf("leaked container %.12s of server instance %s (state %s, labels %v)", id, instance, c.State.Status, c.Config.Labels)
			}
			e2eRemove(t, id)
		}
	}
}

// e2eRemove force-removes a container a test found leaked (by its own server), so that a
// failing run leaves nothing behind.
func e2eRemove(t testing.TB, id string) {
	t.Helper()
	if out, err := exec.Command("docker", "rm", "-f", "-v", id).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such") {
		t.Logf("removing leaked container %.12s: %v %s", id, err, out)
	}
}

// ---- raw JSON-RPC over the subprocess's stdio ----

// e2eRaw is an enclave-mcp stdio server spoken to in raw JSON-RPC lines. Every line it
// writes on stdout is kept and checked to be a JSON-RPC 2.0 message.
type e2eRaw struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncbuf.Buffer
	msgs   chan map[string]any
	exited chan struct{}

	mu         sync.Mutex
	lines      int
	invalid    []string // stdout lines that are not JSON-RPC 2.0
	nextID     int
	stdinShut  bool
	used       bool              // a tools/call was answered with structuredContent
	containers map[string]string // container ID → instance label, for the leak check
}

// e2eStartRaw starts "enclave-mcp serve" with extra flags without any handshake.
func e2eStartRaw(t testing.TB, extraArgs ...string) *e2eRaw {
	t.Helper()
	testenv.RequireDocker(t)
	bin := testenv.Binary(t)
	r := &e2eRaw{t: t, stderr: &syncbuf.Buffer{}, msgs: make(chan map[string]any, 1024), exited: make(chan struct{}), nextID: 100, containers: map[string]string{}}
	r.cmd = exec.Command(bin, append([]string{"serve", "--log-level", "debug"}, extraArgs...)...)
	r.cmd.Stderr = r.stderr
	var err error
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(r.msgs)
		br := bufio.NewReaderSize(stdout, 1<<20)
		for {
			line, err := br.ReadBytes('\n')
			if len(bytes.TrimSpace(line)) > 0 {
				r.record(line)
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		<-readDone // Wait must not close the pipe under the reader
		_ = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		r.mu.Lock()
		probe := r.used && !r.stdinShut
		r.mu.Unlock()
		select {
		case <-r.exited:
		default:
			if probe {
				r.probeContainer()
			}
		}
		go func() { // keep stdout flowing: a blocked writer would never see EOF
			for range r.msgs {
			}
		}()
		r.CloseStdin()
		select {
		case <-r.exited:
		case <-time.After(e2eExitTimeout):
			t.Errorf("the server did not exit within %v of its stdin closing; killing it", e2eExitTimeout)
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
		r.mu.Lock()
		containers := maps.Clone(r.containers)
		used := r.used
		r.mu.Unlock()
		if used && len(containers) == 0 {
			t.Errorf("leak check: the session used a sandbox but its container could not be identified")
		}
		for id, instance := range containers {
			e2eAssertGone(t, id)
			if instance != "" {
				e2eAssertInstanceGone(t, instance)
			}
		}
		if t.Failed() {
			t.Logf("server stderr (tail):\n%s", e2eTail(r.stderr.String(), 6000))
		}
	})
	return r
}

func (r *e2eRaw) record(line []byte) {
	r.mu.Lock()
	r.lines++
	r.mu.Unlock()
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil || m["jsonrpc"] != "2.0" {
		r.mu.Lock()
		r.invalid = append(r.invalid, e2eCut(string(line), 300))
		r.mu.Unlock()
		return
	}
	_, hasMethod := m["method"]
	_, hasResult := m["result"]
	_, hasError := m["error"]
	_, hasID := m["id"]
	if !hasMethod && !(hasID && (hasResult != hasError)) {
		r.mu.Lock()
		r.invalid = append(r.invalid, "neither a request, notification nor response: "+e2eCut(string(line), 300))
		r.mu.Unlock()
		return
	}
	r.msgs <- m
}

// CloseStdin closes the server's stdin (its end of session).
func (r *e2eRaw) CloseStdin() {
	r.mu.Lock()
	r.stdinShut = true
	r.mu.Unlock()
	_ = r.stdin.Close()
}

// probeContainer learns the session's container without failing the test: for the leak
// check at the end.
func (r *e2eRaw) probeContainer() {
	const id = 99 // below the ids Request hands out
	if _, err := io.WriteString(r.stdin, `{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"shell_executor","arguments":{"command":"cat /proc/self/mountinfo /proc/self/cgroup"}}}`+"\n"); err != nil {
		return
	}
	deadline := time.After(20 * time.Second)
	want := fmt.Sprint(id)
	for {
		select {
		case m, ok := <-r.msgs:
			if !ok {
				return
			}
			got, _ := json.Marshal(m["id"])
			if _, isNote := m["method"]; isNote || string(got) != want {
				continue
			}
			res, _ := m["result"].(map[string]any)
			sc, _ := res["structuredContent"].(map[string]any)
			out, _ := sc["output"].(string)
			if match := containerIDPattern.FindStringSubmatch(out); match != nil {
				r.recordContainer(match[1])
			}
			return
		case <-deadline:
			return
		}
	}
}

func (r *e2eRaw) recordContainer(id string) {
	instance := ""
	if c := e2eInspect(r.t, id); c != nil {
		instance = c.Config.Labels["enclave-mcp.instance"]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.containers[id]; !ok || instance != "" {
		r.containers[id] = instance
	}
}

// SendLine writes one raw line (a newline is added).
func (r *e2eRaw) SendLine(line string) {
	r.t.Helper()
	if _, err := io.WriteString(r.stdin, line+"\n"); err != nil {
		r.t.Fatalf("writing to the server's stdin: %v", err)
	}
}

// Send writes one JSON-RPC message.
func (r *e2eRaw) Send(msg map[string]any) {
	r.t.Helper()
	msg["jsonrpc"] = "2.0"
	b, err := json.Marshal(msg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.SendLine(string(b))
}

// Request sends a request and returns its id.
func (r *e2eRaw) Request(method string, params any) int {
	r.t.Helper()
	r.mu.Lock()
	r.nextID++
	id := r.nextID
	r.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	r.Send(msg)
	return id
}

// Next returns the next message the server sent, failing the test after timeout.
func (r *e2eRaw) Next(timeout time.Duration) map[string]any {
	r.t.Helper()
	select {
	case m, ok := <-r.msgs:
		if !ok {
			r.t.Fatalf("the server closed its stdout")
		}
		return m
	case <-time.After(timeout):
		r.t.Fatalf("no message from the server within %v", timeout)
		return nil
	}
}

// Await returns the response to request id, passing every message before it to seen (which
// may be nil).
func (r *e2eRaw) Await(id any, timeout time.Duration, seen func(map[string]any)) map[string]any {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	want, _ := json.Marshal(id)
	for {
		m := r.Next(time.Until(deadline))
		if _, isResp := m["method"]; !isResp {
			got, _ := json.Marshal(m["id"])
			if bytes.Equal(got, want) {
				return m
			}
		}
		if seen != nil {
			seen(m)
		}
	}
}

// Initialize performs the legacy (2025-11-25) handshake.
func (r *e2eRaw) Initialize() {
	r.t.Helper()
	id := r.Request("initialize", map[string]any{
		"protocolVersion": "2025-11-25",
		"capabilities":    map[string]any{},
		"clientInfo":      map[string]any{"name": "enclave-e2e-raw", "version": "0"},
	})
	resp := r.Await(id, 30*time.Second, nil)
	if resp["error"] != nil {
		r.t.Fatalf("initialize: %v", resp["error"])
	}
	r.Send(map[string]any{"method": "notifications/initialized"})
}

// CallTool sends tools/call and returns the response's result, failing on a JSON-RPC error.
func (r *e2eRaw) CallTool(name string, args map[string]any) map[string]any {
	r.t.Helper()
	id := r.Request("tools/call", map[string]any{"name": name, "arguments": args})
	resp := r.Await(id, e2eCallTimeout, nil)
	if resp["error"] != nil {
		r.t.Fatalf("tools/call %s: %v", name, resp["error"])
	}
	res, _ := resp["result"].(map[string]any)
	if res == nil {
		r.t.Fatalf("tools/call %s: no result in %v", name, resp)
	}
	if res["structuredContent"] != nil {
		r.mu.Lock()
		r.used = true
		r.mu.Unlock()
	}
	return res
}

// ContainerID asks the sandbox for its container's ID.
func (r *e2eRaw) ContainerID() string {
	r.t.Helper()
	res := r.CallTool("shell_executor", map[string]any{"command": "cat /proc/self/mountinfo /proc/self/cgroup"})
	sc, _ := res["structuredContent"].(map[string]any)
	out, _ := sc["output"].(string)
	m := containerIDPattern.FindStringSubmatch(out)
	if m == nil {
		r.t.Fatalf("no container ID in the sandbox's mountinfo/cgroup: %v", res)
	}
	r.recordContainer(m[1])
	return m[1]
}

// Signal sends sig to the server process.
func (r *e2eRaw) Signal(sig syscall.Signal) {
	r.t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("signalling the server: %v", err)
	}
}

// WaitExit waits for the server to exit by itself and returns its exit state.
func (r *e2eRaw) WaitExit(timeout time.Duration) *os.ProcessState {
	r.t.Helper()
	select {
	case <-r.exited:
		return r.cmd.ProcessState
	case <-time.After(timeout):
		r.t.Fatalf("the server did not exit within %v", timeout)
		return nil
	}
}

// Invalid returns the stdout lines that were not JSON-RPC 2.0 messages, and the line count.
func (r *e2eRaw) Invalid() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.invalid...), r.lines
}
