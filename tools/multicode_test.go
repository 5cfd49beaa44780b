package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/schema"
)

// codeSandbox is a sandbox that records what multi_code_executor asks of it and answers
// each program from a script: a program not in missing "runs" and prints its argv.
type codeSandbox struct {
	sandbox.Sandbox // nil: only the methods below may be called

	missing map[string]bool               // programs the image lacks
	answer  map[string]sandbox.ExecResult // by program, instead of printing argv
	// failWrites, when set, is every file write's error.
	failWrites error

	mu      sync.Mutex
	execs   []sandbox.ExecRequest
	written map[string]string // path -> content
	deleted []string
	made    []string
}

func newCodeSandbox() *codeSandbox {
	return &codeSandbox{missing: map[string]bool{}, answer: map[string]sandbox.ExecResult{}, written: map[string]string{}}
}

func (s *codeSandbox) Info() sandbox.Info {
	return sandbox.Info{Type: sandbox.TypeDocker, Metadata: map[string]any{"memory_limit": "1g"}}
}

func (s *codeSandbox) Exec(_ context.Context, req sandbox.ExecRequest, _ func(sandbox.Output)) (sandbox.ExecResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.execs = append(s.execs, req)
	if s.missing[req.Argv[0]] {
		return sandbox.ExecResult{}, &sandbox.AgentError{Code: "not_found", Message: fmt.Sprintf("program %q not found in PATH", req.Argv[0])}
	}
	if r, ok := s.answer[req.Argv[0]]; ok {
		return r, nil
	}
	return sandbox.ExecResult{Stdout: strings.Join(req.Argv, " ") + "\n", DurationMS: 2}, nil
}

func (s *codeSandbox) File(_ context.Context, req sandbox.FileRequest) (sandbox.FileResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := req.Path
	if !path.IsAbs(p) {
		p = path.Join("/sandbox", p)
	}
	switch req.Action {
	case sandbox.FileMkdir:
		s.made = append(s.made, p)
	case sandbox.FileWrite:
		if s.failWrites != nil {
			return sandbox.FileResult{}, s.failWrites
		}
		s.written[p] = string(req.Data)
	case sandbox.FileDelete:
		s.deleted = append(s.deleted, p)
	}
	return sandbox.FileResult{Path: p}, nil
}

// runCode invokes multi_code_executor with args in sb.
func runCode(t *testing.T, sb sandbox.Sandbox, args string) (Result, error) {
	t.Helper()
	return multiCodeExecutor().Invoke(t.Context(), Call{Sandbox: sb, DefaultTimeout: 30}, json.RawMessage(args))
}

// TestLanguageTable checks the table every API takes its language names from.
func TestLanguageTable(t *testing.T) {
	t.Parallel()
	name := regexp.MustCompile(`^[a-z0-9_]+$`)
	var polyglot string
	for _, spec := range sandbox.OptionalImageSpecs("") {
		if spec.Tag == sandbox.PolyglotImage {
			polyglot = strings.Join(append(spec.Include, spec.Setup...), " ")
		}
	}
	if polyglot == "" {
		t.Fatalf("no image spec for %s", sandbox.PolyglotImage)
	}
	seen := map[string]string{}
	for _, l := range Languages() {
		t.Run(l.Name, func(t *testing.T) {
			if !name.MatchString(l.Name) {
				t.Errorf("name %q must be ms-enclave's lower-case form", l.Name)
			}
			for _, n := range append([]string{l.Name}, l.Aliases...) {
				// Case variants ("r", "R") are listed for the schema's enum, which is exact.
				if other, dup := seen[strings.ToLower(n)]; dup && other != l.Name {
					t.Errorf("name %q also names %s", n, other)
				}
				seen[strings.ToLower(n)] = l.Name
				if _, ok := unsupportedLanguages[strings.ToLower(n)]; ok {
					t.Errorf("%q is both supported and listed as unsupported", n)
				}
				got, ok := LanguageByName(" " + strings.ToUpper(n) + " ")
				if !ok || got.Name != l.Name {
					t.Errorf("LanguageByName(%q) = %q, %v", strings.ToUpper(n), got.Name, ok)
				}
			}
			if l.File == "" || len(l.Run) == 0 {
				t.Errorf("needs a file and a run command: %+v", l)
			}
			for _, argv := range [][]string{l.Compile, l.Run} {
				if len(argv) > 0 && strings.ContainsAny(argv[0], " {") {
					t.Errorf("argv[0] %q must be a program name: it is what says the toolchain is missing", argv[0])
				}
			}
			if len(l.Packages) == 0 {
				t.Error("must name the Debian packages that carry it")
			}
			for _, p := range l.Packages {
				if !regexp.MustCompile(`(^|[\s,])`+regexp.QuoteMeta(p)+`($|[\s,])`).MatchString(polyglot) &&
					!slices.Contains([]string{"bash", "gcc", "perl"}, p) { // in every Debian base, or pulled in by g++
					t.Errorf("package %s is not installed in %s", p, sandbox.PolyglotImage)
				}
			}
		})
	}
	if _, ok := LanguageByName("julia"); ok {
		t.Error("julia is not packaged; it must not be in the table")
	}
}

