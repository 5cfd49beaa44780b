package kube

import (
	"time"
)

// Replicas share nothing but the cluster, so each says it is alive the way Kubernetes'
// own components do: a coordination.k8s.io Lease of its own, named after its instance
// label and renewed every few seconds. A replica whose Lease stopped changing for the
// Lease's duration, or that released it on the way out, is dead, and any live replica may
// remove the Pods labelled with its instance. This file is the decision, with no client
// and no clock of its own, so that a table of cases pins it.

// leaseView is what liveness needs of one Lease.
type leaseView struct {
	// Instance is the replica the Lease belongs to (its instance label).
	Instance string
	// Holder is the Lease's holderIdentity; empty means released: its replica has left.
	Holder string
	// Version is the Lease's resourceVersion: it changes with every renewal.
	Version string
	// Duration is the Lease's leaseDurationSeconds.
	Duration time.Duration
}

// observed is when this replica first saw a Lease as it is now.
type observed struct {
	version string
	since   time.Time
}

// liveness follows the other replicas' Leases as this replica sees them. Whether a Lease
// expired is judged by the local clock only, from when its record last changed here (as
// client-go's leader election does), never by comparing the renewTime another machine
// wrote with this machine's clock: replicas' clocks may disagree by more than a Lease
// lasts.
type liveness struct {
	// fallback is the duration of a Lease that states none.
	fallback time.Duration
	seen     map[string]observed // by instance
	leases   map[string]leaseView
}

func newLiveness(fallback time.Duration) *liveness {
	return &liveness{fallback: fallback, seen: map[string]observed{}, leases: map[string]leaseView{}}
}

// observe records the Leases listed at now; an instance whose Lease is gone is forgotten.
func (l *liveness) observe(leases []leaseView, now time.Time) {
	current := make(map[string]leaseView, len(leases))
	for _, lv := range leases {
		current[lv.Instance] = lv
		if o, ok := l.seen[lv.Instance]; !ok || o.version != lv.Version {
			l.seen[lv.Instance] = observed{version: lv.Version, since: now}
		}
	}
	for inst := range l.seen {
		if _, ok := current[inst]; !ok {
			delete(l.seen, inst)
		}
	}
	l.leases = current
}

// replicaState is what liveness knows of one instance.
type replicaState int

const (
	// stateNoLease: no Lease names the instance (a server of a version without Leases,
	// or one whose Lease was removed once it had no Pods left).
	stateNoLease replicaState = iota
	// stateAlive: its Lease changed within its duration, as seen here.
	stateAlive
	// stateDead: its Lease was released, or has not changed for its duration.
	stateDead
)

func (s replicaState) String() string {
	switch s {
	case stateAlive:
		return "alive"
	case stateDead:
		return "dead"
	}
	return "no lease"
}

// state says whether instance's replica is alive at now.
func (l *liveness) state(instance string, now time.Time) replicaState {
	lv, ok := l.leases[instance]
	if !ok {
		return stateNoLease
	}
	if lv.Holder == "" {
		return stateDead
	}
	d := lv.Duration
	if d <= 0 {
		d = l.fallback
	}
	if now.Sub(l.seen[instance].since) > d {
		return stateDead
	}
	return stateAlive
}

// podView is what the reaper needs of one sandbox Pod.
type podView struct {
	Name     string
	Instance string // the server instance label (the original value)
	Running  bool   // the sandbox container runs, or has not started yet
	Deleting bool   // the Pod has a deletion timestamp
	Created  time.Time
}

// reapDecision says whether the reaper of replica self removes p, whose replica is in
// state, at now; why says what decided it. It never removes self's Pods (its Manager
// owns them), nor a Pod being deleted, nor a live replica's. A replica without a Lease may
// be a live server of an older version, which renews none: its running Pods stay, as
// they did before Leases (its agents end with its attach streams when it dies, and then
// their Pods go); only those whose agent has ended, and older than grace, are removed.
func reapDecision(p podView, self string, state replicaState, now time.Time, grace time.Duration) (reap bool, why string) {
	switch {
	case p.Instance == self:
		return false, "this replica's own"
	case p.Deleting:
		return false, "being deleted already"
	case state == stateAlive:
		return false, "its replica's Lease is renewed"
	case state == stateDead:
		return true, "its replica's Lease expired or was released"
	case p.Running:
		return false, "no Lease names its replica, and its agent runs"
	case now.Sub(p.Created) < grace:
		return false, "no Lease names its replica, but it is younger than the grace period"
	}
	return true, "no Lease names its replica, and its agent has ended"
}

// leaseCollectable says whether the reaper removes instance's Lease: dead, not self's,
// and no Pod of the instance left in this pass.
func leaseCollectable(instance, self string, state replicaState, podsLeft int) bool {
	return instance != self && state == stateDead && podsLeft == 0
}
