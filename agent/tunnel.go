package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// Tunnels let the server reach a service inside the sandbox, such as a notebook server on
// the container's loopback, without publishing a port: the agent opens the connection
// (OpDial) and relays bytes both ways as messages on the protocol stream. A sandbox with
// NetworkMode none still has loopback, so this is the only way in.
//
// The request loop must never wait on a tunnel, or one slow peer would stall every other
// request: data from the server is queued and written by the tunnel's own goroutine, and a
// queue that passes wire.MaxStreamBuffer fails its stream, not the agent.

const (
	// maxTunnels bounds the streams open at once; a client leaking connections hits it.
	maxTunnels = 256
	// tunnelReadSize is the largest chunk read from a peer and sent as one data message.
	tunnelReadSize = 64 << 10
	// closeFlushTimeout bounds the writing of what was queued before the server closed a
	// stream.
	closeFlushTimeout = 5 * time.Second
)

// tunnelSet is the agent's open streams, by the ID of the dial request that opened each.
type tunnelSet struct {
	mu     sync.Mutex
	open   map[uint64]*tunnel
	closed bool // the agent is shutting down: no new streams
}

func newTunnelSet() *tunnelSet { return &tunnelSet{open: map[uint64]*tunnel{}} }

// tunnel is one relayed connection.
type tunnel struct {
	id   uint64
	conn net.Conn

	mu     sync.Mutex
	queue  [][]byte // data from the server not yet written to conn
	queued int      // bytes in queue and in the write under way
	ended  bool     // closed by either side: nothing more is written or sent
	// closing is set by the server's OpClose: the data queued before it is still written
	// (an HTTP answer followed by a close must arrive whole), then the stream ends.
	closing bool
	wake    chan struct{}
}

// dial opens a stream for request id and answers it itself (a nil response tells dispatch
// so).
func (s *server) dial(ctx context.Context, id uint64, d *wire.Dial) (*wire.Response, error) {
	if d == nil {
		return nil, errorf(wire.CodeInvalid, "dial request %d has no dial field", id)
	}
	if !slices.Contains([]string{"tcp", "tcp4", "tcp6", "unix"}, d.Network) {
		return nil, errorf(wire.CodeInvalid, "dial: network %q is not one of tcp, tcp4, tcp6, unix", d.Network)
	}
	if d.TimeoutMS < 0 {
		return nil, errorf(wire.CodeInvalid, "dial: timeout_ms must not be negative")
	}
	timeout := wire.DefaultDialTimeout
	if d.TimeoutMS > 0 {
		timeout = time.Duration(d.TimeoutMS) * time.Millisecond
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, d.Network, d.Address)
	if err != nil {
		return nil, dialError(d, err)
	}
	// The result goes out before the relays start, so that no data precedes it.
	if err := s.startStream(id, conn, &wire.Response{ID: id, Kind: wire.KindResult}); err != nil {
		return nil, err
	}
	return nil, nil
}

// startStream registers conn as stream id, sends announce (a dial's result, or KindOpen for
// a connection the agent accepted), then relays both ways. Streams of both directions are
// the same from here on. It closes conn when it fails.
func (s *server) startStream(id uint64, conn net.Conn, announce *wire.Response) error {
	t := &tunnel{id: id, conn: conn, wake: make(chan struct{}, 1)}
	ts := s.tunnels
	ts.mu.Lock()
	switch {
	case ts.closed:
		ts.mu.Unlock()
		_ = conn.Close()
		return errShutdown
	case len(ts.open) >= maxTunnels:
		ts.mu.Unlock()
		_ = conn.Close()
		return errorf(wire.CodeTooLarge, "%d streams are already open", maxTunnels)
	}
	ts.open[id] = t
	ts.mu.Unlock()
	s.send(announce)
	go s.relayFromPeer(t)
	go s.relayToPeer(t)
	return nil
}