// TestLanguageEnumMatchesTable: the schema's enum (a struct tag) lists exactly the names
// the table answers to, in its order.
func TestLanguageEnumMatchesTable(t *testing.T) {
	t.Parallel()
	s, err := schema.Reflect(&MultiCodeParams{})
	if err != nil {
		t.Fatal(err)
	}
	prop, ok := s.Properties.Get("language")
	if !ok {
		t.Fatal("no language property")
	}
	var enum []string
	for _, v := range prop.Enum {
		enum = append(enum, v.(string))
	}
	if want := LanguageNames(); !slices.Equal(enum, want) {
		t.Errorf("enum = %v\nwant   %v (LanguageNames)", enum, want)
	}
	if req, _ := schema.Required(&MultiCodeParams{}); !slices.Equal(req, []string{"language", "code"}) {
		t.Errorf("required = %v, want ms-enclave's [language code]", req)
	}
}

// TestMultiCodeRefusesBadArguments: what needs no sandbox fails before touching one.
func TestMultiCodeRefusesBadArguments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, args string
		want       string
		argErr     bool // an *ArgError, not a result
	}{
		{"unknown language lists the valid ones", `{"language":"cobol","code":"x"}`, `unknown language "cobol"; supported languages: python, pytest`, true},
		{"not packaged says so", `{"language":"julia","code":"x"}`, `language "julia" is not supported: Debian does not package Julia`, true},
		{"gpu says so", `{"language":"cuda","code":"x"}`, "needs a GPU", true},
		{"missing language", `{"code":"x"}`, `missing required parameter "language"`, true},
		{"empty code", `{"language":"python","code":"  "}`, "No code provided", false},
		{"files escaping the directory", `{"language":"python","code":"x","files":{"../x":"y"}}`, `file name "../x" must be relative`, true},
		{"absolute file name", `{"language":"python","code":"x","files":[{"name":"/etc/x","content":"y"}]}`, `file name "/etc/x" must be relative`, true},
		{"empty file name", `{"language":"python","code":"x","files":{"":"y"}}`, "empty", true},
		{"files of the wrong type", `{"language":"python","code":"x","files":"a.txt"}`, `parameter "files" must be an object of file name to content`, true},
		{"file content not text", `{"language":"python","code":"x","files":{"a":1}}`, `parameter "files" must be an object`, true},
		{"array entry with an unknown key", `{"language":"python","code":"x","files":[{"name":"a","content":"b","mode":1}]}`, `parameter "files" must be`, true},
		{"a name twice in the array", `{"language":"python","code":"x","files":[{"name":"a","content":""},{"name":"a","content":""}]}`, `names "a" twice`, true},
		{"negative run timeout", `{"language":"python","code":"x","run_timeout":-1}`, "timeout must be a positive number", true},
		{"compile timeout over the maximum", `{"language":"cpp","code":"x","compile_timeout":4000}`, "over the 3600s maximum", true},
		{"timeout as a string", `{"language":"python","code":"x","run_timeout":"5"}`, `parameter "run_timeout" must be a number`, true},
		{"scala without an object", `{"language":"scala","code":"class A"}`, "no object found in the Scala code", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := runCode(t, nil, tc.args) // a nil sandbox: touching it panics
			got := res.Error
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if tc.argErr != errors.Is(err, ErrInvalidArgs) {
				t.Errorf("err = %v; want an ArgError: %v", err, tc.argErr)
			}
			if !tc.argErr && res.Status != StatusError {
				t.Errorf("status = %s, want error", res.Status)
			}
		})
	}
}

