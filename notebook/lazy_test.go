package notebook_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/fakejupyter"
	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

func TestMain(m *testing.M) {
	os.Exit(fakejupyter.Run(m)) // this binary is also the fake Jupyter that lazy sandboxes start
}

// sessionType is the kind the tests' lazy sandboxes are made as.
const sessionType sandbox.Type = "test_session"

// lazySandbox makes a sandbox on b whose notebook starts on its first kernel call: the fake
// Jupyter unless opts names a command, listening on a port of its own (the process backend
// shares the host's network).
func lazySandbox(t *testing.T, b sandbox.Backend, cfg sandbox.Config, opts notebook.Options) *notebook.Sandbox {
	t.Helper()
	if opts.Port == 0 {
		opts.Port = fakejupyter.FreePort(t)
	}
	if opts.Command == nil {
		opts.Command = fakejupyter.Command(t)
		cfg.EnvVars = fakejupyter.Env(opts.Port)
	}
	if cfg.Runtime == "" {
		cfg.Runtime = testenv.Runtime()
	}
	resolved, err := sandbox.Resolve(cfg, sandbox.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	created, err := notebook.LazyCreator(b, sessionType, opts)(t.Context(), t.Name(), resolved)
	if err != nil {
		t.Fatalf("creating the sandbox: %v", err)
	}
	sb := created.(*notebook.Sandbox)
	t.Cleanup(func() {
		if err := sb.Close(context.Background()); err != nil {
			t.Errorf("removing the sandbox: %v", err)
		}
		if b.Name() == "process" { // its /tmp is the host's
			_ = os.RemoveAll("/tmp/enclave-jupyter-" + sb.ID())
			_ = os.Remove("/tmp/enclave-launch-" + sb.ID() + ".py")
		}
	})
	return sb
}

// cell runs code and fails the test when it could not run.
func cell(t *testing.T, sb *notebook.Sandbox, code string) string {
	t.Helper()
	res, err := sb.Execute(t.Context(), code, notebook.ExecOptions{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("cell %q: %v", code, err)
	}
	return res.Output
}

// starts counts the fake Jupyter servers the sandbox started.
func starts(t *testing.T, sb *notebook.Sandbox) int {
	t.Helper()
	res, err := sb.File(t.Context(), sandbox.FileRequest{Action: sandbox.FileRead, Path: fakejupyter.StartsFile})
	if errors.Is(err, sandbox.ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(res.Data), "\n")
}

// echo runs a command through the agent, as shell_executor does, and returns its stdout.
func echo(t *testing.T, sb *notebook.Sandbox, word string) string {
	t.Helper()
	res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"echo", word}, TimeoutMS: 5000}, nil)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("echo in the sandbox: %+v, %v", res, err)
	}
	return res.Stdout
}

func writeFile(t *testing.T, sb *notebook.Sandbox, name, text string) {
	t.Helper()
	if _, err := sb.File(t.Context(), sandbox.FileRequest{Action: sandbox.FileWrite, Path: name, Data: []byte(text)}); err != nil {
		t.Fatal(err)
	}
}

