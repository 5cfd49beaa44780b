package session_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// newNamed serves named sessions on backend b with cfg; everything is removed when the test
// ends.
func newNamed(t *testing.T, b sandbox.Backend, cfg session.NamedConfig) (*session.Named, *sandbox.Manager) {
	t.Helper()
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeDocker: {Runtime: testenv.Runtime()}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeDocker: sandbox.NewCreator(b, sandbox.TypeDocker)},
	})
	core, err := session.New(session.Config{Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	n, err := session.NewNamed(core, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Errorf("closing the named sessions: %v", err)
		}
		_ = core.Close(ctx)
		_ = m.Close(ctx)
	})
	return n, m
}

// wantErr fails unless err is target and its message holds every one of parts.
func wantErr(t *testing.T, err, target error, parts ...string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
}

// TestNamedSessionsBadInput: each kind of bad input is refused with its own error, before
// any sandbox is made.
func TestNamedSessionsBadInput(t *testing.T) {
	t.Parallel()
	n, m := newNamed(t, testenv.Process(t), session.NamedConfig{})
	ctx := t.Context()
	if _, err := n.Create(ctx, "alice", "s", ""); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		call   func() error
		target error
		says   []string
	}{
		{"bad size string", func() error { _, err := n.Create(ctx, "alice", "x", "fifty"); return err },
			api.ErrBadRequest, []string{`"fifty"`, "e.g. 512m"}},
		{"size over the maximum", func() error { _, err := n.Create(ctx, "alice", "x", "2G"); return err },
			api.ErrPolicy, []string{"2G", "maximum session size of 1G"}},
		{"size under the minimum", func() error { _, err := n.Create(ctx, "alice", "x", "10k"); return err },
			api.ErrBadRequest, []string{"1M minimum"}},
		{"session id with a slash", func() error { _, err := n.Create(ctx, "alice", "a/b", ""); return err },
			api.ErrBadRequest, []string{"session id"}},
		{"empty session id", func() error { _, err := n.Status(ctx, "alice", ""); return err },
			api.ErrBadRequest, []string{"session id"}},
		{"session id in use", func() error { _, err := n.Create(ctx, "alice", "s", ""); return err },
			api.ErrExists, []string{`already exists: session "s"`}},
		{"unknown session", func() error { _, err := n.Files(ctx, "alice", "nope"); return err },
			api.ErrNotFound, []string{`"nope"`, "create it first"}},
		{"another principal's session", func() error { _, err := n.Files(ctx, "bob", "s"); return err },
			api.ErrNotFound, []string{`"s"`}},
		{"absolute filename", func() error {
			_, err := n.CreateFile(ctx, "alice", "s", api.CreateFileRequest{Filename: "/etc/passwd", Content: "x"})
			return err
		}, api.ErrBadRequest, []string{"absolute"}},
		{"filename climbing out", func() error { _, err := n.Download(ctx, "alice", "s", "a/../../etc/passwd"); return err },
			api.ErrBadRequest, []string{"leaves the session's workspace"}},
		{"filename dot-dot", func() error { _, err := n.Upload(ctx, "alice", "s", "..", []byte("x")); return err },
			api.ErrBadRequest, []string{"leaves"}},
		{"empty filename", func() error { _, err := n.Upload(ctx, "alice", "s", "", []byte("x")); return err },
			api.ErrBadRequest, []string{"filename is required"}},
		{"code filename climbing out", func() error {
			_, err := n.ExecuteCode(ctx, "alice", "s", api.ExecuteCodeRequest{Code: "print(1)", Filename: "../x.py"})
			return err
		}, api.ErrBadRequest, []string{"leaves"}},
		{"mode as a decimal-looking octal number", func() error {
			_, err := n.CreateFile(ctx, "alice", "s", api.CreateFileRequest{Filename: "m", Mode: 755.0})
			return err
		}, api.ErrBadRequest, []string{"\"0755\"", "493"}},
		{"mode not octal", func() error {
			_, err := n.CreateFile(ctx, "alice", "s", api.CreateFileRequest{Filename: "m", Mode: "9"})
			return err
		}, api.ErrBadRequest, []string{"octal"}},
		{"bad base64", func() error {
			_, err := n.CreateFile(ctx, "alice", "s", api.CreateFileRequest{Filename: "m", Content: "!!", Encoding: "base64"})
			return err
		}, api.ErrBadRequest, []string{"base64"}},
		{"command outside the allow-list", func() error {
			_, err := n.Execute(ctx, "alice", "s", api.ExecuteRequest{Command: "sh", Args: []string{"-c", "id"}})
			return err
		}, api.ErrPolicy, []string{`"sh" is not allowed`, "allowed commands are: ", "ls", "cat"}},
		{"command given as a path", func() error {
			_, err := n.Execute(ctx, "alice", "s", api.ExecuteRequest{Command: "/bin/ls"})
			return err
		}, api.ErrPolicy, []string{"not allowed"}},
		{"command line with its arguments", func() error {
			_, err := n.Execute(ctx, "alice", "s", api.ExecuteRequest{Command: "ls -l"})
			return err
		}, api.ErrBadRequest, []string{"pass its arguments in args"}},
		{"no command", func() error { _, err := n.Execute(ctx, "alice", "s", api.ExecuteRequest{}); return err },
			api.ErrBadRequest, []string{"command is required"}},
		{"negative timeout", func() error {
			_, err := n.Execute(ctx, "alice", "s", api.ExecuteRequest{Command: "ls", Timeout: -1})
			return err
		}, api.ErrBadRequest, []string{"timeout"}},
		{"unknown script type", func() error {
			_, err := n.ExecuteCode(ctx, "alice", "s", api.ExecuteCodeRequest{Code: "x", ScriptType: "cobol"})
			return err
		}, api.ErrBadRequest, []string{`"cobol" is not available`, "script types: bash, python, sh;",
			"multi_code_executor languages: pytest, c, cpp, csharp, go, "}},
		{"no code", func() error {
			_, err := n.ExecuteCode(ctx, "alice", "s", api.ExecuteCodeRequest{Code: " "})
			return err
		}, api.ErrBadRequest, []string{"no code"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.call(), tc.target, tc.says...)
		})
	}
	if got := len(m.ListOwned("alice")); got != 1 {
		t.Errorf("alice holds %d sandboxes, want the one session's", got)
	}
}