// TestMultiCodeCommands: what each call writes and runs, placeholders filled in.
func TestMultiCodeCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		args        string
		wantFiles   map[string]string // relative to the run's directory
		wantCompile string            // argv joined; "" means no build step
		wantRun     string
		wantEnv     string // an entry, {dir} for the run's directory
	}{
		{
			name:      "python runs its file",
			args:      `{"language":"python","code":"print(1)"}`,
			wantFiles: map[string]string{"main.py": "print(1)"},
			wantRun:   "python3 main.py",
			wantEnv:   "HOME={dir}",
		},
		{
			name:        "cpp compiles every .cpp given, sorted, after the code",
			args:        `{"language":"cpp","code":"int main(){}","files":{"z.cpp":"z","a.cpp":"a","a.h":"h"}}`,
			wantFiles:   map[string]string{"main.cpp": "int main(){}", "a.cpp": "a", "z.cpp": "z", "a.h": "h"},
			wantCompile: "g++ -std=c++17 -O2 -o main main.cpp a.cpp z.cpp",
			wantRun:     "./main",
		},
		{
			name:        "java names the file after the public class",
			args:        `{"language":"java","code":"public final class Solution { public static void main(String[] a) {} }"}`,
			wantFiles:   map[string]string{"Solution.java": "public final class Solution { public static void main(String[] a) {} }"},
			wantCompile: "javac -encoding UTF-8 -J-XX:+UseSerialGC -J-XX:-UsePerfData -J-XX:TieredStopAtLevel=1 Solution.java",
			wantRun:     "java -ea -XX:+UseSerialGC -XX:-UsePerfData -cp . Solution",
		},
		{
			name:        "java without a public class is Main",
			args:        `{"language":"java","code":"class Main { public static void main(String[] a) {} }"}`,
			wantFiles:   map[string]string{"Main.java": "class Main { public static void main(String[] a) {} }"},
			wantCompile: "javac -encoding UTF-8 -J-XX:+UseSerialGC -J-XX:-UsePerfData -J-XX:TieredStopAtLevel=1 Main.java",
			wantRun:     "java -ea -XX:+UseSerialGC -XX:-UsePerfData -cp . Main",
		},
		{
			name:        "junit without a main runs the tests",
			args:        `{"language":"junit","code":"public class CalcTest { @Test public void t() {} }"}`,
			wantFiles:   map[string]string{"CalcTest.java": "public class CalcTest { @Test public void t() {} }"},
			wantCompile: "javac -encoding UTF-8 -J-XX:+UseSerialGC -J-XX:-UsePerfData -J-XX:TieredStopAtLevel=1 -cp " + junitClassPath + " CalcTest.java",
			wantRun:     "java -ea -XX:+UseSerialGC -XX:-UsePerfData -cp " + junitClassPath + " org.junit.runner.JUnitCore CalcTest",
		},
		{
			name:        "go gets a module of its own",
			args:        `{"language":"go","code":"package main"}`,
			wantFiles:   map[string]string{"main.go": "package main", "go.mod": goMod},
			wantCompile: "go build -o main .",
			wantRun:     "./main",
			wantEnv:     "GOCACHE=/sandbox/.cache/go-build",
		},
		{
			name:      "a go.mod of the call wins",
			args:      `{"language":"go_test","code":"package main","files":{"go.mod":"module x\n"}}`,
			wantFiles: map[string]string{"main_test.go": "package main", "go.mod": "module x\n"},
			wantRun:   "go test .",
		},
		{
			name:      "the code wins over a file of its name; subdirectories are kept",
			args:      `{"language":"bash","code":"echo code","files":[{"name":"main.sh","content":"echo file"},{"name":"lib/./util.sh","content":"u"}]}`,
			wantFiles: map[string]string{"main.sh": "echo code", "lib/util.sh": "u"},
			wantRun:   "bash main.sh",
		},
		{
			name:        "scala runs its object",
			args:        `{"language":"scala","code":"object Hello { def main(a: Array[String]) = () }"}`,
			wantFiles:   map[string]string{"Main.scala": "object Hello { def main(a: Array[String]) = () }"},
			wantCompile: "scalac -J-XX:+UseSerialGC -J-XX:-UsePerfData -J-XX:TieredStopAtLevel=1 -d . Main.scala",
			wantRun:     "java -XX:+UseSerialGC -XX:-UsePerfData -cp /usr/share/java/scala-library.jar:. Hello",
		},
		{
			name:        "SandboxFusion's names are aliases",
			args:        `{"language":"typescript","code":"let x: number = 1"}`,
			wantFiles:   map[string]string{"main.ts": "let x: number = 1"},
			wantCompile: "tsc --pretty false --target es2020 --module commonjs --lib es2020 --typeRoots /usr/share/nodejs/@types --types node --skipLibCheck main.ts",
			wantRun:     "node main.js",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sb := newCodeSandbox()
			res, err := runCode(t, sb, tc.args)
			if err != nil || res.Status != StatusSuccess {
				t.Fatalf("= %+v, %v", res, err)
			}
			if len(sb.made) != 1 || !strings.HasPrefix(sb.made[0], "/sandbox/"+runDirPrefix) {
				t.Fatalf("run directories made: %v, want one fresh one in the workspace", sb.made)
			}
			dir := sb.made[0]
			if !slices.Equal(sb.deleted, []string{dir}) {
				t.Errorf("deleted %v, want the run directory %s", sb.deleted, dir)
			}
			got := map[string]string{}
			for p, c := range sb.written {
				rel, ok := strings.CutPrefix(p, dir+"/")
				if !ok {
					t.Errorf("wrote %s, outside the run directory", p)
				}
				got[rel] = c
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantFiles) {
				t.Errorf("files = %v, want %v", got, tc.wantFiles)
			}
			var argvs []string
			for _, e := range sb.execs {
				argvs = append(argvs, strings.Join(e.Argv, " "))
				if e.Dir != dir {
					t.Errorf("%v ran in %q, want %q", e.Argv, e.Dir, dir)
				}
				if tc.wantEnv != "" && !slices.Contains(e.Env, strings.ReplaceAll(tc.wantEnv, "{dir}", dir)) {
					t.Errorf("env %v lacks %s", e.Env, tc.wantEnv)
				}
			}
			want := []string{tc.wantRun}
			if tc.wantCompile != "" {
				want = []string{tc.wantCompile, tc.wantRun}
			}
			if !slices.Equal(argvs, want) {
				t.Errorf("ran %q\nwant %q", argvs, want)
			}
			if res.Metadata["language"] == nil {
				t.Errorf("metadata lacks the language: %v", res.Metadata)
			}
		})
	}
}

