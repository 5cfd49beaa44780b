package sandbox

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/moby/profiles/seccomp"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// Labels put on every container and volume enclave-mcp creates, so that it can find (and
// reap) its own and never touch anything else.
const (
	LabelManaged  = "enclave-mcp.managed"
	LabelInstance = "enclave-mcp.instance"
	LabelSandbox  = "enclave-mcp.sandbox"
	LabelOwner    = "enclave-mcp.owner"
	LabelKind     = "enclave-mcp.kind"
	// LabelEgress holds a sandbox's egress rules as JSON (no secret: credential values are
	// references), so that its policy is on record with the sandbox itself.
	LabelEgress = "enclave-mcp.egress"
)

// EgressProxyAddr is where a sandbox with egress finds the proxy: the agent listens there
// on the container's loopback, and the proxy variables point at it.
const EgressProxyAddr = "127.0.0.1:3128"

// egressDir is a small tmpfs holding the CA bundle of a sandbox whose egress adds
// credentials: the image's own roots and the sandbox's CA, which the server writes after
// the start. It is not emptied by a pool's reset.
const (
	egressDir    = "/.enclave-egress"
	egressBundle = egressDir + "/ca-bundle.pem"
)

// AgentDir is where the agent's volume is mounted in every sandbox; AgentPath is the binary.
const (
	AgentDir  = "/.enclave"
	AgentPath = AgentDir + "/agent"
)

// specInput is everything containerSpec needs; it holds no client and reads no environment.
type specInput struct {
	ID string
	// Labels name the sandbox's server, owner and kind (managedLabels).
	Labels      map[string]string
	Config      Resolved
	AgentVolume string
	// AgentArgs are appended to the agent's command line (e.g. a notebook launcher).
	AgentArgs []string
	// Host is what the engine's host can enforce, as the engine reported it.
	Host HostSecurity
	// AgentSocketDir, when set, is this host's directory holding the socket the agent
	// connects to instead of serving on its stdio (agentsocket.go).
	AgentSocketDir string
}

// HostSecurity is what the engine's host offers to confine containers, read from the
// engine's own report (Info.SecurityOptions) rather than from the server's machine, which
// is not the engine's when DOCKER_HOST names a remote one.
type HostSecurity struct {
	// AppArmor is true when the engine runs on a host with AppArmor enabled
	// (/sys/module/apparmor/parameters/enabled says Y there).
	AppArmor bool
}

// ParseSecurityOptions reads the engine's Info.SecurityOptions, entries such as
// "name=seccomp,profile=default" and "name=apparmor".
func ParseSecurityOptions(opts []string) HostSecurity {
	var h HostSecurity
	for _, opt := range opts {
		for field := range strings.SplitSeq(opt, ",") {
			if field == "name=apparmor" {
				h.AppArmor = true
			}
		}
	}
	return h
}

// containerName is the engine-side name of sandbox id.
func containerName(id string) string { return "enclave-" + id }

// containerSpec builds the engine's configs for one sandbox. It is a pure function so that
// every security default is visible in one place and pinned by a test.
//
// The agent runs as PID 1 with its stdin attached: it reaps zombies, exits at once on
// SIGTERM, and exits when the server's attach stream closes (StdinOnce), so a crashed server
// leaves no running sandbox behind.
func containerSpec(in specInput) (*container.Config, *container.HostConfig) {
	labels := maps.Clone(in.Labels)
	agentArgs := in.AgentArgs
	if in.AgentSocketDir != "" {
		agentArgs = append([]string{"--connect", AgentSocketPath}, agentArgs...)
	}
	cfg, host := HardenedSpec(in.Config, AgentCommand(in.Config, agentArgs), labels)
	if in.Host.AppArmor {
		// The engine would pick this profile anyway for a container that is not privileged;
		// naming it keeps it when the engine's default changes. Only where the host has
		// AppArmor: some engines refuse a profile they cannot load.
		host.SecurityOpt = append(host.SecurityOpt, "apparmor="+AppArmorProfile)
	}

	if rules := in.Config.Egress; rules != nil {
		bundle := ""
		if len(rules.Credentials) > 0 {
			bundle = egressBundle
			opts := "rw,noexec,nosuid,nodev,size=4m,mode=1777"
			if uid, gid, ok := NumericUser(in.Config.User); ok {
				opts += ",uid=" + uid + ",gid=" + gid
			}
			host.Tmpfs[egressDir] = opts
		}
		cfg.Env = append(cfg.Env, rules.Env(EgressProxyAddr, bundle)...)
		if b, err := json.Marshal(rules.Redacted()); err == nil {
			cfg.Labels[LabelEgress] = string(b)
		}
	}

	cfg.AttachStdin, cfg.AttachStdout, cfg.AttachStderr = true, true, true
	cfg.OpenStdin, cfg.StdinOnce = true, true
	// The agent comes from a shared read-only volume, so it needs nothing from the image.
	host.Mounts = append([]mount.Mount{{
		Type:          mount.TypeVolume,
		Source:        in.AgentVolume,
		Target:        AgentDir,
		ReadOnly:      true,
		VolumeOptions: &mount.VolumeOptions{NoCopy: true},
	}}, host.Mounts...)
	if in.AgentSocketDir != "" {
		host.Mounts = append(host.Mounts, mount.Mount{Type: mount.TypeBind, Source: in.AgentSocketDir, Target: AgentSocketDir, ReadOnly: true})
	}
	return cfg, host
}

