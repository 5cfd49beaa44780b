package notebook_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// startNotebook starts a notebook sandbox for the test and removes it when the test ends.
func startNotebook(t *testing.T, e *sandbox.Docker, owner string, cfg sandbox.Config) *notebook.Sandbox {
	t.Helper()
	testenv.RequireImage(t, e, sandbox.DefaultNotebookImage)
	cfg.Image = sandbox.DefaultNotebookImage
	resolved, err := sandbox.Resolve(cfg, sandbox.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := notebook.Start(t.Context(), e, owner, resolved, notebook.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatalf("starting notebook sandbox: %v", err)
	}
	st := sb.Startup()
	t.Logf("notebook sandbox start to ready: %s (container %s, server %s, kernel %s)", st.Total, st.Container, st.Server, st.Kernel)
	t.Cleanup(func() {
		if err := sb.Close(context.Background()); err != nil {
			t.Errorf("removing notebook sandbox: %v", err)
		}
	})
	return sb
}

// run executes code and fails the test if it could not run at all.
func run(t *testing.T, sb *notebook.Sandbox, code string, opts notebook.ExecOptions) notebook.Result {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	res, err := sb.Execute(t.Context(), code, opts)
	if err != nil {
		t.Fatalf("executing %q: %v", code, err)
	}
	return res
}

// TestIntegrationNotebook runs a sequence of cells in one kernel: each step depends on the
// state the earlier ones left, as in a notebook.
func TestIntegrationNotebook(t *testing.T) {
	e := testenv.Engine(t)
	sb := startNotebook(t, e, "notebook-test", sandbox.Config{})

	steps := []struct {
		name  string
		code  string
		check func(t *testing.T, r notebook.Result)
	}{
		{"state persists: define", "a=1; b=2; c=a+b; print(c)", func(t *testing.T, r notebook.Result) {
			wantOK(t, r)
			if r.Output != "3\n" {
				t.Errorf("output = %q, want 3", r.Output)
			}
		}},
		{"state persists: reuse", "print(c)", func(t *testing.T, r notebook.Result) {
			wantOK(t, r)
			if r.Output != "3\n" {
				t.Errorf("output = %q, want 3", r.Output)
			}
		}},
		{"last expression is the value", "x = 41", func(t *testing.T, r notebook.Result) {
			wantOK(t, r)
			if r.Output != "" || r.Value != "" {
				t.Errorf("an assignment shows nothing, got %q / %q", r.Output, r.Value)
			}
		}},
		{"value of x + 1", "x + 1", func(t *testing.T, r notebook.Result) {
			wantOK(t, r)
			if r.Value != "42" || r.Output != "42" {
				t.Errorf("value = %q, output = %q, want 42", r.Value, r.Output)
			}
		}},
		{"error with a clean traceback", "1/0", func(t *testing.T, r notebook.Result) {
			if r.Status != "error" || r.Error == nil || r.Error.Name != "ZeroDivisionError" {
				t.Fatalf("want a ZeroDivisionError, got status %q error %+v", r.Status, r.Error)
			}
			text := r.Error.Text()
			if !strings.Contains(text, "ZeroDivisionError: division by zero") || strings.Contains(text, "\x1b") {
				t.Errorf("traceback must name the error and carry no ANSI codes: %q", text)
			}
		}},
		{"stdout and stderr apart", "import sys; print('to out'); print('to err', file=sys.stderr)", func(t *testing.T, r notebook.Result) {
			wantOK(t, r)
			if r.Output != "to out\n" || r.Stderr != "to err\n" {
				t.Errorf("output = %q, stderr = %q", r.Output, r.Stderr)
			}
		}},
		{"a plot is a PNG", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()", func(t *testing.T, r notebook.Result) {
			wantOK(t, r)
			if len(r.Images) != 1 || r.Images[0].MIMEType != "image/png" {
				t.Fatalf("want one PNG, got %d images", len(r.Images))
			}
			img, err := png.Decode(bytes.NewReader(r.Images[0].Data))
			if err != nil {
				t.Fatalf("image does not decode as PNG: %v", err)
			}
			if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
				t.Errorf("plot is %v", b)
			}
		}},
		{"display text and html", "from IPython.display import display, Markdown, HTML\ndisplay(Markdown('**bold**'))\ndisplay(HTML('<b>hi</b>'))", func(t *testing.T, r notebook.Result) {
			wantOK(t, r)
			if !strings.Contains(r.Output, "**bold**") {
				t.Errorf("markdown missing from output %q", r.Output)
			}
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.check(t, run(t, sb, st.code, notebook.ExecOptions{}))
		})
	}

	t.Run("1+1 round trip", func(t *testing.T) {
		var times []time.Duration
		for range 40 {
			start := time.Now()
			r := run(t, sb, "1+1", notebook.ExecOptions{})
			times = append(times, time.Since(start))
			if r.Value != "2" {
				t.Fatalf("1+1 = %q", r.Value)
			}
		}
		slices.Sort(times)
		t.Logf("1+1 round trip: median %s, min %s, max %s", times[len(times)/2], times[0], times[len(times)-1])
	})

	t.Run("timeout interrupts and keeps earlier state", func(t *testing.T) {
		start := time.Now()
		r := run(t, sb, "import time\ntime.sleep(5)\ny = 1", notebook.ExecOptions{Timeout: time.Second})
		took := time.Since(start)
		if !r.TimedOut || r.Error != nil {
			t.Fatalf("want a timeout without the interrupt's traceback, got %+v", r)
		}
		if took > 1500*time.Millisecond {
			t.Errorf("timeout reported after %s, want ~1s", took)
		}
		r = run(t, sb, "print('y' in globals(), c)", notebook.ExecOptions{})
		if r.Output != "False 3\n" || r.StateLost != "" {
			t.Errorf("after the timeout: output %q (want y absent, c kept), state lost %q", r.Output, r.StateLost)
		}
	})

	t.Run("20 MB print is truncated and progress is capped", func(t *testing.T) {
		var mu sync.Mutex
		var progressBytes, chunks int
		r := run(t, sb, "print('x' * 20_000_000)\nprint('end')", notebook.ExecOptions{
			OnOutput: func(o sandbox.Output) {
				mu.Lock()
				progressBytes += len(o.Stdout) + len(o.Stderr)
				chunks++
				mu.Unlock()
			},
			ProgressInterval: 50 * time.Millisecond,
		})
		wantOK(t, r)
		if !r.Truncated || len(r.Output) > notebook.DefaultMaxOutputBytes+100 {
			t.Fatalf("want the output truncated to ~1 MiB, got %d bytes (truncated %v)", len(r.Output), r.Truncated)
		}
		if !strings.HasSuffix(r.Output, "xxx\nend\n") || !strings.Contains(r.Output, "bytes omitted") {
			t.Errorf("want head, marker and tail; tail is %q", r.Output[len(r.Output)-20:])
		}
		mu.Lock()
		defer mu.Unlock()
		if progressBytes > 1<<20+4096 {
			t.Errorf("progress carried %d bytes in %d chunks, want it capped near 1 MiB", progressBytes, chunks)
		}
	})
}

