package notebook_test

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// floodMiB is how much output the flooding cell sends: 1 GiB, or a quarter of it under the
// race detector, which slows the tunnel's relay (in the same process) to a few MB/s.
func floodMiB() int {
	if raceEnabled {
		return 256
	}
	return 1024
}

// TestIntegrationHostileJupyterOutput (issue 9, finding 3): a fake Jupyter server running
// inside a real sandbox, reached through the agent's tunnel as a real one is, sends 1 GiB of
// output: as 1 MiB messages (256 of them under -race), and as one 1 GiB message. The
// server's (this process's) peak RSS stays under 200 MiB above its idle level, the cells end
// with capped output or a clear error, and another session's sandbox keeps answering
// meanwhile.
func TestIntegrationHostileJupyterOutput(t *testing.T) {
	e := testenv.Engine(t)
	victim := testenv.Sandbox(t, e, sandbox.Config{})
	bystander := testenv.Sandbox(t, e, sandbox.Config{})
	ctx := t.Context()

	script, err := os.ReadFile("testdata/hostile_jupyter.py")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := victim.File(ctx, sandbox.FileRequest{Action: sandbox.FileWrite, Path: "/tmp/hostile_jupyter.py", Data: script}); err != nil {
		t.Fatal(err)
	}
	if _, err := victim.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "/tmp/hostile_jupyter.py", "8888"}, Background: true}, nil); err != nil {
		t.Fatal(err)
	}
	client := notebook.NewClient("127.0.0.1:8888", "token", victim.DialContext)
	t.Cleanup(client.Close)
	testwait.Until(t, 30*time.Second, "the fake Jupyter server answering through the tunnel", func() bool { return client.Ping(ctx) == nil })
	kernel, err := notebook.StartKernel(ctx, client, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kernel.Close)
	if r, err := kernel.Execute(ctx, "ok", notebook.ExecOptions{Timeout: 10 * time.Second}); err != nil || r.Output != "ok\n" {
		t.Fatalf("a plain cell: %q, %v", r.Output, err)
	}

	idle := testenv.SettleRSS(t)
	probe := probeSandbox(t, bystander)

	tests := []struct {
		name  string
		code  string
		check func(t *testing.T, r notebook.Result, err error)
	}{
		{fmt.Sprintf("%d MiB in 1 MiB messages is capped", floodMiB()), fmt.Sprintf("flood %d", floodMiB()), func(t *testing.T, r notebook.Result, err error) {
			if err != nil {
				t.Fatalf("the cell failed: %v", err)
			}
			if r.Status != "ok" || !r.Truncated || r.OmittedBytes < int64(floodMiB()-2)<<20 || len(r.Output) > notebook.DefaultMaxOutputBytes+100 {
				t.Errorf("want the whole GiB read and the output capped: status %q, %d bytes kept, %d omitted", r.Status, len(r.Output), r.OmittedBytes)
			}
		}},
		{"one 1 GiB message fails the cell", "huge 1024", func(t *testing.T, r notebook.Result, err error) {
			want := "the kernel sent a message over 64 MiB; output of this cell was cut"
			if !errors.Is(err, notebook.ErrMessageTooLarge) || !strings.Contains(err.Error(), want) {
				t.Fatalf("want %q, got %v", want, err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r, err := kernel.Execute(ctx, tc.code, notebook.ExecOptions{Timeout: 10 * time.Minute})
			t.Logf("%s: took %s", tc.code, time.Since(start).Round(time.Millisecond))
			tc.check(t, r, err)
			if r, err := kernel.Execute(ctx, "ok", notebook.ExecOptions{Timeout: 30 * time.Second}); err != nil || r.Output != "ok\n" {
				t.Fatalf("the cell after: %q, %v", r.Output, err)
			}
		})
	}

	peak := testenv.PeakRSS(t)
	calls, slowest := probe()
	t.Logf("race detector %v; RSS idle %d MiB, peak %d MiB (+%d MiB); the other sandbox answered %d calls meanwhile, the slowest in %s",
		raceEnabled, idle>>20, peak>>20, (peak-idle)>>20, calls, slowest.Round(time.Millisecond))
	if peak-idle > 200<<20 {
		t.Errorf("peak RSS grew by %d MiB over idle, want under 200 MiB", (peak-idle)>>20)
	}
	if calls < 3 || slowest > 5*time.Second {
		t.Errorf("the other sandbox answered %d calls, the slowest in %s; want it to keep answering within 5 s", calls, slowest)
	}
}

// probeSandbox runs a short command in sb over and over until the returned function is
// called, which reports how many answered and the slowest answer. A failed call fails t.
func probeSandbox(t *testing.T, sb *sandbox.AgentSandbox) func() (int, time.Duration) {
	t.Helper()
	var (
		mu    sync.Mutex
		times []time.Duration
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"echo", "alive"}, TimeoutMS: 10_000}, nil)
			if err != nil || res.Stdout != "alive\n" {
				t.Errorf("the other sandbox: %q, %v", res.Stdout, err)
				return
			}
			mu.Lock()
			times = append(times, time.Since(start))
			mu.Unlock()
		}
	}()
	return func() (int, time.Duration) {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(times) == 0 {
			return 0, 0
		}
		return len(times), slices.Max(times)
	}
}
