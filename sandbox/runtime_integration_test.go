package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// The container-level hardening, checked from inside real sandboxes. Every test here runs
// under the runtime testenv.Runtime() names (ENCLAVE_TEST_RUNTIME=runsc: make test-gvisor),
// like the other integration tests.

// gVisor reports this kernel release inside its sandboxes, whatever the host runs.
const gvisorRelease = "4.4.0"

// underGVisor tells whether the tests' sandboxes run under runsc.
func underGVisor() bool { return testenv.Runtime() == "runsc" }

// execOK executes argv in sb and insists that it ran and exited 0.
func execOK(t *testing.T, sb sandbox.Sandbox, argv ...string) string {
	t.Helper()
	res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: argv, TimeoutMS: 20000}, nil)
	if err != nil {
		t.Fatalf("exec %q: %v", argv, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exec %q: exit %d, stdout %q, stderr %q", argv, res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

// TestIntegrationRuntimeInUse: a sandbox really runs under the runtime asked for, so a test
// run "under gVisor" cannot silently be a run under runc. gVisor's kernel reports its own
// release and boot log; runc shares the host's kernel.
func TestIntegrationRuntimeInUse(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	insp, err := e.Client().ContainerInspect(t.Context(), sb.ContainerID())
	if err != nil {
		t.Fatal(err)
	}
	if want := testenv.Runtime(); want != "" && insp.HostConfig.Runtime != want {
		t.Fatalf("container runtime %q, want %q", insp.HostConfig.Runtime, want)
	}
	var host syscall.Utsname
	if err := syscall.Uname(&host); err != nil {
		t.Fatal(err)
	}
	hostRelease := utsString(host.Release[:])
	inside := strings.TrimSpace(execOK(t, sb, "uname", "-r"))
	t.Logf("runtime %q: kernel release inside %s, host %s", insp.HostConfig.Runtime, inside, hostRelease)
	if underGVisor() {
		if inside != gvisorRelease || inside == hostRelease {
			t.Errorf("kernel release inside %q: not gVisor's %s", inside, gvisorRelease)
		}
		if boot := execOK(t, sb, "dmesg"); !strings.Contains(boot, "gVisor") {
			t.Errorf("kernel log does not come from gVisor: %.200q", boot)
		}
	} else if inside != hostRelease {
		t.Errorf("kernel release inside %q, host %q: runc shares the host's kernel", inside, hostRelease)
	}
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

// TestIntegrationUlimits: sandbox processes get core 0 and 1024/4096 open files, and cannot
// raise the hard limits; a crash leaves no core file where the code ran.
func TestIntegrationUlimits(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})

	t.Run("limits seen by a shell", func(t *testing.T) {
		got := strings.Fields(execOK(t, sb, "sh", "-c", "ulimit -c; ulimit -Sn; ulimit -Hn"))
		if want := []string{"0", "1024", "4096"}; !slices.Equal(got, want) {
			t.Errorf("core, soft nofile, hard nofile = %v, want %v", got, want)
		}
	})
	t.Run("/proc/self/limits", func(t *testing.T) {
		if underGVisor() {
			t.Skip("this gVisor release has no /proc/self/limits; the shell's view above is gVisor's")
		}
		limits := execOK(t, sb, "cat", "/proc/self/limits")
		for _, want := range [][]string{{"Max core file size", "0", "0"}, {"Max open files", "1024", "4096"}} {
			if !hasLimitLine(limits, want) {
				t.Errorf("/proc/self/limits lacks %q:\n%s", want, limits)
			}
		}
	})
	t.Run("hard limits cannot be raised", func(t *testing.T) {
		out := execOK(t, sb, "python3", "-c", `
import resource
for name, res, lim in (("nofile", resource.RLIMIT_NOFILE, 1 << 20), ("core", resource.RLIMIT_CORE, resource.RLIM_INFINITY)):
    try:
        resource.setrlimit(res, (lim, lim))
        print(name, "raised")
    except (ValueError, OSError) as e:
        print(name, "refused")
`)
		if out != "nofile refused\ncore refused\n" {
			t.Errorf("raising the hard limits: %q, want both refused", out)
		}
	})
	t.Run("a crash writes no core", func(t *testing.T) {
		// core_pattern is the host's; with the plain "core" most kernels use, a dump would
		// land in the working directory, the workspace.
		res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"sh", "-c", "ulimit -c unlimited 2>/dev/null; ulimit -S -c unlimited 2>/dev/null; python3 -c 'import os; os.abort()'; echo crashed $?; ls -a"}, TimeoutMS: 20000}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.Stdout, "crashed 134") {
			t.Fatalf("the process did not crash with SIGABRT: %q %q", res.Stdout, res.Stderr)
		}
		if hasCore(res.Stdout) {
			t.Errorf("a core file was written: %q", res.Stdout)
		}
	})
	t.Run("control: no core limit", func(t *testing.T) {
		if underGVisor() {
			t.Skip("gVisor writes no core dumps at all")
		}
		id := controlContainer(t, e, func(host *container.HostConfig) {
			host.Ulimits = []*container.Ulimit{{Name: "core", Soft: -1, Hard: -1}}
		})
		out := dockerExec(t, id, "sh", "-c", "python3 -c 'import os; os.abort()'; ls -a")
		if !hasCore(out) {
			t.Errorf("with no core limit the same crash should dump core (else the test proves nothing; core_pattern %q): %q", corePattern(), out)
		}
	})
}

