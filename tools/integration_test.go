package tools_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/egress"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// invoke runs tool name with args (a JSON object) in sb.
func invoke(t *testing.T, sb sandbox.Sandbox, opts map[string]any, name, args string) tools.Result {
	t.Helper()
	for _, def := range tools.All() {
		if def.Name != name {
			continue
		}
		res, err := def.Invoke(context.Background(), tools.Call{Sandbox: sb, Options: opts, DefaultTimeout: 30}, json.RawMessage(args))
		if err != nil {
			t.Fatalf("%s %s: %v", name, args, err)
		}
		if res.ToolName != name || res.Metadata == nil || res.Timestamp.IsZero() {
			t.Fatalf("result lacks ms-enclave's fields: %+v", res)
		}
		return res
	}
	t.Fatalf("no tool %s", name)
	return tools.Result{}
}

func TestIntegrationFileOperations(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	binary := []byte{0, 1, 2, 0xff, 0xfe, '\n', 0x80}
	b64 := base64.StdEncoding.EncodeToString(binary)

	steps := []struct {
		name, tool, args string
		wantStatus       tools.Status
		wantOutput       string // substring
	}{
		{"create empty", "file_operation", `{"operation":"create","file_path":"a.txt"}`, tools.StatusSuccess, "wrote 0 bytes to /sandbox/a.txt"},
		{"exists", "file_operation", `{"operation":"exists","file_path":"a.txt"}`, tools.StatusSuccess, "exists"},
		{"write", "file_operation", `{"operation":"write","file_path":"dir/sub/b.txt","content":"héllo\n"}`, tools.StatusSuccess, "/sandbox/dir/sub/b.txt"},
		{"read", "file_operation", `{"operation":"read","file_path":"/sandbox/dir/sub/b.txt"}`, tools.StatusSuccess, "héllo\n"},
		{"code sees it", "python_executor", `{"code":"print(open('dir/sub/b.txt').read().upper())"}`, tools.StatusSuccess, "HÉLLO"},
		{"binary write", "file_operation", `{"operation":"write","file_path":"bin.dat","content":"` + b64 + `","encoding":"base64"}`, tools.StatusSuccess, "wrote 7 bytes"},
		{"binary read", "file_operation", `{"operation":"read","file_path":"bin.dat","encoding":"base64"}`, tools.StatusSuccess, b64},
		{"binary as text is refused with the fix", "file_operation", `{"operation":"read","file_path":"bin.dat"}`, tools.StatusError, "read it with encoding base64"},
		{"list", "file_operation", `{"operation":"list","file_path":"."}`, tools.StatusSuccess, "a.txt\nbin.dat\ndir/\n"},
		{"stat", "file_operation", `{"operation":"stat","file_path":"dir"}`, tools.StatusSuccess, "directory"},
		{"mkdir", "file_operation", `{"operation":"mkdir","file_path":"x/y/z"}`, tools.StatusSuccess, "created directory /sandbox/x/y/z"},
		{"delete non-empty dir needs recursive", "file_operation", `{"operation":"delete","file_path":"dir"}`, tools.StatusError, "dir"},
		{"delete recursive", "file_operation", `{"operation":"delete","file_path":"dir","recursive":true}`, tools.StatusSuccess, "deleted /sandbox/dir"},
		{"gone", "file_operation", `{"operation":"exists","file_path":"dir"}`, tools.StatusSuccess, "does not exist"},
		{"read missing", "file_operation", `{"operation":"read","file_path":"nope.txt"}`, tools.StatusError, "nope.txt"},
		{"write outside the workspace fails", "file_operation", `{"operation":"write","file_path":"/etc/evil","content":"x"}`, tools.StatusError, "read-only file system"},
		{"read outside the workspace is allowed", "file_operation", `{"operation":"read","file_path":"/etc/debian_version"}`, tools.StatusSuccess, "12"},
		{"shell argv needs no shell", "shell_executor", `{"command":["python3","-c","import sys; print(sys.argv[1])","a b; echo no"]}`, tools.StatusSuccess, "a b; echo no"},
		{"shell string uses sh", "shell_executor", `{"command":"echo $((6*7)) | tr 4 X"}`, tools.StatusSuccess, "X2"},
		{"missing program", "shell_executor", `{"command":["no-such-program"]}`, tools.StatusError, `"no-such-program" not found`},
		{"non-zero exit keeps output", "python_executor", `{"code":"print('before'); raise SystemExit(3)"}`, tools.StatusSuccess, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			res := invoke(t, sb, nil, st.tool, st.args)
			if st.name == "non-zero exit keeps output" {
				if res.Status != tools.StatusError || res.Output != "before\n" || *res.ExitCode != 3 {
					t.Fatalf("got %+v", res)
				}
				return
			}
			if res.Status != st.wantStatus {
				t.Fatalf("status = %s, want %s; output %q error %q", res.Status, st.wantStatus, res.Output, res.Error)
			}
			if !strings.Contains(res.Text(), st.wantOutput) {
				t.Fatalf("text %q lacks %q", res.Text(), st.wantOutput)
			}
		})
	}
}

