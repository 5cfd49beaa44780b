package tools

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// MultiCodeParams are multi_code_executor's parameters (ms-enclave's names).
type MultiCodeParams struct {
	Language string `json:"language" jsonschema:"enum=python,enum=pytest,enum=bash,enum=c,enum=cpp,enum=csharp,enum=go,enum=go_test,enum=java,enum=junit,enum=nodejs,enum=js,enum=javascript,enum=ts,enum=typescript,enum=jest,enum=rust,enum=php,enum=ruby,enum=perl,enum=lua,enum=r,enum=R,enum=d_ut,enum=D_ut,enum=scala,enum=kotlin_script,enum=verilog,enum=racket,enum=sql" jsonschema_description:"The language of code. python: python3. pytest: pytest on test_main.py. bash. c: gcc -O2. cpp: g++ -std=c++17 -O2. csharp: Mono's mcs. go: go build. go_test: go test. java and junit: javac then java (junit puts JUnit 4 on the class path and runs the tests when the class has no main). nodejs. ts: tsc (type errors fail) then node. jest: TypeScript tests with ts-jest. rust: rustc -O edition 2021. php. ruby. perl. lua: Lua 5.4. r: Rscript. d_ut: ldc2 -unittest. scala: scalac then scala. kotlin_script: kotlinc -script. verilog: iverilog -g2012 with top module tb then vvp. racket. sql: sqlite3 on an in-memory database."`
	Code     string `json:"code" jsonschema_description:"The program's source, saved as the language's main file (main.py, main.cpp, Main.java or the public class's name, main.go, ...) in a fresh directory that is removed afterwards."`
	Files    Files  `json:"files,omitempty" jsonschema_description:"Other files written beside the code before it is built: file name (relative; subdirectories allowed) to text content. Sources with the code's extension are compiled with it. Sent as an object {name: content} (ms-enclave's form) or as an array of {name, content}."`
	// CompileTimeout and RunTimeout are seconds, as every timeout here.
	CompileTimeout float64 `json:"compile_timeout,omitempty" jsonschema_description:"Seconds the build may take before it is killed. Fractions are allowed. Default 60."`
	RunTimeout     float64 `json:"run_timeout,omitempty" jsonschema_description:"Seconds the program may run before it, and every process it started, is killed. Fractions are allowed. Default 30."`
}

// defaultCompileTimeout bounds a build when the call gives no compile_timeout: JVM-based
// compilers take several seconds on a loaded machine.
const defaultCompileTimeout = 60

// Files are the extra files of a call, by name. They decode from ms-enclave's object
// ({"name": "content"}) or from an array of {name, content} objects, the form OpenAI's
// strict mode can express (it has no maps).
type Files map[string]string

// fileEntry is one file in the array form.
type fileEntry struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// UnmarshalJSON accepts an object of name to content, an array of {name, content}, or null.
func (f *Files) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var list []fileEntry
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&list); err != nil {
			return errors.New(`parameter "files" must be an object of file name to content, or an array of {"name", "content"} objects`)
		}
		m := make(Files, len(list))
		for _, e := range list {
			if _, dup := m[e.Name]; dup {
				return fmt.Errorf(`parameter "files" names %q twice`, e.Name)
			}
			m[e.Name] = e.Content
		}
		*f = m
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return errors.New(`parameter "files" must be an object of file name to content, or an array of {"name", "content"} objects`)
	}
	*f = m
	return nil
}

// JSONSchema is the array form: OpenAI's strict mode, which every tool is exported in,
// cannot express a map. The object form is accepted all the same (see UnmarshalJSON).
func (Files) JSONSchema() *jsonschema.Schema {
	props := jsonschema.NewProperties()
	props.Set("name", &jsonschema.Schema{Type: "string", Description: "File name, relative to the code's directory."})
	props.Set("content", &jsonschema.Schema{Type: "string", Description: "The file's text."})
	return &jsonschema.Schema{Type: "array", Items: &jsonschema.Schema{
		Type:                 "object",
		Properties:           props,
		Required:             []string{"name", "content"},
		AdditionalProperties: jsonschema.FalseSchema,
	}}
}

func multiCodeExecutor() Def {
	return New(Def{
		Name: "multi_code_executor",
		Description: "Compile and run a program in one of many languages (C, C++, Go, Java, Rust, TypeScript, C#, " +
			"Scala, ... and test runners: pytest, go_test, junit, jest) in an isolated sandbox, and return what " +
			"it prints. A build that fails returns the compiler's messages as the error. Each call builds in a " +
			"fresh directory that is removed afterwards; files in the workspace stay readable by absolute path. " +
			"The toolchains are those of the " + sandbox.PolyglotImage + " image; other images run only what " +
			"they carry (python and bash everywhere). No network access; memory, CPU, processes and time are limited.",
		Sandbox:     sandbox.TypeDocker,
		Destructive: true,
	}, ExecuteCode)
}

