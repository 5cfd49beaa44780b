// Package kube is the Kubernetes backend: each sandbox is a Pod whose sandbox container runs
// the agent as PID 1, and the server speaks to it through the API server's attach on the
// container's stdin and stdout, so any server that can reach the API server can reach any
// sandbox. The agent needs no registry: an init container, from a small image that holds
// the static agent alone, copies it into an emptyDir the sandbox container runs it from.
//
// It talks to the API server through REST clients built on a scheme of its own (core/v1 and
// networking/v1), not client-go's Clientset, whose every API group would weigh on the
// enclave-mcp binary.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Options configures the connection to a cluster and the Pods made there.
type Options struct {
	// Kubeconfig is the kubeconfig file; empty means $KUBECONFIG or ~/.kube/config, and
	// the Pod's own service account when the server runs in the cluster.
	Kubeconfig string
	// Namespace holds the sandbox Pods; empty means the kubeconfig context's, else
	// "default".
	Namespace string
	// AgentImage is the image whose /agent is the static agent (AgentImageTag names the
	// one `make kube-agent-image` builds from bin/enclave-agent); empty means that tag for
	// AgentBinary.
	AgentImage string
	// AgentBinary names the agent AgentImage defaults from; empty means this process's
	// executable.
	AgentBinary string
	// PullPolicy is every container's imagePullPolicy; empty means Never: like the Docker
	// backend, images are loaded onto the nodes, never pulled.
	PullPolicy corev1.PullPolicy
	// RuntimeClass is the Pods' runtimeClassName (gVisor where the cluster has it); a
	// config's runtime wins. Empty means the cluster's default.
	RuntimeClass string
	// RequestFraction is the share of each limit (CPU, memory, ephemeral storage) a Pod
	// requests; 0 means 0.1. 1 gives Guaranteed Pods, which a small node fits few of.
	RequestFraction float64
	// StartTimeout bounds how long Launch waits for a Pod to run when the cluster says
	// nothing is wrong; 0 means two minutes.
	StartTimeout time.Duration
	// Instance names this server process in every Pod's labels; empty means random.
	Instance string
	// AdvertiseURL is where the other replicas reach this server's HTTP API (for example
	// http://POD_IP:8000), written on every Pod it creates: a replica that is asked for a
	// sandbox it does not hold forwards the request there (Locate). Empty: none can.
	AdvertiseURL string
	// OwnerPod is the server's own Pod in Namespace, when it runs in the cluster: it owns
	// every sandbox Pod and the replica's Lease (ownerReferences), so that Kubernetes'
	// garbage collector removes them with it, whatever became of the server (its Role
	// removed before it could clean up, its node gone). Empty: nothing owns them.
	OwnerPod string
	Logger   *slog.Logger
}

// Kube is the Kubernetes backend.
type Kube struct {
	cfg    *rest.Config
	core   *rest.RESTClient // /api/v1
	net    *rest.RESTClient // /apis/networking.k8s.io/v1
	coord  *rest.RESTClient // /apis/coordination.k8s.io/v1: replicas' Leases
	params runtime.ParameterCodec
	ns     string
	opts   Options
	log    *slog.Logger
	id     sandbox.Identity

	policyMu    sync.Mutex
	policyReady bool // the deny-all NetworkPolicy exists in ns

	located located // Locate's answers, by sandbox id

	owner *metav1.OwnerReference // Options.OwnerPod's; nil without one
}

var _ sandbox.Backend = (*Kube)(nil)

