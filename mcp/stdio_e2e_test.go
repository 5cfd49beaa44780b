package mcp_test

// End-to-end tests of "enclave-mcp serve" over stdio with mark3labs/mcp-go's client (and raw
// JSON-RPC lines where the client would hide what is under test). Each top-level test runs
// its own server process; subtests of one test share that server's session and sandbox.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
)

func TestIntegrationStdioToolsList(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Logf("negotiated protocol version %s", s.ProtocolVersion)
	res, err := s.Client.ListTools(ctx, mcpgo.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	// The documented tools, their required parameters and (at least) these properties.
	want := map[string]struct{ required, properties []string }{
		"python_executor": {[]string{"code"}, []string{"code", "timeout"}},
		"shell_executor":  {[]string{"command"}, []string{"command", "timeout"}},
		"file_operation":  {[]string{"file_path", "operation"}, []string{"content", "encoding", "file_path", "operation", "recursive"}},
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	for name := range want {
		if !slices.Contains(names, name) {
			t.Errorf("tools/list lacks %s: %v", name, names)
		}
	}
	if len(names) != len(want) {
		t.Logf("tools/list also has tools beyond the three documented ones: %v", names)
	}
	if dup := len(names) - len(slices.Compact(slices.Sorted(slices.Values(names)))); dup != 0 {
		t.Errorf("tools/list repeats names: %v", names)
	}
	for _, tool := range res.Tools {
		t.Run(tool.Name, func(t *testing.T) {
			sc := tool.InputSchema
			if sc.Type != "object" {
				t.Errorf("inputSchema.type = %q, want object", sc.Type)
			}
			if ap, ok := sc.AdditionalProperties.(bool); !ok || ap {
				t.Errorf("inputSchema.additionalProperties = %#v, want false", sc.AdditionalProperties)
			}
			if strings.TrimSpace(tool.Description) == "" {
				t.Errorf("tool has no description")
			}
			for _, r := range sc.Required {
				if _, ok := sc.Properties[r]; !ok {
					t.Errorf("required %q is not a property", r)
				}
			}
			w, documented := want[tool.Name]
			if !documented {
				return
			}
			req := slices.Clone(sc.Required)
			slices.Sort(req)
			if !slices.Equal(req, w.required) {
				t.Errorf("inputSchema.required = %v, want %v", sc.Required, w.required)
			}
			for _, p := range w.properties {
				if _, ok := sc.Properties[p]; !ok {
					t.Errorf("inputSchema.properties lacks %q: %v", p, sc.Properties)
				}
			}
		})
	}
}

// TestIntegrationStdioFloor is ms-enclave's behaviour that clients rely on.
func TestIntegrationStdioFloor(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)

	t.Run("python prints", func(t *testing.T) {
		out := s.MustSucceed(t, "python_executor", map[string]any{"code": "print('Hello from sandbox!')\nprint(f'2 + 2 = {2 + 2}')"})
		if out.S.Output != "Hello from sandbox!\n2 + 2 = 4\n" {
			t.Errorf("output = %q, want both lines", out.S.Output)
		}
		if out.S.Error != "" {
			t.Errorf("error = %q, want none", out.S.Error)
		}
		if out.S.ExitCode == nil || *out.S.ExitCode != 0 {
			t.Errorf("exit_code = %v, want 0", derefInt(out.S.ExitCode))
		}
	})

	t.Run("shell echo", func(t *testing.T) {
		for _, cmd := range []any{"echo hello from the shell", []any{"echo", "hello from the shell"}} {
			out := s.MustSucceed(t, "shell_executor", map[string]any{"command": cmd})
			if out.S.Output != "hello from the shell\n" {
				t.Errorf("command %#v: output = %q", cmd, out.S.Output)
			}
		}
	})

	t.Run("failures are errors not timeouts", func(t *testing.T) {
		for _, tc := range []struct {
			name, command string
			check         func(r *e2eResult) bool
			want          string
		}{
			{"exit 124", "bash -c 'exit 124'", func(r *e2eResult) bool { return r.ExitCode != nil && *r.ExitCode == 124 }, "exit_code 124"},
			{"kill -9 self", "bash -c 'kill -9 $$'", func(r *e2eResult) bool {
				return strings.Contains(r.Signal, "KILL") || (r.ExitCode != nil && *r.ExitCode == 128+9)
			}, "signal SIGKILL or exit_code 137"},
			{"python raises", "python3 -c 'raise SystemExit(3)'", func(r *e2eResult) bool { return r.ExitCode != nil && *r.ExitCode == 3 }, "exit_code 3"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out := s.Shell(t, tc.command, 10)
				if !out.IsError || out.S == nil || out.S.Status != "error" {
					t.Fatalf("want isError with status error (not timeout), got %s", out)
				}
				if !tc.check(out.S) {
					t.Errorf("want %s, got %s", tc.want, out)
				}
				if out.S.OOMKilled {
					t.Errorf("oom_killed set for a process that was not out of memory")
				}
			})
		}
	})

	t.Run("stderr alone is not an error", func(t *testing.T) {
		out := s.MustSucceed(t, "shell_executor", map[string]any{"command": "echo warning >&2; echo result"})
		if out.S.Output != "result\n" || out.S.Error != "warning\n" {
			t.Errorf("output %q error %q", out.S.Output, out.S.Error)
		}
	})

	t.Run("unicode", func(t *testing.T) {
		out := s.MustSucceed(t, "python_executor", map[string]any{"code": "print('héllo ✓ 日本 🚀')"})
		if out.S.Output != "héllo ✓ 日本 🚀\n" {
			t.Errorf("output %q", out.S.Output)
		}
	})

	t.Run("stdin is empty", func(t *testing.T) {
		// A program that reads stdin gets EOF at once: it must not sit until its timeout.
		start := time.Now()
		out := s.MustSucceed(t, "shell_executor", map[string]any{"command": "cat; echo read-done", "timeout": 20})
		if out.S.Output != "read-done\n" {
			t.Errorf("output %q", out.S.Output)
		}
		py := s.Call(t, "python_executor", map[string]any{"code": "try:\n    input()\nexcept EOFError:\n    print('EOF')", "timeout": 20})
		if py.IsError || py.S == nil || py.S.Output != "EOF\n" {
			t.Errorf("python input(): %s", py)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("reading stdin took %v", took)
		}
	})

	t.Run("timeouts kill everything", func(t *testing.T) {
		// Each command would create its marker 2 s after starting; a 0.3 s timeout must
		// kill it, its children and any detached grandchildren before that.
		cases := []struct {
			name, tool string
			args       map[string]any
			marker     string
		}{
			{"shell", "shell_executor", map[string]any{"command": "sleep 2; touch MARKER", "timeout": 0.3}, "MARKER"},
			{"detached grandchild", "shell_executor", map[string]any{"command": "(setsid sh -c 'sleep 2; touch M2' &); sleep 5", "timeout": 0.3}, "M2"},
			{"python os.system", "python_executor", map[string]any{"code": "import os; os.system(\"sleep 2; touch M3\")", "timeout": 0.3}, "M3"},
		}
		// Positive control: a marker that is created is seen where the check looks.
		s.MustSucceed(t, "shell_executor", map[string]any{"command": "touch CONTROL"})
		if got := s.Exists(t, "CONTROL"); got != "exists" {
			t.Fatalf("control marker: %s", got)
		}
		var last time.Time
		for _, tc := range cases {
			start := time.Now()
			out := s.Call(t, tc.tool, tc.args)
			last = time.Now()
			if !out.IsError || out.S == nil || out.S.Status != "timeout" {
				t.Errorf("%s: want status timeout, got %s", tc.name, out)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("%s: a 0.3 s timeout took %v to report", tc.name, took)
			}
		}
		// Give any survivor more than enough time to create its marker.
		time.Sleep(time.Until(last.Add(2500 * time.Millisecond)))
		for _, tc := range cases {
			if got := s.Exists(t, tc.marker); got != "does not exist" {
				t.Errorf("%s: %s %s: a process outlived its timeout", tc.name, tc.marker, got)
			}
		}
	})

	t.Run("file lifecycle", func(t *testing.T) {
		s.MustSucceed(t, "file_operation", map[string]any{"operation": "create", "file_path": "floor.txt", "content": "floor\n"})
		if got := s.Exists(t, "floor.txt"); got != "exists" {
			t.Fatalf("after create: exists says %q", got)
		}
		list := s.MustSucceed(t, "file_operation", map[string]any{"operation": "list", "file_path": "."})
		if !slices.Contains(strings.Split(list.S.Output, "\n"), "floor.txt") {
			t.Errorf("list . = %q, want floor.txt in it", list.S.Output)
		}
		s.MustSucceed(t, "file_operation", map[string]any{"operation": "delete", "file_path": "floor.txt"})
		if got := s.Exists(t, "floor.txt"); got != "does not exist" {
			t.Errorf("after delete: exists says %q", got)
		}
		if out := s.Call(t, "file_operation", map[string]any{"operation": "read", "file_path": "floor.txt"}); !out.IsError {
			t.Errorf("reading a deleted file: want isError, got %s", out)
		}
	})
}

