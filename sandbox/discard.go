package sandbox

import (
	"context"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// How long discard keeps trying to remove a container the engine could not remove at once
// (it was restarting, say), and how often. Past that, the next server's reaping takes over.
const (
	discardPatience = 5 * time.Minute
	discardMaxDelay = 5 * time.Second
)

// discard removes a container that must not outlive a failed create, by id or by name (a
// create that errored may still have made its container). When the engine cannot do it now,
// it keeps trying in the background, so the container does not linger once the engine is
// back. Closing the engine abandons the retries.
func (e *Docker) discard(ref string) {
	if e.tryRemove(ref) {
		return
	}
	e.discards.Add(1)
	go func() {
		defer e.discards.Done()
		deadline := time.Now().Add(discardPatience)
		for delay := 250 * time.Millisecond; time.Now().Before(deadline); delay = min(2*delay, discardMaxDelay) {
			select {
			case <-e.closing:
				return
			case <-time.After(delay):
			}
			if e.tryRemove(ref) {
				return
			}
		}
		e.log.Warn("could not remove a container left by a failed create; the next server start reaps it", "container", ref)
	}()
}

// tryRemove force-removes ref; gone already, or being removed, counts as done.
func (e *Docker) tryRemove(ref string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.cli.ContainerRemove(ctx, ref, container.RemoveOptions{Force: true, RemoveVolumes: true})
	return err == nil || errdefs.IsNotFound(err) || errdefs.IsConflict(err)
}