// New connects to the cluster opts names and checks that its API server answers.
func New(ctx context.Context, opts Options) (*Kube, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.AgentImage == "" {
		tag, err := AgentImageTag(opts.AgentBinary)
		if err != nil {
			return nil, err
		}
		opts.AgentImage = tag
	}
	if opts.PullPolicy == "" {
		opts.PullPolicy = corev1.PullNever
	}
	switch opts.PullPolicy {
	case corev1.PullNever, corev1.PullIfNotPresent, corev1.PullAlways:
	default:
		return nil, fmt.Errorf("%w: image pull policy %q: want Never, IfNotPresent or Always", sandbox.ErrInvalidConfig, opts.PullPolicy)
	}
	if opts.RequestFraction == 0 {
		opts.RequestFraction = 0.1
	}
	if opts.RequestFraction < 0 || opts.RequestFraction > 1 {
		return nil, fmt.Errorf("%w: request fraction %g: want a share of the limits in (0, 1]", sandbox.ErrInvalidConfig, opts.RequestFraction)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	if opts.Instance == "" {
		opts.Instance = sandbox.NewID()
	}
	if err := checkAdvertiseURL(opts.AdvertiseURL); err != nil {
		return nil, err
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = opts.Kubeconfig
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: loading the kubeconfig (%s): %w", sandbox.ErrEngine, cmpOr(opts.Kubeconfig, "default locations"), err)
	}
	if opts.Namespace == "" {
		if opts.Namespace, _, err = loader.Namespace(); err != nil || opts.Namespace == "" {
			opts.Namespace = "default"
		}
	}
	// client-go's defaults (5 requests a second, bursts of 10) would queue a burst of
	// creates behind one another; the API server's own priority and fairness limits apply.
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 100, 200
	}
	cfg.UserAgent = "enclave-mcp"
	k := &Kube{cfg: cfg, ns: opts.Namespace, opts: opts, log: opts.Logger, id: sandbox.SelfIdentity(opts.Instance)}
	if err := k.connect(); err != nil {
		return nil, err
	}
	if err := k.Ping(ctx); err != nil {
		return nil, err
	}
	if opts.OwnerPod != "" {
		var p corev1.Pod
		if err := k.core.Get().Namespace(k.ns).Resource("pods").Name(opts.OwnerPod).Do(ctx).Into(&p); err != nil {
			return nil, fmt.Errorf("%w: reading the server's own pod %s/%s (--kube-owner-pod; the sandbox pods must be in the server's namespace): %w",
				sandbox.ErrInvalidConfig, k.ns, opts.OwnerPod, err)
		}
		k.owner = &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID}
	}
	return k, nil
}

// connect builds the REST clients on a scheme that knows the few types used.
func (k *Kube) connect() error {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := networkingv1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := coordinationv1.AddToScheme(scheme); err != nil {
		return err
	}
	codecs := serializer.NewCodecFactory(scheme)
	k.params = runtime.NewParameterCodec(scheme)
	client := func(apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
		c := rest.CopyConfig(k.cfg)
		c.APIPath = apiPath
		c.GroupVersion = &gv
		c.NegotiatedSerializer = codecs.WithoutConversion()
		return rest.RESTClientFor(c)
	}
	var err error
	if k.core, err = client("/api", corev1.SchemeGroupVersion); err != nil {
		return fmt.Errorf("%w: core client: %w", sandbox.ErrEngine, err)
	}
	if k.net, err = client("/apis", networkingv1.SchemeGroupVersion); err != nil {
		return fmt.Errorf("%w: networking client: %w", sandbox.ErrEngine, err)
	}
	if k.coord, err = client("/apis", coordinationv1.SchemeGroupVersion); err != nil {
		return fmt.Errorf("%w: coordination client: %w", sandbox.ErrEngine, err)
	}
	return nil
}

// Name implements sandbox.Backend.
func (k *Kube) Name() string { return "kube" }

// Identity implements sandbox.Backend.
func (k *Kube) Identity() sandbox.Identity { return k.id }

// Namespace is where this backend's Pods are.
func (k *Kube) Namespace() string { return k.ns }

// AgentImage is the init container's image.
func (k *Kube) AgentImage() string { return k.opts.AgentImage }

// Close implements sandbox.Backend; the REST clients hold nothing that needs closing
// beyond idle connections.
func (k *Kube) Close() error { return nil }

// Ping implements sandbox.Backend: the API server's /readyz.
func (k *Kube) Ping(ctx context.Context) error {
	if err := k.core.Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
		return fmt.Errorf("%w: the Kubernetes API server at %s does not answer ready: %w", sandbox.ErrEngine, k.cfg.Host, err)
	}
	return nil
}