// TestIntegrationStdioQuickStart is the README's quick start, plus paths that a careless
// implementation would hand to a shell.
func TestIntegrationStdioQuickStart(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)

	t.Run("absolute path", func(t *testing.T) {
		s.MustSucceed(t, "file_operation", map[string]any{"operation": "write", "file_path": "/sandbox/hello.txt", "content": "Hello, enclave!"})
		out := s.MustSucceed(t, "python_executor", map[string]any{"code": "print(open('/sandbox/hello.txt').read())"})
		if out.S.Output != "Hello, enclave!\n" {
			t.Errorf("python read back %q", out.S.Output)
		}
	})

	t.Run("relative path", func(t *testing.T) {
		s.MustSucceed(t, "file_operation", map[string]any{"operation": "write", "file_path": "hello2.txt", "content": "second file\nline 2\n"})
		out := s.MustSucceed(t, "shell_executor", map[string]any{"command": "cat hello2.txt"})
		if out.S.Output != "second file\nline 2\n" {
			t.Errorf("cat hello2.txt = %q", out.S.Output)
		}
		read := s.MustSucceed(t, "file_operation", map[string]any{"operation": "read", "file_path": "/sandbox/hello2.txt"})
		if read.S.Output != "second file\nline 2\n" {
			t.Errorf("read /sandbox/hello2.txt = %q", read.S.Output)
		}
	})

	t.Run("binary round trip", func(t *testing.T) {
		data := make([]byte, 256*3)
		for i := range data {
			data[i] = byte(i)
		}
		b64 := base64.StdEncoding.EncodeToString(data)
		s.MustSucceed(t, "file_operation", map[string]any{"operation": "write", "file_path": "bytes.bin", "content": b64, "encoding": "base64"})
		read := s.MustSucceed(t, "file_operation", map[string]any{"operation": "read", "file_path": "bytes.bin", "encoding": "base64"})
		if read.S.Output != b64 {
			t.Errorf("base64 read back %q, want %q", e2eCut(read.S.Output, 100), e2eCut(b64, 100))
		}
		sum := s.MustSucceed(t, "python_executor", map[string]any{"code": "d = open('bytes.bin','rb').read()\nprint(len(d), d == bytes(range(256))*3)"})
		if sum.S.Output != "768 True\n" {
			t.Errorf("python sees %q", sum.S.Output)
		}
		if out := s.Call(t, "file_operation", map[string]any{"operation": "read", "file_path": "bytes.bin"}); !out.IsError || !strings.Contains(out.Text, "base64") {
			t.Errorf("reading binary as utf-8: want an error suggesting base64, got %s", out)
		}
	})

	t.Run("hostile file names", func(t *testing.T) {
		s.MustSucceed(t, "file_operation", map[string]any{"operation": "mkdir", "file_path": "dir with space"})
		name := "we'ird \"quoted\" $(touch pwned) `touch pwned`;\nline2 *.txt"
		for _, tc := range []struct{ path, want string }{
			{"dir with space/../" + name, "/sandbox/" + name},
			{"/sandbox/dir with space/./" + name, "/sandbox/dir with space/" + name},
		} {
			content := fmt.Sprintf("content of %q\n", tc.path)
			s.MustSucceed(t, "file_operation", map[string]any{"operation": "write", "file_path": tc.path, "content": content})
			read := s.MustSucceed(t, "file_operation", map[string]any{"operation": "read", "file_path": tc.path})
			if read.S.Output != content {
				t.Errorf("read %q = %q, want %q", tc.path, read.S.Output, content)
			}
			lit, _ := json.Marshal(tc.want)
			check := s.MustSucceed(t, "python_executor", map[string]any{"code": fmt.Sprintf("p = %s\nprint(open(p).read(), end='')", lit)})
			if check.S.Output != content {
				t.Errorf("python open(%q) = %q, want %q", tc.want, check.S.Output, content)
			}
		}
		list := s.MustSucceed(t, "file_operation", map[string]any{"operation": "list", "file_path": "/sandbox"})
		if !strings.Contains(list.S.Output, "$(touch pwned)") {
			t.Errorf("list /sandbox = %q, want the literal name", list.S.Output)
		}
		find := s.MustSucceed(t, "python_executor", map[string]any{"code": `import os
hits = []
for top in ("/sandbox", "/tmp"):
    for root, dirs, files in os.walk(top):
        hits += [os.path.join(root, n) for n in dirs + files if n == "pwned"]
print(hits)`})
		if strings.TrimSpace(find.S.Output) != "[]" {
			t.Errorf("a file path was run by a shell: %s", find.S.Output)
		}
	})
}

