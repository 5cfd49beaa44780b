package tools

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// NotebookParams are notebook_executor's parameters (ms-enclave's names).
type NotebookParams struct {
	Code    string  `json:"code" jsonschema_description:"Python code to run as the next cell of a Jupyter notebook. Variables, imports and data loaded by earlier cells in the session are still there. As in a notebook, the value of the last expression is shown, and plots (matplotlib) come back as images."`
	Timeout float64 `json:"timeout,omitempty" jsonschema_description:"Seconds before the cell is interrupted (KeyboardInterrupt). The kernel keeps what earlier cells defined. Fractions are allowed. Default 30."`
}

// NotebookControlParams are the parameters of notebook_restart and notebook_interrupt: none.
type NotebookControlParams struct{}

// kernel is what the notebook tools need of their sandbox; notebook.Sandbox has it. Any
// other sandbox gets a clear error instead of a panic.
type kernel interface {
	Execute(ctx context.Context, code string, opts notebook.ExecOptions) (notebook.Result, error)
	Interrupt(ctx context.Context) error
	Restart(ctx context.Context) error
}

func notebookExecutor() Def {
	return New(Def{
		Name: "notebook_executor",
		Description: "Run Python code as the next cell of a Jupyter notebook (IPython kernel) in an isolated " +
			"sandbox. State persists between calls in the session: variables, imports and loaded data stay, so " +
			"load once and explore step by step. Returns stdout and the last expression's value as output, " +
			"stderr and tracebacks as error, and plots as images. numpy and matplotlib are installed. No " +
			"network access; memory, CPU and time are limited.",
		Sandbox:     sandbox.TypeNotebook,
		Destructive: true,
	}, runNotebook)
}

func notebookRestart() Def {
	return New(Def{
		Name: "notebook_restart",
		Description: "Restart the notebook kernel used by notebook_executor: every variable, import and loaded " +
			"object is cleared, as after a notebook's Restart. Files in the workspace stay.",
		Sandbox:     sandbox.TypeNotebook,
		Destructive: true,
	}, func(ctx context.Context, call Call, _ NotebookControlParams) (Result, error) {
		k, res := kernelOf(call, "notebook_restart")
		if k == nil {
			return res, nil
		}
		if err := k.Restart(ctx); err != nil {
			return notebookFailure(err)
		}
		return Result{Status: StatusSuccess, Output: "kernel restarted: variables and imports are cleared; workspace files are kept"}, nil
	})
}

func notebookInterrupt() Def {
	return New(Def{
		Name: "notebook_interrupt",
		Description: "Interrupt the cell notebook_executor is running (it stops with KeyboardInterrupt); the " +
			"kernel keeps its variables. Useful only while another notebook_executor call is still running: a " +
			"cell that passes its own timeout is interrupted anyway.",
		Sandbox: sandbox.TypeNotebook,
	}, func(ctx context.Context, call Call, _ NotebookControlParams) (Result, error) {
		k, res := kernelOf(call, "notebook_interrupt")
		if k == nil {
			return res, nil
		}
		if err := k.Interrupt(ctx); err != nil {
			return notebookFailure(err)
		}
		return Result{Status: StatusSuccess, Output: "interrupt sent: a running cell stops with KeyboardInterrupt; the kernel keeps its state"}, nil
	})
}

// kernelOf returns the call's sandbox as a kernel, or a result saying it is not one.
func kernelOf(call Call, tool string) (kernel, Result) {
	if k, ok := call.Sandbox.(kernel); ok {
		return k, Result{}
	}
	typ := sandbox.Type("none")
	if call.Sandbox != nil {
		typ = call.Sandbox.Info().Type
	}
	return nil, failure(fmt.Sprintf("%s needs a %s sandbox, and this one is %s", tool, sandbox.TypeNotebook, typ))
}

