package sandbox

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"
)

// agentBinary is the static executable injected into every sandbox as its PID 1.
type agentBinary struct {
	path string
	data []byte
	hash string // hex sha256, names the volume that holds this exact build
}

// agentOrSelf is the agent binary a backend runs: path, or this process's own executable
// when path is empty (the enclave-mcp binary is its own agent).
func agentOrSelf(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding own executable for the agent: %w", err)
	}
	return self, nil
}

// loadAgentBinary reads and checks the agent executable. It must be a static ELF: it runs
// in images that have no libc, or another one.
func loadAgentBinary(path string) (*agentBinary, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading agent binary: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("agent binary %s is not a Linux executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("agent binary %s is dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	sum := sha256.Sum256(data)
	return &agentBinary{path: path, data: data, hash: hex.EncodeToString(sum[:])}, nil
}

// AgentHash is the hex SHA-256 of the agent binary at path, after the checks every backend
// makes (a static Linux executable): what names the images and volumes that carry it.
func AgentHash(path string) (string, error) {
	a, err := loadAgentBinary(path)
	if err != nil {
		return "", err
	}
	return a.hash, nil
}

// volumeName is the shared, read-only volume that carries this build of the agent. Sandboxes
// mount it rather than receive a copy, so injection costs nothing per sandbox.
func (a *agentBinary) volumeName() string { return "enclave-mcp-agent-" + a.hash[:16] }

// tarball is the agent as a one-file tar archive, named "agent".
func (a *agentBinary) tarball() io.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "agent", Mode: 0o755, Size: int64(len(a.data)), Typeflag: tar.TypeReg})
	_, _ = tw.Write(a.data)
	_ = tw.Close()
	return &buf
}

// forgetAgentVolume makes the next create check the agent volume again.
func (e *Docker) forgetAgentVolume() {
	e.agentMu.Lock()
	defer e.agentMu.Unlock()
	e.agentReady = false
}

// ensureAgentVolume makes sure the agent volume exists and holds the whole binary. It mounts
// the volume into a throwaway container that never starts (any image will do; the sandbox's
// own is at hand) and copies the binary in through the archive API, which also works against
// a remote engine where bind mounts from this host would not.
func (e *Docker) ensureAgentVolume(ctx context.Context, image string) (string, error) {
	e.agentMu.Lock()
	defer e.agentMu.Unlock()
	name := e.agent.volumeName()
	if e.agentReady {
		return name, nil
	}
	if _, err := e.cli.VolumeCreate(ctx, volume.CreateOptions{
		Name:   name,
		Labels: map[string]string{LabelManaged: "true", LabelKind: "agent"},
	}); err != nil {
		return "", fmt.Errorf("%w: creating agent volume: %w", ErrEngine, err)
	}
	labels := e.identity.labels()
	labels[LabelManaged], labels[LabelKind] = "true", "agent-helper"
	// Not the caller's context: a create cancelled in flight may still happen on the engine,
	// and its container must then be removed by the defer below, not leaked.
	helperName := "enclave-agent-helper-" + NewID()
	helper, err := e.cli.ContainerCreate(context.WithoutCancel(ctx),
		&container.Config{Image: image, Entrypoint: []string{AgentPath}, Labels: labels},
		&container.HostConfig{
			NetworkMode: "none",
			LogConfig:   container.LogConfig{Type: "none"},
			Mounts:      []mount.Mount{{Type: mount.TypeVolume, Source: name, Target: AgentDir, VolumeOptions: &mount.VolumeOptions{NoCopy: true}}},
		}, nil, nil, helperName)
	if err != nil {
		if !errdefs.IsNotFound(err) { // an engine failing mid-create may still have made it
			e.discard(helperName)
		}
		return "", e.createError(image, err)
	}
	defer e.discard(helper.ID)
	// A copy cut short by a crash leaves a shorter file: compare sizes, not mere presence.
	if st, err := e.cli.ContainerStatPath(ctx, helper.ID, AgentPath); err == nil && st.Size == int64(len(e.agent.data)) {
		e.agentReady = true
		return name, nil
	}
	if err := e.cli.CopyToContainer(ctx, helper.ID, AgentDir, e.agent.tarball(), container.CopyToContainerOptions{}); err != nil {
		return "", fmt.Errorf("%w: copying the agent into volume %s: %w", ErrEngine, name, err)
	}
	e.agentReady = true
	return name, nil
}