func TestIntegrationStdioBadInput(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)

	t.Run("unknown tool", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := s.CallCtx(ctx, t, "no_such_tool", map[string]any{}, nil)
		if err == nil {
			t.Fatalf("calling an unknown tool: want a JSON-RPC error, got a result")
		}
		if !errors.Is(err, mcpgo.ErrInvalidParams) && !errors.Is(err, mcpgo.ErrMethodNotFound) {
			t.Errorf("unknown tool: error %v is not a JSON-RPC invalid params / method not found error", err)
		}
	})

	for _, tc := range []struct {
		name, tool string
		args       map[string]any
		want       []string // each must appear in the text
	}{
		{"missing code", "python_executor", map[string]any{}, []string{"code"}},
		{"timeout not a number", "python_executor", map[string]any{"code": "print(1)", "timeout": "abc"}, []string{"timeout", "number"}},
		{"unknown parameter", "python_executor", map[string]any{"code": "print(1)", "x": 1}, []string{`"x"`, "code", "timeout"}},
		{"misspelt parameter", "shell_executor", map[string]any{"cmd": "echo hi"}, []string{`"cmd"`, "command"}},
		{"empty code", "python_executor", map[string]any{"code": ""}, []string{"No code provided"}},
		{"blank code", "python_executor", map[string]any{"code": " \n\t"}, []string{"No code provided"}},
		{"command wrong type", "shell_executor", map[string]any{"command": 42}, []string{"command"}},
		{"negative timeout", "shell_executor", map[string]any{"command": "echo hi", "timeout": -1}, []string{"timeout"}},
		{"huge timeout", "shell_executor", map[string]any{"command": "echo hi", "timeout": 1e9}, []string{"timeout"}},
		{"no arguments", "python_executor", nil, []string{"code"}},
		{"missing file_path", "file_operation", map[string]any{"operation": "read"}, []string{"file_path"}},
		{"unknown operation", "file_operation", map[string]any{"operation": "frobnicate", "file_path": "x"}, []string{"frobnicate"}},
		{"write without content", "file_operation", map[string]any{"operation": "write", "file_path": "x"}, []string{"content"}},
		{"bad encoding", "file_operation", map[string]any{"operation": "read", "file_path": "x", "encoding": "latin-1"}, []string{"latin-1"}},
		{"bad base64", "file_operation", map[string]any{"operation": "write", "file_path": "x", "content": "!!!", "encoding": "base64"}, []string{"base64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := s.Call(t, tc.tool, tc.args)
			if !out.IsError {
				t.Fatalf("want isError, got %s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.Text, w) {
					t.Errorf("text %q does not mention %q", out.Text, w)
				}
			}
		})
	}

	t.Run("session still works", func(t *testing.T) {
		out := s.MustSucceed(t, "shell_executor", map[string]any{"command": "echo still here"})
		if out.S.Output != "still here\n" {
			t.Errorf("output = %q", out.S.Output)
		}
	})
}