// TestMultiCodeOutcomes: how a build's and a run's outcomes become the result.
func TestMultiCodeOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       string
		setup      func(s *codeSandbox)
		wantStatus Status
		wantOutput string // exact
		wantError  string // substring
		wantRuns   int    // processes started
	}{
		{
			name: "compile errors are the error, with messages from stdout and stderr",
			args: `{"language":"ts","code":"let x: number = 'a'"}`,
			setup: func(s *codeSandbox) {
				s.answer["tsc"] = sandbox.ExecResult{ExitCode: 2, Stdout: "main.ts(1,5): error TS2322: Type 'string' is not assignable to type 'number'.\n", Stderr: "more\n"}
			},
			wantStatus: StatusError,
			wantError:  "main.ts(1,5): error TS2322: Type 'string' is not assignable to type 'number'.\nmore\n[exit code 2]\n[compilation failed]",
			wantRuns:   1,
		},
		{
			name: "a build past compile_timeout is a timeout that says so",
			args: `{"language":"rust","code":"fn main(){}","compile_timeout":0.5}`,
			setup: func(s *codeSandbox) {
				s.answer["rustc"] = sandbox.ExecResult{ExitCode: -1, Signal: "SIGKILL", TimedOut: true}
			},
			wantStatus: StatusTimeout,
			wantError:  "did not finish within compile_timeout (0.5s)",
			wantRuns:   1,
		},
		{
			name:       "a built program's output follows the compiler's",
			args:       `{"language":"c","code":"int main(){}"}`,
			setup:      func(s *codeSandbox) { s.answer["gcc"] = sandbox.ExecResult{Stdout: "note\n", Stderr: "warning: x\n"} },
			wantStatus: StatusSuccess,
			wantOutput: "note\n./main\n",
			wantRuns:   2,
		},
		{
			name:       "a run that fails is an error with its exit code",
			args:       `{"language":"python","code":"raise SystemExit(3)"}`,
			setup:      func(s *codeSandbox) { s.answer["python3"] = sandbox.ExecResult{ExitCode: 3, Stderr: "boom\n"} },
			wantStatus: StatusError,
			wantError:  "boom\n[exit code 3]",
			wantRuns:   1,
		},
		{
			name:       "a compiler the image lacks names the image to use",
			args:       `{"language":"rust","code":"fn main(){}"}`,
			setup:      func(s *codeSandbox) { s.missing["rustc"] = true },
			wantStatus: StatusError,
			wantError:  "language rust needs rustc (Debian package rustc), which this sandbox's image does not have; use the image " + sandbox.PolyglotImage,
			wantRuns:   1,
		},
		{
			name:       "an interpreter the image lacks too",
			args:       `{"language":"R","code":"cat(1)"}`,
			setup:      func(s *codeSandbox) { s.missing["Rscript"] = true },
			wantStatus: StatusError,
			wantError:  "language r needs Rscript (Debian package r-base-core)",
			wantRuns:   1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sb := newCodeSandbox()
			tc.setup(sb)
			res, err := runCode(t, sb, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.wantStatus || res.Output != tc.wantOutput || !strings.Contains(res.Error, tc.wantError) {
				t.Errorf("status %s output %q error %q\nwant %s %q %q", res.Status, res.Output, res.Error, tc.wantStatus, tc.wantOutput, tc.wantError)
			}
			if len(sb.execs) != tc.wantRuns {
				t.Errorf("%d processes, want %d", len(sb.execs), tc.wantRuns)
			}
			if len(sb.made) != 1 || !slices.Equal(sb.deleted, sb.made) {
				t.Errorf("made %v, deleted %v: the run directory must go whatever happened", sb.made, sb.deleted)
			}
		})
	}
}