// dialError classifies a failed connect: refused and unreachable are not_found, so a caller
// polling for a server to come up can tell them from a broken request.
func dialError(d *wire.Dial, err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) && !opErr.Timeout() {
		return errorf(wire.CodeNotFound, "dial %s %s: %v", d.Network, d.Address, err)
	}
	return errorf(wire.CodeInternal, "dial %s %s: %v", d.Network, d.Address, err)
}

// tunnelRequest applies an OpData or OpClose. It runs in the request loop, so it only
// queues: the write itself happens in the stream's own goroutine. A stream that no longer
// exists has already ended, and the server has been told with KindEOF.
func (s *server) tunnelRequest(req wire.Request) {
	s.tunnels.mu.Lock()
	t := s.tunnels.open[req.Target]
	s.tunnels.mu.Unlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	if t.ended || t.closing {
		t.mu.Unlock()
		return
	}
	if req.Op == wire.OpClose {
		t.closing = true
		t.mu.Unlock()
		// A peer that stops reading cannot hold the stream open for long.
		_ = t.conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		select {
		case t.wake <- struct{}{}:
		default:
		}
		return
	}
	if t.queued+len(req.Data) > wire.MaxStreamBuffer {
		t.mu.Unlock()
		s.endTunnel(t, errors.New("stream buffer full: the peer inside the sandbox is not reading"), true)
		return
	}
	t.queue = append(t.queue, req.Data)
	t.queued += len(req.Data)
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// relayToPeer writes the server's data to the peer, in order.
func (s *server) relayToPeer(t *tunnel) {
	for {
		t.mu.Lock()
		for len(t.queue) == 0 && !t.ended && !t.closing {
			t.mu.Unlock()
			<-t.wake
			t.mu.Lock()
		}
		if t.ended {
			t.mu.Unlock()
			return
		}
		if len(t.queue) == 0 { // closing, and everything queued is written
			t.mu.Unlock()
			s.endTunnel(t, nil, false)
			return
		}
		batch := net.Buffers(t.queue)
		n := t.queued
		t.queue = nil
		t.mu.Unlock()

		if _, err := batch.WriteTo(t.conn); err != nil {
			s.endTunnel(t, err, true)
			return
		}
		t.mu.Lock()
		if !t.ended {
			t.queued -= n
		}
		t.mu.Unlock()
	}
}

// relayFromPeer sends what the peer writes to the server until either side ends the stream.
func (s *server) relayFromPeer(t *tunnel) {
	buf := make([]byte, tunnelReadSize)
	for {
		n, err := t.conn.Read(buf)
		if n > 0 {
			t.mu.Lock()
			ended := t.ended || t.closing
			t.mu.Unlock()
			if ended {
				return
			}
			// send encodes before it returns, so buf can be reused at once.
			s.send(&wire.Response{ID: t.id, Kind: wire.KindData, Data: buf[:n]})
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			s.endTunnel(t, err, true)
			return
		}
	}
}

// endTunnel closes t once. notify tells the server, with KindEOF, unless it asked for the
// close itself; err, when set, says why the stream failed.
func (s *server) endTunnel(t *tunnel, err error, notify bool) {
	t.mu.Lock()
	if t.ended {
		t.mu.Unlock()
		return
	}
	t.ended = true
	t.queue, t.queued = nil, 0
	notify = notify && !t.closing // the server closed it: it wants nothing more
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	_ = t.conn.Close()
	s.tunnels.mu.Lock()
	delete(s.tunnels.open, t.id)
	s.tunnels.mu.Unlock()
	if notify {
		resp := &wire.Response{ID: t.id, Kind: wire.KindEOF}
		if err != nil && !errors.Is(err, net.ErrClosed) {
			resp.Error = err.Error()
		}
		s.send(resp)
	}
}

// closeTunnels ends every stream when the agent stops.
func (s *server) closeTunnels() {
	s.tunnels.mu.Lock()
	s.tunnels.closed = true
	open := make([]*tunnel, 0, len(s.tunnels.open))
	for _, t := range s.tunnels.open {
		open = append(open, t)
	}
	s.tunnels.mu.Unlock()
	for _, t := range open {
		s.endTunnel(t, nil, false)
	}
}