func TestIntegrationStdioLargeOutput(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)
	s.MustSucceed(t, "shell_executor", map[string]any{"command": "true"}) // the sandbox's start is not what is timed

	for _, tc := range []struct {
		name, tool string
		args       map[string]any
	}{
		{"python 20 MB", "python_executor", map[string]any{"code": "print('a'*20_000_000)"}},
		{"shell 20 MB", "shell_executor", map[string]any{"command": `head -c 20000000 /dev/zero | tr '\0' a`}},
		{"shell 20 MB on stderr", "shell_executor", map[string]any{"command": `head -c 20000000 /dev/zero | tr '\0' a >&2`}},
		// Every control character costs six bytes once JSON-escaped: the cap must hold
		// for the encoded message, which the TypeScript SDK refuses beyond 10 MiB.
		{"shell 20 MB of control characters", "shell_executor", map[string]any{"command": `head -c 20000000 /dev/zero | tr '\0' '\001'`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out := s.Call(t, tc.tool, tc.args)
			took := time.Since(start)
			if out.S == nil {
				t.Fatalf("no structured result: %s", out)
			}
			if !out.S.Truncated {
				t.Errorf("truncated = false for 20 MB of output (%d bytes returned)", len(out.S.Output)+len(out.S.Error))
			}
			if len(out.Text) >= 3<<20 {
				t.Errorf("text content is %d bytes, want well under 3 MB", len(out.Text))
			}
			encoded, err := json.Marshal(out.Raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(encoded) >= 10<<20 {
				t.Errorf("the encoded result is %d bytes: over the TypeScript SDK's 10 MiB message limit", len(encoded))
			}
			if took > 15*time.Second {
				t.Errorf("took %v, want well under 15 s", took)
			}
			if out.S.Metadata["omitted_bytes"] == nil {
				t.Errorf("metadata lacks omitted_bytes: %v", out.S.Metadata)
			}
			t.Logf("%s: %v, text %d bytes, encoded %d bytes, status %s", tc.name, took.Round(time.Millisecond), len(out.Text), len(encoded), out.S.Status)
		})
	}
}

func TestIntegrationStdioSecurity(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)

	t.Run("no network", func(t *testing.T) {
		for _, tc := range []struct{ name, tool, field, value string }{
			{"python connect", "python_executor", "code", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)\nprint('CONNECTED')"},
			{"python urllib", "python_executor", "code", "import urllib.request\nurllib.request.urlopen('http://1.1.1.1/', timeout=3)\nprint('CONNECTED')"},
			{"getent", "shell_executor", "command", "getent hosts example.com && echo CONNECTED"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out := s.Call(t, tc.tool, map[string]any{tc.field: tc.value, "timeout": 20})
				if !out.IsError || out.S == nil || out.S.Status != "error" {
					t.Errorf("want status error, got %s", out)
				}
				if strings.Contains(out.Text, "CONNECTED") {
					t.Errorf("the sandbox reached the network: %s", out)
				}
			})
		}
	})

	t.Run("read-only root", func(t *testing.T) {
		out := s.Shell(t, "echo x > /etc/x", 10)
		if !out.IsError || !strings.Contains(out.Text, "Read-only file system") {
			t.Errorf("writing /etc/x from the shell: want a read-only file system error, got %s", out)
		}
		fo := s.Call(t, "file_operation", map[string]any{"operation": "write", "file_path": "/etc/x", "content": "x"})
		if !fo.IsError || !strings.Contains(strings.ToLower(fo.Text), "read-only") {
			t.Errorf("file_operation write /etc/x: want a read-only error, got %s", fo)
		}
	})

	t.Run("fork bomb", func(t *testing.T) {
		start := time.Now()
		out := s.Call(t, "shell_executor", map[string]any{"command": []any{"python3", "-c", "import os\nwhile True: os.fork()"}, "timeout": 3})
		if out.S == nil || (out.S.Status != "timeout" && out.S.Status != "error") {
			t.Errorf("fork bomb: want status timeout or error, got %s", out)
		}
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("fork bomb with a 3 s timeout took %v", took)
		}
		alive := s.Call(t, "shell_executor", map[string]any{"command": "echo alive"})
		if alive.IsError || alive.S == nil || alive.S.Output != "alive\n" {
			t.Fatalf("the call after a fork bomb failed: %s", alive)
		}
	})

	t.Run("memory hog", func(t *testing.T) {
		out := s.Call(t, "python_executor", map[string]any{"code": "x = bytearray(2 * 1024**3)\nprint('ALLOCATED', len(x))", "timeout": 60})
		if out.S == nil || out.S.Status != "error" {
			t.Fatalf("allocating 2 GB in a 1 GB sandbox: want status error, got %s", out)
		}
		if !out.S.OOMKilled {
			t.Errorf("oom_killed = false, want true: %s", out)
		}
		if !strings.Contains(strings.ToLower(out.Text), "memory") {
			t.Errorf("the text does not mention memory: %s", out)
		}
		if strings.Contains(out.Text, "ALLOCATED") {
			t.Errorf("2 GB were allocated in a 1 GB sandbox")
		}
		alive := s.Call(t, "shell_executor", map[string]any{"command": "echo alive"})
		if alive.IsError || alive.S == nil || alive.S.Output != "alive\n" {
			t.Fatalf("the call after an OOM kill failed: %s", alive)
		}
	})

	t.Run("SIGTERM ignored", func(t *testing.T) {
		start := time.Now()
		out := s.Shell(t, "trap '' TERM; sleep 30", 1)
		took := time.Since(start)
		if out.S == nil || out.S.Status != "timeout" {
			t.Errorf("want status timeout, got %s", out)
		}
		if took > 6*time.Second {
			t.Errorf("a 1 s timeout on a process ignoring SIGTERM took %v", took)
		}
		if procs := e2eProcesses(t, s, "sleep"); len(procs) > 0 {
			t.Errorf("processes survived the timeout: %q", procs)
		}
	})

	t.Run("runs unprivileged", func(t *testing.T) {
		out := s.MustSucceed(t, "python_executor", map[string]any{"code": "import os\nprint(os.getuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"})
		fields := strings.Fields(out.S.Output)
		if len(fields) != 2 || fields[0] == "0" || strings.Trim(fields[1], "0") != "" {
			t.Errorf("uid and effective capabilities = %q, want a non-root uid and none", out.S.Output)
		}
	})
}