// TestMultiCodeCleansUpWhenCancelled: a cancelled call still removes its directory.
func TestMultiCodeCleansUpWhenCancelled(t *testing.T) {
	t.Parallel()
	sb := newCodeSandbox()
	sb.answer["python3"] = sandbox.ExecResult{ExitCode: -1, Signal: "SIGKILL", Cancelled: true}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res, err := multiCodeExecutor().Invoke(ctx, Call{Sandbox: sb}, json.RawMessage(`{"language":"python","code":"1"}`))
	if err != nil || res.Status != StatusCancelled {
		t.Fatalf("= %+v, %v", res, err)
	}
	if len(sb.deleted) != 1 {
		t.Errorf("deleted %v, want the run directory", sb.deleted)
	}
}

// TestMultiCodeCancelledDuringTheBuild: a build the caller cancels is a cancelled call, not
// the compiler's failure, and a cancel that lands before a step starts is cancelled too.
func TestMultiCodeCancelledDuringTheBuild(t *testing.T) {
	t.Parallel()
	t.Run("the build is cut short", func(t *testing.T) {
		t.Parallel()
		sb := newCodeSandbox()
		sb.answer["gcc"] = sandbox.ExecResult{ExitCode: -1, Signal: "SIGKILL", Cancelled: true}
		res, err := multiCodeExecutor().Invoke(t.Context(), Call{Sandbox: sb}, json.RawMessage(`{"language":"c","code":"int main(void){return 0;}"}`))
		if err != nil || res.Status != StatusCancelled || strings.Contains(res.Error, "compilation failed") {
			t.Fatalf("= %+v, %v; want cancelled, not a failed build", res, err)
		}
	})
	t.Run("cancelled before anything ran", func(t *testing.T) {
		t.Parallel()
		sb := newCodeSandbox()
		sb.failWrites = context.Canceled
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		res, err := multiCodeExecutor().Invoke(ctx, Call{Sandbox: sb}, json.RawMessage(`{"language":"c","code":"int main(void){return 0;}"}`))
		if err != nil || res.Status != StatusCancelled {
			t.Fatalf("= %+v, %v; want a cancelled result", res, err)
		}
	})
}
