// Package smoke checks the test cluster of scripts/kube-cluster.sh: a Pod hardened like a
// Docker sandbox runs our image, and commands run in it through the API server. It lives in
// the build module (deploy/kube/build), which already has client-go, so the main module does
// not depend on Kubernetes for it. Runs only when KUBECONFIG is set:
//
//	eval "$(scripts/kube-cluster.sh env)" && cd deploy/kube/build && go test ./smoke/
//
// or `make kube-smoke`.
package smoke

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

// image is the sandbox image `kube-cluster.sh up` imports into the cluster's containerd.
const image = "enclave/python:bookworm"

// cluster connects to the cluster named by KUBECONFIG and makes a namespace of the test's
// own, deleted (with everything in it) when the test ends.
func cluster(t *testing.T) (*rest.Config, *kubernetes.Clientset, string) {
	t.Helper()
	path := os.Getenv("KUBECONFIG")
	if path == "" {
		t.Skip("KUBECONFIG is not set: run scripts/kube-cluster.sh up, then eval \"$(scripts/kube-cluster.sh env)\"")
	}
	config, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		t.Fatalf("client for %s: %v", config.Host, err)
	}
	ctx := t.Context()
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "enclave-smoke-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	t.Cleanup(func() {
		err := client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		if err != nil {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
		}
	})
	// Pods need the namespace's default ServiceAccount (even with no token mounted), which
	// the controller-manager creates shortly after the namespace.
	until(t, watchOne(t, client.CoreV1().ServiceAccounts(ns.Name), "default"), "the default ServiceAccount",
		func(watch.Event) (bool, error) { return true, nil })
	return config, client, ns.Name
}

// watcher is the part of a typed client that watching needs.
type watcher interface {
	Watch(context.Context, metav1.ListOptions) (watch.Interface, error)
}

// watchOne starts a watch on the object called name: its current state comes first (as an
// Added event), then its changes. Start it before the change it waits for.
func watchOne(t *testing.T, w watcher, name string) watch.Interface {
	t.Helper()
	wi, err := w.Watch(t.Context(), metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		t.Fatalf("watching %s: %v", name, err)
	}
	t.Cleanup(wi.Stop)
	return wi
}

// until reads the watch until done accepts an event (at most 2 minutes). The watch stays open
// for the next wait.
func until(t *testing.T, wi watch.Interface, what string, done func(watch.Event) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for {
		select {
		case ev, ok := <-wi.ResultChan():
			if !ok {
				t.Fatalf("waiting for %s: the watch ended", what)
			}
			ok, err := done(ev)
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			if ok {
				return
			}
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

// hardenedPod is a sandbox Pod as the Docker backend would harden a container: not root, no
// capabilities, read-only root, no service-account token, bounded, and never pulled.
func hardenedPod(name string) *corev1.Pod {
	no, yes := false, true
	uid := int64(65534)
	limits := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("1"),
		corev1.ResourceMemory:           resource.MustParse("256Mi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("256Mi"),
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": "enclave-smoke"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			EnableServiceLinks:           &no,
			RestartPolicy:                corev1.RestartPolicyNever,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &yes,
				RunAsUser:      &uid,
				RunAsGroup:     &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "sandbox",
				Image:           image,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"sleep", "3600"},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no,
					ReadOnlyRootFilesystem:   &yes,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				Resources: corev1.ResourceRequirements{Requests: limits, Limits: limits},
			}},
		},
	}
}

