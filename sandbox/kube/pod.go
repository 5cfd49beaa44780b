package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// Names of what a sandbox's Pod holds.
const (
	// containerName is the sandbox container, whose PID 1 is the agent.
	containerName = "sandbox"
	// initName is the init container that copies the agent into the agent volume.
	initName = "agent"
	// agentVolume, workspaceVolume and tmpVolume are the Pod's emptyDirs.
	agentVolume     = "agent"
	workspaceVolume = "workspace"
	tmpVolume       = "tmp"
	// annotationLabels holds a sandbox's labels as given (JSON): label values are sanitised
	// to what Kubernetes accepts, and List reports and matches the originals.
	annotationLabels = "enclave-mcp/labels"
	// annotationReplica is the base URL of the server replica that holds the sandbox's
	// agent stream, where the others forward requests for it.
	annotationReplica = "enclave-mcp/replica-url"
	// annotationEgress is the Docker backend's LabelEgress: too long and too free for a label.
	annotationEgress = "enclave-mcp/egress"
	// agentInImage is where the agent image keeps the agent binary.
	agentInImage = "/agent"
	// agentVolumeLimit bounds the agent volume: the binary, a few MB.
	agentVolumeLimit = 64 << 20
	// denyAllPolicy names the NetworkPolicy that cuts every sandbox Pod off the network.
	denyAllPolicy = "enclave-mcp-sandbox-deny-all"
)

// podInput is everything podSpec needs; it holds no client.
type podInput struct {
	Spec       sandbox.Spec
	AgentImage string
	PullPolicy corev1.PullPolicy
	// RuntimeClass is the operator's runtimeClassName; a config's runtime, when it names
	// one, wins (the policy has checked it).
	RuntimeClass string
	// RequestFraction is the share of each limit requested for scheduling (0 < f <= 1).
	RequestFraction float64
	// ReplicaURL is the creating server's Options.AdvertiseURL; empty leaves it out.
	ReplicaURL string
	// Owner, when set, owns the Pod (the server's own Pod): it is garbage-collected with it.
	Owner *metav1.OwnerReference
}

// podName is the Pod of sandbox id.
func podName(id string) string { return "enclave-" + id }

// podSpec builds one sandbox's Pod. It is a pure function so that every security default
// is visible in one place and pinned by a test. It refuses what the cluster cannot give
// the way the Docker backend does: host mounts, a network, egress through the server.
func podSpec(in podInput) (*corev1.Pod, error) {
	c := in.Spec.Config
	switch {
	case len(c.Volumes) > 0:
		return nil, fmt.Errorf("%w: volumes (host mounts) are not available on the kube backend: a Pod's node is not the server's host", sandbox.ErrInvalidConfig)
	case c.NetworkEnabled:
		return nil, fmt.Errorf("%w: network_enabled is not available on the kube backend: every sandbox Pod is cut off by the %s NetworkPolicy", sandbox.ErrInvalidConfig, denyAllPolicy)
	case c.Egress != nil:
		return nil, fmt.Errorf("%w: egress is not available on the kube backend yet", sandbox.ErrInvalidConfig)
	}
	uid, gid, ok := sandbox.NumericUser(c.User)
	if !ok {
		return nil, fmt.Errorf("%w: user %q: the kube backend needs a numeric uid[:gid] (the kubelet cannot check a name against runAsNonRoot)", sandbox.ErrInvalidConfig, c.User)
	}
	runAsUser, _ := strconv.ParseInt(uid, 10, 64)
	runAsGroup, _ := strconv.ParseInt(gid, 10, 64)

	labels, annotations, err := podLabels(in.Spec.Labels)
	if err != nil {
		return nil, err
	}
	if in.ReplicaURL != "" {
		annotations[annotationReplica] = in.ReplicaURL
	}
	if rules := c.Egress; rules != nil {
		if b, err := json.Marshal(rules.Redacted()); err == nil {
			annotations[annotationEgress] = string(b)
		}
	}

	var env []corev1.EnvVar
	for _, kv := range sandbox.Env(c) {
		k, v, _ := strings.Cut(kv, "=")
		env = append(env, corev1.EnvVar{Name: k, Value: v})
	}
	limits := corev1.ResourceList{
		corev1.ResourceMemory:           *resource.NewQuantity(c.MemoryBytes, resource.BinarySI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(c.WorkspaceBytes+agentVolumeLimit, resource.BinarySI),
	}
	if c.NanoCPUs > 0 {
		limits[corev1.ResourceCPU] = *resource.NewMilliQuantity(max(c.NanoCPUs/1e6, 1), resource.DecimalSI)
	}
	requests := corev1.ResourceList{}
	for name, q := range limits {
		requests[name] = fraction(q, in.RequestFraction)
	}
	readOnly := c.ReadOnlyRootfs == nil || *c.ReadOnlyRootfs
	nonRoot := runAsUser != 0 && runAsGroup != 0

	security := func(readOnlyRoot bool) *corev1.SecurityContext {
		return &corev1.SecurityContext{
			Privileged:               &c.Privileged,
			AllowPrivilegeEscalation: ptr(c.Privileged), // the API refuses false beside privileged
			ReadOnlyRootFilesystem:   &readOnlyRoot,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        podName(in.Spec.ID),
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  ptr(false),
			EnableServiceLinks:            ptr(false),
			TerminationGracePeriodSeconds: ptr(int64(0)),
			Hostname:                      "sandbox",
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &nonRoot,
				RunAsUser:      &runAsUser,
				RunAsGroup:     &runAsGroup,
				FSGroup:        &runAsGroup,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Volumes: []corev1.Volume{
				{Name: agentVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: resource.NewQuantity(agentVolumeLimit, resource.BinarySI)}}},
				{Name: workspaceVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: resource.NewQuantity(c.WorkspaceBytes, resource.BinarySI)}}},
				// Memory-backed like the Docker backend's /tmp; it counts against the memory limit.
				{Name: tmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: resource.NewQuantity(c.TmpBytes, resource.BinarySI)}}},
			},
			InitContainers: []corev1.Container{{
				Name:            initName,
				Image:           in.AgentImage,
				ImagePullPolicy: in.PullPolicy,
				Command:         []string{agentInImage, "agent", "--install", sandbox.AgentPath},
				SecurityContext: security(true),
				Resources: corev1.ResourceRequirements{
					Limits:   limits,
					Requests: requests,
				},
				VolumeMounts: []corev1.VolumeMount{{Name: agentVolume, MountPath: sandbox.AgentDir}},
			}},
			Containers: []corev1.Container{{
				Name:            containerName,
				Image:           c.Image,
				ImagePullPolicy: in.PullPolicy,
				Command:         agentCommand(c, in.Spec.AgentArgs),
				Args:            []string{},
				WorkingDir:      c.WorkingDir,
				Env:             env,
				// The agent's stdio is the protocol: stdin open for one attach, which the
				// server holds; when it ends, the agent sees EOF and ends the sandbox.
				Stdin:                    true,
				StdinOnce:                true,
				TTY:                      false,
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				SecurityContext:          security(readOnly),
				Resources: corev1.ResourceRequirements{
					Limits:   limits,
					Requests: requests,
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: agentVolume, MountPath: sandbox.AgentDir, ReadOnly: true},
					{Name: workspaceVolume, MountPath: c.WorkingDir},
					{Name: tmpVolume, MountPath: "/tmp"},
				},
			}},
		},
	}
	if in.Owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*in.Owner}
	}
	if rc := cmpOr(c.Runtime, in.RuntimeClass); rc != "" {
		pod.Spec.RuntimeClassName = &rc
	}
	for _, name := range slices.Sorted(maps.Keys(c.ExtraHosts)) {
		pod.Spec.HostAliases = append(pod.Spec.HostAliases, corev1.HostAlias{IP: c.ExtraHosts[name], Hostnames: []string{name}})
	}
	return pod, nil
}