// e2eProcesses lists the command lines of the sandbox's processes that contain word, other
// than the lister itself and the agent.
func e2eProcesses(t testing.TB, s *e2eServer, word string) []string {
	t.Helper()
	code := fmt.Sprintf(`import os, json
me = os.getpid()
out = []
for p in os.listdir('/proc'):
    if not p.isdigit() or int(p) == me:
        continue
    try:
        with open('/proc/%%s/stat' %% p) as f:
            if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                continue
        with open('/proc/%%s/cmdline' %% p, 'rb') as f:
            cmd = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
    except OSError:
        continue
    if %q in cmd:
        out.append(p + ': ' + cmd)
print(json.dumps(out))`, word)
	out := s.MustSucceed(t, "python_executor", map[string]any{"code": code})
	var procs []string
	if err := json.Unmarshal([]byte(out.S.Output), &procs); err != nil {
		t.Fatalf("listing processes: %v in %q", err, out.S.Output)
	}
	return procs
}

// TestIntegrationStdioSessionEnds checks that the sandbox goes away with its session, however
// the session ends.
func TestIntegrationStdioSessionEnds(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()

	t.Run("client closes", func(t *testing.T) {
		s := e2eStart(t)
		s.MustSucceed(t, "shell_executor", map[string]any{"command": "echo hi"})
		id := s.ContainerID(t)
		c := e2eInspect(t, id)
		if c == nil {
			t.Fatalf("the sandbox's container %.12s does not exist", id)
		}
		for k, v := range map[string]string{"enclave-mcp.managed": "true", "enclave-mcp.owner": "stdio"} {
			if c.Config.Labels[k] != v {
				t.Errorf("label %s = %q, want %q (labels %v)", k, c.Config.Labels[k], v, c.Config.Labels)
			}
		}
		if c.Config.Labels["enclave-mcp.instance"] == "" {
			t.Errorf("no enclave-mcp.instance label: %v", c.Config.Labels)
		}
		s.Close() // fails the test if the container outlives the server
		if e2eInspect(t, id) != nil {
			t.Errorf("container %.12s outlived its session", id)
		}
	})

	for _, tc := range []struct {
		name string
		end  func(r *e2eRaw)
	}{
		{"stdin EOF", func(r *e2eRaw) { r.CloseStdin() }},
		{"SIGTERM", func(r *e2eRaw) { r.Signal(syscall.SIGTERM) }},
		{"SIGINT", func(r *e2eRaw) { r.Signal(syscall.SIGINT) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e2eStartRaw(t)
			r.Initialize()
			id := r.ContainerID()
			c := e2eInspect(t, id)
			if c == nil {
				t.Fatalf("the sandbox's container %.12s does not exist", id)
			}
			tc.end(r)
			st := r.WaitExit(e2eExitTimeout)
			if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Errorf("the server was killed by %v instead of shutting down", ws.Signal())
			}
			e2eAssertGone(t, id)
			e2eAssertInstanceGone(t, c.Config.Labels["enclave-mcp.instance"])
		})
	}
}

// TestIntegrationStdioIsolation runs two servers at once: neither sees the other's files.
func TestIntegrationStdioIsolation(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	a, b := e2eStart(t), e2eStart(t)
	s := [2]*e2eServer{a, b}
	// Both sandboxes are created concurrently.
	var outs [2]e2eOutcome
	var wg sync.WaitGroup
	wg.Add(2)
	for i := range s {
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), e2eCallTimeout)
			defer cancel()
			out, err := s[i].CallCtx(ctx, t, "file_operation", map[string]any{"operation": "write", "file_path": fmt.Sprintf("secret-%d.txt", i), "content": fmt.Sprint("secret ", i)}, nil)
			if err != nil {
				t.Errorf("server %d: %v", i, err)
			}
			outs[i] = out
		}()
	}
	wg.Wait()
	for i, out := range outs {
		if out.IsError {
			t.Fatalf("server %d: write: %s", i, out)
		}
	}
	for i := range s {
		if got := s[i].Exists(t, fmt.Sprintf("secret-%d.txt", i)); got != "exists" {
			t.Errorf("server %d: its own file: %s", i, got)
		}
		if got := s[i].Exists(t, fmt.Sprintf("secret-%d.txt", 1-i)); got != "does not exist" {
			t.Errorf("server %d sees the other server's file: %s", i, got)
		}
	}
	if ida, idb := a.ContainerID(t), b.ContainerID(t); ida == idb {
		t.Errorf("both servers run in container %.12s", ida)
	}
}

func TestIntegrationStdioProgress(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)

	var mu sync.Mutex
	var messages []string
	var done bool
	var late []string
	s.Client.OnNotification(func(n mcpgo.JSONRPCNotification) {
		if n.Method != "notifications/progress" {
			return
		}
		f := n.Params.AdditionalFields
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(f["progressToken"]) != "tick-token" {
			t.Errorf("progress notification with token %v, want tick-token", f["progressToken"])
		}
		msg, _ := f["message"].(string)
		if done {
			late = append(late, msg)
		}
		messages = append(messages, msg)
	})

	ctx, cancel := context.WithTimeout(context.Background(), e2eCallTimeout)
	defer cancel()
	out, err := s.CallCtx(ctx, t, "shell_executor", map[string]any{"command": "for i in 1 2 3; do echo tick $i; sleep 0.6; done"}, &mcpgo.Meta{ProgressToken: "tick-token"})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	done = true
	before := slices.Clone(messages)
	mu.Unlock()
	if out.IsError || out.S == nil || out.S.Output != "tick 1\ntick 2\ntick 3\n" {
		t.Errorf("result: %s", out)
	}
	if !slices.ContainsFunc(before, func(m string) bool { return strings.Contains(m, "tick") }) {
		t.Errorf("no progress notification mentioning tick arrived before the result; got %q", before)
	}
	// Progress for a finished request is a protocol violation; a ping round trip lets
	// anything already sent arrive.
	if err := s.Client.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(late) > 0 {
		t.Errorf("progress notifications arrived after the result: %q", late)
	}
	mu.Unlock()

	// Without a token, no progress is sent.
	mu.Lock()
	n := len(messages)
	mu.Unlock()
	s.MustSucceed(t, "shell_executor", map[string]any{"command": "echo one; sleep 1.2; echo two"})
	mu.Lock()
	if len(messages) != n {
		t.Errorf("progress notifications were sent for a request without a progress token: %q", messages[n:])
	}
	mu.Unlock()
}

