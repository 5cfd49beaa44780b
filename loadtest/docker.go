package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The labels enclave-mcp puts on every sandbox container. They are spelled out here rather
// than imported from package sandbox on purpose: these checks observe the product from the
// outside, through the docker CLI, the way an operator would, so a bug in the product's own
// bookkeeping cannot hide itself.
const (
	labelManaged  = "enclave-mcp.managed"
	labelInstance = "enclave-mcp.instance"
	labelHost     = "enclave-mcp.host"
	labelPID      = "enclave-mcp.pid"
	labelPIDStart = "enclave-mcp.pid-start"
)

// Container is one sandbox container as `docker ps -a` shows it.
type Container struct {
	ID       string
	Name     string
	State    string // created, running, exited, removing, dead...
	Instance string
	Host     string
	PID      int    // the owning server's pid
	PIDStart string // the owning server's start time, in clock ticks since boot
}

// Sandboxes lists the sandbox containers (running or not) of the server with process id
// pid; pid 0 lists every server's.
func Sandboxes(ctx context.Context, pid int) ([]Container, error) {
	args := []string{"ps", "-a", "--no-trunc", "--format", "{{json .}}", "--filter", "label=" + labelManaged + "=true"}
	if pid != 0 {
		args = append(args, "--filter", "label="+labelPID+"="+strconv.Itoa(pid))
	}
	out, err := docker(ctx, args...)
	if err != nil {
		return nil, err
	}
	var list []Container
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		c, err := parsePSLine(sc.Bytes())
		if err != nil {
			return nil, err
		}
		list = append(list, c)
	}
	return list, nil
}

// psLine is the part of `docker ps --format '{{json .}}'` read here.
type psLine struct {
	ID     string
	Names  string
	State  string
	Labels string // k=v,k=v
}

func parsePSLine(line []byte) (Container, error) {
	var p psLine
	if err := json.Unmarshal(line, &p); err != nil {
		return Container{}, fmt.Errorf("parsing docker ps output %q: %w", line, err)
	}
	labels := map[string]string{}
	for kv := range strings.SplitSeq(p.Labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			labels[k] = v
		}
	}
	pid, _ := strconv.Atoi(labels[labelPID]) // a missing label leaves 0: no live owner
	return Container{
		ID: p.ID, Name: p.Names, State: p.State,
		Instance: labels[labelInstance], Host: labels[labelHost],
		PID: pid, PIDStart: labels[labelPIDStart],
	}, nil
}

// OwnerAlive reports whether the server that created c still runs. Only a container
// created on this host can be judged; for one from another host it answers true.
func (c Container) OwnerAlive() bool {
	host, _ := os.Hostname()
	if c.Host != host {
		return true
	}
	start, ok := processStartTicks(c.PID)
	return ok && (c.PIDStart == "" || start == c.PIDStart)
}

// processStartTicks reads field 22 (start time) of /proc/PID/stat; a missing process or a
// zombie (it has exited, only its parent has not reaped it) is not running.
func processStartTicks(pid int) (string, bool) {
	if pid <= 0 {
		return "", false
	}
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", false
	}
	// The command name in parentheses may hold spaces: fields count from the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return "", false
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 || fields[0] == "Z" {
		return "", false
	}
	return fields[19], true
}

// Orphans lists the sandbox containers whose owning server is dead: what a crash leaked
// and nobody has reaped yet.
func Orphans(ctx context.Context) ([]Container, error) {
	all, err := Sandboxes(ctx, 0)
	if err != nil {
		return nil, err
	}
	var dead []Container
	for _, c := range all {
		if !c.OwnerAlive() {
			dead = append(dead, c)
		}
	}
	return dead, nil
}

// WaitSandboxes polls until the server with process id pid has at most want sandbox
// containers, and returns the last count seen (with ctx's error when it ended first).
func WaitSandboxes(ctx context.Context, pid, want int) (int, error) {
	for {
		list, err := Sandboxes(ctx, pid)
		if err == nil && len(list) <= want {
			return len(list), nil
		}
		select {
		case <-ctx.Done():
			return len(list), fmt.Errorf("waiting for server %d's sandboxes to drop to %d (have %d): %w", pid, want, len(list), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// KillContainer kills a container with SIGKILL, behind the server's back.
func KillContainer(ctx context.Context, id string) error {
	_, err := docker(ctx, "kill", id)
	return err
}

// PauseContainer freezes a container's processes: its agent can then neither answer nor
// exit, so only a reaper can remove it.
//
// On cgroup v1 the freezer can fail to settle while the container's processes are forking
// (runc then answers "unable to freeze" and thaws it again), which a container under load
// does all the time; that answer is retried for up to ten seconds.
func PauseContainer(ctx context.Context, id string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := docker(ctx, "pause", id)
		if err == nil || !strings.Contains(err.Error(), "unable to freeze") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ContainerProcesses lists the command lines running in a container (docker top, which
// works on images without ps).
func ContainerProcesses(ctx context.Context, id string) ([]string, error) {
	// The engine insists on a PID column; it is cut off again below.
	out, err := docker(ctx, "top", id, "-o", "pid,args")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var cmds []string
	for _, line := range lines[1:] { // lines[0] is the header
		if _, args, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			cmds = append(cmds, strings.TrimSpace(args))
		}
	}
	return cmds, nil
}

// docker runs the docker CLI and returns its stdout.
func docker(ctx context.Context, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("docker %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