// hasCore tells whether a directory listing holds a core file.
func hasCore(listing string) bool {
	for _, name := range strings.Fields(listing) {
		if name == "core" || strings.HasPrefix(name, "core.") {
			return true
		}
	}
	return false
}

func corePattern() string {
	b, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
	return strings.TrimSpace(string(b))
}

func hasLimitLine(limits string, want []string) bool {
	for line := range strings.SplitSeq(limits, "\n") {
		if !strings.HasPrefix(line, want[0]) {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, want[0]))
		return len(f) >= 2 && f[0] == want[1] && f[1] == want[2]
	}
	return false
}

// blockedSyscalls tries system calls the default seccomp profile refuses to a container
// without capabilities, and prints "name errno" for each (0: it succeeded). unshare of a user
// namespace needs no capability on this kernel, and the kernel keyring is not namespaced:
// without the profile, both work.
const blockedSyscalls = `
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
nr = {"x86_64": {"keyctl": 250, "add_key": 248}, "aarch64": {"keyctl": 219, "add_key": 217}}[platform.machine()]
def report(name, rc):
    print(name, 0 if rc >= 0 else ctypes.get_errno())
report("unshare", libc.unshare(0x10000000))  # CLONE_NEWUSER
libc.syscall.restype = ctypes.c_long
report("keyctl", libc.syscall(nr["keyctl"], 0, -4, 0))  # KEYCTL_GET_KEYRING_ID, user keyring
report("add_key", libc.syscall(nr["add_key"], b"user", b"enclave-test", b"x", 1, -4))
for line in open("/proc/self/status"):
    if line.startswith("Seccomp:"):
        print("status", line.split()[1])
`

