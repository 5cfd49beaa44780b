package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// tracker remembers everything the benchmark has created and not yet removed, so that an
// error or an interrupt leaves nothing behind.
type tracker struct {
	mu         sync.Mutex
	sandboxes  map[*sandbox.AgentSandbox]bool
	containers map[string]bool
}

func newTracker() *tracker {
	return &tracker{sandboxes: map[*sandbox.AgentSandbox]bool{}, containers: map[string]bool{}}
}

func (t *tracker) addSandbox(s *sandbox.AgentSandbox) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sandboxes[s] = true
}

func (t *tracker) dropSandbox(s *sandbox.AgentSandbox) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.sandboxes, s)
}

func (t *tracker) addContainer(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.containers[id] = true
}

func (t *tracker) dropContainer(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.containers, id)
}

// cleanup removes what is still tracked, then, as a backstop for anything created while an
// interrupt cut a call short, every container labelled with this run's engine instance or
// baseline run id. ctx must not be the (possibly cancelled) measurement context.
func (t *tracker) cleanup(ctx context.Context, cli *client.Client, engine *sandbox.Docker, runID string) error {
	t.mu.Lock()
	sandboxes := make([]*sandbox.AgentSandbox, 0, len(t.sandboxes))
	for s := range t.sandboxes {
		sandboxes = append(sandboxes, s)
	}
	ids := make([]string, 0, len(t.containers))
	for id := range t.containers {
		ids = append(ids, id)
	}
	t.mu.Unlock()

	var errs []error
	remove := func(id string) {
		err := cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !errdefs.IsNotFound(err) && !errdefs.IsConflict(err) {
			errs = append(errs, fmt.Errorf("removing container %.12s: %w", id, err))
		}
		t.dropContainer(id)
	}
	for _, s := range sandboxes {
		// Close remembers its first outcome, so a Close cut short by the interrupt would only
		// repeat its error: a failed one is followed by a plain remove of the container.
		if err := s.Close(ctx); err != nil {
			remove(s.ContainerID())
		}
		t.dropSandbox(s)
	}
	for _, id := range ids {
		remove(id)
	}

	if engine != nil {
		leftover, err := engine.ListManaged(ctx, engine.Instance())
		if err != nil {
			errs = append(errs, err)
		}
		for _, c := range leftover {
			remove(c.Ref)
		}
	}
	leftover, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", benchLabel+"="+runID))})
	if err != nil {
		errs = append(errs, fmt.Errorf("listing baseline containers: %w", err))
	}
	for _, c := range leftover {
		remove(c.ID)
	}
	return errors.Join(errs...)
}
