package kube

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

func TestLivenessState(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const d = 10 * time.Second
	type step struct {
		at     time.Duration // after t0
		leases []leaseView
	}
	lease := func(version string) leaseView {
		return leaseView{Instance: "a", Holder: "a", Version: version, Duration: d}
	}
	cases := []struct {
		name  string
		steps []step
		at    time.Duration // when the state is asked
		want  replicaState
	}{
		{"never seen", []step{{0, nil}}, 0, stateNoLease},
		{"just seen", []step{{0, []leaseView{lease("1")}}}, 0, stateAlive},
		{"seen once, a duration ago exactly", []step{{0, []leaseView{lease("1")}}}, d, stateAlive},
		// A Lease seen first is given its whole duration from then, whatever its renewTime:
		// the clock of the replica that wrote it is not this one's.
		{"seen once, unchanged past its duration", []step{{0, []leaseView{lease("1")}}}, d + time.Millisecond, stateDead},
		{"renewed", []step{{0, []leaseView{lease("1")}}, {8 * time.Second, []leaseView{lease("2")}}}, 17 * time.Second, stateAlive},
		{"renewed, then stopped", []step{{0, []leaseView{lease("1")}}, {8 * time.Second, []leaseView{lease("2")}}, {15 * time.Second, []leaseView{lease("2")}}}, 18*time.Second + time.Millisecond, stateDead},
		{"listed again unchanged does not restart the clock", []step{{0, []leaseView{lease("1")}}, {9 * time.Second, []leaseView{lease("1")}}}, 11 * time.Second, stateDead},
		{"released", []step{{0, []leaseView{{Instance: "a", Version: "3", Duration: d}}}}, 0, stateDead},
		{"no duration stated: the fallback", []step{{0, []leaseView{{Instance: "a", Holder: "a", Version: "1"}}}}, 2 * d, stateDead},
		{"gone from the list", []step{{0, []leaseView{lease("1")}}, {time.Second, nil}}, time.Second, stateNoLease},
		{"gone and back: a fresh clock", []step{{0, []leaseView{lease("1")}}, {time.Second, nil}, {20 * time.Second, []leaseView{lease("1")}}}, 25 * time.Second, stateAlive},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLiveness(d)
			for _, s := range tc.steps {
				l.observe(s.leases, t0.Add(s.at))
			}
			if got := l.state("a", t0.Add(tc.at)); got != tc.want {
				t.Errorf("state = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestReapDecision(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const grace = 15 * time.Second
	old := now.Add(-time.Hour)
	cases := []struct {
		name  string
		pod   podView
		state replicaState
		want  bool
	}{
		{"own pod, even with no lease", podView{Instance: "self", Created: old}, stateNoLease, false},
		{"own pod, own lease dead (this replica stalled)", podView{Instance: "self", Created: old}, stateDead, false},
		{"live replica's running pod", podView{Instance: "b", Running: true, Created: old}, stateAlive, false},
		{"live replica's ended pod: its manager removes it", podView{Instance: "b", Created: old}, stateAlive, false},
		{"dead replica's running pod", podView{Instance: "b", Running: true, Created: old}, stateDead, true},
		{"dead replica's ended pod", podView{Instance: "b", Created: old}, stateDead, true},
		{"dead replica's young pod", podView{Instance: "b", Running: true, Created: now}, stateDead, true},
		{"dead replica's pod being deleted", podView{Instance: "b", Deleting: true, Created: old}, stateDead, false},
		{"no lease, running: maybe a server of an older version", podView{Instance: "c", Running: true, Created: old}, stateNoLease, false},
		{"no lease, ended, old", podView{Instance: "c", Created: old}, stateNoLease, true},
		{"no lease, ended, young", podView{Instance: "c", Created: now.Add(-grace + time.Second)}, stateNoLease, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, why := reapDecision(tc.pod, "self", tc.state, now, grace)
			if got != tc.want {
				t.Errorf("reap = %v (%s), want %v", got, why, tc.want)
			}
			if why == "" {
				t.Error("no reason given")
			}
		})
	}
}

func TestLeaseCollectable(t *testing.T) {
	cases := []struct {
		name     string
		instance string
		state    replicaState
		left     int
		want     bool
	}{
		{"dead, no pods left", "b", stateDead, 0, true},
		{"dead, pods left", "b", stateDead, 2, false},
		{"alive, no pods", "b", stateAlive, 0, false},
		{"own, dead", "self", stateDead, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := leaseCollectable(tc.instance, "self", tc.state, tc.left); got != tc.want {
				t.Errorf("collectable = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLeaseName(t *testing.T) {
	cases := []struct{ instance, want string }{
		{"0123456789ab", "enclave-mcp-0123456789ab"},
		{"Upper", "enclave-mcp-h"},
		{"a_b", "enclave-mcp-h"},
		{"", "enclave-mcp-h"},
	}
	for _, tc := range cases {
		t.Run(tc.instance, func(t *testing.T) {
			got := leaseName(tc.instance)
			if len(got) < len(tc.want) || got[:len(tc.want)] != tc.want || len(got) > 63 || !validPodName.MatchString(got) {
				t.Errorf("leaseName(%q) = %q, want a valid name starting %q", tc.instance, got, tc.want)
			}
		})
	}
}

func TestCheckAdvertiseURL(t *testing.T) {
	cases := []struct {
		url string
		ok  bool
	}{
		{"", true},
		{"http://10.0.0.7:8000", true},
		{"https://replica.example:443/", true},
		{"ftp://x", false},
		{"http://", false},
		{"http://x:1/path", false},
		{"http://user:pw@x:1", false},
		{"http://x:1?q=1", false},
		{"10.0.0.7:8000", false},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			if err := checkAdvertiseURL(tc.url); (err == nil) != tc.ok {
				t.Errorf("checkAdvertiseURL(%q) = %v, want ok %v", tc.url, err, tc.ok)
			}
		})
	}
}

// TestPodSpecOwner: the server's own Pod, when given, owns every sandbox Pod; without one,
// nothing does.
func TestPodSpecOwner(t *testing.T) {
	c := resolved(t, sandbox.Config{}, sandbox.Policy{})
	owner := &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "server-0", UID: "u-1"}
	for _, tc := range []struct {
		name  string
		owner *metav1.OwnerReference
		want  int
	}{{"owned", owner, 1}, {"not owned", nil, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			pod, err := podSpec(podInput{Spec: sandbox.Spec{ID: "x", Config: c}, Owner: tc.owner, RequestFraction: 1})
			if err != nil {
				t.Fatal(err)
			}
			if len(pod.OwnerReferences) != tc.want || (tc.want == 1 && pod.OwnerReferences[0] != *owner) {
				t.Errorf("ownerReferences %+v, want %d", pod.OwnerReferences, tc.want)
			}
		})
	}
}
