package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

// noSpaceText is how programs (coreutils, Python's OSError) report ENOSPC.
const noSpaceText = "no space left on device"

// checkCommand refuses a command Execute may not run: anything but a program name from the
// allow-list. The refusal lists what is allowed.
func (n *Named) checkCommand(command string, args []string) error {
	switch {
	case strings.TrimSpace(command) == "":
		return fmt.Errorf("%w: a command is required (one of: %s)", api.ErrBadRequest, strings.Join(n.cfg.AllowedCommands, ", "))
	case !n.allowed[command] && strings.ContainsAny(command, " \t\n"):
		return fmt.Errorf("%w: command %q holds spaces: name the program alone and pass its arguments in args (there is no shell)",
			api.ErrBadRequest, cut(command, 200))
	case !n.allowed[command]:
		return fmt.Errorf("%w: command %q is not allowed; the allowed commands are: %s",
			api.ErrPolicy, cut(command, 200), strings.Join(n.cfg.AllowedCommands, ", "))
	}
	for _, a := range args {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("%w: an argument contains a NUL byte", api.ErrBadRequest)
		}
	}
	return nil
}

// checkTimeout reads a call's timeout in seconds: 0 means the sandbox's default.
func checkTimeout(secs float64) error {
	if secs < 0 || math.IsNaN(secs) || secs > sandbox.DefaultMaxTimeout {
		return fmt.Errorf("%w: timeout %v: want a number of seconds from 0 (the default) to %g", api.ErrBadRequest, secs, sandbox.DefaultMaxTimeout)
	}
	return nil
}

// Execute runs req.Command, a program from the operator's allow-list, with req.Args and no
// shell, in owner's session name, in its workspace. A command that ran is a result, whatever
// its exit; a program the session's image lacks is a result with exit code 127.
func (n *Named) Execute(ctx context.Context, owner, name string, req api.ExecuteRequest) (api.CommandResult, error) {
	if err := n.checkCommand(req.Command, req.Args); err != nil {
		return api.CommandResult{}, err
	}
	if err := checkTimeout(req.Timeout); err != nil {
		return api.CommandResult{}, err
	}
	s, done, err := n.begin(ctx, owner, name)
	if err != nil {
		return api.CommandResult{}, err
	}
	defer done()
	return n.run(ctx, s, append([]string{req.Command}, req.Args...), req.Timeout)
}

// codeKind is how ExecuteCode runs code: a script type of the operator's, or, when lang is
// set, a multi_code_executor language.
type codeKind struct {
	script ScriptType
	lang   *tools.Language
}

// codeKind picks how code runs: the script type named, else the language named (a script
// type of the same name wins); with no name, the script type whose extension the file name
// has, else the first language, in the table's order, whose file has it (go before go_test),
// else python. A language the operator does not allow is refused; an unknown name too,
// listing what is available.
func (n *Named) codeKind(name, filename string) (codeKind, error) {
	if name != "" {
		if st, ok := n.cfg.ScriptTypes[strings.ToLower(name)]; ok {
			return codeKind{script: st}, nil
		}
		if l, ok := tools.LanguageByName(name); ok {
			if !n.langs[l.Name] {
				return codeKind{}, fmt.Errorf("%w: script type %q is a multi_code_executor language the operator does not allow here (%s)",
					api.ErrPolicy, cut(name, 100), n.available())
			}
			return codeKind{lang: &l}, nil
		}
		return codeKind{}, fmt.Errorf("%w: script type %q is not available (%s)", api.ErrBadRequest, cut(name, 100), n.available())
	}
	if ext := path.Ext(filename); ext != "" {
		for _, name := range slices.Sorted(maps.Keys(n.cfg.ScriptTypes)) {
			if n.cfg.ScriptTypes[name].Extension == ext {
				return codeKind{script: n.cfg.ScriptTypes[name]}, nil
			}
		}
		for _, l := range tools.Languages() {
			if n.langs[l.Name] && path.Ext(l.File) == ext {
				return codeKind{lang: &l}, nil
			}
		}
	}
	if st, ok := n.cfg.ScriptTypes[defaultScriptType]; ok {
		return codeKind{script: st}, nil
	}
	if l, ok := tools.LanguageByName(defaultScriptType); ok && n.langs[l.Name] {
		return codeKind{lang: &l}, nil
	}
	return codeKind{}, fmt.Errorf("%w: script_type is required (%s)", api.ErrBadRequest, n.available())
}

