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

// TestPIDCursor: the cursor reads the last pid given out, so it reads at least the pid of a
// process started since (pids increase until they wrap at pid_max, tens of thousands away).
func TestPIDCursor(t *testing.T) {
	var c pidCursor
	before := c.read()
	if before <= 0 {
		t.Fatalf("pid cursor %d: /proc/loadavg gave no last pid", before)
	}
	child := exec.Command("true")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	pid := child.Process.Pid
	after := c.read()
	child.Wait()
	if after < pid && after >= before { // after < before: the pids wrapped
		t.Errorf("pid cursor %d before and %d after starting process %d: want at least %d", before, after, pid, pid)
	}
}

// TestEndUnscanned: a forked call's tree ends without a scan only when nothing can have been
// created or orphaned since the last sweep: the root is the only process created since (the
// cursor reads it, and the sweep read two less), and no other tree or hand-over is live.
// Ending it that way takes it off the live trees and counts as a sweep up to the root.
func TestEndUnscanned(t *testing.T) {
	const root = 1000
	tests := []struct {
		name    string
		exiting bool
		swept   int // the last sweep's cursor
		cursor  int // the cursor now
		setup   func(r *treeRegistry)
		want    bool
	}{
		{name: "nothing since the last sweep but the root", exiting: true, swept: root - 2, cursor: root, want: true},
		{name: "root not exiting", exiting: false, swept: root - 2, cursor: root},
		{name: "a process created since the root", exiting: true, swept: root - 2, cursor: root + 1},
		{name: "a process created between the sweep and the root", exiting: true, swept: root - 3, cursor: root},
		{name: "no sweep recorded", exiting: true, swept: 0, cursor: root},
		{name: "a job running", exiting: true, swept: root - 2, cursor: root, setup: func(r *treeRegistry) {
			r.add(&tree{root: 7}, false)
		}},
		{name: "a job ended since the sweep", exiting: true, swept: root - 2, cursor: root, setup: func(r *treeRegistry) {
			job := &tree{root: 7}
			r.add(job, false)
			r.remove(job)
		}},
		{name: "another command running", exiting: true, swept: root - 2, cursor: root, setup: func(r *treeRegistry) {
			r.add(&tree{root: 8}, true)
		}},
		{name: "a process being handed over", exiting: true, swept: root - 2, cursor: root, setup: func(r *treeRegistry) {
			r.hold()
		}},
		{name: "a sweep skipped since", exiting: true, swept: root - 2, cursor: root, setup: func(r *treeRegistry) {
			r.sweptThrough(0)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &treeRegistry{trees: make(map[*tree]bool), swept: tc.swept}
			call := &tree{root: root, exiting: tc.exiting}
			r.add(call, true)
			if tc.setup != nil {
				tc.setup(r)
			}
			got := r.endUnscanned(call, tc.cursor)
			if got != tc.want {
				t.Fatalf("endUnscanned = %v, want %v", got, tc.want)
			}
			_, live := r.trees[call]
			switch {
			case got && (live || r.swept != root):
				t.Errorf("ended unscanned, but the tree is live %v and the sweep's cursor %d (want gone, %d)", live, r.swept, root)
			case !got && !live:
				t.Errorf("not ended, but the tree is off the live trees")
			}
		})
	}
}
