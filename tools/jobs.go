package tools

import (
	"context"
	"fmt"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// JobsParams are background_jobs' parameters.
type JobsParams struct {
	Action string `json:"action" jsonschema:"enum=list,enum=stop" jsonschema_description:"list: the background jobs started with shell_executor's background flag, running or ended. stop: kill a job and every process it started."`
	JobID  string `json:"job_id,omitempty" jsonschema_description:"The job to stop, as shell_executor returned it (e.g. job-1)."`
}

func backgroundJobs() Def {
	return New(Def{
		Name: "background_jobs",
		Description: "List or stop the background jobs started by shell_executor with background set (servers, " +
			"watchers). Foreground commands never leave processes behind; background jobs run until they " +
			"exit, are stopped here, or the session ends.",
		Sandbox:     sandbox.TypeDocker,
		Destructive: true,
	}, runJobs)
}

func runJobs(ctx context.Context, call Call, p JobsParams) (Result, error) {
	switch p.Action {
	case "list":
		jobs, err := call.Sandbox.Jobs(ctx)
		if err != nil {
			return fromSandboxError(err)
		}
		var b strings.Builder
		for _, j := range jobs {
			fmt.Fprintf(&b, "%s\tpid %d\t%s\t%s\n", j.ID, j.PID, jobState(j), strings.Join(j.Argv, " "))
		}
		if len(jobs) == 0 {
			b.WriteString("no background jobs\n")
		}
		return Result{Status: StatusSuccess, Output: b.String(), Metadata: map[string]any{"jobs": jobs}}, nil
	case "stop":
		if p.JobID == "" {
			return Result{}, argErrorf("background_jobs", "action stop needs job_id (see action list)")
		}
		j, err := call.Sandbox.KillJob(ctx, p.JobID)
		if err != nil {
			return fromSandboxError(err)
		}
		return Result{Status: StatusSuccess, Output: fmt.Sprintf("stopped %s (%s)", j.ID, jobState(j)), Metadata: map[string]any{"job": j}}, nil
	}
	return Result{}, argErrorf("background_jobs", "action %q is not one of list, stop", p.Action)
}

func jobState(j sandbox.Job) string {
	switch {
	case j.Running:
		return "running"
	case j.Signal != "":
		return "killed by " + j.Signal
	default:
		return fmt.Sprintf("exited with code %d", j.ExitCode)
	}
}

// startJob starts argv as a background job.
func startJob(ctx context.Context, call Call, argv []string) (Result, error) {
	r, err := call.Sandbox.Exec(ctx, sandbox.ExecRequest{Argv: argv, Background: true}, nil)
	if err != nil {
		return fromSandboxError(err)
	}
	return Result{
		Status:   StatusSuccess,
		Output:   fmt.Sprintf("started %s (pid %d); stop it with background_jobs", r.JobID, r.PID),
		Metadata: map[string]any{"job_id": r.JobID, "pid": r.PID},
	}, nil
}