// AgentCommand is the command line of a sandbox's first process: the agent, mounted at
// AgentPath, serving config c's workspace, with agentArgs appended.
func AgentCommand(c Resolved, agentArgs []string) []string {
	cmd := []string{AgentPath, "agent", "--workspace", c.WorkingDir}
	if c.Egress != nil {
		cmd = append(cmd, "--egress-listen", EgressProxyAddr) // flags before agentArgs
	}
	return append(cmd, agentArgs...)
}

// Env is the environment of a sandbox's processes: the defaults every sandbox has, then
// the config's variables in name order.
func Env(c Resolved) []string {
	env := []string{
		"HOME=" + c.WorkingDir,
		"LANG=C.UTF-8",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1",
	}
	for _, k := range slices.Sorted(maps.Keys(c.EnvVars)) {
		env = append(env, k+"="+c.EnvVars[k])
	}
	return env
}

// ResetFor is what returns a sandbox of config c to its state at launch between pool
// borrowers (Launched.Reset): a borrower can leave files only in the workspace and the
// tmpfs mounts, unless the root file system is writable, when only a fresh sandbox is clean
// (nil).
func ResetFor(c Resolved) *wire.Reset {
	if c.ReadOnlyRootfs != nil && !*c.ReadOnlyRootfs {
		return nil
	}
	return &wire.Reset{Dirs: []string{c.WorkingDir, "/tmp", "/dev/shm", "/dev/mqueue"}, SysVIPC: true}
}

// HardenedSpec is a sandbox's container without the agent: the same image, user, limits and
// hardening as every sandbox, running entrypoint. containerSpec builds on it, and the
// benchmark's plain-Docker baseline uses it, so that comparison is like for like.
func HardenedSpec(c Resolved, entrypoint []string, labels map[string]string) (*container.Config, *container.HostConfig) {
	env := Env(c)
	cfg := &container.Config{
		Image:      c.Image,
		Hostname:   "sandbox",
		User:       c.User,
		Env:        env,
		WorkingDir: c.WorkingDir,
		Entrypoint: entrypoint,
		Cmd:        []string{},
		Labels:     labels,
	}

	// The engine copies an existing directory's owner and mode onto a tmpfs mounted over it,
	// so mode=1777 alone is not enough where the image has the directory: the workspace is
	// also owned by the sandbox user when that user is numeric.
	workspaceOpts := fmt.Sprintf("rw,exec,nosuid,nodev,size=%d,mode=1777", c.WorkspaceBytes)
	if uid, gid, ok := NumericUser(c.User); ok {
		workspaceOpts += ",uid=" + uid + ",gid=" + gid
	}
	network := container.NetworkMode("none")
	if c.NetworkEnabled {
		network = container.NetworkMode(c.Network)
	}
	host := &container.HostConfig{
		// Our agent is PID 1 and reaps; docker-init would take its place and hide orphans.
		Init:           ptr(false),
		AutoRemove:     *c.RemoveOnExit,
		NetworkMode:    network,
		ReadonlyRootfs: *c.ReadOnlyRootfs,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges", "seccomp=" + defaultSeccompJSON()},
		Privileged:     c.Privileged,
		Runtime:        c.Runtime,
		// The protocol runs over stdout: a log driver would copy every message to disk.
		LogConfig: container.LogConfig{Type: "none"},
		Tmpfs: map[string]string{
			c.WorkingDir: workspaceOpts,
			"/tmp":       fmt.Sprintf("rw,exec,nosuid,nodev,size=%d,mode=1777", c.TmpBytes),
		},
		Resources: container.Resources{
			Memory:     c.MemoryBytes,
			MemorySwap: c.MemoryBytes, // equal to Memory: no swap on top
			NanoCPUs:   c.NanoCPUs,
			PidsLimit:  ptr(c.PidsLimit),
			Ulimits:    Ulimits(),
		},
	}
	for name, ip := range c.ExtraHosts {
		host.ExtraHosts = append(host.ExtraHosts, name+":"+ip)
	}
	slices.Sort(host.ExtraHosts)
	for _, hostPath := range slices.Sorted(maps.Keys(c.Volumes)) {
		v := c.Volumes[hostPath]
		host.Mounts = append(host.Mounts, mount.Mount{
			Type:     mount.TypeBind,
			Source:   hostPath,
			Target:   v.Bind,
			ReadOnly: strings.EqualFold(v.Mode, "ro"),
		})
	}
	return cfg, host
}

