package main

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// The baseline column: what the same work costs through the Docker API alone, with no agent.

// dockerExec runs argv in a container the way `docker exec` does, one exec instance per call:
// create the exec, attach to it (which starts it), write stdin if any, read all output, and
// inspect it for the exit code.
func dockerExec(ctx context.Context, cli *client.Client, containerID, user string, argv []string, stdin []byte) (stdout, stderr string, exitCode int, err error) {
	created, err := cli.ContainerExecCreate(ctx, containerID, container.ExecOptions{
		User:         user,
		Cmd:          argv,
		AttachStdin:  stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return "", "", 0, fmt.Errorf("docker exec create %q: %w", argv, err)
	}
	hijack, err := cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", "", 0, fmt.Errorf("docker exec attach %q: %w", argv, err)
	}
	defer hijack.Close()
	// Reading a hijacked connection ignores ctx; closing the connection ends the read.
	stopAfter := context.AfterFunc(ctx, hijack.Close)
	defer stopAfter()

	if stdin != nil {
		if _, err := hijack.Conn.Write(stdin); err != nil {
			return "", "", 0, fmt.Errorf("docker exec %q: writing stdin: %w", argv, err)
		}
		if err := hijack.CloseWrite(); err != nil {
			return "", "", 0, fmt.Errorf("docker exec %q: closing stdin: %w", argv, err)
		}
	}
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, hijack.Reader); err != nil {
		if ctx.Err() != nil { // the read ended because ctx closed the connection
			err = context.Cause(ctx)
		}
		return "", "", 0, fmt.Errorf("docker exec %q: reading output: %w", argv, err)
	}
	// The stream ends when the process's output closes; the engine may record the exit a
	// moment later.
	for {
		insp, err := cli.ContainerExecInspect(ctx, created.ID)
		if err != nil {
			return "", "", 0, fmt.Errorf("docker exec inspect %q: %w", argv, err)
		}
		if !insp.Running {
			return out.String(), errOut.String(), insp.ExitCode, nil
		}
		if err := sleep(ctx, time.Millisecond); err != nil {
			return "", "", 0, err
		}
	}
}

// benchLabel marks the baseline containers of one run, so that cleanup can find them all.
const benchLabel = "enclave-bench.run"

// baselineSpec is the container a sandbox would be without our agent (sandbox.HardenedSpec:
// the same image, user, environment, limits and hardening), with PID 1 a shell running
// sleep. Like sleep, a PID 1 that installs no handler ignores SIGTERM, which is what
// `docker stop` runs into.
func baselineSpec(r sandbox.Resolved, runID string) (*container.Config, *container.HostConfig) {
	return sandbox.HardenedSpec(r, []string{"/bin/sh", "-c", "sleep 3600"}, map[string]string{benchLabel: runID})
}

// baseline creates and removes plain containers for the comparison column, tracking each one
// until it is gone.
type baseline struct {
	cli   *client.Client
	cfg   sandbox.Resolved
	runID string
	track *tracker
}

// createStart is `docker run -d`: create, then start. Start returns once the process runs.
func (b *baseline) createStart(ctx context.Context) (string, error) {
	cfg, host := baselineSpec(b.cfg, b.runID)
	created, err := b.cli.ContainerCreate(ctx, cfg, host, nil, nil, "")
	if err != nil {
		return "", fmt.Errorf("creating baseline container from %s: %w", b.cfg.Image, err)
	}
	b.track.addContainer(created.ID)
	if err := b.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return created.ID, fmt.Errorf("starting baseline container %.12s: %w", created.ID, err)
	}
	return created.ID, nil
}

// remove is `docker rm -f`: SIGKILL and remove, as AgentSandbox.Close does. Gone already
// (or being removed by the engine's auto-removal) counts as removed, as it does there.
func (b *baseline) remove(ctx context.Context, id string) error {
	err := b.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !errdefs.IsNotFound(err) && !errdefs.IsConflict(err) {
		return fmt.Errorf("removing baseline container %.12s: %w", id, err)
	}
	b.track.dropContainer(id)
	return nil
}

// stopRemove is `docker stop` (default 10 s grace, SIGTERM first) followed by `docker rm`.
func (b *baseline) stopRemove(ctx context.Context, id string) error {
	if err := b.cli.ContainerStop(ctx, id, container.StopOptions{}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("stopping baseline container %.12s: %w", id, err)
	}
	err := b.cli.ContainerRemove(ctx, id, container.RemoveOptions{RemoveVolumes: true})
	if err != nil && !errdefs.IsNotFound(err) && !errdefs.IsConflict(err) {
		return fmt.Errorf("removing stopped baseline container %.12s: %w", id, err)
	}
	b.track.dropContainer(id)
	return nil
}