// Launch implements sandbox.Backend: it makes sure the namespace's deny-all NetworkPolicy
// exists, creates the Pod, waits for its sandbox container to run (failing at once, with
// the cluster's reason, when it never will), attaches to the agent's stdio and hands it to
// ready. On any failure the Pod is deleted before Launch returns.
func (k *Kube) Launch(ctx context.Context, spec sandbox.Spec, ready func(sandbox.Streams) error) (sandbox.Launched, error) {
	pod, err := podSpec(podInput{Spec: spec, AgentImage: k.opts.AgentImage, PullPolicy: k.opts.PullPolicy,
		RuntimeClass: k.opts.RuntimeClass, RequestFraction: k.opts.RequestFraction, ReplicaURL: k.opts.AdvertiseURL, Owner: k.owner})
	if err != nil {
		return sandbox.Launched{}, err
	}
	if err := k.ensurePolicy(ctx); err != nil {
		return sandbox.Launched{}, err
	}
	// Not the caller's context: a create cancelled in flight may still happen on the API
	// server, leaving a Pod we would not know to delete.
	var created corev1.Pod
	err = k.core.Post().Namespace(k.ns).Resource("pods").Body(pod).Do(context.WithoutCancel(ctx)).Into(&created)
	if err != nil {
		if !apierrors.IsAlreadyExists(err) && !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			k.discard(pod.Name) // a create that failed in transit may still have happened
		}
		return sandbox.Launched{}, createError(pod.Name, err)
	}
	l, err := k.start(ctx, &created, ready)
	if err != nil {
		k.discard(pod.Name)
		return sandbox.Launched{}, err
	}
	l.Reset = sandbox.ResetFor(spec.Config)
	return l, nil
}

// start waits for the Pod to run, attaches and calls ready.
func (k *Kube) start(ctx context.Context, pod *corev1.Pod, ready func(sandbox.Streams) error) (sandbox.Launched, error) {
	running, err := k.waitRunning(ctx, pod)
	if err != nil {
		return sandbox.Launched{}, err
	}
	streams, err := k.attach(pod.Name)
	if err != nil {
		return sandbox.Launched{}, err
	}
	// The agent waits for one byte (--await-attach): the write returns once the attach
	// stream took it, and fails when the attach failed (teardown closes the pipe).
	wrote := make(chan error, 1)
	go func() { _, err := streams.Stdin.Write([]byte{'\n'}); wrote <- err }()
	select {
	case err = <-wrote:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		streams.Teardown()
		return sandbox.Launched{}, fmt.Errorf("%w: attaching to pod %s: %w", sandbox.ErrEngine, pod.Name, err)
	}
	if err := ready(streams); err != nil {
		streams.Teardown()
		return sandbox.Launched{}, fmt.Errorf("%w: %w%s", ErrStartFailed, err, sandbox.ExitHint(k, pod.Name))
	}
	return sandbox.Launched{
		Ref:      pod.Name,
		Streams:  streams,
		Metadata: map[string]any{"pod": pod.Name, "namespace": k.ns, "node": running.Spec.NodeName},
	}, nil
}

// waitRunning watches the Pod until its sandbox container runs, the cluster says it never
// will, ctx ends or StartTimeout passes.
func (k *Kube) waitRunning(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, k.opts.StartTimeout)
	defer cancel()
	last := pod
	for {
		if ok, err := startState(last); err != nil || ok {
			return last, err
		}
		w, err := k.core.Get().Namespace(k.ns).Resource("pods").VersionedParams(&metav1.ListOptions{
			FieldSelector:   "metadata.name=" + pod.Name,
			ResourceVersion: last.ResourceVersion,
			Watch:           true,
		}, k.params).Watch(ctx)
		if err != nil {
			return nil, k.waitError(ctx, last, err)
		}
		last, err = k.nextPodEvent(ctx, w, last)
		w.Stop()
		if err != nil {
			return nil, k.waitError(ctx, last, err)
		}
	}
}

// errWatchEnded asks waitRunning to watch again, from the Pod as last seen (re-read).
var errWatchEnded = errors.New("watch ended")

// nextPodEvent reads w until the Pod changes so that it runs or never will, or w ends;
// it returns the Pod as last seen.
func (k *Kube) nextPodEvent(ctx context.Context, w watch.Interface, last *corev1.Pod) (*corev1.Pod, error) {
	for {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return k.getPod(ctx, last)
			}
			switch ev.Type {
			case watch.Deleted:
				return last, fmt.Errorf("%w: %w: pod %s was deleted while it started", sandbox.ErrEngine, ErrStartFailed, last.Name)
			case watch.Error:
				// Most often "too old resource version": read the Pod again, watch from it.
				return k.getPod(ctx, last)
			case watch.Added, watch.Modified:
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				last = p
				if ok, err := startState(p); err != nil || ok {
					return p, nil
				}
			}
		}
	}
}

