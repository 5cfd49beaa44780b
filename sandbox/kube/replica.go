package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// ReplicaOptions configures a replica's Lease and its reaper.
type ReplicaOptions struct {
	// LeaseDuration is how long the replica's Lease stays valid unrenewed: a replica not
	// seen renewing it for this long is dead to the others. 0 means DefaultLeaseDuration.
	LeaseDuration time.Duration
	// RenewInterval is how often the Lease is renewed; 0 means a third of LeaseDuration.
	RenewInterval time.Duration
	// ReapInterval is how often the reaper looks for dead replicas' Pods; 0 means
	// DefaultReapInterval. A dead replica's Pods go within LeaseDuration plus this.
	ReapInterval time.Duration
}

// Defaults of ReplicaOptions. A Lease of 15 s survives a few missed renewals (an API
// server restart, a stalled replica) before others take its Pods away.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultReapInterval  = 5 * time.Second
)

// annotationInstance holds a Lease's instance as given (a label value may be sanitised).
const annotationInstance = "enclave-mcp/instance"

// Replica is this server's Lease and its reaper of dead replicas' Pods.
type Replica struct {
	k     *Kube
	opts  ReplicaOptions
	name  string // the Lease's name
	live  *liveness
	stop  context.CancelFunc
	done  sync.WaitGroup
	mu    sync.Mutex
	lease *coordinationv1.Lease // as last written
	stats ReapStats
}

// ReapStats counts what a replica's reaper did.
type ReapStats struct {
	Passes       int
	PodsReaped   int
	LeasesReaped int
}

// StartReplica creates this server's Lease and starts renewing it and reaping dead
// replicas' Pods, until Stop. Call it before the first sandbox is created: a Pod whose
// instance has no Lease is reaped once its agent ends.
func (k *Kube) StartReplica(ctx context.Context, opts ReplicaOptions) (*Replica, error) {
	if opts.LeaseDuration <= 0 {
		opts.LeaseDuration = DefaultLeaseDuration
	}
	if opts.LeaseDuration < 2*time.Second {
		return nil, fmt.Errorf("%w: lease duration %s: want 2s or more (it must outlast a few renewals)", sandbox.ErrInvalidConfig, opts.LeaseDuration)
	}
	if opts.RenewInterval <= 0 {
		opts.RenewInterval = opts.LeaseDuration / 3
	}
	if opts.RenewInterval >= opts.LeaseDuration {
		return nil, fmt.Errorf("%w: lease renew interval %s: want less than the lease duration %s", sandbox.ErrInvalidConfig, opts.RenewInterval, opts.LeaseDuration)
	}
	if opts.ReapInterval <= 0 {
		opts.ReapInterval = DefaultReapInterval
	}
	r := &Replica{k: k, opts: opts, name: leaseName(k.id.ID), live: newLiveness(opts.LeaseDuration)}
	if err := r.renew(ctx); err != nil {
		return nil, err
	}
	loops, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.stop = cancel
	r.done.Go(func() { r.every(loops, opts.RenewInterval, r.renewLogged) })
	r.done.Go(func() { r.every(loops, opts.ReapInterval, r.reapLogged) })
	k.log.Info("replica lease held", "lease", k.ns+"/"+r.name, "duration", opts.LeaseDuration, "reap_interval", opts.ReapInterval)
	return r, nil
}

// Stop ends the renewals and the reaper and releases the Lease (its holder emptied), so
// that the other replicas take this one for gone at once rather than after the Lease's
// duration; the next reaper to find no Pod of it left removes the Lease.
func (r *Replica) Stop(ctx context.Context) error {
	r.stop()
	r.done.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lease == nil {
		return nil
	}
	l := r.lease.DeepCopy()
	l.Spec.HolderIdentity = nil
	err := r.k.coord.Put().Namespace(r.k.ns).Resource("leases").Name(l.Name).Body(l).Do(ctx).Error()
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: releasing lease %s/%s: %w", sandbox.ErrEngine, r.k.ns, l.Name, err)
	}
	return nil
}

// Stats says what the reaper did so far.
func (r *Replica) Stats() ReapStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// every runs f each interval until ctx ends.
func (r *Replica) every(ctx context.Context, interval time.Duration, f func(context.Context)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f(ctx)
		}
	}
}

func (r *Replica) renewLogged(ctx context.Context) {
	if err := r.renew(ctx); err != nil && ctx.Err() == nil {
		r.k.log.Warn("renewing the replica lease; past its duration the other replicas reap this one's sandboxes", "lease", r.name, "error", err)
	}
}