// ExecuteCode runs p in call's sandbox: it writes the code and files to a fresh directory
// under the workspace, builds them when the language has a build step (a failed build is
// status error with the compiler's messages as the error), runs the program, and removes
// the directory. Bad arguments (an unknown language, a file name outside the directory)
// are an *ArgError; a language whose toolchain the image lacks is a result saying which
// image has it. It is multi_code_executor's handler, and serves any API that runs code by
// language name (see Languages).
func ExecuteCode(ctx context.Context, call Call, p MultiCodeParams) (Result, error) {
	res, err := executeCode(ctx, call, p)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrInvalidArgs) {
		// A file write or a step's start cut short by the caller: the call was cancelled,
		// wherever it was.
		return Result{Status: StatusCancelled, Error: "cancelled: " + context.Cause(ctx).Error()}, nil
	}
	return res, err
}

func executeCode(ctx context.Context, call Call, p MultiCodeParams) (Result, error) {
	const tool = "multi_code_executor"
	lang, ok := LanguageByName(p.Language)
	if !ok {
		return Result{}, languageError(tool, p.Language)
	}
	if strings.TrimSpace(p.Code) == "" {
		return failure("No code provided"), nil
	}
	compileTimeout, err := timeoutOf(tool, p.CompileTimeout, defaultCompileTimeout)
	if err != nil {
		return Result{}, err
	}
	runTimeout, err := timeoutOf(tool, p.RunTimeout, call.DefaultTimeout)
	if err != nil {
		return Result{}, err
	}
	plan, err := planRun(lang, p.Code, p.Files)
	if err != nil {
		return Result{}, argErrorf(tool, "%v", err)
	}
	if plan.fail != "" {
		return failure(plan.fail), nil
	}

	dir, err := makeRunDir(ctx, call.Sandbox)
	if err != nil {
		return fromSandboxError(err)
	}
	defer removeRunDir(ctx, call.Sandbox, dir)
	for _, f := range plan.files {
		if _, err := call.Sandbox.File(ctx, sandbox.FileRequest{Action: sandbox.FileWrite, Path: path.Join(dir, f.Name), Data: []byte(f.Content)}); err != nil {
			return fromSandboxError(fmt.Errorf("writing %s: %w", f.Name, err))
		}
	}
	env := make([]string, len(plan.env))
	for i, kv := range plan.env {
		env[i] = strings.NewReplacer("{dir}", dir, "{workspace}", path.Dir(dir)).Replace(kv)
	}

	meta := map[string]any{"language": lang.Name}
	var compiled Result
	if plan.compile != nil {
		compiled, err = runStep(ctx, call, plan.compile, env, dir, compileTimeout)
		if err != nil {
			return stepFailed(lang, plan.compile[0], err)
		}
		meta["compile_time"] = compiled.ExecutionTime
		if compiled.Status == StatusCancelled {
			return compiled, nil // the caller stopped the build: not the compiler's failure
		}
		if compiled.Status != StatusSuccess {
			return compileFailed(compiled, meta, compileTimeout), nil
		}
	}
	res, err := runStep(ctx, call, plan.run, env, dir, runTimeout)
	if err != nil {
		return stepFailed(lang, plan.run[0], err)
	}
	meta["run_time"] = res.ExecutionTime
	if plan.compile != nil {
		res.Output = joinNonEmpty(compiled.Output, res.Output)
		if compiled.Error != "" {
			meta["compile_error"] = compiled.Error
		}
	}
	for k, v := range meta {
		res.Metadata[k] = v
	}
	// The call's whole time, build included, as ms-enclave reports it (Bind measures it).
	res.ExecutionTime = 0
	return res, nil
}

// runPlan is one call's files and commands, placeholders filled in.
type runPlan struct {
	files        []fileEntry // the code last: it wins over a file of the same name
	compile, run []string
	env          []string
	fail         string // set when the code cannot be run as given (no Scala object)
}