// agentCommand is the sandbox's agent command line with --await-attach: the container
// starts before the server can attach, so the agent greets only once the server's first
// byte says it listens.
func agentCommand(c sandbox.Resolved, agentArgs []string) []string {
	return slices.Insert(sandbox.AgentCommand(c, agentArgs), 2, "--await-attach")
}

// denyAll is the NetworkPolicy that selects every sandbox Pod and allows nothing in or out.
// It is enforced only where the cluster's network plugin enforces NetworkPolicies.
func denyAll() *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name:   denyAllPolicy,
			Labels: map[string]string{sandbox.LabelManaged: "true"},
		},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{sandbox.LabelManaged: "true"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
}

// fraction is share f of q, rounded down, at least one unit (one milli-CPU, one byte).
func fraction(q resource.Quantity, f float64) resource.Quantity {
	if f <= 0 || f >= 1 {
		return q.DeepCopy()
	}
	if q.Format == resource.BinarySI { // bytes: whole ones, as the API wants
		return *resource.NewQuantity(max(int64(float64(q.Value())*f), 1), q.Format)
	}
	return *resource.NewMilliQuantity(max(int64(float64(q.MilliValue())*f), 1), q.Format)
}

// podLabels turns a sandbox's labels into Pod labels, each value made valid for Kubernetes
// (labelValue), and keeps the originals in an annotation.
func podLabels(in map[string]string) (labels, annotations map[string]string, err error) {
	labels = make(map[string]string, len(in))
	for k, v := range in {
		labels[k] = labelValue(v)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding sandbox labels: %w", err)
	}
	return labels, map[string]string{annotationLabels: string(b)}, nil
}

// validLabelValue is what Kubernetes accepts as a label value (up to 63 characters).
var validLabelValue = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)

// labelValue is v when Kubernetes accepts it as a label value; otherwise v with every other
// character replaced by '_', cut short, and a hash of the whole v appended, so that two
// different values never share a label value by accident and the same value always gives
// the same one (List selects by it).
func labelValue(v string) string {
	if len(v) <= 63 && validLabelValue.MatchString(v) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	clean := []byte(v)
	for i, b := range clean {
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			clean[i] = '_'
		}
	}
	prefix := strings.Trim(string(clean[:min(len(clean), 46)]), "-_.")
	if prefix == "" {
		return "h" + hex.EncodeToString(sum[:8])
	}
	return prefix + "-" + hex.EncodeToString(sum[:8])
}

func ptr[T any](v T) *T { return &v }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