// available lists the script types and the allowed languages a script_type may name; a
// language a script type shadows is left out.
func (n *Named) available() string {
	var langs []string
	for _, l := range tools.Languages() {
		if _, shadowed := n.cfg.ScriptTypes[l.Name]; n.langs[l.Name] && !shadowed {
			langs = append(langs, l.Name)
		}
	}
	list := "none"
	if len(langs) > 0 {
		list = strings.Join(langs, ", ") + " (their aliases too)"
	}
	return fmt.Sprintf("script types: %s; multi_code_executor languages: %s", strings.Join(slices.Sorted(maps.Keys(n.cfg.ScriptTypes)), ", "), list)
}

// ExecuteCode saves req.Code and runs it as its script type in owner's session name. With a
// filename the code stays in the workspace under it; without one it runs from a hidden
// file of the workspace, removed afterwards. Either way the file counts against the
// session's size while it exists. Code of a multi_code_executor language runs as that tool
// runs it (see runLanguage); a filename then only keeps a copy.
func (n *Named) ExecuteCode(ctx context.Context, owner, name string, req api.ExecuteCodeRequest) (api.CommandResult, error) {
	kind, err := n.codeKind(req.ScriptType, req.Filename)
	if err != nil {
		return api.CommandResult{}, err
	}
	if strings.TrimSpace(req.Code) == "" {
		return api.CommandResult{}, fmt.Errorf("%w: no code given", api.ErrBadRequest)
	}
	if err := checkTimeout(req.Timeout); err != nil {
		return api.CommandResult{}, err
	}
	file := req.Filename
	if file != "" {
		if file, err = sessionPath(file); err != nil {
			return api.CommandResult{}, err
		}
	}
	s, done, err := n.begin(ctx, owner, name)
	if err != nil {
		return api.CommandResult{}, err
	}
	defer done()
	if file != "" {
		if err := n.saveCode(ctx, s, file, req.Code); err != nil {
			return api.CommandResult{}, err
		}
	}
	if kind.lang != nil {
		return n.runLanguage(ctx, s, *kind.lang, req.Code, file, req.Timeout)
	}
	if file == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		file = ".enclave-code-" + hex.EncodeToString(b[:]) + kind.script.Extension
		if err := n.saveCode(ctx, s, file, req.Code); err != nil {
			return api.CommandResult{}, err
		}
		defer func() {
			_, _ = s.sb.File(context.WithoutCancel(ctx), sandbox.FileRequest{Action: sandbox.FileDelete, Path: file})
		}()
	}
	// "./" keeps a name that starts with "-" from being read as an option.
	argv := make([]string, len(kind.script.Argv))
	for i, a := range kind.script.Argv {
		argv[i] = strings.ReplaceAll(a, "{file}", "./"+file)
	}
	return n.run(ctx, s, argv, req.Timeout)
}

// saveCode writes code as file in s's workspace; a session without room for it keeps no
// part of it and is full (api.ErrNoSpace).
func (n *Named) saveCode(ctx context.Context, s *named, file, code string) error {
	_, err := s.sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileWrite, Path: file, Data: []byte(code)})
	switch {
	case api.CodeOf(err) == api.CodeNoSpace:
		_, _ = s.sb.File(context.WithoutCancel(ctx), sandbox.FileRequest{Action: sandbox.FileDelete, Path: file})
		return n.fullError(ctx, s, "saving the code")
	case err != nil:
		return fmt.Errorf("saving the code as %s: %w", file, err)
	}
	return nil
}