func wantOK(t *testing.T, r notebook.Result) {
	t.Helper()
	if r.Status != "ok" || r.Error != nil {
		t.Fatalf("status %q, error %+v, stderr %q", r.Status, r.Error, r.Stderr)
	}
}

// TestIntegrationNotebookRecovery: a kernel that dies, ignores an interrupt, is interrupted
// or cancelled from outside, or is restarted, and what each costs the state.
func TestIntegrationNotebookRecovery(t *testing.T) {
	e := testenv.Engine(t)
	sb := startNotebook(t, e, "recovery", sandbox.Config{MemoryLimit: "320m"})

	t.Run("interrupt from outside stops the cell, state kept", func(t *testing.T) {
		run(t, sb, "kept = 1", notebook.ExecOptions{})
		go func() {
			time.Sleep(300 * time.Millisecond)
			// A running cell holds the sandbox busy, so that idle expiry leaves it alone.
			if st := sb.Info().Status; st != sandbox.StatusBusy {
				t.Errorf("status while a cell runs = %s, want busy", st)
			}
			if err := sb.Interrupt(context.Background()); err != nil {
				t.Errorf("interrupt: %v", err)
			}
		}()
		r := run(t, sb, "import time\ntime.sleep(20)", notebook.ExecOptions{})
		if r.Error == nil || r.Error.Name != "KeyboardInterrupt" || r.TimedOut {
			t.Fatalf("want the cell stopped by KeyboardInterrupt, got %+v", r)
		}
		if r := run(t, sb, "print(kept)", notebook.ExecOptions{}); r.Output != "1\n" {
			t.Errorf("state lost after an interrupt: %q", r.Output)
		}
	})

	t.Run("cancelled context interrupts, state kept", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		r, err := sb.Execute(ctx, "import time\ntime.sleep(20)\nnever = 1", notebook.ExecOptions{Timeout: time.Minute})
		if err != nil || !r.Cancelled || r.Error != nil {
			t.Fatalf("want a cancelled result, got %+v, %v", r, err)
		}
		if r := run(t, sb, "print(kept, 'never' in globals())", notebook.ExecOptions{}); r.Output != "1 False\n" {
			t.Errorf("after cancel: %q", r.Output)
		}
	})

	t.Run("an interrupt that lands before the cell starts is repeated", func(t *testing.T) {
		for range 3 {
			start := time.Now()
			r := run(t, sb, "import time\ntime.sleep(3)\nnever = 1", notebook.ExecOptions{Timeout: time.Millisecond})
			if !r.TimedOut || len(r.Notes) != 0 {
				t.Fatalf("want a timeout without a restart, got %+v after %s", r, time.Since(start))
			}
		}
		if r := run(t, sb, "print(kept, 'never' in globals())", notebook.ExecOptions{}); r.Output != "1 False\n" {
			t.Errorf("state after early interrupts: %q", r.Output)
		}
	})

	t.Run("a cell that ignores the interrupt gets the kernel restarted", func(t *testing.T) {
		start := time.Now()
		r := run(t, sb, "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)", notebook.ExecOptions{Timeout: time.Second})
		if !r.TimedOut || len(r.Notes) == 0 || !strings.Contains(r.Notes[0], "restarted") {
			t.Fatalf("want a timeout with a restart note, got %+v", r)
		}
		t.Logf("timed out and restarted in %s", time.Since(start)) // speed is measured by make bench, not asserted
		if r := run(t, sb, "print('kept' in globals())", notebook.ExecOptions{}); r.Output != "False\n" {
			t.Errorf("a restarted kernel has no state: %q", r.Output)
		}
	})

	for _, tc := range []struct{ name, code string }{
		{"a crash", "import os\nos._exit(1)"},
		{"out of memory", "hog = b'x' * (1 << 30)"},
	} {
		t.Run(tc.name+" is reported, and the next cell says state was lost", func(t *testing.T) {
			run(t, sb, "before = 1", notebook.ExecOptions{})
			r := run(t, sb, tc.code, notebook.ExecOptions{})
			if !r.KernelDied {
				t.Fatalf("want KernelDied, got %+v", r)
			}
			r = run(t, sb, "print('before' in globals())", notebook.ExecOptions{})
			if r.Output != "False\n" || !strings.Contains(r.StateLost, "died") {
				t.Errorf("after the death: output %q, state lost %q", r.Output, r.StateLost)
			}
			if r := run(t, sb, "1+1", notebook.ExecOptions{}); r.Value != "2" || r.StateLost != "" {
				t.Errorf("the kernel after recovery: %+v", r)
			}
		})
	}

	t.Run("restart clears state, and is not reported as a loss", func(t *testing.T) {
		run(t, sb, "z = 1", notebook.ExecOptions{})
		if err := sb.Restart(t.Context()); err != nil {
			t.Fatal(err)
		}
		r := run(t, sb, "print('z' in globals())", notebook.ExecOptions{})
		if r.Output != "False\n" || r.StateLost != "" {
			t.Errorf("after restart: %q, state lost %q", r.Output, r.StateLost)
		}
	})
}

