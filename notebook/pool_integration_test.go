package notebook_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/notebook"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// notebookPoolLeftover is something a hostile borrower leaves in a pooled notebook sandbox
// through its kernel, and how the next borrower of the same sandbox could find it.
type notebookPoolLeftover struct {
	name  string
	plant string // a cell run by the first borrower
	// check is a cell run by the next borrower; it prints "present" when the leftover is there.
	check string
}

// A cell's helper: the kernels the sandbox's Jupyter server runs, through its REST API, with
// the token the kernel inherits (as a borrower's code would find it).
const listKernels = `import json, os, urllib.request
def kernels():
    req = urllib.request.Request("http://127.0.0.1:8888/api/kernels", headers={"Authorization": "token " + os.environ["JUPYTER_TOKEN"]})
    return json.load(urllib.request.urlopen(req, timeout=10))
`

// procsNamed is a cell that prints "present" when a live process's command line holds name.
func procsNamed(name string) string {
	return `import os
hits = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
            continue
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        continue
    if "` + name + `" in cmd:
        hits.append(pid + " " + cmd)
print("present" if hits else "absent", hits)
`
}

// notebookPoolLeftovers is finding 4 of issue 9 for notebook pools: state in the kernel's
// IPython profile and HOME that would run code in the next borrower's kernel, the kernel's
// children (which carry the Jupyter server's marker), extra kernels started through the
// server's API, shared memory and files.
var notebookPoolLeftovers = []notebookPoolLeftover{
	{
		name: "IPython startup script",
		plant: `import os, IPython
d = os.path.join(IPython.paths.get_ipython_dir(), "profile_default", "startup")
os.makedirs(d, exist_ok=True)
open(os.path.join(d, "00-spy.py"), "w").write("SPY = 'ran'\nopen('/dev/shm/startup-ran', 'w').close()\n")
print(d)`,
		check: `import os; print("present" if "SPY" in dir() or os.path.exists("/dev/shm/startup-ran") else "absent")`,
	},
	{
		name: "user site .pth in HOME",
		plant: `import os, site
d = site.getusersitepackages(); os.makedirs(d, exist_ok=True)
open(os.path.join(d, "spy.pth"), "w").write("import os; open('/dev/shm/pth-ran', 'w').close()\n")`,
		check: `import os; print("present" if os.path.exists("/dev/shm/pth-ran") else "absent")`,
	},
	{
		name:  "kernel child that setsids",
		plant: `import subprocess; subprocess.Popen(["setsid", "sh", "-c", "while :; do sleep 1; done", "spy-kernel-child"])`,
		check: procsNamed("spy-kernel-child"),
	},
	{
		name:  "kernel grandchild that scrubs its environment",
		plant: `import os; os.system("(env -i setsid sh -c 'while :; do sleep 1; done' spy-kernel-scrubbed &)")`,
		check: procsNamed("spy-kernel-scrubbed"),
	},
	{
		name: "extra kernel started through the server's API",
		plant: listKernels + `req = urllib.request.Request("http://127.0.0.1:8888/api/kernels", data=b"{}", method="POST", headers={"Authorization": "token " + os.environ["JUPYTER_TOKEN"]})
urllib.request.urlopen(req, timeout=30).read(); print(len(kernels()))`,
		check: listKernels + `print("present" if len(kernels()) != 1 else "absent", len(kernels()))`,
	},
	{
		name:  "kernel variable",
		plant: `secret = 41`,
		check: `print("present" if "secret" in dir() else "absent")`,
	},
	{
		name:  "file in /dev/shm",
		plant: `open("/dev/shm/spy", "w").write("x")`,
		check: `import os; print("present" if os.path.exists("/dev/shm/spy") else "absent")`,
	},
	{
		name:  "file in /tmp",
		plant: `open("/tmp/spy", "w").write("x")`,
		check: `import os; print("present" if os.path.exists("/tmp/spy") else "absent")`,
	},
}

// TestIntegrationNotebookPoolResetKeepsBorrowersApart is finding 4 of issue 9 on a notebook
// pool: after one borrower plants an IPython startup script, a .pth, kernel children, an
// extra kernel and files, the next borrower of the same sandbox finds none of them and none
// of the planted code ran.
func TestIntegrationNotebookPoolResetKeepsBorrowersApart(t *testing.T) {
	e := testenv.Engine(t)
	testenv.RequireImage(t, e, sandbox.DefaultNotebookImage)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m := sandbox.NewManager(sandbox.ManagerOptions{
		Defaults: map[sandbox.Type]sandbox.Config{sandbox.TypeNotebook: {Image: sandbox.DefaultNotebookImage}},
		Creators: map[sandbox.Type]sandbox.Creator{sandbox.TypeNotebook: notebook.Creator(e, notebook.Options{Logger: log})},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	p := sandbox.NewPool(m, "pool-test", sandbox.TypeNotebook)
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	ctx := t.Context()
	start := time.Now()
	if _, err := p.Grow(ctx, 1, sandbox.Config{Image: sandbox.DefaultNotebookImage}); err != nil {
		t.Fatal(err)
	}
	t.Logf("creating the pooled notebook sandbox (what recreating it would cost) took %s", time.Since(start))

	borrow := func() *notebook.Sandbox {
		t.Helper()
		sb, err := p.Borrow(ctx, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return sb.(*notebook.Sandbox)
	}
	cell := func(nb *notebook.Sandbox, code string) string {
		t.Helper()
		res := run(t, nb, code, notebook.ExecOptions{Timeout: time.Minute})
		if res.Status != "ok" {
			t.Fatalf("cell %q: status %q, error %+v, stderr %q", code, res.Status, res.Error, res.Stderr)
		}
		return res.Output
	}

	first := borrow()
	for _, lo := range notebookPoolLeftovers {
		cell(first, lo.plant)
	}
	// Each leftover is there before the hand-over (the kernel's own variables, startup
	// script and .pth take effect in the next kernel), or the check could not fail.
	for _, lo := range notebookPoolLeftovers {
		switch lo.name {
		case "IPython startup script", "user site .pth in HOME":
			continue
		}
		lo := lo
		if !testwait.Poll(10*time.Second, func() bool { return strings.Contains(cell(first, lo.check), "present") }) {
			t.Fatalf("planting %q left nothing to find: the check cannot fail", lo.name)
		}
	}

	start = time.Now()
	p.Return(first)
	testwait.Until(t, 2*time.Minute, "pooled notebook sandbox reset and free again", func() bool { return p.Free() == 1 })
	t.Logf("reset between borrowers took %s", time.Since(start))

	second := borrow()
	defer p.Return(second)
	if second.ID() != first.ID() {
		t.Fatalf("the pool replaced the sandbox (%s -> %s) instead of resetting it", first.ID(), second.ID())
	}
	for _, lo := range notebookPoolLeftovers {
		t.Run(lo.name, func(t *testing.T) {
			if out := cell(second, lo.check); !strings.Contains(out, "absent") {
				t.Errorf("the next borrower finds it: %s", strings.TrimSpace(out))
			}
		})
	}
	t.Run("the notebook still works", func(t *testing.T) {
		if out := cell(second, "import matplotlib; 6 * 7"); !strings.Contains(out, "42") {
			t.Errorf("output %q", out)
		}
	})
}