func runNotebook(ctx context.Context, call Call, p NotebookParams) (Result, error) {
	if strings.TrimSpace(p.Code) == "" {
		return failure("No code provided"), nil
	}
	timeout, err := timeoutOf("notebook_executor", p.Timeout, call.DefaultTimeout)
	if err != nil {
		return Result{}, err
	}
	k, res := kernelOf(call, "notebook_executor")
	if k == nil {
		return res, nil
	}
	opts := notebook.ExecOptions{
		Timeout: time.Duration(timeout * float64(time.Second)), OnOutput: call.Progress,
		MaxOutputBytes: sandbox.MaxOutputBytes(call.Options),
	}
	cell, err := k.Execute(ctx, p.Code, opts)
	if err != nil {
		return notebookFailure(err)
	}
	return fromCell(cell, timeout, memoryLimitOf(call.Sandbox)), nil
}

// notebookFailure turns a failure to run or follow a cell into a result the model can act
// on; what is not the model's to fix stays a Go error.
func notebookFailure(err error) (Result, error) {
	switch {
	case errors.Is(err, notebook.ErrServerGone):
		return failure(err.Error() + "; the next call starts a fresh notebook sandbox (variables and imports are lost; files too)"), nil
	case errors.Is(err, notebook.ErrConnectionLost):
		return failure(err.Error() + "; this cell's output is lost. The next call reconnects; the kernel's state is probably kept"), nil
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return Result{Status: StatusCancelled, Error: err.Error()}, nil
	}
	return fromSandboxError(err)
}

func memoryLimitOf(sb sandbox.Sandbox) string {
	if sb == nil {
		return ""
	}
	m, _ := sb.Info().Metadata["memory_limit"].(string)
	return m
}

// fromCell maps a cell's result to ms-enclave's shape: output is what the notebook shows as
// text (stdout, then the last expression's value); error is stderr, then the traceback and
// notes; images are the plots.
func fromCell(c notebook.Result, timeout float64, memoryLimit string) Result {
	res := Result{
		Output:        c.Output,
		ExecutionTime: c.Duration.Seconds(),
		Truncated:     c.Truncated,
		Metadata:      map[string]any{"execution_count": c.ExecutionCount, "duration_ms": math.Round(float64(c.Duration.Microseconds())) / 1000},
	}
	if c.Value != "" {
		res.Metadata["result"] = c.Value
	}
	if len(c.HTML) > 0 {
		res.Metadata["html"] = c.HTML
	}
	if c.Truncated {
		res.Metadata["omitted_bytes"] = c.OmittedBytes
	}
	var notes []string
	if c.StateLost != "" {
		res.Metadata["state_lost"] = c.StateLost
		notes = append(notes, "state lost: "+c.StateLost+"; variables and imports from earlier cells are gone, workspace files are kept")
	}
	errText := c.Stderr
	switch {
	case c.TimedOut:
		res.Status = StatusTimeout
		notes = append(notes, fmt.Sprintf("timed out after %gs: the cell was interrupted; what earlier cells defined is kept", timeout))
	case c.Cancelled:
		res.Status = StatusCancelled
		notes = append(notes, "cancelled: the cell was interrupted; what earlier cells defined is kept")
	case c.KernelDied:
		res.Status = StatusError
		why := "out of memory, or a crash"
		if memoryLimit != "" {
			why = fmt.Sprintf("out of memory (the sandbox's limit is %s), or a crash", memoryLimit)
		}
		res.Metadata["kernel_died"] = true
		notes = append(notes, "the kernel died while running this cell ("+why+"): its variables and imports are lost, and the next call runs in a fresh kernel")
	case c.Error != nil:
		res.Status = StatusError
		res.Metadata["ename"], res.Metadata["evalue"] = c.Error.Name, c.Error.Value
		errText = joinLines(errText, c.Error.Text())
	case c.Status == "aborted":
		res.Status = StatusError
		notes = append(notes, "the kernel aborted this cell without running it")
	default:
		res.Status = StatusSuccess
	}
	if c.Truncated {
		notes = append(notes, truncationNote(c.OmittedBytes))
	}
	notes = append(notes, c.Notes...)
	images, imageNotes := fitImages(c.Images)
	res.Images = images
	notes = append(notes, imageNotes...)
	res.Error = withNotes(errText, notes)
	return res
}
