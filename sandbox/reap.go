package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
)

// Labels that say which server process owns a container, so a later server can tell a dead
// owner's leftovers from a live one's sandboxes.
const (
	LabelHost     = "enclave-mcp.host"
	LabelPID      = "enclave-mcp.pid"
	LabelPIDStart = "enclave-mcp.pid-start"
)

// Identity names one server process: a random id plus where it runs, so that liveness can
// be checked from the same host (a pid alone is reused; pid plus its start time is not).
type Identity struct {
	ID       string
	Host     string
	PID      int
	PIDStart string // the process's start time in clock ticks since boot (/proc/PID/stat field 22)
}

// SelfIdentity describes this process, as server instance id.
func SelfIdentity(id string) Identity {
	host, _ := os.Hostname()
	pid := os.Getpid()
	return Identity{ID: id, Host: host, PID: pid, PIDStart: processStart(pid)}
}

// labels are the identity's container labels.
func (i Identity) labels() map[string]string {
	return map[string]string{
		LabelInstance: i.ID,
		LabelHost:     i.Host,
		LabelPID:      strconv.Itoa(i.PID),
		LabelPIDStart: i.PIDStart,
	}
}

// processStart reads a process's start time, or "" when it does not exist.
func processStart(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces and parentheses: count from the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); a zombie has exited already.
	if len(fields) < 20 || fields[0] == "Z" {
		return ""
	}
	return fields[19] // field 22
}

// orphanGrace protects a container another live server has just created and not yet
// started when its owner cannot be checked (another host).
const orphanGrace = 10 * time.Minute

// isOrphan decides whether a managed container belongs to a dead server. It never claims a
// container of self, nor a running one whose owner is on another host (it cannot tell), nor
// a young not-yet-started one there, nor a stopped one there while its owner still has a
// running sandbox (ownerRunning: replicas sharing one engine stop sandboxes on request, and
// a live owner's agents keep running). alive reports whether pid with that start time runs
// on this host.
func isOrphan(labels map[string]string, state string, created time.Time, ownerRunning bool, self Identity, now time.Time, alive func(pid int, start string) bool) bool {
	if labels[LabelManaged] != "true" || labels[LabelInstance] == self.ID {
		return false
	}
	if labels[LabelHost] == self.Host && labels[LabelHost] != "" {
		pid, err := strconv.Atoi(labels[LabelPID])
		if err != nil {
			return state != "running"
		}
		return !alive(pid, labels[LabelPIDStart])
	}
	switch state {
	case "running", "restarting", "paused":
		// A dead server's agents exit when its attach streams close, so a running container
		// on another host most likely has a live owner.
		return false
	case "created":
		return now.Sub(created) > orphanGrace
	default: // exited, dead, removing
		return !ownerRunning
	}
}

func processAlive(pid int, start string) bool {
	got := processStart(pid)
	return got != "" && (start == "" || got == start)
}

// ReapOrphans removes the sandboxes that dead enclave-mcp servers left on b, and only those:
// never this server's, never a live server's, never unlabelled ones. It returns how many
// it removed. A backend with leftovers of its own besides sandboxes (Docker's agent
// volumes) clears those too.
func ReapOrphans(ctx context.Context, b Backend) (int, error) {
	n, err := reap(ctx, b, "", processAlive)
	if extra, ok := b.(interface{ reapExtras(context.Context) }); ok {
		extra.reapExtras(ctx)
	}
	return n, err
}

// reap removes orphans, of one instance only when instance is set (tests must not touch
// what other tests, running beside them on the same engine, own).
func reap(ctx context.Context, b Backend, instance string, alive func(int, string) bool) (int, error) {
	labels := map[string]string{LabelManaged: "true"}
	if instance != "" {
		labels[LabelInstance] = instance
	}
	list, err := b.List(ctx, labels)
	if err != nil {
		return 0, err
	}
	// A dead server's agents all exit when its attach streams close: an instance with a
	// running sandbox is alive.
	running := map[string]bool{}
	for _, c := range list {
		if c.State == "running" {
			running[c.Labels[LabelInstance]] = true
		}
	}
	now := time.Now()
	removed := 0
	var errs []error
	for _, c := range list {
		if !isOrphan(c.Labels, c.State, c.Created, running[c.Labels[LabelInstance]], b.Identity(), now, alive) {
			continue
		}
		if err := b.Remove(ctx, c.Ref); err != nil {
			errs = append(errs, fmt.Errorf("removing orphan %.12s: %w", c.Ref, err))
			continue
		}
		removed++
		backendLog(b).Info("reaped a dead server's sandbox", "backend", b.Name(), "ref", shortRef(c.Ref), "instance", c.Labels[LabelInstance], "state", c.State)
	}
	return removed, errors.Join(errs...)
}

// shortRef is a backend's reference cut for a log line.
func shortRef(ref string) string { return ref[:min(len(ref), 12)] }

// agentVolumeMaxAge: an agent volume of another build is removed only once this old, since
// a live server of that build may be between sandboxes (its volume unused, but not done).
const agentVolumeMaxAge = 24 * time.Hour

// reapExtras removes old agent volumes of other builds (the engine refuses to remove one a
// container still uses, which is the other half of the protection), and the agent sockets
// directories of dead servers.
func (e *Docker) reapExtras(ctx context.Context) {
	reapSocketDirs(os.TempDir(), processAlive)
	vols, err := e.cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"), filters.Arg("label", LabelKind+"=agent"))})
	if err != nil {
		return
	}
	for _, v := range vols.Volumes {
		created, err := time.Parse(time.RFC3339, v.CreatedAt)
		if v.Name == e.agent.volumeName() || err != nil || time.Since(created) < agentVolumeMaxAge {
			continue
		}
		_ = e.cli.VolumeRemove(ctx, v.Name, false)
	}
}