// TestNamedSessionsConfig: an operator's config that cannot work is refused at start,
// saying why.
func TestNamedSessionsConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  session.NamedConfig
		says string
	}{
		{"default over max", session.NamedConfig{DefaultSize: 2 << 30, MaxSize: 1 << 30}, "over the max size"},
		{"tiny max", session.NamedConfig{MaxSize: 1000}, "at least 1M"},
		{"command with a path", session.NamedConfig{AllowedCommands: []string{"/bin/ls"}}, "without a path"},
		{"script type without its file", session.NamedConfig{ScriptTypes: map[string]session.ScriptType{
			"py": {Extension: ".py", Argv: []string{"python3", "-c", "print(1)"}}}}, `put "{file}"`},
		{"script type without a dot", session.NamedConfig{ScriptTypes: map[string]session.ScriptType{
			"py": {Extension: "py", Argv: []string{"python3", "{file}"}}}}, "must start with a dot"},
		{"script type name", session.NamedConfig{ScriptTypes: map[string]session.ScriptType{
			"Py Thon": {Extension: ".py", Argv: []string{"python3", "{file}"}}}}, "lower-case name"},
		{"unknown language", session.NamedConfig{Languages: []string{"c", "cobol"}},
			`language "cobol" is not one of multi_code_executor's: python, pytest, bash, c, cpp,`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.WithDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %v, want one saying %q", err, tc.says)
			}
		})
	}
	cfg, err := session.NamedConfig{}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DefaultSize != 50<<20 || cfg.MaxSize != 1<<30 || cfg.IdleTimeout != time.Hour {
		t.Errorf("defaults %+v, want 50M, 1G, 1h", cfg)
	}
	if len(cfg.Languages) != len(tools.Languages()) || cfg.Languages[0] != "python" {
		t.Errorf("default languages %q, want every multi_code_executor language", cfg.Languages)
	}
	for _, tc := range []struct {
		given, want []string
	}{
		{[]string{"JS", "typescript", "nodejs", "R"}, []string{"nodejs", "ts", "r"}},
		{[]string{}, []string{}},
	} {
		cfg, err := session.NamedConfig{Languages: tc.given}.WithDefaults()
		if err != nil || !slices.Equal(cfg.Languages, tc.want) || cfg.Languages == nil {
			t.Errorf("languages %q became %q (%v), want %q: names, once; empty stays none", tc.given, cfg.Languages, err, tc.want)
		}
	}
	for _, escape := range []string{"sh", "bash", "python3", "env", "xargs", "find", "awk", "sed", "sort", "split", "tar", "ln"} {
		if slices.Contains(cfg.AllowedCommands, escape) {
			t.Errorf("the default allow-list holds %s, a way to run anything", escape)
		}
	}
}