// runLanguage runs code as multi_code_executor runs it in lang, in s: built and run in a
// fresh directory of the workspace (the workspace is its ".."), removed afterwards, with
// the tool's options (the output cap of shell_executor's when they set none). timeout
// bounds the run (0: the sandbox's default); the build has the tool's own. file names the
// code's copy in the workspace, if any. A build that fails is status error with the
// compiler's messages as stderr; a toolchain the image lacks is a result naming the image
// that has it (exit code -1: nothing ran).
func (n *Named) runLanguage(ctx context.Context, s *named, lang tools.Language, code, file string, timeout float64) (api.CommandResult, error) {
	if timeout == 0 {
		timeout = n.core.defaultTimeout(s.sb)
	}
	// What the status lists and the result names: multi_code_executor runs no argv of the
	// client's, and builds before it runs.
	command := []string{"multi_code_executor", lang.Name}
	if file != "" {
		command = append(command, file)
	}
	start := time.Now()
	defer s.track(command, start)()
	opts := n.core.toolOptions(s.sb, "multi_code_executor")
	if _, ok := opts["max_output_bytes"]; !ok {
		if limit, ok := n.core.options["shell_executor"]["max_output_bytes"]; ok {
			opts["max_output_bytes"] = limit
		}
	}
	call := tools.Call{Sandbox: s.sb, Options: opts, DefaultTimeout: n.core.defaultTimeout(s.sb)}
	r, err := tools.ExecuteCode(ctx, call, tools.MultiCodeParams{Language: lang.Name, Code: code, RunTimeout: timeout})
	log := n.log.With("owner", s.key.owner, "session", s.key.name, "language", lang.Name)
	switch {
	case errors.Is(err, tools.ErrInvalidArgs):
		return api.CommandResult{}, fmt.Errorf("%w: %w", api.ErrBadRequest, err)
	case api.CodeOf(err) == api.CodeNoSpace:
		return api.CommandResult{}, n.fullError(ctx, s, "saving the code")
	case err != nil:
		log.Error("session code failed to run", "error", err)
		return api.CommandResult{}, err
	}
	res := languageResult(r, command, timeout, time.Since(start))
	n.markFull(ctx, s, &res)
	log.Info("session code", "status", res.Status, "exit_code", res.ExitCode, "took", time.Since(start).Round(time.Microsecond))
	return res, nil
}

// languageResult turns multi_code_executor's result into a command's: its output is stdout,
// its error (the compiler's messages for a failed build, with the tool's bracketed notes)
// stderr, and the note says what the server saw, as for a command.
func languageResult(r tools.Result, command []string, timeout float64, took time.Duration) api.CommandResult {
	exit := -1 // nothing ran: the toolchain is missing, or the code could not be set up
	switch {
	case r.ExitCode != nil:
		exit = *r.ExitCode
	case r.Status == tools.StatusSuccess:
		exit = 0
	}
	omitted, _ := r.Metadata["omitted_bytes"].(int64)
	res := commandResult(sandbox.ExecResult{
		Stdout: r.Output, Stderr: r.Error, ExitCode: exit, Signal: r.Signal, OOMKilled: r.OOMKilled,
		Truncated: r.Truncated, OmittedBytes: omitted, DurationMS: float64(took.Microseconds()) / 1000,
		TimedOut: r.Status == tools.StatusTimeout, Cancelled: r.Status == tools.StatusCancelled,
	}, command, timeout)
	res.Status = r.Status
	switch {
	case r.Metadata["phase"] == "compile" && r.Status == tools.StatusTimeout:
		res.Note = "the build did not finish within multi_code_executor's compile timeout: it was killed"
	case r.Metadata["phase"] == "compile" && r.Status == tools.StatusError:
		res.Note = "the build failed: the compiler's messages are in stderr"
	case r.Status == tools.StatusCancelled:
		return res // a cancellation says so whatever step it cut short
	case r.ExitCode == nil && r.Status != tools.StatusSuccess:
		res.Note = "the code did not run: stderr says why"
	default:
		return res
	}
	if r.Truncated {
		res.Note = joinNote(res.Note, fmt.Sprintf("output truncated: %d bytes omitted from the middle", omitted))
	}
	return res
}

