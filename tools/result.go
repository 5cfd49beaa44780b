package tools

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/api"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// The tool result is part of the API every client shares; these are its old names here.
type (
	// Status is a tool result's outcome, with ms-enclave's values.
	Status = api.ResultStatus
	// Result is what a tool returns, in ms-enclave's ToolResult shape.
	Result = api.ToolResult
	// Image is one image a tool produced.
	Image = api.Image
)

// The outcomes.
const (
	StatusSuccess   = api.ResultSuccess
	StatusError     = api.ResultError
	StatusTimeout   = api.ResultTimeout
	StatusCancelled = api.ResultCancelled
)

// failure is a result for an operation that could not be done; msg says why.
func failure(msg string) Result {
	return Result{Status: StatusError, Error: msg}
}

// fromExec turns a finished process into a result. A process that ran is never a Go error:
// its exit code, signal and output are all reported, and only the status says how it went.
func fromExec(r sandbox.ExecResult, timeout float64, memoryLimit string) Result {
	exit := r.ExitCode
	res := Result{
		Output:        r.Stdout,
		Error:         r.Stderr,
		ExecutionTime: r.DurationMS / 1000,
		ExitCode:      &exit,
		Signal:        r.Signal,
		Truncated:     r.Truncated,
		OOMKilled:     r.OOMKilled,
		Metadata:      map[string]any{"exit_code": r.ExitCode, "duration_ms": math.Round(r.DurationMS*1000) / 1000},
	}
	if r.Signal != "" {
		res.Metadata["signal"] = r.Signal
	}
	if r.Truncated {
		res.Metadata["omitted_bytes"] = r.OmittedBytes
	}
	if r.Reaped > 0 {
		res.Metadata["reaped_processes"] = r.Reaped
	}
	if r.Forked {
		res.Metadata["forked"] = true // from the sandbox's resident interpreter
	}
	var notes []string
	switch {
	case r.TimedOut:
		res.Status = StatusTimeout
		notes = append(notes, fmt.Sprintf("timed out after %gs: the process and everything it started were killed", timeout))
	case r.Stopped:
		res.Status = StatusError
		notes = append(notes, "the sandbox stopped during the call (its container was stopped or removed, or the engine restarted); the next call starts a fresh sandbox, and files in the old one are lost")
	case r.Cancelled:
		res.Status = StatusCancelled
		notes = append(notes, "cancelled: the process and everything it started were killed")
	case r.OOMKilled:
		res.Status = StatusError
		notes = append(notes, fmt.Sprintf("killed: out of memory (the sandbox's memory limit is %s)", memoryLimit))
	case r.Signal != "":
		res.Status = StatusError
		notes = append(notes, "killed by "+r.Signal)
	case r.ExitCode != 0:
		res.Status = StatusError
		notes = append(notes, fmt.Sprintf("exit code %d", r.ExitCode))
	default:
		res.Status = StatusSuccess
	}
	if r.Truncated {
		notes = append(notes, truncationNote(r.OmittedBytes))
	}
	res.Error = withNotes(res.Error, notes)
	return res
}

// fromSandboxError turns a failure to run into a result the model can act on. Errors that are
// not the model's to fix (the engine is down) are returned as Go errors instead.
func fromSandboxError(err error) (Result, error) {
	var ae *sandbox.AgentError
	if errors.As(err, &ae) {
		return failure(ae.Message), nil
	}
	if errors.Is(err, sandbox.ErrClosed) {
		return failure(err.Error() + "; the next call starts a fresh sandbox (files in the old one are lost)"), nil
	}
	return Result{}, err
}

// maxTimeout is the most seconds any call may run.
const maxTimeout = 3600

// timeoutOf validates a call's timeout (seconds, fractions allowed) against the default and a
// hard upper bound.
func timeoutOf(tool string, asked, def float64) (float64, error) {
	switch {
	case asked == 0:
		if def <= 0 {
			def = sandbox.DefaultTimeout
		}
		return def, nil
	case asked < 0 || math.IsNaN(asked):
		return 0, argErrorf(tool, "timeout must be a positive number of seconds, got %v", asked)
	case asked > maxTimeout:
		return 0, argErrorf(tool, "timeout %vs is over the %ds maximum", asked, maxTimeout)
	}
	return asked, nil
}

// withNotes appends each note, bracketed, on a line of its own after text (stderr): what the
// model reads about how the call went comes after what the program itself said.
func withNotes(text string, notes []string) string {
	for _, n := range notes {
		text = joinLines(text, "["+n+"]")
	}
	return text
}

// joinLines puts b on the line after a.
func joinLines(a, b string) string {
	if a != "" && !strings.HasSuffix(a, "\n") {
		a += "\n"
	}
	return a + b
}

func truncationNote(omitted int64) string {
	return fmt.Sprintf("output truncated: %d bytes omitted from the middle", omitted)
}
