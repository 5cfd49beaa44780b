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

// scriptType picks the script type of code: the one named, else the one whose extension
// the file name has, else python.
func (n *Named) scriptType(name, filename string) (ScriptType, error) {
	names := slices.Sorted(maps.Keys(n.cfg.ScriptTypes))
	if name != "" {
		if st, ok := n.cfg.ScriptTypes[strings.ToLower(name)]; ok {
			return st, nil
		}
		return ScriptType{}, fmt.Errorf("%w: script type %q is not available (available: %s)", api.ErrBadRequest, cut(name, 100), strings.Join(names, ", "))
	}
	if ext := path.Ext(filename); ext != "" {
		for _, name := range names {
			if n.cfg.ScriptTypes[name].Extension == ext {
				return n.cfg.ScriptTypes[name], nil
			}
		}
	}
	if st, ok := n.cfg.ScriptTypes[defaultScriptType]; ok {
		return st, nil
	}
	return ScriptType{}, fmt.Errorf("%w: script_type is required (available: %s)", api.ErrBadRequest, strings.Join(names, ", "))
}

// ExecuteCode saves req.Code and runs it as its script type in owner's session name. With a
// filename the code stays in the workspace under it; without one it runs from a hidden
// file of the workspace, removed afterwards. Either way the file counts against the
// session's size while it exists.
func (n *Named) ExecuteCode(ctx context.Context, owner, name string, req api.ExecuteCodeRequest) (api.CommandResult, error) {
	st, err := n.scriptType(req.ScriptType, req.Filename)
	if err != nil {
		return api.CommandResult{}, err
	}
	if strings.TrimSpace(req.Code) == "" {
		return api.CommandResult{}, fmt.Errorf("%w: no code given", api.ErrBadRequest)
	}
	if err := checkTimeout(req.Timeout); err != nil {
		return api.CommandResult{}, err
	}
	file, temporary := req.Filename, req.Filename == ""
	if temporary {
		var b [6]byte
		_, _ = rand.Read(b[:])
		file = ".enclave-code-" + hex.EncodeToString(b[:]) + st.Extension
	} else if file, err = sessionPath(file); err != nil {
		return api.CommandResult{}, err
	}
	s, done, err := n.begin(ctx, owner, name)
	if err != nil {
		return api.CommandResult{}, err
	}
	defer done()
	if _, err := s.sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileWrite, Path: file, Data: []byte(req.Code)}); err != nil {
		if api.CodeOf(err) == api.CodeNoSpace {
			_, _ = s.sb.File(context.WithoutCancel(ctx), sandbox.FileRequest{Action: sandbox.FileDelete, Path: file})
			return api.CommandResult{}, n.fullError(ctx, s, "saving the code")
		}
		return api.CommandResult{}, fmt.Errorf("saving the code as %s: %w", file, err)
	}
	if temporary {
		defer func() {
			_, _ = s.sb.File(context.WithoutCancel(ctx), sandbox.FileRequest{Action: sandbox.FileDelete, Path: file})
		}()
	}
	// "./" keeps a name that starts with "-" from being read as an option.
	argv := make([]string, len(st.Argv))
	for i, a := range st.Argv {
		argv[i] = strings.ReplaceAll(a, "{file}", "./"+file)
	}
	return n.run(ctx, s, argv, req.Timeout)
}

// run runs argv in s with the output cap of shell_executor's options and the timeout (0:
// the sandbox's default), listed among s's running processes meanwhile.
func (n *Named) run(ctx context.Context, s *named, argv []string, timeout float64) (api.CommandResult, error) {
	if timeout == 0 {
		timeout = n.core.defaultTimeout(s.sb)
	}
	start := time.Now()
	s.mu.Lock()
	s.seq++
	id := s.seq
	s.running[id] = api.SessionProcess{Command: argv, StartedAt: start.UTC()}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.running, id)
		s.mu.Unlock()
	}()
	req := sandbox.ExecRequest{Argv: argv, TimeoutMS: int64(timeout * 1000)}
	if opt, ok := n.core.options["shell_executor"]["max_output_bytes"].(float64); ok && opt > 0 {
		req.MaxOutputBytes = int(opt)
	}
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
	if strings.Contains(strings.ToLower(r.Stderr), noSpaceText) || strings.Contains(strings.ToLower(r.Stdout), noSpaceText) {
		if fs, ok := n.workspaceFS(ctx, s); ok && full(s.size, fs.Avail) {
			res.SessionFull = true
			res.Note = joinNote(res.Note, fmt.Sprintf("the session is full (size %s): remove files to make room", formatSize(s.size)))
		}
	}
	log.Info("session command", "status", res.Status, "exit_code", res.ExitCode, "took", time.Since(start).Round(time.Microsecond))
	return res, nil
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