// run runs argv in s with the output cap of shell_executor's options and the timeout (0:
// the sandbox's default), listed among s's running processes meanwhile.
func (n *Named) run(ctx context.Context, s *named, argv []string, timeout float64) (api.CommandResult, error) {
	if timeout == 0 {
		timeout = n.core.defaultTimeout(s.sb)
	}
	start := time.Now()
	defer s.track(argv, start)()
	req := sandbox.ExecRequest{Argv: argv, TimeoutMS: int64(timeout * 1000), MaxOutputBytes: sandbox.MaxOutputBytes(n.core.options["shell_executor"])}
	r, err := s.sb.Exec(ctx, req, nil)
	log := n.log.With("owner", s.key.owner, "session", s.key.name, "program", argv[0])
	if errors.Is(err, api.ErrNotFound) {
		log.Info("session command not found")
		return api.CommandResult{
			Stderr: argv[0] + ": command not found in the session's image", ExitCode: 127, Status: api.ResultError,
			Command: argv, Note: "the program is not installed in the session's image",
		}, nil
	}
	if err != nil {
		log.Error("session command failed to run", "error", err)
		return api.CommandResult{}, err
	}
	res := commandResult(r, argv, timeout)
	n.markFull(ctx, s, &res)
	log.Info("session command", "status", res.Status, "exit_code", res.ExitCode, "took", time.Since(start).Round(time.Microsecond))
	return res, nil
}

// track lists command among s's running processes (Status shows them; cleanup-all without
// force skips s) until the returned func runs.
func (s *named) track(command []string, start time.Time) (untrack func()) {
	s.mu.Lock()
	s.seq++
	id := s.seq
	s.running[id] = api.SessionProcess{Command: command, StartedAt: start.UTC()}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.running, id)
		s.mu.Unlock()
	}
}

// markFull marks res session_full when its output says a write found no room and s's
// workspace is indeed full.
func (n *Named) markFull(ctx context.Context, s *named, res *api.CommandResult) {
	if !strings.Contains(strings.ToLower(res.Stderr), noSpaceText) && !strings.Contains(strings.ToLower(res.Stdout), noSpaceText) {
		return
	}
	if fs, ok := n.workspaceFS(ctx, s); ok && full(s.size, fs.Avail) {
		res.SessionFull = true
		res.Note = joinNote(res.Note, fmt.Sprintf("the session is full (size %s): remove files to make room", formatSize(s.size)))
	}
}

// commandResult turns a finished process into a result, with ms-enclave's status words: a
// non-zero exit is error, never timeout, which means our timer fired.
func commandResult(r sandbox.ExecResult, argv []string, timeout float64) api.CommandResult {
	res := api.CommandResult{
		Stdout: r.Stdout, Stderr: r.Stderr, ExitCode: r.ExitCode, TimedOut: r.TimedOut, Truncated: r.Truncated,
		Signal: r.Signal, OOMKilled: r.OOMKilled, ExecutionTime: r.DurationMS / 1000, Command: argv,
	}
	switch {
	case r.TimedOut:
		res.Status, res.Note = api.ResultTimeout, fmt.Sprintf("timed out after %gs: the process and everything it started were killed", timeout)
	case r.Stopped:
		res.Status, res.Note = api.ResultError, "the session's sandbox stopped during the command"
	case r.Cancelled:
		res.Status, res.Note = api.ResultCancelled, "cancelled: the process and everything it started were killed"
	case r.OOMKilled:
		res.Status, res.Note = api.ResultError, "killed: out of memory"
	case r.Signal != "":
		res.Status, res.Note = api.ResultError, "killed by "+r.Signal
	case r.ExitCode != 0:
		res.Status = api.ResultError
	default:
		res.Status = api.ResultSuccess
	}
	if r.Truncated {
		res.Note = joinNote(res.Note, fmt.Sprintf("output truncated: %d bytes omitted from the middle", r.OmittedBytes))
	}
	return res
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