// TestLazyNotebook: a sandbox made by notebook.Lazy on the process backend, with the fake
// Jupyter as its server. Nothing starts before the first kernel call; concurrent first calls
// share one start; the server and kernel run in the workspace; a failed start leaves the
// sandbox working for the other tools and the next call tries again; a server that stops is
// started again by the next call, files kept; Reset sends it back to not started.
func TestLazyNotebook(t *testing.T) {
	t.Parallel()
	b := testenv.Process(t)

	t.Run("concurrent first calls share one start, in the workspace", func(t *testing.T) {
		sb := lazySandbox(t, b, sandbox.Config{}, notebook.Options{})
		if started := sb.Info().Metadata["notebook"].(map[string]any)["started"]; started != false {
			t.Errorf("info before any kernel call: started = %v, want false", started)
		}
		if jobs, err := sb.Jobs(t.Context()); err != nil || len(jobs) != 0 {
			t.Fatalf("jobs before any kernel call: %v, %v; want none", jobs, err)
		}
		const calls = 8
		outs := make([]string, calls)
		errs := make([]error, calls)
		var wg sync.WaitGroup
		for i := range calls {
			wg.Go(func() {
				res, err := sb.Execute(t.Context(), "cwd", notebook.ExecOptions{Timeout: 30 * time.Second})
				outs[i], errs[i] = res.Output, err
			})
		}
		wg.Wait()
		want := sb.Config().WorkingDir + "\n"
		for i := range calls {
			if errs[i] != nil || outs[i] != want {
				t.Errorf("call %d: %q, %v; want %q", i, outs[i], errs[i], want)
			}
		}
		if n := starts(t, sb); n != 1 {
			t.Errorf("%d servers started for %d concurrent first calls, want 1", n, calls)
		}
		jobs, err := sb.Jobs(t.Context())
		if err != nil || len(jobs) != 1 || !jobs[0].Running {
			t.Errorf("jobs: %+v, %v; want the one running server", jobs, err)
		}
		if sb.Startup().Total <= 0 || sb.Info().Metadata["notebook"].(map[string]any)["started"] != true {
			t.Errorf("after the start: startup %+v, info %v", sb.Startup(), sb.Info().Metadata["notebook"])
		}
	})

	t.Run("a failed start leaves the other tools working, and the next call tries again", func(t *testing.T) {
		sb := lazySandbox(t, b, sandbox.Config{}, notebook.Options{})
		writeFile(t, sb, fakejupyter.RefuseFile, "")
		_, err := sb.Execute(t.Context(), "hello", notebook.ExecOptions{})
		if !errors.Is(err, notebook.ErrStart) {
			t.Fatalf("first call: %v, want ErrStart", err)
		}
		for _, want := range []string{sandbox.DefaultImage, sandbox.DefaultNotebookImage, fakejupyter.RefuseMessage, "tools_config"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the start's error does not say %q: %v", want, err)
			}
		}
		if got := echo(t, sb, "still here"); got != "still here\n" || !sb.Alive() {
			t.Fatalf("the sandbox after a failed start: %q, alive %v", got, sb.Alive())
		}
		if err := sb.Restart(t.Context()); !errors.Is(err, notebook.ErrStart) {
			t.Errorf("restart while Jupyter cannot start: %v, want ErrStart", err)
		}
		if _, err := sb.File(t.Context(), sandbox.FileRequest{Action: sandbox.FileDelete, Path: fakejupyter.RefuseFile}); err != nil {
			t.Fatal(err)
		}
		if out := cell(t, sb, "hello"); out != "hello\n" {
			t.Errorf("after the cause went: %q", out)
		}
		if n := starts(t, sb); n != 1 {
			t.Errorf("%d servers running starts, want 1", n)
		}
	})

	t.Run("a stopped server is started again by the next call, files kept", func(t *testing.T) {
		sb := lazySandbox(t, b, sandbox.Config{}, notebook.Options{})
		cell(t, sb, "write kept.txt kept")
		_, err := sb.Execute(t.Context(), "exit", notebook.ExecOptions{Timeout: 30 * time.Second})
		if !errors.Is(err, notebook.ErrServerStopped) || errors.Is(err, notebook.ErrServerGone) || errors.Is(err, notebook.ErrConnectionLost) {
			t.Fatalf("the cell that stopped the server: %v, want ErrServerStopped only", err)
		}
		if !sb.Alive() {
			t.Fatal("the sandbox is dead after its notebook server stopped; it must live on")
		}
		if out := cell(t, sb, "read kept.txt"); out != "kept" {
			t.Errorf("after the restart: %q, want the file written before", out)
		}
		if n := starts(t, sb); n != 2 {
			t.Errorf("%d server starts, want 2", n)
		}
	})

	t.Run("reset sends the sandbox back to not started", func(t *testing.T) {
		sb := lazySandbox(t, b, sandbox.Config{}, notebook.Options{})
		cell(t, sb, "one")
		if err := sb.Reset(t.Context()); err != nil {
			t.Fatal(err)
		}
		jobs, err := sb.Jobs(t.Context())
		if err != nil || len(jobs) != 1 || jobs[0].Running {
			t.Fatalf("jobs after reset: %+v, %v; want the server, stopped", jobs, err)
		}
		if out := cell(t, sb, "two"); out != "two\n" || starts(t, sb) != 2 {
			t.Errorf("after reset: %q, %d starts", out, starts(t, sb))
		}
	})

	t.Run("an image without jupyter_server: the real launcher fails clearly, every time", func(t *testing.T) {
		// An empty, non-nil command: the bundled launcher, not the fake.
		sb := lazySandbox(t, b, sandbox.Config{}, notebook.Options{Command: []string{}, Port: fakejupyter.FreePort(t)})
		res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"python3", "-c", "import jupyter_server"}, TimeoutMS: 10000}, nil)
		switch {
		case err != nil:
			t.Skipf("no python3 on this host: %v", err)
		case res.ExitCode == 0:
			t.Skip("this host has jupyter_server: the failure path needs a python3 without it")
		}
		for attempt := 1; attempt <= 2; attempt++ {
			_, err := sb.Execute(t.Context(), "1+1", notebook.ExecOptions{})
			if !errors.Is(err, notebook.ErrStart) || !strings.Contains(err.Error(), "jupyter_server") ||
				!strings.Contains(err.Error(), sandbox.DefaultImage) || !strings.Contains(err.Error(), sandbox.DefaultNotebookImage) {
				t.Fatalf("attempt %d: %v; want ErrStart naming the image, the cause and the notebook image", attempt, err)
			}
		}
		jobs, err := sb.Jobs(t.Context())
		if err != nil || len(jobs) != 2 {
			t.Errorf("jobs: %+v, %v; want the two failed servers (one per call)", jobs, err)
		}
		if got := echo(t, sb, "fine"); got != "fine\n" {
			t.Errorf("the other tools after the failures: %q", got)
		}
		if _, err := os.Stat(filepath.Join("/tmp", "enclave-jupyter-"+sb.ID(), "server.log")); err != nil {
			t.Errorf("no server log: %v", err)
		}
	})
}

