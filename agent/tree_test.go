package agent

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

// TestMembersByStartTime: while a tree's root is exiting, a process that started before the
// root is not its member even if its environment holds the marker (its environment is not
// read: only a later process can descend from the root); one that started in the same tick
// or later is. Otherwise every process's environment is read, as before.
func TestMembersByStartTime(t *testing.T) {
	marker := newMarker()
	holder := exec.Command("sleep", "30")
	holder.Env = append(os.Environ(), marker)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	pid := holder.Process.Pid
	const root = 1 << 30 // no such process: the procs below are all members() sees

	tests := []struct {
		name                   string
		exiting                bool
		holderStart, rootStart uint64
		want                   bool
	}{
		{name: "exiting, started before the root", exiting: true, holderStart: 100, rootStart: 150, want: false},
		{name: "exiting, started in the root's tick", exiting: true, holderStart: 150, rootStart: 150, want: true},
		{name: "exiting, started after the root", exiting: true, holderStart: 200, rootStart: 150, want: true},
		{name: "running, started before the root", exiting: false, holderStart: 100, rootStart: 150, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &tree{root: root, marker: marker, exiting: tc.exiting}
			procs := []proc{
				{pid: root, ppid: 1, pgid: root, sid: root, start: tc.rootStart},
				{pid: pid, ppid: os.Getpid(), pgid: os.Getpid(), sid: 1, start: tc.holderStart},
			}
			got := slices.Contains(tr.members(procs), pid)
			if got != tc.want {
				t.Errorf("process %d (started %d, root %d, exiting %v) a member: %v, want %v",
					pid, tc.holderStart, tc.rootStart, tc.exiting, got, tc.want)
			}
		})
	}
}

// TestReadProcsStartTimes: a scan finds this process, with its parent and a start time no
// later than a child's it starts afterwards.
func TestReadProcsStartTimes(t *testing.T) {
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	byPID := map[int]proc{}
	for _, p := range readProcs() {
		byPID[p.pid] = p
	}
	self, ok := byPID[os.Getpid()]
	if !ok {
		t.Fatalf("the scan of %d processes misses this one", len(byPID))
	}
	c, ok := byPID[child.Process.Pid]
	if !ok || c.ppid != os.Getpid() {
		t.Fatalf("the scan has the child as %+v (found %v), want its parent %d", c, ok, os.Getpid())
	}
	if self.start == 0 || c.start < self.start {
		t.Errorf("start times: this process %d, its child %d", self.start, c.start)
	}
}
