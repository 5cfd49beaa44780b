package agent

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// Egress is the way out of a sandbox that has no network: the agent listens on the
// container's loopback (Options.EgressListen, announced to programs by the proxy variables
// the server sets) and hands each connection to the server as a new stream (KindOpen). The
// server runs the HTTP proxy on it, checks its egress policy, dials, and adds credentials.
// The agent reads nothing of what passes: it shares the container with the code it serves,
// so it holds no policy and no secret, only bytes in transit.

// listenEgress opens the egress listener; it runs before the greeting, so that the address
// the greeting reports is already served.
func listenEgress(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("egress: listening on %s: %w", addr, err)
	}
	return l, nil
}

// acceptEgress announces each connection to l as a stream until l is closed. A connection
// the agent cannot take (too many streams, shutting down) is closed at once, which the
// program sees as a refused proxy.
func (s *server) acceptEgress(l net.Listener) {
	var seq uint64
	backoff := 5 * time.Millisecond
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or the like: wait a little rather than spin.
			s.log.Warn("egress: accept failed", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		seq++
		id := wire.AgentStream | seq
		if err := s.startStream(id, conn, &wire.Response{ID: id, Kind: wire.KindOpen}); err != nil {
			s.log.Debug("egress: connection refused", "err", err)
		}
	}
}