// renew writes the Lease with a fresh renewTime: created when missing (the first time, or
// after another replica took this one for dead and removed it), re-read on a conflict.
func (r *Replica) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.RenewInterval)
	defer cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	now := metav1.NewMicroTime(time.Now())
	want := r.lease
	if want == nil {
		want = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
			Name:        r.name,
			Labels:      map[string]string{sandbox.LabelManaged: "true", sandbox.LabelInstance: labelValue(r.k.id.ID)},
			Annotations: map[string]string{annotationInstance: r.k.id.ID},
		}}
		if r.k.owner != nil {
			want.OwnerReferences = []metav1.OwnerReference{*r.k.owner}
		}
	}
	want = want.DeepCopy()
	want.Spec.HolderIdentity = ptr(r.k.id.ID)
	want.Spec.LeaseDurationSeconds = ptr(int32((r.opts.LeaseDuration + time.Second - 1) / time.Second))
	want.Spec.RenewTime = &now
	if want.Spec.AcquireTime == nil {
		want.Spec.AcquireTime = &now
	}
	leases := &requestLeases{r.k, r.name}
	var got coordinationv1.Lease
	var err error
	if want.ResourceVersion == "" {
		err = leases.create(ctx, want, &got)
	} else {
		err = leases.update(ctx, want, &got)
		if apierrors.IsNotFound(err) {
			want.ResourceVersion = ""
			err = leases.create(ctx, want, &got)
		}
	}
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		var cur coordinationv1.Lease
		if err = leases.get(ctx, &cur); err == nil {
			cur.Spec = want.Spec
			err = leases.update(ctx, &cur, &got)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: writing lease %s/%s (the server needs get, create and update on leases.coordination.k8s.io): %w", sandbox.ErrEngine, r.k.ns, r.name, err)
	}
	r.lease = &got
	return nil
}

// requestLeases are the calls on one Lease.
type requestLeases struct {
	k    *Kube
	name string
}

func (l *requestLeases) create(ctx context.Context, in, out *coordinationv1.Lease) error {
	return l.k.coord.Post().Namespace(l.k.ns).Resource("leases").Body(in).Do(ctx).Into(out)
}

func (l *requestLeases) update(ctx context.Context, in, out *coordinationv1.Lease) error {
	return l.k.coord.Put().Namespace(l.k.ns).Resource("leases").Name(l.name).Body(in).Do(ctx).Into(out)
}

func (l *requestLeases) get(ctx context.Context, out *coordinationv1.Lease) error {
	return l.k.coord.Get().Namespace(l.k.ns).Resource("leases").Name(l.name).Do(ctx).Into(out)
}

func (r *Replica) reapLogged(ctx context.Context) {
	if _, err := r.Reap(ctx); err != nil && ctx.Err() == nil {
		r.k.log.Warn("reaping dead replicas' sandboxes", "error", err)
	}
}

// sweepEvery is how many reaper passes go between two sweeps of every sandbox Pod of the
// namespace (for Pods of replicas that hold no Lease); the passes between list the Leases,
// and the Pods of dead replicas only.
const sweepEvery = 12