func TestIntegrationStdioCancel(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)
	s.MustSucceed(t, "shell_executor", map[string]any{"command": "true"})

	t.Run("mcp-go client", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := s.CallCtx(ctx, t, "shell_executor", map[string]any{"command": "sleep 30; touch CANCELLED", "timeout": 60}, nil)
			errc <- err
		}()
		// Cancel once the command is running.
		if !testwait.Poll(10*time.Second, func() bool { return len(e2eProcesses(t, s, "sleep 30")) > 0 }) {
			t.Fatalf("the command never started")
		}
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled call returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the cancelled call did not return")
		}
		var left []string
		if !testwait.Poll(5*time.Second, func() bool { left = e2eProcesses(t, s, "sleep"); return len(left) == 0 }) {
			t.Errorf("processes survived cancellation: %q", left)
		}
		if got := s.Exists(t, "CANCELLED"); got != "does not exist" {
			t.Errorf("CANCELLED %s", got)
		}
	})

	t.Run("session works after", func(t *testing.T) {
		out := s.MustSucceed(t, "shell_executor", map[string]any{"command": "echo alive"})
		if out.S.Output != "alive\n" {
			t.Errorf("output %q", out.S.Output)
		}
	})
}

// TestIntegrationStdioCancelRaw sends notifications/cancelled by hand and checks what, if
// anything, the server answers to the cancelled request.
func TestIntegrationStdioCancelRaw(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	r := e2eStartRaw(t)
	r.Initialize()
	r.CallTool("shell_executor", map[string]any{"command": "true"})

	id := r.Request("tools/call", map[string]any{"name": "shell_executor", "arguments": map[string]any{"command": "echo started; sleep 30; touch CANCELLED", "timeout": 60}, "_meta": map[string]any{"progressToken": "p1"}})
	// The first progress notification says the command runs.
	deadline := time.Now().Add(15 * time.Second)
	for started := false; !started; {
		m := r.Next(time.Until(deadline))
		if m["method"] == "notifications/progress" {
			started = true
		} else if _, ok := m["method"]; !ok {
			t.Fatalf("got a response before cancelling: %v", m)
		}
	}
	start := time.Now()
	r.Send(map[string]any{"method": "notifications/cancelled", "params": map[string]any{"requestId": id, "reason": "test"}})
	// A response to a cancelled request is optional; if the server sends one, it must
	// say cancelled. A ping's answer bounds the wait.
	var cancelled map[string]any
	pingID := r.Request("ping", nil)
	for {
		m := r.Next(15 * time.Second)
		if _, isNote := m["method"]; isNote {
			continue
		}
		got, _ := json.Marshal(m["id"])
		if string(got) == fmt.Sprint(id) {
			cancelled = m
			continue
		}
		if string(got) == fmt.Sprint(pingID) {
			break
		}
	}
	if cancelled == nil {
		// Give the response a moment to follow: the process is being killed.
		_ = testwait.Poll(3*time.Second, func() bool {
			select {
			case m := <-r.msgs:
				got, _ := json.Marshal(m["id"])
				if string(got) == fmt.Sprint(id) {
					cancelled = m
					return true
				}
			default:
			}
			return false
		})
	}
	if cancelled != nil {
		res, _ := cancelled["result"].(map[string]any)
		sc, _ := res["structuredContent"].(map[string]any)
		if sc["status"] != "cancelled" {
			t.Errorf("the cancelled request was answered with %v, want status cancelled", e2eCut(fmt.Sprint(cancelled), 500))
		}
		t.Logf("cancelled request answered after %v with status %v", time.Since(start).Round(time.Millisecond), sc["status"])
	}
	res := r.CallTool("python_executor", map[string]any{"code": `import os
n = 0
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            if b'sleep' in open('/proc/%s/cmdline' % p, 'rb').read(): n += 1
        except OSError: pass
print(n, os.path.exists('CANCELLED'))`})
	sc, _ := res["structuredContent"].(map[string]any)
	if sc["output"] != "0 False\n" {
		t.Errorf("after cancelling: sleep processes and CANCELLED = %q, want \"0 False\"", sc["output"])
	}
}

// TestIntegrationStdioGarbage writes a line that is not JSON, then a valid request.
func TestIntegrationStdioGarbage(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	r := e2eStartRaw(t)
	r.Initialize()

	r.SendLine("garbage{")
	m := r.Next(10 * time.Second)
	e, _ := m["error"].(map[string]any)
	if e == nil || e["code"] != float64(-32700) {
		t.Errorf("answer to garbage = %v, want a JSON-RPC parse error (-32700)", m)
	}
	if id, ok := m["id"]; !ok || id != nil {
		t.Errorf("parse error has id %v, want null", m["id"])
	}

	id := r.Request("tools/list", map[string]any{})
	resp := r.Await(id, 10*time.Second, nil)
	res0, _ := resp["result"].(map[string]any)
	if tools, _ := res0["tools"].([]any); !strings.Contains(fmt.Sprint(tools), "python_executor") {
		t.Errorf("tools/list after garbage: %v", e2eCut(fmt.Sprint(resp), 300))
	}
	res := r.CallTool("python_executor", map[string]any{"code": "print(6*7)"})
	if sc, _ := res["structuredContent"].(map[string]any); sc["output"] != "42\n" {
		t.Errorf("python after garbage: %v", res)
	}

	// An unknown tool is a JSON-RPC error, not a result.
	id = r.Request("tools/call", map[string]any{"name": "no_such_tool", "arguments": map[string]any{}})
	resp = r.Await(id, 10*time.Second, nil)
	if resp["error"] == nil {
		t.Errorf("unknown tool answered with a result: %v", resp)
	}
}