// execIn runs argv in the Pod's container through the API server (WebSocket, SPDY when the
// server refuses the upgrade) and returns its stdout, stderr and error.
func execIn(ctx context.Context, config *rest.Config, client *kubernetes.Clientset, ns, pod string, argv ...string) (string, string, error) {
	req := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "sandbox", Command: argv, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(config, "GET", req.URL().String())
	if err != nil {
		return "", "", fmt.Errorf("websocket executor: %w", err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(config, "POST", req.URL())
	if err != nil {
		return "", "", fmt.Errorf("spdy executor: %w", err)
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return "", "", fmt.Errorf("fallback executor: %w", err)
	}
	var stdout, stderr bytes.Buffer
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	return stdout.String(), stderr.String(), err
}

// run creates the Pod and waits until it runs; the watch it returns goes on with the Pod's
// later events.
func run(t *testing.T, client *kubernetes.Clientset, ns string, pod *corev1.Pod) watch.Interface {
	t.Helper()
	pods := client.CoreV1().Pods(ns)
	events := watchOne(t, pods, pod.Name)
	start := time.Now()
	if _, err := pods.Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the Pod: %v", err)
	}
	until(t, events, "the Pod to run", func(ev watch.Event) (bool, error) {
		pod, ok := ev.Object.(*corev1.Pod)
		if !ok || ev.Type == watch.Deleted {
			return false, fmt.Errorf("unexpected %s event: %v", ev.Type, ev.Object)
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("the Pod ended (%s): %+v", pod.Status.Phase, pod.Status.ContainerStatuses)
		}
		return pod.Status.Phase == corev1.PodRunning, nil
	})
	t.Logf("Pod create to Running: %v", time.Since(start).Round(time.Millisecond))
	return events
}

func TestHardenedPod(t *testing.T) {
	config, client, ns := cluster(t)
	pods := client.CoreV1().Pods(ns)
	events := run(t, client, ns, hardenedPod("sandbox"))

	tests := []struct {
		name    string
		argv    []string
		stdout  string // exact stdout when the command succeeds
		wantErr string // part of stderr when it must fail
	}{
		{"echo", []string{"echo", "hello from the pod"}, "hello from the pod\n", ""},
		{"not root", []string{"id", "-u"}, "65534\n", ""},
		{"no capabilities", []string{"sh", "-c", "grep CapEff /proc/self/status"}, "CapEff:\t0000000000000000\n", ""},
		{"no service-account token", []string{"sh", "-c", "test -e /var/run/secrets/kubernetes.io || echo none"}, "none\n", ""},
		{"read-only root", []string{"touch", "/etc/x"}, "", "Read-only file system"},
		{"python runs", []string{"python3", "-c", "print(6*7)"}, "42\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := execIn(t.Context(), config, client, ns, "sandbox", tt.argv...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(stderr, tt.wantErr) {
					t.Fatalf("%v: want a failure with %q in stderr, got err=%v stderr=%q", tt.argv, tt.wantErr, err, stderr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v: %v (stderr %q)", tt.argv, err, stderr)
			}
			if stdout != tt.stdout {
				t.Fatalf("%v: stdout %q, want %q", tt.argv, stdout, tt.stdout)
			}
		})
	}

	// The kubelet stops the container and the API object goes once it has.
	grace := int64(1)
	if err := pods.Delete(t.Context(), "sandbox", metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatalf("deleting the Pod: %v", err)
	}
	until(t, events, "the Pod to be deleted", func(ev watch.Event) (bool, error) { return ev.Type == watch.Deleted, nil })
}

// TestDenyEgressPolicy checks only that the policy the backend will create is accepted: the
// test cluster's CNI (bridge) does not enforce NetworkPolicy.
func TestDenyEgressPolicy(t *testing.T) {
	_, client, ns := cluster(t)
	policy := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-egress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "enclave-smoke"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		},
	}
	policies := client.NetworkingV1().NetworkPolicies(ns)
	if _, err := policies.Create(t.Context(), policy, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the NetworkPolicy: %v", err)
	}
	got, err := policies.Get(t.Context(), "deny-egress", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the NetworkPolicy back: %v", err)
	}
	if len(got.Spec.Egress) != 0 || len(got.Spec.PolicyTypes) != 1 || got.Spec.PolicyTypes[0] != networkingv1.PolicyTypeEgress {
		t.Fatalf("the NetworkPolicy came back as %+v, want egress denied to all", got.Spec)
	}
}

// TestIsolatedRuntimeClass checks the RuntimeClass the cluster offers sandboxes: the Pod has
// no route anywhere (not even to the API server it is reached through), and exec still works.
func TestIsolatedRuntimeClass(t *testing.T) {
	config, client, ns := cluster(t)
	pod := hardenedPod("isolated")
	class := "enclave-isolated"
	pod.Spec.RuntimeClassName = &class
	run(t, client, ns, pod)

	apiserver, err := url.Parse(config.Host)
	if err != nil {
		t.Fatalf("parsing the API server's address %q: %v", config.Host, err)
	}
	connect := fmt.Sprintf(`import socket
s = socket.socket()
s.settimeout(5)
try:
    s.connect((%q, %s))
    print("connected")
except OSError as e:
    print(e.strerror)`, apiserver.Hostname(), apiserver.Port())
	stdout, stderr, err := execIn(t.Context(), config, client, ns, "isolated", "python3", "-c", connect)
	if err != nil {
		t.Fatalf("exec in the isolated Pod: %v (stderr %q)", err, stderr)
	}
	if stdout != "Network is unreachable\n" {
		t.Fatalf("connecting to the API server at %s from the isolated Pod printed %q, want Network is unreachable", apiserver.Host, stdout)
	}
}