// TestNamedSessionsFlow walks one session through every operation on the process backend:
// files in and out (binary included), commands and code, status while a command runs,
// cleanup with and without force; and two principals using one name apart.
func TestNamedSessionsFlow(t *testing.T) {
	t.Parallel()
	n, m := newNamed(t, testenv.Process(t), session.NamedConfig{})
	ctx := t.Context()
	info, err := n.Create(ctx, "alice", "work", "")
	if err != nil {
		t.Fatal(err)
	}
	if info.SessionID != "work" || info.Size != "50M" || info.SizeBytes != 50<<20 || info.IdleTimeout != 3600 {
		t.Errorf("created %+v, want work with the 50M default and 3600 s idle timeout", info)
	}

	t.Run("files in and out", func(t *testing.T) {
		f, err := n.CreateFile(ctx, "alice", "work", api.CreateFileRequest{Filename: "dir/run.sh", Content: "echo hi\n", Mode: "0755"})
		if err != nil || f.Name != "dir/run.sh" || f.Size != 8 || f.Mode != "0755" {
			t.Fatalf("create: %+v %v", f, err)
		}
		if f, err = n.CreateFile(ctx, "alice", "work", api.CreateFileRequest{Filename: "dir/run.sh", Content: "x", Mode: 0o600 * 1.0}); err != nil || f.Mode != "0600" {
			t.Errorf("a mode given again applies to the rewritten file: %+v %v", f, err)
		}
		binary := []byte{0, 1, 2, 0xff, 0xfe, '\n', 0}
		if _, err := n.Upload(ctx, "alice", "work", "blob.bin", binary); err != nil {
			t.Fatal(err)
		}
		got, err := n.Download(ctx, "alice", "work", "blob.bin")
		if err != nil || !bytes.Equal(got, binary) {
			t.Errorf("download %v %v, want the uploaded bytes", got, err)
		}
		list, err := n.Files(ctx, "alice", "work")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range list.Files {
			names = append(names, f.Name)
		}
		if strings.Join(names, ",") != "blob.bin,dir,dir/run.sh" || !list.Files[1].IsDir || list.Files[0].Size != int64(len(binary)) {
			t.Errorf("files %+v", list.Files)
		}
	})

	t.Run("commands", func(t *testing.T) {
		res, err := n.Execute(ctx, "alice", "work", api.ExecuteRequest{Command: "ls", Args: []string{"dir"}})
		if err != nil || res.Stdout != "run.sh\n" || res.ExitCode != 0 || res.Status != api.ResultSuccess || !slices.Equal(res.Command, []string{"ls", "dir"}) {
			t.Errorf("ls: %+v %v", res, err)
		}
		res, err = n.Execute(ctx, "alice", "work", api.ExecuteRequest{Command: "cat", Args: []string{"missing; id"}})
		if err != nil || res.ExitCode != 1 || res.Status != api.ResultError || !strings.Contains(res.Stderr, "missing; id") {
			t.Errorf("an argument reaches the program as it is, and a failure is a result: %+v %v", res, err)
		}
		res, err = n.Execute(ctx, "alice", "work", api.ExecuteRequest{Command: "sleep", Args: []string{"10"}, Timeout: 0.3})
		if err != nil || !res.TimedOut || res.Status != api.ResultTimeout || !strings.Contains(res.Note, "timed out after 0.3s") {
			t.Errorf("timeout: %+v %v", res, err)
		}
	})

	t.Run("code", func(t *testing.T) {
		res, err := n.ExecuteCode(ctx, "alice", "work", api.ExecuteCodeRequest{Code: "import os\nprint(6*7, sorted(os.listdir('.')))"})
		if err != nil || !strings.HasPrefix(res.Stdout, "42 ") || res.Status != api.ResultSuccess {
			t.Fatalf("python: %+v %v", res, err)
		}
		if !strings.Contains(res.Stdout, ".enclave-code-") {
			t.Errorf("the code runs from a file of the workspace: %q", res.Stdout)
		}
		list, _ := n.Files(ctx, "alice", "work")
		for _, f := range list.Files {
			if strings.HasPrefix(f.Name, ".enclave-code-") {
				t.Errorf("the temporary code file %s is left behind", f.Name)
			}
		}
		res, err = n.ExecuteCode(ctx, "alice", "work", api.ExecuteCodeRequest{Code: "echo \"$0\"; [ -n \"$BASH_VERSION\" ] && echo bash", Filename: "-x.sh"})
		if err != nil || res.Stdout != "./-x.sh\nbash\n" {
			t.Errorf("a .sh file runs as bash, its name never taken for an option: %+v %v", res, err)
		}
		if got, err := n.Download(ctx, "alice", "work", "-x.sh"); err != nil || !strings.HasPrefix(string(got), "echo") {
			t.Errorf("code saved under a filename stays: %q %v", got, err)
		}
		res, err = n.ExecuteCode(ctx, "alice", "work", api.ExecuteCodeRequest{Code: "echo $0", ScriptType: "sh"})
		if err != nil || !strings.HasPrefix(res.Stdout, "./.enclave-code-") || !strings.HasSuffix(res.Stdout, ".sh\n") {
			t.Errorf("sh: %+v %v", res, err)
		}
		res, err = n.ExecuteCode(ctx, "alice", "work", api.ExecuteCodeRequest{Code: "raise SystemExit(3)", ScriptType: "python"})
		if err != nil || res.ExitCode != 3 || res.Status != api.ResultError {
			t.Errorf("exit 3: %+v %v", res, err)
		}
	})

	t.Run("principals apart", func(t *testing.T) {
		if _, err := n.Create(ctx, "bob", "work", "2M"); err != nil {
			t.Fatalf("bob may use alice's session name: %v", err)
		}
		list, err := n.Files(ctx, "bob", "work")
		if err != nil || len(list.Files) != 0 {
			t.Errorf("bob sees %+v %v in his own session, want nothing of alice's", list.Files, err)
		}
		if _, err := n.Download(ctx, "bob", "work", "blob.bin"); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("bob reads alice's file: %v", err)
		}
		if st, _ := n.Status(ctx, "bob", "work"); st.SizeBytes != 2<<20 {
			t.Errorf("bob's session size %d, want 2M", st.SizeBytes)
		}
	})

	t.Run("status and cleanup", func(t *testing.T) {
		st, err := n.Status(ctx, "alice", "work")
		if err != nil || st.Files != 3 || st.UsedBytes <= 0 || st.RunningProcesses != 0 || st.SizeBytes != 50<<20 ||
			st.Full || !st.ExpiresAt.After(time.Now().Add(59*time.Minute)) {
			t.Errorf("status %+v %v", st, err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		var long api.CommandResult
		go func() {
			defer wg.Done()
			long, _ = n.Execute(context.WithoutCancel(ctx), "alice", "work", api.ExecuteRequest{Command: "sleep", Args: []string{"30"}})
		}()
		testwait.Until(t, 10*time.Second, "the running command in the status", func() bool {
			st, err := n.Status(ctx, "alice", "work")
			return err == nil && st.RunningProcesses == 1 && slices.Equal(st.Processes[0].Command, []string{"sleep", "30"})
		})
		res, err := n.CleanupAll(ctx, "alice", false)
		if err != nil || len(res.Cleaned) != 0 || !slices.Equal(res.Skipped, []string{"work"}) {
			t.Errorf("without force a running session is skipped: %+v %v", res, err)
		}
		if res, err = n.CleanupAll(ctx, "alice", true); err != nil || !slices.Equal(res.Cleaned, []string{"work"}) {
			t.Errorf("with force it is ended: %+v %v", res, err)
		}
		wg.Wait()
		if long.Status == api.ResultSuccess {
			t.Errorf("the command of a session ended by force finished: %+v", long)
		}
		if _, err := n.Status(ctx, "alice", "work"); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("the session outlived its cleanup: %v", err)
		}
		if len(m.ListOwned("alice")) != 0 || len(m.ListOwned("bob")) != 1 {
			t.Errorf("alice holds %d sandboxes and bob %d, want 0 and 1", len(m.ListOwned("alice")), len(m.ListOwned("bob")))
		}
		if err := n.Delete(ctx, "bob", "work"); err != nil || len(m.ListOwned("bob")) != 0 {
			t.Errorf("delete: %v; %d left", err, len(m.ListOwned("bob")))
		}
	})
}