// TestIntegrationStdioStdoutHygiene checks that everything on stdout is JSON-RPC, through a
// session that exercises logs, errors, progress and a sandbox's lifecycle.
func TestIntegrationStdioStdoutHygiene(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	r := e2eStartRaw(t)
	r.Initialize()
	r.Request("tools/list", nil)
	r.CallTool("python_executor", map[string]any{"code": "import sys\nprint('out')\nprint('err', file=sys.stderr)\nprint('{not json')"})
	r.CallTool("shell_executor", map[string]any{"command": "echo to stderr >&2; exit 3"})
	r.CallTool("shell_executor", map[string]any{"command": `head -c 65536 /dev/urandom; printf '\377\376\000\033[31m\r\n'; head -c 4096 /dev/urandom >&2`})
	r.CallTool("python_executor", map[string]any{"code": "1/0"})
	r.CallTool("python_executor", map[string]any{"bogus": 1})
	r.CallTool("file_operation", map[string]any{"operation": "read", "file_path": "/nonexistent"})
	r.CallTool("shell_executor", map[string]any{"command": "sleep 5", "timeout": 0.2})
	id := r.Request("tools/call", map[string]any{"name": "shell_executor", "arguments": map[string]any{"command": "echo a; sleep 0.7; echo b"}, "_meta": map[string]any{"progressToken": 7}})
	r.Await(id, e2eCallTimeout, nil)
	r.Request("no/such/method", nil)
	r.ContainerID() // for the leak check after exit
	r.CloseStdin()
	r.WaitExit(e2eExitTimeout)
	for range r.msgs { // everything left, until stdout closed
	}
	invalid, lines := r.Invalid()
	if len(invalid) > 0 {
		t.Errorf("%d of %d stdout lines are not JSON-RPC 2.0 messages:\n%s", len(invalid), lines, strings.Join(invalid, "\n"))
	}
	if lines < 10 {
		t.Errorf("only %d lines on stdout", lines)
	}
	if !strings.Contains(r.stderr.String(), "tool call") {
		t.Errorf("no logs on stderr at --log-level debug; stderr:\n%s", e2eTail(r.stderr.String(), 2000))
	}
}

// TestIntegrationStdioProtocolVersions runs a session on each protocol version that still
// has the initialize handshake (the client's default, the stateless 2026-07-28, is what the
// other tests use).
func TestIntegrationStdioProtocolVersions(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	for _, version := range []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			s := e2eStartVersion(t, version)
			if s.ProtocolVersion != version {
				t.Errorf("negotiated %s, want %s", s.ProtocolVersion, version)
			}
			out := s.Call(t, "python_executor", map[string]any{"code": "print(6 * 7)"})
			if out.IsError || out.Text != "42\n" {
				t.Errorf("python: %s", out)
			}
			bad := s.Call(t, "python_executor", map[string]any{"code": "print(1)", "extra": 1})
			if !bad.IsError || !strings.Contains(bad.Text, `"extra"`) {
				t.Errorf("unknown parameter: %s", bad)
			}
		})
	}
}

// TestIntegrationStdioConcurrentCalls makes a session's first calls concurrently: they must
// share one sandbox, not race to create several.
func TestIntegrationStdioConcurrentCalls(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)
	const n = 5
	var wg sync.WaitGroup
	outs := make([]e2eOutcome, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), e2eCallTimeout)
			defer cancel()
			out, err := s.CallCtx(ctx, t, "shell_executor", map[string]any{"command": fmt.Sprintf("echo call %d > call-%d.txt; cat /proc/self/mountinfo /proc/self/cgroup", i, i)}, nil)
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
			outs[i] = out
		}()
	}
	wg.Wait()
	ids := map[string]bool{}
	for i, out := range outs {
		if out.IsError || out.S == nil {
			t.Fatalf("call %d: %s", i, out)
		}
		m := containerIDPattern.FindStringSubmatch(out.S.Output)
		if m == nil {
			t.Fatalf("call %d: no container ID", i)
		}
		ids[m[1]] = true
	}
	if len(ids) != 1 {
		t.Errorf("one session's concurrent first calls ran in %d containers", len(ids))
	}
	id := s.ContainerID(t)
	c := e2eInspect(t, id)
	if c == nil {
		t.Fatalf("container %.12s does not exist", id)
	}
	if all := e2eInstanceContainers(t, c.Config.Labels["enclave-mcp.instance"]); len(all) != 1 {
		t.Errorf("the server has %d containers, want 1: %.12s", len(all), all)
	}
	list := s.MustSucceed(t, "file_operation", map[string]any{"operation": "list", "file_path": "."})
	for i := range n {
		if !strings.Contains(list.S.Output, fmt.Sprintf("call-%d.txt", i)) {
			t.Errorf("call-%d.txt missing from %q", i, list.S.Output)
		}
	}
}

// TestIntegrationStdioSandboxDies removes a session's container behind the server's back:
// the session must recover with a fresh sandbox.
func TestIntegrationStdioSandboxDies(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	s := e2eStart(t)
	s.MustSucceed(t, "file_operation", map[string]any{"operation": "write", "file_path": "before.txt", "content": "x"})
	old := s.ContainerID(t)
	if out, err := exec.Command("docker", "rm", "-f", old).CombinedOutput(); err != nil {
		t.Fatalf("docker rm -f: %v %s", err, out)
	}
	// The call that finds the sandbox dead may fail (saying so); the next must work.
	var out e2eOutcome
	for attempt := 1; attempt <= 2; attempt++ {
		out = s.Call(t, "shell_executor", map[string]any{"command": "echo back"})
		if !out.IsError {
			break
		}
		t.Logf("call %d after the container was removed: %s", attempt, out)
	}
	if out.IsError || out.S == nil || out.S.Output != "back\n" {
		t.Fatalf("the session did not recover: %s", out)
	}
	if now := s.ContainerID(t); now == old {
		t.Errorf("still in the removed container %.12s", old)
	}
	if got := s.Exists(t, "before.txt"); got != "does not exist" {
		t.Errorf("before.txt in the fresh sandbox: %s", got)
	}
}