// planRun fills in lang's placeholders for code and files, and checks the file names.
func planRun(lang Language, code string, files Files) (runPlan, error) {
	main := "Main"
	if lang.entry != nil {
		m, err := lang.entry(code)
		if err != nil {
			return runPlan{fail: err.Error()}, nil
		}
		main = m
	}
	codeFile := strings.ReplaceAll(lang.File, "{main}", main)
	var plan runPlan
	for _, name := range slices.Sorted(maps.Keys(files)) {
		clean, err := relativeName(name)
		if err != nil {
			return runPlan{}, err
		}
		plan.files = append(plan.files, fileEntry{Name: clean, Content: files[name]})
	}
	for _, name := range slices.Sorted(maps.Keys(lang.Files)) {
		if _, given := files[name]; !given && name != codeFile {
			plan.files = append(plan.files, fileEntry{Name: name, Content: lang.Files[name]})
		}
	}
	plan.files = append(plan.files, fileEntry{Name: codeFile, Content: code})

	sources := []string{codeFile}
	for _, f := range plan.files[:len(plan.files)-1] {
		if f.Name != codeFile && path.Ext(f.Name) == path.Ext(codeFile) {
			sources = append(sources, f.Name)
		}
	}
	run := lang.Run
	if lang.runTests != nil && !javaMainRE.MatchString(code) {
		run = lang.runTests(code)
	}
	plan.compile = expandArgv(lang.Compile, main, sources)
	plan.run = expandArgv(run, main, sources)
	plan.env = append(slices.Clone(runEnv), lang.Env...)
	return plan, nil
}

// relativeName checks that a file name of the call stays inside the run's directory.
func relativeName(name string) (string, error) {
	clean := path.Clean(name)
	switch {
	case name == "" || strings.ContainsRune(name, 0):
		return "", fmt.Errorf("file name %q is empty or holds a NUL byte", name)
	case path.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../"):
		return "", fmt.Errorf("file name %q must be relative and stay inside the code's directory", name)
	}
	return clean, nil
}

// expandArgv fills in "{main}" and "{sources}"; nil stays nil.
func expandArgv(argv []string, main string, sources []string) []string {
	if argv == nil {
		return nil
	}
	out := make([]string, 0, len(argv)+len(sources))
	for _, a := range argv {
		if a == "{sources}" {
			out = append(out, sources...)
			continue
		}
		out = append(out, strings.ReplaceAll(a, "{main}", main))
	}
	return out
}

// runStep runs one step (the build or the run) in dir.
func runStep(ctx context.Context, call Call, argv, env []string, dir string, timeout float64) (Result, error) {
	req := sandbox.ExecRequest{Argv: argv, Env: env, Dir: dir, TimeoutMS: int64(math.Ceil(timeout * 1000))}
	return runRequest(ctx, call, req, timeout)
}

// stepFailed turns a step that could not start into a result: a program missing from the
// image is a result naming the image that has it; an engine failure stays a Go error.
func stepFailed(lang Language, program string, err error) (Result, error) {
	if errors.Is(err, sandbox.ErrNotFound) {
		return missingToolchain(lang, program), nil
	}
	return fromSandboxError(err)
}

// compileFailed is the result of a build that did not succeed: the compiler's messages
// (some print them on stdout) are the error, the note says it was the build.
func compileFailed(res Result, meta map[string]any, timeout float64) Result {
	msg := joinNonEmpty(strings.TrimRight(res.Output, "\n"), res.Error)
	res.Output = ""
	if res.Status == StatusTimeout {
		res.Error = withNotes(msg, []string{fmt.Sprintf("the build did not finish within compile_timeout (%gs)", timeout)})
	} else {
		res.Error = withNotes(msg, []string{"compilation failed"})
	}
	meta["phase"] = "compile"
	for k, v := range meta {
		res.Metadata[k] = v
	}
	res.ExecutionTime = 0
	return res
}

// joinNonEmpty puts b on the line after a, leaving out whichever is empty.
func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return joinLines(a, b)
}

// runDirPrefix names the directories calls run in, in the workspace.
const runDirPrefix = ".multi_code-"

// makeRunDir creates a fresh directory for one call in the workspace and returns its
// absolute path.
func makeRunDir(ctx context.Context, sb sandbox.Sandbox) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("naming the run directory: %w", err)
	}
	r, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileMkdir, Path: runDirPrefix + hex.EncodeToString(b[:])})
	if err != nil {
		return "", fmt.Errorf("creating the run directory: %w", err)
	}
	return r.Path, nil
}

// removeRunDir removes a call's directory, even when the call was cancelled. A failure
// leaves a directory behind in the workspace and nothing else, so it is not reported.
func removeRunDir(ctx context.Context, sb sandbox.Sandbox, dir string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, _ = sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileDelete, Path: dir, Recursive: true})
}