// AppArmorProfile is the AppArmor profile sandboxes run under where the host has AppArmor:
// the one the engine loads itself.
const AppArmorProfile = "docker-default"

// Resource limits (setrlimit) of every process in a sandbox. The engine's default is
// whatever dockerd was started with (20000 open files here, 1048576 under systemd's
// LimitNOFILE=infinity, and a core limit the code may raise), so each is set.
const (
	// CoreLimit 0, soft and hard: a crashing process writes no core file. A core holds the
	// process's memory (secrets passed in env vars or files included), and would be written
	// into the workspace it crashed in, filling it.
	CoreLimit = 0
	// NoFileSoft is the usual Linux default, and select()'s FD_SETSIZE: programs built on
	// select() misbehave past it.
	NoFileSoft = 1024
	// NoFileHard lets a program that needs more (a test runner, a server with many
	// sockets) raise its own soft limit, while bounding the open files, each pinning
	// kernel memory, that one process can hold (the engine's default reaches 1048576).
	NoFileHard = 4096
	// No nproc limit: RLIMIT_NPROC counts every process of the uid on the whole host, and
	// every sandbox runs as the same uid, so one sandbox could use up the others' share.
	// PidsLimit (a cgroup, per sandbox) is the bound on processes.
)

// Ulimits are the resource limits set on every sandbox.
func Ulimits() []*container.Ulimit {
	return []*container.Ulimit{
		{Name: "core", Soft: CoreLimit, Hard: CoreLimit},
		{Name: "nofile", Soft: NoFileSoft, Hard: NoFileHard},
	}
}

// defaultSeccompJSON is the engine's default seccomp profile (moby's, the module the Docker
// client comes from), sent with every create so that an engine started with
// --seccomp-profile=unconfined, or with a looser profile of its own, still confines
// sandboxes. The engine evaluates the profile's conditions (capabilities, architecture,
// kernel version) against each container, as it does for its built-in copy; gVisor (runsc)
// ignores it and filters system calls itself. About 9 KB, marshalled once.
var defaultSeccompJSON = sync.OnceValue(func() string {
	b, err := json.Marshal(seccomp.DefaultProfile())
	if err != nil {
		panic(fmt.Sprintf("marshalling the default seccomp profile: %v", err)) // a fixed value: cannot happen
	}
	return string(b)
})

// NumericUser splits "uid[:gid]" when both are numbers ("root" counts as 0:0); a user name
// only the image knows gives ok false.
func NumericUser(user string) (uid, gid string, ok bool) {
	if user == "root" {
		return "0", "0", true
	}
	uid, gid, found := strings.Cut(user, ":")
	if !found {
		gid = uid
	}
	if _, err := strconv.ParseUint(uid, 10, 32); err != nil {
		return "", "", false
	}
	if _, err := strconv.ParseUint(gid, 10, 32); err != nil {
		return "", "", false
	}
	return uid, gid, true
}