// getPod reads the Pod again.
func (k *Kube) getPod(ctx context.Context, last *corev1.Pod) (*corev1.Pod, error) {
	var p corev1.Pod
	if err := k.core.Get().Namespace(k.ns).Resource("pods").Name(last.Name).Do(ctx).Into(&p); err != nil {
		if apierrors.IsNotFound(err) {
			return last, fmt.Errorf("%w: %w: pod %s was deleted while it started", sandbox.ErrEngine, ErrStartFailed, last.Name)
		}
		return last, err
	}
	return &p, nil
}

// waitError explains a wait that ended without the Pod running: the caller's cancel, the
// start timeout with what the Pod was waiting for, or the API server's error.
func (k *Kube) waitError(ctx context.Context, last *corev1.Pod, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w: pod %s did not run within %s: %s", sandbox.ErrEngine, ErrStartFailed, last.Name, k.opts.StartTimeout, pending(last))
	}
	if errors.Is(err, sandbox.ErrEngine) || ctx.Err() != nil {
		return fmt.Errorf("starting pod %s: %w", last.Name, err)
	}
	return fmt.Errorf("%w: watching pod %s: %w", sandbox.ErrEngine, last.Name, err)
}

// pending says what a Pod that is not running is waiting for.
func pending(p *corev1.Pod) string {
	var parts []string
	parts = append(parts, "phase "+string(p.Status.Phase))
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			parts = append(parts, string(c.Type)+": "+c.Message)
		}
	}
	for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil {
			parts = append(parts, cs.Name+" waiting: "+strings.TrimSpace(w.Reason+" "+w.Message))
		}
	}
	return strings.Join(parts, "; ")
}

// attach connects to the sandbox container's stdin, stdout and stderr through the API
// server: WebSocket first, SPDY where the API server or a proxy on the way refuses it.
func (k *Kube) attach(name string) (sandbox.Streams, error) {
	req := k.core.Post().Namespace(k.ns).Resource("pods").Name(name).SubResource("attach").
		VersionedParams(&corev1.PodAttachOptions{Container: containerName, Stdin: true, Stdout: true, Stderr: true}, k.params)
	ws, err := remotecommand.NewWebSocketExecutor(k.cfg, "GET", req.URL().String())
	if err != nil {
		return sandbox.Streams{}, fmt.Errorf("%w: attaching to pod %s: %w", sandbox.ErrEngine, name, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(k.cfg, "POST", req.URL())
	if err != nil {
		return sandbox.Streams{}, fmt.Errorf("%w: attaching to pod %s: %w", sandbox.ErrEngine, name, err)
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return sandbox.Streams{}, fmt.Errorf("%w: attaching to pod %s: %w", sandbox.ErrEngine, name, err)
	}
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	stderrR, stderrW := io.Pipe()
	streamCtx, cancel := context.WithCancel(context.Background())
	teardown := sync.OnceFunc(func() {
		cancel()
		_ = stdinR.Close()
		_ = stdoutR.Close() // the reader then sees io.ErrClosedPipe: "the stream closed"
		_ = stderrR.Close()
	})
	go func() {
		err := exec.StreamWithContext(streamCtx, remotecommand.StreamOptions{Stdin: stdinR, Stdout: stdoutW, Stderr: stderrW})
		if err == nil {
			err = io.EOF
		} else {
			k.log.Debug("attach ended", "pod", name, "err", err)
		}
		stdoutW.CloseWithError(err)
		stderrW.CloseWithError(err)
		teardown()
	}()
	return sandbox.Streams{Stdin: stdinW, Stdout: stdoutR, Stderr: stderrR, Teardown: teardown}, nil
}

// createError explains a refused create in the cluster's words.
func createError(name string, err error) error {
	msg := err.Error()
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		msg = status.Status().Message
	}
	switch {
	case apierrors.IsForbidden(err) && strings.Contains(msg, "exceeded quota"),
		apierrors.IsForbidden(err) && strings.Contains(msg, "LimitRange"),
		apierrors.IsForbidden(err) && strings.Contains(msg, "maximum"):
		return fmt.Errorf("%w: %w: creating pod %s: %s", sandbox.ErrEngine, ErrQuota, name, msg)
	case apierrors.IsInvalid(err):
		return fmt.Errorf("%w: the cluster refused pod %s as invalid: %s", sandbox.ErrInvalidConfig, name, msg)
	}
	return fmt.Errorf("%w: creating pod %s: %w", sandbox.ErrEngine, name, err)
}

// ensurePolicy creates the namespace's deny-all NetworkPolicy once: sandbox Pods are not
// created without it.
func (k *Kube) ensurePolicy(ctx context.Context) error {
	k.policyMu.Lock()
	defer k.policyMu.Unlock()
	if k.policyReady {
		return nil
	}
	err := k.net.Post().Namespace(k.ns).Resource("networkpolicies").Body(denyAll()).Do(ctx).Error()
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%w: creating NetworkPolicy %s/%s, which cuts sandbox pods off the network (the server needs create on networkpolicies): %w",
			sandbox.ErrEngine, k.ns, denyAllPolicy, err)
	}
	k.policyReady = true
	return nil
}

