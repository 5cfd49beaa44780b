package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// A tunnel is a connection the agent opens inside the sandbox on the server's behalf
// (wire.OpDial), relayed as messages over the agent's one stream. It lets the server reach
// a service on the container's loopback, such as a notebook server, while the container has
// no network and publishes no port.

// tunnelChunk is the most one data message carries from the server to the agent.
const tunnelChunk = 64 << 10

// maxTunnelBuffer caps the tunnel data one sandbox's connection holds for readers that have
// not taken it yet, all its streams together; each stream is also capped on its own, at
// wire.MaxStreamBuffer. The agent relays without waiting for the server, so these caps are
// what bounds the memory a sandbox that floods its tunnels can take.
const maxTunnelBuffer = wire.MaxStreamBuffer

// ErrStreamFull ends a tunnel whose reader fell more than wire.MaxStreamBuffer behind, or
// whose data would take its sandbox's tunnels past maxTunnelBuffer.
var ErrStreamFull = errors.New("tunnel buffer full: the reader fell too far behind")

// DialContext opens a connection to addr inside the sandbox, as seen from the sandbox:
// "127.0.0.1:8888" is the container's own loopback. network is tcp, tcp4, tcp6 or unix. It
// fits http.Transport.DialContext and websocket.Dialer.NetDialContext. Nothing listening
// there is an error wrapping ErrNotFound.
func (s *AgentSandbox) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	conn, err := s.conn.dial(ctx, network, addr)
	if err != nil {
		return nil, s.callError(err)
	}
	return conn, nil
}

// Hold marks the sandbox busy, as its own calls do, for work that reaches it through a
// tunnel rather than through those calls (a notebook cell over a websocket), so that idle
// expiry does not remove it mid-cell. release ends the hold; calling it again does nothing.
// Hold fails with ErrClosed once the sandbox is stopping or gone.
func (s *AgentSandbox) Hold() (release func(), err error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(s.leave) }, nil
}