// Reap runs one pass of the reaper and returns how many Pods it removed. Every pass lists
// the Leases (one per replica: a small list) and removes the Pods of the replicas that are
// dead, selected by their instance label, then the Leases of dead replicas with no Pod left.
// Every sweepEvery-th pass, the first included, lists every sandbox Pod of the namespace
// first, then the Leases (in that order: a Pod listed was created after its replica's Lease,
// so that Lease is listed too), for the Pods whose replica holds no Lease at all. Pod lists
// are served from the API server's watch cache (resourceVersion 0), not from etcd.
func (r *Replica) Reap(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, max(r.opts.ReapInterval, 10*time.Second))
	defer cancel()
	r.mu.Lock()
	sweep := r.stats.Passes%sweepEvery == 0
	r.mu.Unlock()
	var all []corev1.Pod
	if sweep {
		var err error
		if all, err = r.pods(ctx, labels.Set{sandbox.LabelManaged: "true"}.AsSelector()); err != nil {
			return 0, err
		}
	}
	var leases coordinationv1.LeaseList
	err := r.k.coord.Get().Namespace(r.k.ns).Resource("leases").
		VersionedParams(&metav1.ListOptions{LabelSelector: sandbox.LabelManaged + "=true"}, r.k.params).Do(ctx).Into(&leases)
	if err != nil {
		return 0, fmt.Errorf("%w: listing replica leases in %s (the server needs list on leases.coordination.k8s.io): %w", sandbox.ErrEngine, r.k.ns, err)
	}
	now := time.Now()
	self := r.k.id.ID
	views := make([]leaseView, 0, len(leases.Items))
	byInstance := map[string]*coordinationv1.Lease{}
	for i := range leases.Items {
		lv := viewLease(&leases.Items[i])
		views = append(views, lv)
		byInstance[lv.Instance] = &leases.Items[i]
	}
	states := map[string]replicaState{}
	var dead []string
	r.mu.Lock()
	r.live.observe(views, now)
	for _, lv := range views {
		states[lv.Instance] = r.live.state(lv.Instance, now)
		if states[lv.Instance] == stateDead && lv.Instance != self {
			dead = append(dead, labelValue(lv.Instance))
		}
	}
	r.mu.Unlock()
	if !sweep && len(dead) > 0 {
		sel, err := labels.NewRequirement(sandbox.LabelInstance, selection.In, dead)
		if err != nil {
			return 0, fmt.Errorf("selecting the pods of dead replicas: %w", err)
		}
		managed, _ := labels.NewRequirement(sandbox.LabelManaged, selection.Equals, []string{"true"})
		if all, err = r.pods(ctx, labels.NewSelector().Add(*managed, *sel)); err != nil {
			return 0, err
		}
	}
	var errs []error
	removed := 0
	left := map[string]int{}
	for i := range all {
		p := viewPod(&all[i])
		if p.Instance == "" {
			continue
		}
		st, ok := states[p.Instance]
		if !ok {
			st = stateNoLease
		}
		reap, why := reapDecision(p, self, st, now, r.opts.LeaseDuration)
		if !reap {
			left[p.Instance]++
			continue
		}
		if err := r.k.Remove(ctx, p.Name); err != nil {
			left[p.Instance]++
			errs = append(errs, err)
			continue
		}
		removed++
		r.k.log.Info("reaped a dead replica's sandbox", "pod", p.Name, "instance", p.Instance, "why", why, "age", now.Sub(p.Created).Round(time.Millisecond))
	}
	collected := 0
	for inst, l := range byInstance {
		if !leaseCollectable(inst, self, states[inst], left[inst]) {
			continue
		}
		err := r.k.coord.Delete().Namespace(r.k.ns).Resource("leases").Name(l.Name).
			Body(&metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &l.ResourceVersion}}).Do(ctx).Error()
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("%w: deleting lease %s of a dead replica: %w", sandbox.ErrEngine, l.Name, err))
			continue
		}
		collected++
	}
	r.mu.Lock()
	r.stats.Passes++
	r.stats.PodsReaped += removed
	r.stats.LeasesReaped += collected
	r.mu.Unlock()
	return removed, errors.Join(errs...)
}

// pods lists the namespace's Pods that sel selects, from the API server's watch cache.
func (r *Replica) pods(ctx context.Context, sel labels.Selector) ([]corev1.Pod, error) {
	var list corev1.PodList
	err := r.k.core.Get().Namespace(r.k.ns).Resource("pods").
		VersionedParams(&metav1.ListOptions{LabelSelector: sel.String(), ResourceVersion: "0"}, r.k.params).Do(ctx).Into(&list)
	if err != nil {
		return nil, fmt.Errorf("%w: listing sandbox pods in %s: %w", sandbox.ErrEngine, r.k.ns, err)
	}
	return list.Items, nil
}

// viewLease reads what liveness needs of a Lease.
func viewLease(l *coordinationv1.Lease) leaseView {
	lv := leaseView{Instance: l.Annotations[annotationInstance], Version: l.ResourceVersion}
	if lv.Instance == "" {
		lv.Instance = l.Labels[sandbox.LabelInstance]
	}
	if l.Spec.HolderIdentity != nil {
		lv.Holder = *l.Spec.HolderIdentity
	}
	if l.Spec.LeaseDurationSeconds != nil {
		lv.Duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return lv
}

// viewPod reads what the reaper needs of a sandbox Pod.
func viewPod(p *corev1.Pod) podView {
	ended := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	return podView{
		Name:     p.Name,
		Instance: podOriginalLabels(p)[sandbox.LabelInstance],
		Running:  !ended,
		Deleting: p.DeletionTimestamp != nil,
		Created:  p.CreationTimestamp.Time,
	}
}

// validLeaseID is an instance id that can name a Lease as it is.
var validLeaseID = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$`)

// leaseName is the Lease of replica instance: enclave-mcp-<instance>, or a hash of it when
// the instance cannot be part of a name.
func leaseName(instance string) string {
	if validLeaseID.MatchString(instance) {
		return "enclave-mcp-" + instance
	}
	sum := sha256.Sum256([]byte(instance))
	return "enclave-mcp-h" + hex.EncodeToString(sum[:12])
}
