package kube_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/sandbox/kube"
)

// These run on a real cluster (make test-kube); without ENCLAVE_TEST_KUBECONFIG they skip.

// spec is a sandbox spec of k's instance with cfg resolved under p.
func spec(t *testing.T, k *kube.Kube, cfg sandbox.Config, p sandbox.Policy, labels map[string]string) sandbox.Spec {
	t.Helper()
	r, err := sandbox.Resolve(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	id := sandbox.NewID()
	all := map[string]string{sandbox.LabelManaged: "true", sandbox.LabelInstance: k.Identity().ID, sandbox.LabelSandbox: id}
	for key, v := range labels {
		all[key] = v
	}
	return sandbox.Spec{ID: id, Labels: all, Config: r}
}

// noPods fails when any Pod of k's instance exists right now: a failed Launch deletes its
// Pod before it returns.
func noPods(t *testing.T, k *kube.Kube) {
	t.Helper()
	list, err := k.List(context.Background(), map[string]string{sandbox.LabelInstance: k.Identity().ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		t.Errorf("pod %s (%s) left behind", l.Ref, l.State)
	}
}

func run(t *testing.T, sb *sandbox.AgentSandbox, script string) sandbox.ExecResult {
	t.Helper()
	res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"sh", "-c", script}, TimeoutMS: 30000}, nil)
	if err != nil {
		t.Fatalf("%s: %v", script, err)
	}
	return res
}

// TestIntegrationKubeHardening: the Pod's spec says what the Docker backend's container
// does, and it is in effect inside: the uid, no capabilities, no new privileges, seccomp,
// a read-only root, no service-account token; the namespace's deny-all policy exists.
func TestIntegrationKubeHardening(t *testing.T) {
	k := testenv.Kube(t)
	sb := testenv.Sandbox(t, k, sandbox.Config{})
	pod, err := k.Pod(t.Context(), sb.ContainerID())
	if err != nil {
		t.Fatal(err)
	}
	ps := pod.Spec
	c := ps.Containers[0]
	sc := c.SecurityContext
	switch {
	case ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken:
		t.Error("service-account token mounted")
	case !*ps.SecurityContext.RunAsNonRoot || *ps.SecurityContext.RunAsUser != 1000:
		t.Errorf("pod runs as %d (non-root %v)", *ps.SecurityContext.RunAsUser, *ps.SecurityContext.RunAsNonRoot)
	case *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL":
		t.Errorf("container security context %+v", sc)
	case string(ps.SecurityContext.SeccompProfile.Type) != "RuntimeDefault":
		t.Errorf("seccomp %s", ps.SecurityContext.SeccompProfile.Type)
	case c.Resources.Limits.Memory().Value() != sandbox.DefaultMemory:
		t.Errorf("memory limit %s", c.Resources.Limits.Memory())
	}
	if err := k.PolicyExists(t.Context()); err != nil {
		t.Errorf("deny-all NetworkPolicy: %v", err)
	}

	res := run(t, sb, `id -u; id -g
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
touch /rootfs-write 2>&1 || echo root-read-only
ls /var/run/secrets/kubernetes.io/serviceaccount 2>&1 || echo no-token
touch "$HOME/ws" && echo workspace-writable`)
	out := res.Stdout
	for _, want := range []string{"1000\n1000\n", "CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000",
		"CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2", "root-read-only", "no-token", "workspace-writable"} {
		if !strings.Contains(out, want) {
			t.Errorf("inside the sandbox: no %q in\n%s%s", want, out, res.Stderr)
		}
	}
}

// TestIntegrationKubeExitAndOOM: a program past the memory limit is reported OOM-killed
// while the sandbox lives on; the agent's exit (its stdin closed) is the Pod's state.
func TestIntegrationKubeExitAndOOM(t *testing.T) {
	k := testenv.Kube(t)
	sb := testenv.Sandbox(t, k, sandbox.Config{MemoryLimit: "128m"})
	res, err := sb.Exec(t.Context(), sandbox.ExecRequest{Argv: []string{"python3", "-c", "b = bytearray(512 << 20); print(len(b))"}, TimeoutMS: 60000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OOMKilled || res.ExitCode == 0 {
		t.Errorf("512 MiB under a 128 MiB limit: exit %d, OOM-killed %v; want killed", res.ExitCode, res.OOMKilled)
	}
	if again := run(t, sb, "echo alive"); again.Stdout != "alive\n" {
		t.Errorf("after the OOM kill: %q", again.Stdout)
	}

	s := spec(t, k, sandbox.Config{}, sandbox.Policy{}, nil)
	l, err := k.Launch(t.Context(), s, func(sandbox.Streams) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Remove(context.Background(), l.Ref) })
	if st, err := k.Inspect(t.Context(), l.Ref); err != nil || !st.Running {
		t.Fatalf("launched: %+v, %v; want running", st, err)
	}
	_ = l.Streams.Stdin.Close() // the agent sees EOF and ends the sandbox
	var st sandbox.State
	testwait.Until(t, 30*time.Second, "the agent to exit", func() bool {
		st, err = k.Inspect(t.Context(), l.Ref)
		return err == nil && !st.Running && st.Error != ""
	})
	if st.ExitCode != 0 || !strings.Contains(st.Error, "Completed") {
		t.Errorf("after stdin closed: %+v; want exit 0, Completed", st)
	}
	l.Streams.Teardown()
	if err := k.Remove(t.Context(), l.Ref); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Inspect(t.Context(), l.Ref); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("inspect after remove: %v, want ErrNotFound", err)
	}
	if err := k.Remove(t.Context(), l.Ref); err != nil {
		t.Errorf("removing it again: %v", err)
	}
}