// TestIntegrationStdioCancelCreate cancels a call (2 ms after sending it) while it is creating
// the session's sandbox: the first sandbox of a server (which also prepares the agent volume
// with a helper container) and a replacement for a sandbox that died. The creation must not
// leave an orphan container behind (the count below and the leak check at the end cover every
// container of the server's instance) nor poison the session.
func TestIntegrationStdioCancelCreate(t *testing.T) {
	testenv.RequireDocker(t)
	t.Parallel()
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, s *e2eServer)
	}{
		{"first sandbox", func(*testing.T, *e2eServer) {}},
		{"replacement sandbox", func(t *testing.T, s *e2eServer) {
			old := s.ContainerID(t)
			if out, err := exec.Command("docker", "rm", "-f", old).CombinedOutput(); err != nil {
				t.Fatalf("docker rm -f: %v %s", err, out)
			}
			// Let the server see its sandbox's attach stream end (not an assertion).
			time.Sleep(500 * time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := e2eStart(t)
			tc.prepare(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
			out, err := s.CallCtx(ctx, t, "shell_executor", map[string]any{"command": "sleep 5"}, nil)
			cancel()
			if err == nil {
				t.Logf("the cancelled call was answered: %s", out)
			}
			var after e2eOutcome
			for attempt := 1; attempt <= 2; attempt++ { // a dead sandbox may cost one failed call
				if after = s.Call(t, "shell_executor", map[string]any{"command": "echo after"}); !after.IsError {
					break
				}
			}
			if after.IsError || after.S == nil || after.S.Output != "after\n" {
				t.Fatalf("the call after a cancelled creation: %s", after)
			}
			id := s.ContainerID(t)
			c := e2eInspect(t, id)
			if c == nil {
				t.Fatalf("container %.12s does not exist", id)
			}
			// Every container of this server: the live sandbox only, once the cancelled
			// creation has cleaned up.
			instance := c.Config.Labels["enclave-mcp.instance"]
			var all []string
			if !testwait.Poll(10*time.Second, func() bool {
				all = e2eInstanceContainers(t, instance)
				return len(all) == 1
			}) {
				t.Errorf("the server has %d containers after a cancelled creation, want 1: %.12s", len(all), all)
				for _, other := range all {
					if other != id {
						if c := e2eInspect(t, other); c != nil {
							t.Errorf("orphan %.12s: state %s, labels %v", other, c.State.Status, c.Config.Labels)
						}
					}
				}
			}
		})
	}
}

// TestIntegrationStdioEndDuringCall ends the session while a call is in flight, before and
// after its sandbox exists. It does not run in parallel with this package's other tests, so
// that it can count every stdio-owned container that appears while it runs.
func TestIntegrationStdioEndDuringCall(t *testing.T) {
	testenv.RequireDocker(t)
	for _, tc := range []struct {
		name string
		// wait is how long after sending the call the session ends; 0 waits for the
		// command to be running (its first progress notification).
		wait time.Duration
		end  func(r *e2eRaw)
	}{
		{"EOF while creating", 0 * time.Millisecond, (*e2eRaw).CloseStdin},
		{"EOF after 100ms", 100 * time.Millisecond, (*e2eRaw).CloseStdin},
		{"EOF while running", -1, (*e2eRaw).CloseStdin},
		{"SIGTERM while creating", 0, func(r *e2eRaw) { r.Signal(syscall.SIGTERM) }},
		{"SIGTERM while running", -1, func(r *e2eRaw) { r.Signal(syscall.SIGTERM) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e2eManagedContainers(t)
			began := time.Now()
			r := e2eStartRaw(t)
			r.Initialize()
			r.Request("tools/call", map[string]any{"name": "shell_executor", "arguments": map[string]any{"command": "echo running; sleep 30; echo done"}, "_meta": map[string]any{"progressToken": "p"}})
			switch {
			case tc.wait < 0:
				deadline := time.Now().Add(20 * time.Second)
				for {
					if m := r.Next(time.Until(deadline)); m["method"] == "notifications/progress" {
						break
					}
				}
			case tc.wait > 0:
				time.Sleep(tc.wait)
			}
			start := time.Now()
			tc.end(r)
			st := r.WaitExit(e2eExitTimeout)
			ended := time.Now()
			if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Errorf("the server was killed by %v instead of shutting down", ws.Signal())
			}
			t.Logf("server exited %v after the session ended", time.Since(start).Round(time.Millisecond))
			// This server's containers: owned by a stdio session, or agent-volume helpers
			// (which carry no owner), created while it ran.
			var left []*e2eContainer
			if !testwait.Poll(e2eGoneTimeout, func() bool {
				left = nil
				for _, id := range e2eManagedContainers(t) {
					if slices.Contains(before, id) {
						continue
					}
					c := e2eInspect(t, id)
					if c == nil || c.Created.Before(began.Add(-time.Second)) || c.Created.After(ended.Add(time.Second)) {
						continue
					}
					if c.Config.Labels["enclave-mcp.owner"] == "stdio" || c.Config.Labels["enclave-mcp.kind"] == "agent-helper" {
						left = append(left, c)
					}
				}
				return len(left) == 0
			}) {
				for _, c := range left {
					t.Errorf("leaked container %.12s (state %s, created %s, labels %v)", c.ID, c.State.Status, c.Created.Format(time.RFC3339Nano), c.Config.Labels)
					e2eRemove(t, c.ID)
				}
			}
		})
	}
}

// e2eManagedContainers lists every container enclave-mcp manages, any state.
func e2eManagedContainers(t testing.TB) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--no-trunc", "--filter", "label=enclave-mcp.managed=true").Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	return strings.Fields(string(out))
}
