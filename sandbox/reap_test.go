package sandbox

import (
	"os"
	"strconv"
	"testing"
	"time"
)

func TestIsOrphan(t *testing.T) {
	t.Parallel()
	self := Identity{ID: "me", Host: "host-a", PID: 100, PIDStart: "5"}
	now := time.Now()
	alive := func(pid int, start string) bool { return pid == 200 && start == "7" }
	labels := func(id, host, pid, start string) map[string]string {
		return map[string]string{LabelManaged: "true", LabelInstance: id, LabelHost: host, LabelPID: pid, LabelPIDStart: start}
	}
	tests := []struct {
		name    string
		labels  map[string]string
		state   string
		created time.Time
		running bool // the owner has a running sandbox on the engine
		want    bool
	}{
		{"our own, even exited", labels("me", "host-a", "100", "5"), "exited", now, false, false},
		{"unlabelled", map[string]string{"other": "x"}, "exited", now, false, false},
		{"not managed", map[string]string{LabelInstance: "x"}, "exited", now, false, false},
		{"same host, owner alive", labels("live", "host-a", "200", "7"), "running", now, false, false},
		{"same host, owner dead", labels("dead", "host-a", "300", "9"), "running", now, false, true},
		{"same host, pid reused by another process", labels("dead", "host-a", "200", "8"), "running", now, false, true},
		{"other host, running", labels("far", "host-b", "1", "1"), "running", now, true, false},
		{"other host, exited", labels("far", "host-b", "1", "1"), "exited", now, false, true},
		{"other host, stopped while its owner runs others", labels("far", "host-b", "1", "1"), "exited", now, true, false},
		{"other host, created just now", labels("far", "host-b", "1", "1"), "created", now, false, false},
		{"other host, created long ago", labels("far", "host-b", "1", "1"), "created", now.Add(-time.Hour), false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := isOrphan(tc.labels, tc.state, tc.created, tc.running, self, now, alive); got != tc.want {
				t.Errorf("isOrphan = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestProcessStart(t *testing.T) {
	t.Parallel()
	self := processStart(os.Getpid())
	if self == "" {
		t.Fatal("own start time unreadable")
	}
	if _, err := strconv.ParseUint(self, 10, 64); err != nil {
		t.Fatalf("start time %q is not a number", self)
	}
	if !processAlive(os.Getpid(), self) || processAlive(os.Getpid(), self+"1") {
		t.Error("processAlive must match pid and start time")
	}
	if processStart(1<<22+12345) != "" {
		t.Error("a pid that cannot exist must read as gone")
	}
}

// TestReapSocketDirs: a server's start removes the agent sockets directories of servers
// that no longer run, and nothing else: not a live server's, not a name of another shape.
func TestReapSocketDirs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	self := SelfIdentity("")
	names := map[string]bool{ // name: want it kept
		socketDirPrefix + socketDirOwner(self) + "-123":   true,
		socketDirPrefix + "2147483646-12-456":             false, // no such pid
		socketDirPrefix + strconv.Itoa(self.PID) + "-1-7": false, // this pid, another start: reused
		socketDirPrefix + "789":                           true,  // no owner in the name
		"other-12-34-56":                                  true,
	}
	for name := range names {
		if err := os.MkdirAll(dir+"/"+name+"/sub", 0o700); err != nil {
			t.Fatal(err)
		}
	}
	reapSocketDirs(dir, processAlive)
	for name, kept := range names {
		_, err := os.Stat(dir + "/" + name)
		if got := err == nil; got != kept {
			t.Errorf("%s: kept %v, want %v", name, got, kept)
		}
	}
}