// dial opens a tunnel. The stream is registered under the dial's ID before the request goes
// out, so nothing the agent relays can arrive before there is somewhere to put it.
func (c *agentConn) dial(ctx context.Context, network, addr string) (*tunnelConn, error) {
	id := c.nextID.Add(1)
	t := &tunnelConn{c: c, id: id, remote: tunnelAddr{network, addr}, signal: make(chan struct{}, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.streams[id] = t
	c.mu.Unlock()

	timeout := wire.DefaultDialTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	req := wire.Request{ID: id, Op: wire.OpDial, Dial: &wire.Dial{Network: network, Address: addr, TimeoutMS: timeout.Milliseconds()}}
	done := make(chan error, 1)
	go func() {
		// Not the caller's context: a dial its caller gave up on is still seen through, so
		// that a connection the agent made anyway is closed rather than leaked.
		cctx, cancel := context.WithTimeout(context.Background(), timeout+cancelGrace)
		defer cancel()
		_, err := c.call(cctx, req, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			c.dropStream(id)
			return nil, fmt.Errorf("dialing %s %s in the sandbox: %w", network, addr, err)
		}
		return t, nil
	case <-ctx.Done():
		go func() {
			if err := <-done; err == nil {
				_ = t.Close()
			} else {
				c.dropStream(id)
			}
		}()
		return nil, fmt.Errorf("dialing %s %s in the sandbox: %w", network, addr, ctx.Err())
	}
}

// setAccept names the handler of the streams the agent opens; it must be set before the
// agent can open any (before its greeting is awaited).
func (c *agentConn) setAccept(accept func(net.Conn)) {
	c.mu.Lock()
	c.accept = accept
	c.mu.Unlock()
}

// opened registers a stream the agent opened (an egress connection) and hands it to the
// accept handler in a goroutine of its own; with no handler it is closed at once.
func (c *agentConn) opened(id uint64) {
	t := &tunnelConn{c: c, id: id, remote: tunnelAddr{"egress", fmt.Sprintf("sandbox-stream-%d", id&^wire.AgentStream)}, signal: make(chan struct{}, 1)}
	c.mu.Lock()
	accept := c.accept
	if accept != nil && c.err == nil {
		c.streams[id] = t
	}
	c.mu.Unlock()
	if accept == nil {
		// The send may block; the reader must not.
		go func() { _ = c.send(wire.Request{Op: wire.OpClose, Target: id}) }()
		return
	}
	go accept(t)
}

func (c *agentConn) dropStream(id uint64) {
	c.mu.Lock()
	delete(c.streams, id)
	c.mu.Unlock()
}

// routeStream hands a data or EOF message to its tunnel. It runs in the reader goroutine and
// never blocks: a tunnel buffers what its reader has not taken yet.
func (c *agentConn) routeStream(resp wire.Response) {
	c.mu.Lock()
	t := c.streams[resp.ID]
	c.mu.Unlock()
	if t == nil {
		return // closed on this side already
	}
	if resp.Kind == wire.KindEOF {
		var err error
		if resp.Error != "" {
			err = fmt.Errorf("tunnel to %s failed in the sandbox: %s", t.remote.addr, resp.Error)
		}
		t.end(err)
		c.dropStream(resp.ID)
		return
	}
	if !t.push(resp.Data) {
		c.dropStream(resp.ID)
		// The agent must stop relaying too; the send may block, the reader must not.
		go func() { _ = c.send(wire.Request{Op: wire.OpClose, Target: resp.ID}) }()
	}
}

// tunnelConn is the server's end of a tunnel, a net.Conn. Reads and writes honour their
// deadlines (a timed-out call returns os.ErrDeadlineExceeded, a net.Error whose Timeout is
// true), which is what net/http and gorilla/websocket rely on. A write already handed to
// the agent stream cannot be taken back; its deadline is checked between chunks.
type tunnelConn struct {
	c      *agentConn
	id     uint64
	remote tunnelAddr
	signal chan struct{} // wakes a waiting Read: data, end, close or a new deadline
	wmu    sync.Mutex    // keeps one Write's chunks together

	mu            sync.Mutex
	queue         [][]byte // data not read yet, oldest first
	buffered      int
	ended         bool  // no more data will come
	endErr        error // why the stream failed, when it did not simply end
	closed        bool
	readDeadline  time.Time
	writeDeadline time.Time
}

func (t *tunnelConn) wake() {
	select {
	case t.signal <- struct{}{}:
	default:
	}
}

// push appends data for the reader; it returns false, and fails the stream, when the
// stream's buffer or its sandbox's total would pass its cap.
func (t *tunnelConn) push(data []byte) bool {
	t.mu.Lock()
	defer t.wake()
	defer t.mu.Unlock()
	if t.closed || t.ended {
		return true
	}
	// Only the reader goroutine pushes, so the total cannot grow between check and add.
	if t.buffered+len(data) > wire.MaxStreamBuffer || t.c.tunnelBytes.Load()+int64(len(data)) > t.c.tunnelLimit {
		t.ended, t.endErr = true, ErrStreamFull
		t.dropQueueLocked()
		return false
	}
	t.queue = append(t.queue, data)
	t.buffered += len(data)
	t.c.tunnelBytes.Add(int64(len(data)))
	return true
}

// dropQueueLocked discards the data not read yet. t.mu must be held.
func (t *tunnelConn) dropQueueLocked() {
	t.c.tunnelBytes.Add(-int64(t.buffered))
	t.queue, t.buffered = nil, 0
}

// end marks the end of the incoming data; err says why, when it failed.
func (t *tunnelConn) end(err error) {
	t.mu.Lock()
	if !t.ended {
		t.ended, t.endErr = true, err
	}
	t.mu.Unlock()
	t.wake()
}

// Read implements net.Conn.
func (t *tunnelConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		t.mu.Lock()
		switch {
		case t.closed:
			t.mu.Unlock()
			return 0, net.ErrClosed
		case len(t.queue) > 0:
			n := 0
			for n < len(p) && len(t.queue) > 0 {
				c := copy(p[n:], t.queue[0])
				n += c
				if c == len(t.queue[0]) {
					t.queue[0] = nil
					t.queue = t.queue[1:]
				} else {
					t.queue[0] = t.queue[0][c:]
				}
			}
			t.buffered -= n
			t.c.tunnelBytes.Add(-int64(n))
			t.mu.Unlock()
			return n, nil
		case t.ended && t.endErr != nil:
			err := t.endErr
			t.mu.Unlock()
			return 0, err
		case t.ended:
			t.mu.Unlock()
			return 0, io.EOF
		}
		deadline := t.readDeadline
		t.mu.Unlock()

		var timer *time.Timer
		var expired <-chan time.Time
		if !deadline.IsZero() {
			wait := time.Until(deadline)
			if wait <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(wait)
			expired = timer.C
		}
		select {
		case <-t.signal:
		case <-expired:
		case <-t.c.done:
			t.end(t.c.closeErr())
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// Write implements net.Conn.
func (t *tunnelConn) Write(p []byte) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		t.mu.Lock()
		closed, ended, endErr, deadline := t.closed, t.ended, t.endErr, t.writeDeadline
		t.mu.Unlock()
		switch {
		case closed:
			return written, net.ErrClosed
		case ended && endErr != nil:
			return written, endErr
		case ended:
			return written, fmt.Errorf("writing to %s in the sandbox: %w", t.remote.addr, io.ErrClosedPipe)
		case !deadline.IsZero() && !time.Now().Before(deadline):
			return written, os.ErrDeadlineExceeded
		}
		n := min(len(p), tunnelChunk)
		if err := t.c.send(wire.Request{Op: wire.OpData, Target: t.id, Data: p[:n]}); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// Close implements net.Conn: the agent closes its end, and pending reads return.
func (t *tunnelConn) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.dropQueueLocked()
	t.mu.Unlock()
	t.wake()
	t.c.dropStream(t.id)
	if t.c.closeErr() != nil {
		return nil // the agent is gone, and its end with it
	}
	if err := t.c.send(wire.Request{Op: wire.OpClose, Target: t.id}); err != nil {
		return fmt.Errorf("closing tunnel to %s: %w", t.remote.addr, err)
	}
	return nil
}

// LocalAddr implements net.Conn.
func (t *tunnelConn) LocalAddr() net.Addr { return tunnelAddr{"agent", fmt.Sprintf("tunnel-%d", t.id)} }

// RemoteAddr implements net.Conn: the address dialled inside the sandbox.
func (t *tunnelConn) RemoteAddr() net.Addr { return t.remote }

// SetDeadline implements net.Conn.
func (t *tunnelConn) SetDeadline(d time.Time) error {
	t.mu.Lock()
	t.readDeadline, t.writeDeadline = d, d
	t.mu.Unlock()
	t.wake()
	return nil
}

// SetReadDeadline implements net.Conn.
func (t *tunnelConn) SetReadDeadline(d time.Time) error {
	t.mu.Lock()
	t.readDeadline = d
	t.mu.Unlock()
	t.wake()
	return nil
}

// SetWriteDeadline implements net.Conn.
func (t *tunnelConn) SetWriteDeadline(d time.Time) error {
	t.mu.Lock()
	t.writeDeadline = d
	t.mu.Unlock()
	return nil
}

// tunnelAddr is a net.Addr for either end of a tunnel.
type tunnelAddr struct{ network, addr string }

func (a tunnelAddr) Network() string { return a.network }
func (a tunnelAddr) String() string  { return a.addr }