func TestIntegrationBackgroundJobs(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	res := invoke(t, sb, nil, "shell_executor", `{"command":"sleep 300","background":true}`)
	if res.Status != tools.StatusSuccess || res.Metadata["job_id"] != "job-1" {
		t.Fatalf("start: %+v", res)
	}
	// A foreground command's own leftovers die with it, but the job survives it.
	invoke(t, sb, nil, "shell_executor", `{"command":"sleep 200 &"}`)
	list := invoke(t, sb, nil, "background_jobs", `{"action":"list"}`)
	if !strings.Contains(list.Output, "job-1") || !strings.Contains(list.Output, "running") {
		t.Fatalf("list: %q", list.Output)
	}
	count := `{"command":"for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done | grep -c '^sleep'"}`
	if got := strings.TrimSpace(invoke(t, sb, nil, "shell_executor", count).Output); got != "1" {
		t.Fatalf("want exactly the job's sleep alive, found %s", got)
	}
	stop := invoke(t, sb, nil, "background_jobs", `{"action":"stop","job_id":"job-1"}`)
	if stop.Status != tools.StatusSuccess || !strings.Contains(stop.Output, "SIGKILL") {
		t.Fatalf("stop: %+v", stop)
	}
	if res := invoke(t, sb, nil, "background_jobs", `{"action":"stop","job_id":"job-9"}`); res.Status != tools.StatusError {
		t.Fatalf("stopping an unknown job must fail: %+v", res)
	}
}

func TestIntegrationShellOption(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	res := invoke(t, sb, map[string]any{"shell": "/bin/bash"}, "shell_executor", `{"command":"echo $BASH_VERSION | cut -c1"}`)
	if res.Status != tools.StatusSuccess || strings.TrimSpace(res.Output) != "5" {
		t.Fatalf("tools_config shell option not honoured: %+v", res)
	}
}

func TestIntegrationOutputCapOption(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	res := invoke(t, sb, map[string]any{"max_output_bytes": float64(1000)}, "python_executor", `{"code":"print('x' * 5000)"}`)
	if !res.Truncated || len(res.Output) > 1100 {
		t.Fatalf("cap of 1000 bytes not applied: truncated=%v len=%d", res.Truncated, len(res.Output))
	}
}

// TestIntegrationEgressRefusalInResult: a destination the sandbox's egress policy refuses
// is named in the tool result, whatever the program printed of it.
func TestIntegrationEgressRefusalInResult(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.SandboxWith(t, e, sandbox.Config{Egress: &sandbox.EgressConfig{}},
		sandbox.Policy{Egress: &egress.Policy{Allow: []string{"pypi.org"}}})
	res := invoke(t, sb, nil, "shell_executor",
		`{"command":"python3 -c \"import urllib.request; urllib.request.urlopen('https://evil.test/')\""}`)
	if res.Status != tools.StatusError || !strings.Contains(res.Error, "Tunnel connection failed: 403") ||
		!strings.Contains(res.Error, "the sandbox's egress policy refused: evil.test:443: evil.test is not in the sandbox's egress allow-list (pypi.org)") {
		t.Fatalf("result does not name the refusal: %+v", res)
	}
	if refused, _ := res.Metadata["egress_refused"].([]string); len(refused) != 1 {
		t.Errorf("metadata egress_refused = %v, want the one refusal", res.Metadata["egress_refused"])
	}
	// A later call that reaches nothing refused carries no note.
	if res := invoke(t, sb, nil, "shell_executor", `{"command":"true"}`); res.Metadata["egress_refused"] != nil {
		t.Errorf("an unrelated call carries the refusal: %+v", res)
	}
}

// TestIntegrationResidentInterpreter: in a hardened sandbox, python_executor's calls are
// forked from the resident interpreter, import the data stack at no cost, and cannot read
// the memory of the interpreter or of the process forked for the next call (both are
// non-dumpable, and nothing in the sandbox has CAP_SYS_PTRACE). With "fork": false each call
// starts its own python3.
func TestIntegrationResidentInterpreter(t *testing.T) {
	sb := testenv.Sandbox(t, testenv.Engine(t), sandbox.Config{})
	testwait.Until(t, 2*time.Minute, "a call forked from the resident interpreter", func() bool {
		return invoke(t, sb, nil, "python_executor", `{"code":"pass"}`).Metadata["forked"] == true
	})
	res := invoke(t, sb, nil, "python_executor", `{"code":"import sys; print('numpy' in sys.modules, 'pandas' in sys.modules)\nimport numpy, pandas\nprint(pandas.DataFrame({'a': [1, 2]}).a.sum())"}`)
	if res.Output != "True True\n3\n" || res.Metadata["forked"] != true {
		t.Errorf("the data stack in a forked call: %+v", res)
	}
	// A fresh python3 (not forked: a forked call is the spare itself) finds the resident
	// interpreter and the spare forked for the next call once the last one ended.
	script := `import os, time
def others():
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                if open(f"/proc/{p}/comm").read().strip() == "python3":
                    found.append(p)
            except OSError:
                pass
    return found
for _ in range(500):
    if len(others()) == 2:
        break
    time.sleep(0.01)
for p in others():
    try:
        open(f"/proc/{p}/mem", "rb").read(1)
        print("read", p)
    except OSError as e:
        print(type(e).__name__)`
	args, _ := json.Marshal(map[string]string{"code": script})
	res = invoke(t, sb, map[string]any{"fork": false}, "python_executor", string(args))
	if res.Output != "PermissionError\nPermissionError\n" {
		t.Errorf("reading the resident processes' memory: %q %q, want two PermissionErrors", res.Output, res.Error)
	}
	res = invoke(t, sb, map[string]any{"fork": false}, "python_executor", `{"code":"print(1)"}`)
	if res.Output != "1\n" || res.Metadata["forked"] != nil {
		t.Errorf(`with "fork": false: %+v`, res)
	}
}