// TestIntegrationSeccompPinned: every sandbox runs under the default seccomp profile that
// its create request carries: the status shows filter mode 2, and system calls the profile
// refuses fail with EPERM. The control, the same container with the profile swapped for
// seccomp=unconfined, shows that those calls work without it: the EPERM is the profile's
// doing, not the kernel's or the capabilities'.
func TestIntegrationSeccompPinned(t *testing.T) {
	if underGVisor() {
		t.Skip("gVisor ignores the OCI seccomp profile: its own kernel serves every system call, and the host sees only the Sentry's filtered calls")
	}
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	insp, err := e.Client().ContainerInspect(t.Context(), sb.ContainerID())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(insp.HostConfig.SecurityOpt, func(o string) bool { return strings.HasPrefix(o, "seccomp={") }) {
		t.Fatalf("the container's create request carried no seccomp profile: %.200q", insp.HostConfig.SecurityOpt)
	}

	got := execOK(t, sb, "python3", "-c", blockedSyscalls)
	want := fmt.Sprintf("unshare %d\nkeyctl %d\nadd_key %d\nstatus 2\n", syscall.EPERM, syscall.EPERM, syscall.EPERM)
	if got != want {
		t.Errorf("in the sandbox:\n%s\nwant:\n%s", got, want)
	}

	t.Run("control: unconfined", func(t *testing.T) {
		id := controlContainer(t, e, func(host *container.HostConfig) {
			for i, opt := range host.SecurityOpt {
				if strings.HasPrefix(opt, "seccomp=") {
					host.SecurityOpt[i] = "seccomp=unconfined"
				}
			}
		})
		out := dockerExec(t, id, "python3", "-c", blockedSyscalls)
		if !strings.Contains(out, "unshare 0\n") || !strings.Contains(out, "keyctl 0\n") || !strings.Contains(out, "status 0\n") {
			t.Errorf("without the profile the same calls should work (else the test proves nothing):\n%s", out)
		}
	})
}

// controlContainer starts a container with a sandbox's spec (HardenedSpec, PID 1 sleep)
// changed by loosen, and removes it when the test ends. It runs under the engine's default
// runtime: a control shows what the host kernel does without one protection.
func controlContainer(t *testing.T, e *sandbox.Docker, loosen func(*container.HostConfig)) string {
	t.Helper()
	r, err := sandbox.Resolve(sandbox.Config{}, sandbox.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, host := sandbox.HardenedSpec(r, []string{"sleep", "60"}, map[string]string{sandbox.LabelManaged: "true", sandbox.LabelInstance: e.Instance()})
	host.AutoRemove = false
	loosen(host)
	cli := e.Client()
	created, err := cli.ContainerCreate(t.Context(), cfg, host, nil, nil, "")
	if err != nil {
		t.Fatalf("creating the control container: %v", err)
	}
	t.Cleanup(func() {
		err := cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true})
		if err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("removing the control container: %v", err)
		}
	})
	if err := cli.ContainerStart(t.Context(), created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("starting the control container: %v", err)
	}
	return created.ID
}

// dockerExec runs argv in container id (as its user, in its working directory) and returns
// its output.
func dockerExec(t *testing.T, id string, argv ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "docker", append([]string{"exec", id}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker exec %q in the control container: %v\n%s", argv, err, out)
	}
	return string(out)
}

// TestIntegrationAppArmorWhereEnabled: where the engine's host has AppArmor, sandboxes run
// confined by docker-default; where it has none (this machine), sandboxes are created all
// the same.
func TestIntegrationAppArmorWhereEnabled(t *testing.T) {
	e := testenv.Engine(t)
	info, err := e.Client().Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	hostHas := sandbox.ParseSecurityOptions(info.SecurityOptions).AppArmor
	sb := testenv.Sandbox(t, e, sandbox.Config{}) // creating it is the check without AppArmor
	insp, err := e.Client().ContainerInspect(t.Context(), sb.ContainerID())
	if err != nil {
		t.Fatal(err)
	}
	named := slices.Contains(insp.HostConfig.SecurityOpt, "apparmor="+sandbox.AppArmorProfile)
	if named != hostHas {
		t.Errorf("host has AppArmor: %v, but the sandbox names the profile: %v", hostHas, named)
	}
	if !hostHas {
		_, statErr := os.Stat("/sys/module/apparmor/parameters/enabled")
		t.Logf("the engine reports no AppArmor (SecurityOptions %q; /sys/module/apparmor/parameters/enabled: %v)", info.SecurityOptions, statErr)
		return
	}
	if underGVisor() {
		return // the profile confines the Sentry on the host, not the processes gVisor runs
	}
	if got := strings.TrimSpace(execOK(t, sb, "cat", "/proc/self/attr/current")); !strings.HasPrefix(got, sandbox.AppArmorProfile) {
		t.Errorf("AppArmor label inside %q, want %s (enforce)", got, sandbox.AppArmorProfile)
	}
}
