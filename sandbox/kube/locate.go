package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// A sandbox's agent stream is held by the replica that created it, for the sandbox's
// whole life (the agent ends when that stream does). Another replica asked for the sandbox
// finds the replica from the Pod, the one record there is: its name from the sandbox id,
// its owner label, and the creating replica's URL in an annotation. Requests are forwarded
// there, so one writer keeps the agent's stream, its jobs and its interpreter's state.

// locatedMax bounds Locate's memory of sandboxes: past it, an entry is dropped for each new one.
const locatedMax = 4096

// location is what Locate learnt of one sandbox; it does not change while the sandbox lives.
type location struct {
	url, owner, instance string
}

type located struct {
	mu sync.Mutex
	m  map[string]location
}

func (l *located) get(id string) (location, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	loc, ok := l.m[id]
	return loc, ok
}

func (l *located) put(id string, loc location) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]location{}
	}
	if len(l.m) >= locatedMax {
		for old := range l.m {
			delete(l.m, old)
			break
		}
	}
	l.m[id] = loc
}

func (l *located) forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, id)
}

// validPodName is what "enclave-"+id must look like to name a Pod (a DNS label here).
var validPodName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Locate finds the other replica that holds sandbox id for owner: that replica's base URL,
// from the sandbox's Pod. It is "" when there is no such Pod, when the Pod names another
// owner than owner, when it is this replica's own, or when its replica left no URL; a
// caller then answers as for a sandbox that does not exist. A Pod that names no owner (a
// warm spare whose relabelling failed) is located all the same: the replica that holds it
// checks the owner, as it does for every request.
func (k *Kube) Locate(ctx context.Context, id, owner string) (string, error) {
	loc, ok := k.located.get(id)
	if !ok {
		name := podName(id)
		if !validPodName.MatchString(name) {
			return "", nil
		}
		var p corev1.Pod
		if err := k.core.Get().Namespace(k.ns).Resource("pods").Name(name).Do(ctx).Into(&p); err != nil {
			if apierrors.IsNotFound(err) {
				return "", nil
			}
			return "", fmt.Errorf("%w: reading pod %s: %w", sandbox.ErrEngine, name, err)
		}
		labels := podOriginalLabels(&p)
		if labels[sandbox.LabelManaged] != "true" || labels[sandbox.LabelSandbox] != id || p.DeletionTimestamp != nil {
			return "", nil
		}
		loc = location{url: p.Annotations[annotationReplica], owner: labels[sandbox.LabelOwner], instance: labels[sandbox.LabelInstance]}
		if loc.url != "" && loc.instance != k.id.ID {
			k.located.put(id, loc)
		}
	}
	if loc.instance == k.id.ID || (loc.owner != "" && loc.owner != owner) {
		return "", nil
	}
	return loc.url, nil
}

// Unreachable forgets what Locate learnt of sandbox id, after its replica did not answer.
func (k *Kube) Unreachable(id string) { k.located.forget(id) }

// checkAdvertiseURL accepts an http or https URL with a host and nothing after it.
func checkAdvertiseURL(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%w: advertise URL %q: want http://HOST:PORT or https://HOST:PORT, where the other replicas reach this one", sandbox.ErrInvalidConfig, raw)
	}
	return nil
}

// Relabel implements sandbox.Relabeler: it sets labels on the sandbox's Pod (sanitised, and
// as given in the labels annotation), leaving the others as they are. The patch carries the
// Pod's resourceVersion, so a concurrent change fails it rather than being overwritten.
func (k *Kube) Relabel(ctx context.Context, ref string, set map[string]string) error {
	var p corev1.Pod
	if err := k.core.Get().Namespace(k.ns).Resource("pods").Name(ref).Do(ctx).Into(&p); err != nil {
		return fmt.Errorf("%w: reading pod %s: %w", sandbox.ErrEngine, ref, err)
	}
	all := podOriginalLabels(&p)
	maps.Copy(all, set)
	labels, annotations, err := podLabels(all)
	if err != nil {
		return err
	}
	changed := map[string]string{}
	for key := range set {
		changed[key] = labels[key]
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": p.ResourceVersion, "labels": changed, "annotations": annotations,
	}})
	if err != nil {
		return fmt.Errorf("encoding the labels of pod %s: %w", ref, err)
	}
	if err := k.core.Patch(types.MergePatchType).Namespace(k.ns).Resource("pods").Name(ref).Body(patch).Do(ctx).Error(); err != nil {
		return fmt.Errorf("%w: relabelling pod %s: %w", sandbox.ErrEngine, ref, err)
	}
	return nil
}