// processPath is the PATH of the process backend's sandboxes (sandbox's processEnv): the
// host programs code run there finds.
const processPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// onProcessPath reports whether the process backend's sandboxes can run prog.
func onProcessPath(prog string) bool {
	for _, dir := range filepath.SplitList(processPath) {
		if fi, err := os.Stat(filepath.Join(dir, prog)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

// toolchain is the program lang starts first: its compiler, else its interpreter.
func toolchain(lang tools.Language) string {
	if lang.Compiled() {
		return lang.Compile[0]
	}
	return lang.Run[0]
}

// TestNamedSessionsLanguages: execute_code takes multi_code_executor's language names (its
// aliases too, in any case) as script types, and a file name's extension picks one, run on
// the process backend with the host's toolchains: a program's output and exit code, a
// failed build as status error with the compiler's messages in stderr, the timeout bounding
// the run, the running build listed in the status, the filename's copy kept; the operator's
// script types win over languages of their names; a toolchain the host lacks is a result
// naming the image that has it.
func TestNamedSessionsLanguages(t *testing.T) {
	t.Parallel()
	n, _ := newNamed(t, testenv.Process(t), session.NamedConfig{})
	ctx := t.Context()
	if _, err := n.Create(ctx, "alice", "s", ""); err != nil {
		t.Fatal(err)
	}
	cHello, _ := tools.LanguageByName("c")
	cppHello, _ := tools.LanguageByName("cpp")
	tests := []struct {
		name    string
		needs   []string // host programs, on the process backend's PATH
		req     api.ExecuteCodeRequest
		status  api.ResultStatus
		exit    int
		stdout  string   // the whole of stdout, when set
		stderr  []string // in stderr
		command []string
	}{
		{"c", []string{"gcc"}, api.ExecuteCodeRequest{ScriptType: "c", Code: cHello.Hello},
			api.ResultSuccess, 0, "hello, world\n", nil, []string{"multi_code_executor", "c"}},
		{"cpp, named in upper case", []string{"g++"}, api.ExecuteCodeRequest{ScriptType: "CPP", Code: cppHello.Hello},
			api.ResultSuccess, 0, "hello, world\n", nil, []string{"multi_code_executor", "cpp"}},
		{"an alias: js", []string{"node"}, api.ExecuteCodeRequest{ScriptType: "js", Code: "console.log(6 * 7)"},
			api.ResultSuccess, 0, "42\n", nil, []string{"multi_code_executor", "nodejs"}},
		{"the exit code and stderr of the program", []string{"gcc"}, api.ExecuteCodeRequest{ScriptType: "c",
			Code: "#include <stdio.h>\nint main(void) { fprintf(stderr, \"bad input\\n\"); return 3; }\n"},
			api.ResultError, 3, "", []string{"bad input"}, nil},
		{"a failed build", []string{"gcc"}, api.ExecuteCodeRequest{ScriptType: "c", Code: "int main(void) { return undefined_name; }\n"},
			api.ResultError, 1, "", []string{"error:", "undefined_name", "compilation failed"}, nil},
		{"the timeout bounds the run", []string{"gcc"}, api.ExecuteCodeRequest{ScriptType: "c", Code: "int main(void) { for (;;); }\n", Timeout: 0.5},
			api.ResultTimeout, -1, "", nil, nil},
		{"a file name's extension picks the language, and the file stays", []string{"gcc"},
			api.ExecuteCodeRequest{Filename: "src/prog.c", Code: cHello.Hello},
			api.ResultSuccess, 0, "hello, world\n", nil, []string{"multi_code_executor", "c", "src/prog.c"}},
		{"a script type wins over the language of its name", []string{"python3"},
			api.ExecuteCodeRequest{ScriptType: "python", Code: "import sys\nprint(sys.argv[0][:16])"},
			api.ResultSuccess, 0, "./.enclave-code-\n", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, prog := range tc.needs {
				if !onProcessPath(prog) {
					t.Skipf("needs %s in %s on the host, where the process backend's sandboxes run", prog, processPath)
				}
			}
			res, err := n.ExecuteCode(ctx, "alice", "s", tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.status || (tc.exit != -1 && res.ExitCode != tc.exit) || (tc.stdout != "" && res.Stdout != tc.stdout) {
				t.Errorf("status %s, exit code %d, stdout %q; want %s, %d, %q (stderr %q)", res.Status, res.ExitCode, res.Stdout,
					tc.status, tc.exit, tc.stdout, res.Stderr)
			}
			for _, want := range tc.stderr {
				if !strings.Contains(res.Stderr, want) {
					t.Errorf("stderr %q does not say %q", res.Stderr, want)
				}
			}
			if tc.command != nil && !slices.Equal(res.Command, tc.command) {
				t.Errorf("command %q, want %q", res.Command, tc.command)
			}
			if tc.status == api.ResultTimeout && (!res.TimedOut || !strings.Contains(res.Note, "timed out after 0.5s")) {
				t.Errorf("a timeout: %+v", res)
			}
			if strings.Contains(strings.Join(tc.stderr, ""), "compilation failed") && !strings.Contains(res.Note, "the build failed") {
				t.Errorf("note %q, want one saying the build failed", res.Note)
			}
		})
	}
	if onProcessPath("gcc") {
		if got, err := n.Download(ctx, "alice", "s", "src/prog.c"); err != nil || string(got) != cHello.Hello {
			t.Errorf("the code saved under its filename: %q %v", got, err)
		}
	}
	list, err := n.Files(ctx, "alice", "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range list.Files {
		if strings.HasPrefix(f.Name, ".multi_code-") || strings.HasPrefix(f.Name, ".enclave-code-") {
			t.Errorf("a run left %s behind", f.Name)
		}
	}

	t.Run("a toolchain the host lacks", func(t *testing.T) {
		var missing *tools.Language
		for _, l := range tools.Languages() {
			if !onProcessPath(toolchain(l)) {
				missing = &l
				break
			}
		}
		if missing == nil {
			t.Skip("the host has every language's toolchain")
		}
		res, err := n.ExecuteCode(ctx, "alice", "s", api.ExecuteCodeRequest{ScriptType: missing.Name, Code: missing.Hello})
		want := "language " + missing.Name + " needs " + toolchain(*missing)
		if err != nil || res.Status != api.ResultError || res.ExitCode != -1 || !strings.Contains(res.Stderr, want) ||
			!strings.Contains(res.Stderr, sandbox.PolyglotImage) || !strings.Contains(res.Note, "did not run") {
			t.Errorf("%s: %+v %v; want a result saying %q and naming %s", missing.Name, res, err, want, sandbox.PolyglotImage)
		}
	})

	t.Run("listed while it runs", func(t *testing.T) {
		if !onProcessPath("gcc") {
			t.Skipf("needs gcc in %s on the host", processPath)
		}
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		var wg sync.WaitGroup
		wg.Add(1)
		var res api.CommandResult
		go func() {
			defer wg.Done()
			res, _ = n.ExecuteCode(runCtx, "alice", "s", api.ExecuteCodeRequest{ScriptType: "c",
				Code: "#include <unistd.h>\nint main(void) { sleep(30); return 0; }\n"})
		}()
		testwait.Until(t, 10*time.Second, "the running code in the status", func() bool {
			st, err := n.Status(ctx, "alice", "s")
			return err == nil && st.RunningProcesses == 1 && slices.Equal(st.Processes[0].Command, []string{"multi_code_executor", "c"})
		})
		if res, err := n.CleanupAll(ctx, "alice", false); err != nil || !slices.Equal(res.Skipped, []string{"s"}) {
			t.Errorf("cleanup without force skips a session running code: %+v %v", res, err)
		}
		cancel()
		wg.Wait()
		if res.Status != api.ResultCancelled || !strings.Contains(res.Note, "cancelled") {
			t.Errorf("the cancelled run: %+v", res)
		}
		if st, err := n.Status(ctx, "alice", "s"); err != nil || st.RunningProcesses != 0 {
			t.Errorf("after the run: %+v %v", st, err)
		}
	})
}

// TestNamedSessionsLanguagePolicy: the operator's languages are the ones execute_code takes;
// another is refused (403), an unknown name is a bad request listing what is available, and
// the extension of a language not allowed picks nothing (python runs, as for any unknown
// extension). Without the python script type, python is the language.
func TestNamedSessionsLanguagePolicy(t *testing.T) {
	t.Parallel()
	n, _ := newNamed(t, testenv.Process(t), session.NamedConfig{Languages: []string{"JS", "python"},
		ScriptTypes: map[string]session.ScriptType{"sh": {Extension: ".sh", Argv: []string{"sh", "{file}"}}}})
	none, _ := newNamed(t, testenv.Process(t), session.NamedConfig{Languages: []string{}})
	ctx := t.Context()
	for _, nn := range []*session.Named{n, none} {
		if _, err := nn.Create(ctx, "alice", "s", ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.Config().Languages; !slices.Equal(got, []string{"nodejs", "python"}) {
		t.Errorf("languages in force %q, want nodejs and python", got)
	}
	tests := []struct {
		name   string
		n      *session.Named
		req    api.ExecuteCodeRequest
		target error
		says   []string
	}{
		{"a language not listed", n, api.ExecuteCodeRequest{ScriptType: "c", Code: "int main(void) {}"},
			api.ErrPolicy, []string{`"c" is a multi_code_executor language the operator does not allow`, "script types: sh;", "languages: python, nodejs (their aliases too)"}},
		{"an unknown name", n, api.ExecuteCodeRequest{ScriptType: "cobol", Code: "x"},
			api.ErrBadRequest, []string{`"cobol" is not available`, "script types: sh;", "languages: python, nodejs"}},
		{"no language at all", none, api.ExecuteCodeRequest{ScriptType: "cpp", Code: "int main() {}"},
			api.ErrPolicy, []string{"does not allow", "script types: bash, python, sh;", "multi_code_executor languages: none"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.n.ExecuteCode(ctx, "alice", "s", tc.req)
			wantErr(t, err, tc.target, tc.says...)
		})
	}
	t.Run("the extension of a language not allowed", func(t *testing.T) {
		res, err := none.ExecuteCode(ctx, "alice", "s", api.ExecuteCodeRequest{Filename: "x.c", Code: "print('as python')"})
		if err != nil || res.Stdout != "as python\n" || res.Command[0] != "python3" {
			t.Errorf("%+v %v, want the python script type", res, err)
		}
	})
	t.Run("python as the language", func(t *testing.T) {
		res, err := n.ExecuteCode(ctx, "alice", "s", api.ExecuteCodeRequest{Code: "import os\nprint(os.path.basename(os.getcwd())[:12])"})
		if err != nil || res.Stdout != ".multi_code-\n" || !slices.Equal(res.Command, []string{"multi_code_executor", "python"}) {
			t.Errorf("%+v %v, want python run by multi_code_executor in a directory of its own", res, err)
		}
	})
}

// TestNamedSessionsIdle: a session unused past the idle timeout ends and its sandbox goes,
// but never while a command runs in it; a session whose sandbox another path removed is gone.
func TestNamedSessionsIdle(t *testing.T) {
	t.Parallel()
	idle := 300 * time.Millisecond
	n, m := newNamed(t, testenv.Process(t), session.NamedConfig{IdleTimeout: idle})
	ctx := t.Context()
	if _, err := n.Create(ctx, "alice", "busy", ""); err != nil {
		t.Fatal(err)
	}
	res, err := n.Execute(ctx, "alice", "busy", api.ExecuteRequest{Command: "sleep", Args: []string{"1"}})
	if err != nil || res.Status != api.ResultSuccess {
		t.Fatalf("a command running past the idle timeout is cut: %+v %v", res, err)
	}
	testwait.Until(t, 10*time.Second, "the idle session ended", func() bool {
		return len(n.List("alice")) == 0 && len(m.ListOwned("alice")) == 0
	})
	if _, err := n.Status(ctx, "alice", "busy"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("an expired session answers: %v", err)
	}

	n2, m2 := newNamed(t, testenv.Process(t), session.NamedConfig{})
	if _, err := n2.Create(ctx, "alice", "s", ""); err != nil {
		t.Fatal(err)
	}
	for _, sb := range m2.ListOwned("alice") {
		if err := m2.DeleteOwned(ctx, "alice", sb.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n2.Files(ctx, "alice", "s"); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "sandbox was removed") {
		t.Errorf("a session whose sandbox was removed answers: %v", err)
	}
	if _, err := n2.Create(ctx, "alice", "s", ""); err != nil {
		t.Errorf("its name can be used again: %v", err)
	}
}

// TestIntegrationNamedSessionQuota: the size is a hard limit on the workspace (a tmpfs of
// that size): a file past it fails, leaves nothing behind and says the session is full;
// code that fills it is a result marked session_full; once files are removed the session
// works again.
func TestIntegrationNamedSessionQuota(t *testing.T) {
	engine := testenv.Engine(t)
	testenv.RequireImage(t, engine, sandbox.DefaultImage)
	n, _ := newNamed(t, engine, session.NamedConfig{})
	ctx := t.Context()
	if _, err := n.Create(ctx, "alice", "q", "1M"); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 2<<20)
	_, err := n.Upload(ctx, "alice", "q", "big.bin", big)
	wantErr(t, err, api.ErrNoSpace, `session "q" is full`, "size 1M", "remove files")
	st, err := n.Status(ctx, "alice", "q")
	if err != nil || st.Files != 0 || st.Full || st.SizeBytes != 1<<20 {
		t.Errorf("after a refused write: %+v %v, want no file left and room again", st, err)
	}
	res, err := n.ExecuteCode(ctx, "alice", "q", api.ExecuteCodeRequest{Code: "open('fill', 'wb').write(b'x' * (2 << 20))"})
	if err != nil || res.Status != api.ResultError || !res.SessionFull || !strings.Contains(res.Stderr, "No space left on device") ||
		!strings.Contains(res.Note, "the session is full") {
		t.Fatalf("code filling the session: %+v %v", res, err)
	}
	if st, _ := n.Status(ctx, "alice", "q"); !st.Full || st.UsedBytes < 1<<20-8192 {
		t.Errorf("a filled session's status %+v, want full", st)
	}
	_, err = n.CreateFile(ctx, "alice", "q", api.CreateFileRequest{Filename: "more.txt", Content: strings.Repeat("y", 8192)})
	wantErr(t, err, api.ErrNoSpace, "full")
	if res, err := n.Execute(ctx, "alice", "q", api.ExecuteRequest{Command: "rm", Args: []string{"fill"}}); err != nil || !res.OK() {
		t.Fatalf("rm: %+v %v", res, err)
	}
	if _, err := n.CreateFile(ctx, "alice", "q", api.CreateFileRequest{Filename: "more.txt", Content: "y"}); err != nil {
		t.Errorf("once a file is removed the session works again: %v", err)
	}
	if st, _ := n.Status(ctx, "alice", "q"); st.Full || st.Files != 1 {
		t.Errorf("status after recovery %+v", st)
	}
}

// TestIntegrationNamedSessionLanguages: on Docker, a language whose toolchain the session's
// image lacks (the default python image has no compilers) is a result naming the image that
// has it, never an error; with the polyglot image, when it is built, C compiles and runs,
// a failed build is status error with gcc's messages, and a filename's extension picks C++.
func TestIntegrationNamedSessionLanguages(t *testing.T) {
	engine := testenv.Engine(t)
	testenv.RequireImage(t, engine, sandbox.DefaultImage)
	ctx := t.Context()

	n, _ := newNamed(t, engine, session.NamedConfig{})
	if _, err := n.Create(ctx, "alice", "py", ""); err != nil {
		t.Fatal(err)
	}
	for _, lang := range []string{"rust", "ruby"} {
		l, _ := tools.LanguageByName(lang)
		res, err := n.ExecuteCode(ctx, "alice", "py", api.ExecuteCodeRequest{ScriptType: lang, Code: l.Hello})
		want := "language " + lang + " needs " + toolchain(l)
		if err != nil || res.Status != api.ResultError || res.ExitCode != -1 || !strings.Contains(res.Stderr, want) ||
			!strings.Contains(res.Stderr, sandbox.PolyglotImage) {
			t.Errorf("%s in the python image: %+v %v; want a result saying %q and naming %s", lang, res, err, want, sandbox.PolyglotImage)
		}
	}

	present, err := engine.ImagePresent(ctx, sandbox.PolyglotImage)
	if err != nil {
		t.Fatal(err)
	}
	if !present {
		t.Skipf("image %s is not built (it is optional: make images-polyglot): the toolchains' part is skipped", sandbox.PolyglotImage)
	}
	poly, _ := newNamed(t, engine, session.NamedConfig{Image: sandbox.PolyglotImage})
	if _, err := poly.Create(ctx, "alice", "poly", ""); err != nil {
		t.Fatal(err)
	}
	c, _ := tools.LanguageByName("c")
	cpp, _ := tools.LanguageByName("cpp")
	tests := []struct {
		name   string
		req    api.ExecuteCodeRequest
		status api.ResultStatus
		stdout string
		stderr string
	}{
		{"c", api.ExecuteCodeRequest{ScriptType: "c", Code: c.Hello}, api.ResultSuccess, "hello, world\n", ""},
		{"a failed build", api.ExecuteCodeRequest{ScriptType: "c", Code: "int main(void) { return undefined_name; }\n"},
			api.ResultError, "", "undefined_name"},
		{"the extension picks cpp", api.ExecuteCodeRequest{Filename: "hello.cpp", Code: cpp.Hello}, api.ResultSuccess, "hello, world\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := poly.ExecuteCode(ctx, "alice", "poly", tc.req)
			if err != nil || res.Status != tc.status || res.Stdout != tc.stdout || !strings.Contains(res.Stderr, tc.stderr) ||
				(tc.status == api.ResultError && (!strings.Contains(res.Stderr, "error:") || !strings.Contains(res.Note, "the build failed"))) {
				t.Errorf("%+v %v; want %s, stdout %q, stderr with %q", res, err, tc.status, tc.stdout, tc.stderr)
			}
		})
	}
}