// discard deletes a Pod that must not outlive a failed Launch, whatever the caller's
// context: with a deadline of its own, logged when it fails (the reaper finds it later).
func (k *Kube) discard(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.Remove(ctx, name); err != nil {
		k.log.Warn("deleting a pod that failed to start", "pod", name, "err", err)
	}
}

// Stop implements sandbox.Backend: a Pod cannot be stopped and kept, so it is deleted.
func (k *Kube) Stop(ctx context.Context, ref string) error { return k.Remove(ctx, ref) }

// Remove implements sandbox.Backend: the Pod is deleted with no grace period (the API
// object goes at once, the kubelet kills its containers); gone already is success.
func (k *Kube) Remove(ctx context.Context, ref string) error {
	err := k.core.Delete().Namespace(k.ns).Resource("pods").Name(ref).
		Body(&metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}).Do(ctx).Error()
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: deleting pod %s: %w", sandbox.ErrEngine, ref, err)
	}
	return nil
}

// Inspect implements sandbox.Backend: the sandbox container's state; an OOM kill shows as
// Error "OOMKilled".
func (k *Kube) Inspect(ctx context.Context, ref string) (sandbox.State, error) {
	var p corev1.Pod
	if err := k.core.Get().Namespace(k.ns).Resource("pods").Name(ref).Do(ctx).Into(&p); err != nil {
		if apierrors.IsNotFound(err) {
			return sandbox.State{}, fmt.Errorf("pod %s: %w", ref, sandbox.ErrNotFound)
		}
		return sandbox.State{}, fmt.Errorf("%w: reading pod %s: %w", sandbox.ErrEngine, ref, err)
	}
	return podState(&p), nil
}

// List implements sandbox.Backend: a label selector on the sanitised values, then an exact
// match on the originals the Pods carry.
func (k *Kube) List(ctx context.Context, want map[string]string) ([]sandbox.Listed, error) {
	sel := labels.Set{}
	for key, v := range want {
		sel[key] = labelValue(v)
	}
	var list corev1.PodList
	err := k.core.Get().Namespace(k.ns).Resource("pods").
		VersionedParams(&metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()}, k.params).Do(ctx).Into(&list)
	if err != nil {
		return nil, fmt.Errorf("%w: listing sandbox pods in %s: %w", sandbox.ErrEngine, k.ns, err)
	}
	var out []sandbox.Listed
	for i := range list.Items {
		p := &list.Items[i]
		got := podOriginalLabels(p)
		if !containsAll(got, want) {
			continue
		}
		out = append(out, sandbox.Listed{Ref: p.Name, Labels: got, State: listState(p), Created: p.CreationTimestamp.Time})
	}
	return out, nil
}

// podOriginalLabels are the labels a sandbox was given, from the Pod's annotation; a Pod
// without it (made by hand) shows its own labels.
func podOriginalLabels(p *corev1.Pod) map[string]string {
	var got map[string]string
	if err := json.Unmarshal([]byte(p.Annotations[annotationLabels]), &got); err != nil || got == nil {
		return maps.Clone(p.Labels)
	}
	return got
}

func containsAll(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// AgentImageTag is the agent image made from agent binary path (empty: this process's
// executable): enclave/agent:<the first 16 hex digits of its SHA-256>, so a server never
// runs an agent other than its own. scripts/kube-agent-image.sh builds it.
func AgentImageTag(path string) (string, error) {
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("finding own executable for the agent: %w", err)
		}
		path = self
	}
	hash, err := sandbox.AgentHash(path)
	if err != nil {
		return "", err
	}
	return "enclave/agent:" + hash[:16], nil
}