// TestIntegrationNotebookIsolation: two sandboxes share nothing, neither has a network or a
// published port, nothing in them listens beyond loopback, and each is gone once closed.
func TestIntegrationNotebookIsolation(t *testing.T) {
	e := testenv.Engine(t)
	a := startNotebook(t, e, "owner-a", sandbox.Config{})
	b := startNotebook(t, e, "owner-b", sandbox.Config{})

	run(t, a, "secret = 'a'\nopen('only-in-a.txt', 'w').write('a')", notebook.ExecOptions{})
	r := run(t, b, "import os\nprint('secret' in globals(), os.path.exists('only-in-a.txt'))", notebook.ExecOptions{})
	if r.Output != "False False\n" {
		t.Errorf("b sees a's state or files: %q", r.Output)
	}

	for _, sb := range []*notebook.Sandbox{a, b} {
		insp, err := e.Client().ContainerInspect(t.Context(), sb.ContainerID())
		if err != nil {
			t.Fatal(err)
		}
		if insp.HostConfig.NetworkMode != "none" {
			t.Errorf("network mode %q, want none", insp.HostConfig.NetworkMode)
		}
		if len(insp.HostConfig.PortBindings) != 0 || (insp.NetworkSettings != nil && len(insp.NetworkSettings.Ports) != 0) {
			t.Errorf("ports published: %v %v", insp.HostConfig.PortBindings, insp.NetworkSettings.Ports)
		}
		if !insp.HostConfig.ReadonlyRootfs || len(insp.HostConfig.CapDrop) == 0 {
			t.Errorf("hardening missing: read-only %v, cap drop %v", insp.HostConfig.ReadonlyRootfs, insp.HostConfig.CapDrop)
		}
		// Every listening socket (Jupyter's, the kernel's) is on loopback: state 0A is LISTEN,
		// 0100007F is 127.0.0.1 and the all-zero-but-one v6 address is ::1.
		res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"cat", "/proc/net/tcp", "/proc/net/tcp6"}, TimeoutMS: 5000}, nil)
		if err != nil {
			t.Fatal(err)
		}
		listening := 0
		for _, line := range strings.Split(res.Stdout, "\n") {
			f := strings.Fields(line)
			if len(f) < 4 || f[3] != "0A" {
				continue
			}
			listening++
			addr, _, _ := strings.Cut(f[1], ":")
			if addr != "0100007F" && addr != "00000000000000000000000001000000" {
				t.Errorf("a socket listens beyond loopback: %s", line)
			}
		}
		if listening < 2 {
			t.Errorf("found %d listening sockets; want Jupyter's and the kernel's", listening)
		}
		info := sb.Info()
		if strings.Contains(fmt.Sprint(info), "JUPYTER_TOKEN") || info.Type != sandbox.TypeNotebook {
			t.Errorf("info: %+v", info)
		}
	}

	id := a.ContainerID()
	if err := a.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client().ContainerInspect(t.Context(), id); !errdefs.IsNotFound(err) {
		t.Errorf("container still there after Close: %v", err)
	}
	if _, err := a.Execute(t.Context(), "1", notebook.ExecOptions{}); !errors.Is(err, sandbox.ErrClosed) {
		t.Errorf("a cell in a closed sandbox: %v, want ErrClosed", err)
	}
	if r := run(t, b, "print(secret if 'secret' in globals() else 'b lives')", notebook.ExecOptions{}); r.Output != "b lives\n" {
		t.Errorf("b after a closed: %q", r.Output)
	}
}