// TestIntegrationKubeRefused: what the cluster cannot run fails at once with its reason,
// and leaves no Pod.
func TestIntegrationKubeRefused(t *testing.T) {
	opts := testenv.KubeOptions(t)
	k := testenv.KubeWith(t, opts)
	missingAgent := opts
	missingAgent.AgentImage = "enclave/agent:missing"
	noAgent := testenv.KubeWith(t, missingAgent)
	huge := opts
	huge.RequestFraction = 1
	guaranteed := testenv.KubeWith(t, huge)
	for _, tc := range []struct {
		name   string
		k      *kube.Kube
		cfg    sandbox.Config
		policy sandbox.Policy
		err    error
		text   string
	}{
		{name: "sandbox image missing", k: k, cfg: sandbox.Config{Image: "enclave/missing:none"}, err: kube.ErrImageMissing, text: "ErrImageNeverPull"},
		{name: "agent image missing", k: noAgent, err: kube.ErrImageMissing, text: "enclave/agent:missing"},
		{name: "more memory than any node", k: guaranteed, cfg: sandbox.Config{MemoryLimit: "4000g"}, policy: sandbox.Policy{MaxMemory: 8000 << 30},
			err: kube.ErrUnschedulable, text: "Insufficient memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			_, err := tc.k.Launch(t.Context(), spec(t, tc.k, tc.cfg, tc.policy, nil), func(sandbox.Streams) error { called = true; return nil })
			if !errors.Is(err, tc.err) || !errors.Is(err, sandbox.ErrEngine) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %v: want %v saying %q", err, tc.err, tc.text)
			}
			if called {
				t.Error("ready was called")
			}
			noPods(t, tc.k)
		})
	}
}

// TestIntegrationKubeList: List selects by labels, values Kubernetes would refuse
// included, and reports them as given.
func TestIntegrationKubeList(t *testing.T) {
	k := testenv.Kube(t)
	ready := func(sandbox.Streams) error { return nil }
	owners := []string{"team/a b@example.com", "team_a_b_example.com"} // the second is the first, sanitised
	refs := map[string]string{}
	for _, owner := range owners {
		l, err := k.Launch(t.Context(), spec(t, k, sandbox.Config{}, sandbox.Policy{}, map[string]string{sandbox.LabelOwner: owner}), ready)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Streams.Teardown(); _ = k.Remove(context.Background(), l.Ref) })
		refs[owner] = l.Ref
	}
	for _, owner := range owners {
		list, err := k.List(t.Context(), map[string]string{sandbox.LabelOwner: owner, sandbox.LabelInstance: k.Identity().ID})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Ref != refs[owner] || list[0].Labels[sandbox.LabelOwner] != owner || list[0].State != "running" {
			t.Errorf("owner %q: listed %+v; want only %s, running, with the owner as given", owner, list, refs[owner])
		}
	}
	all, err := k.List(t.Context(), map[string]string{sandbox.LabelManaged: "true", sandbox.LabelInstance: k.Identity().ID})
	if err != nil || len(all) != 2 {
		t.Errorf("instance: listed %d, %v; want 2", len(all), err)
	}
}

// TestIntegrationKubeCancelDuringLaunch: a Launch cancelled once its Pod exists returns
// the cancel and leaves no Pod.
func TestIntegrationKubeCancelDuringLaunch(t *testing.T) {
	k := testenv.Kube(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := k.Launch(ctx, spec(t, k, sandbox.Config{}, sandbox.Policy{}, nil), func(sandbox.Streams) error {
			<-ctx.Done() // a cancel that comes after the Pod runs lands here
			return ctx.Err()
		})
		done <- err
	}()
	testwait.Until(t, 30*time.Second, "the pod to be created", func() bool {
		list, err := k.List(t.Context(), map[string]string{sandbox.LabelInstance: k.Identity().ID})
		return err == nil && len(list) > 0
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled launch: %v, want context.Canceled", err)
	}
	noPods(t, k)
}