// TestIntegrationLazyNotebookImages: a session-style sandbox on Docker, with each image a
// session may get. Without Jupyter (the python image) the first notebook call fails naming
// the image and what to use instead, and the sandbox keeps working for the other tools; with
// the notebook image, concurrent first calls share one Jupyter, whose kernel runs in the
// workspace.
func TestIntegrationLazyNotebookImages(t *testing.T) {
	e := testenv.Engine(t)
	t.Run(sandbox.DefaultImage, func(t *testing.T) {
		t.Parallel()
		testenv.RequireImage(t, e, sandbox.DefaultImage)
		sb := lazySandbox(t, e, sandbox.Config{Image: sandbox.DefaultImage}, notebook.Options{Command: []string{}, Port: notebook.DefaultPort})
		_, err := sb.Execute(t.Context(), "1+1", notebook.ExecOptions{})
		if !errors.Is(err, notebook.ErrStart) || !strings.Contains(err.Error(), "image "+sandbox.DefaultImage) ||
			!strings.Contains(err.Error(), "No module named 'jupyter_server'") || !strings.Contains(err.Error(), sandbox.DefaultNotebookImage) {
			t.Fatalf("first notebook call: %v; want ErrStart naming the image, the cause and the notebook image", err)
		}
		if got := echo(t, sb, "still here"); got != "still here\n" || !sb.Alive() {
			t.Errorf("the sandbox after the failed start: %q, alive %v", got, sb.Alive())
		}
	})
	t.Run(sandbox.DefaultNotebookImage, func(t *testing.T) {
		t.Parallel()
		testenv.RequireImage(t, e, sandbox.DefaultNotebookImage)
		sb := lazySandbox(t, e, sandbox.Config{Image: sandbox.DefaultNotebookImage}, notebook.Options{Command: []string{}, Port: notebook.DefaultPort})
		start := time.Now()
		outs := make([]string, 2)
		var wg sync.WaitGroup
		for i := range outs {
			wg.Go(func() {
				res, err := sb.Execute(t.Context(), "import os\nprint(os.getcwd())", notebook.ExecOptions{Timeout: 30 * time.Second})
				if err != nil {
					t.Errorf("first call %d: %v", i, err)
				}
				outs[i] = res.Output
			})
		}
		wg.Wait()
		cold := time.Since(start)
		start = time.Now()
		if out := cell(t, sb, "1+1"); out != "2" {
			t.Errorf("1+1 shows %q", out)
		}
		t.Logf("first notebook calls (Jupyter started) %s, a later one %s; startup %+v", cold, time.Since(start), sb.Startup())
		for i, out := range outs {
			if out != "/sandbox\n" {
				t.Errorf("call %d: the kernel's working directory is %q, want the workspace", i, out)
			}
		}
		jobs, err := sb.Jobs(t.Context())
		if err != nil || len(jobs) != 1 || !jobs[0].Running {
			t.Errorf("jobs: %+v, %v; want one running Jupyter for both first calls", jobs, err)
		}
	})
}
