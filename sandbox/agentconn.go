package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// agentConn multiplexes requests to one agent over a single stream: requests are written as
// JSON lines, and a reader goroutine routes each response to the call waiting on its ID.
type agentConn struct {
	log *slog.Logger

	wmu sync.Mutex
	w   io.WriteCloser
	enc *json.Encoder
	buf *bufio.Writer

	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]chan wire.Response
	streams map[uint64]*tunnelConn // tunnels, by the ID of the dial that opened them
	err     error                  // set once the stream is gone; every later call fails with it

	ready chan wire.Ready
	done  chan struct{}
}

// cancelGrace bounds the wait for a cancelled exec's final result before giving up on it.
const cancelGrace = 5 * time.Second

func newAgentConn(w io.WriteCloser, r io.Reader, log *slog.Logger) *agentConn {
	buf := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	c := &agentConn{
		log:     log,
		w:       w,
		buf:     buf,
		enc:     enc,
		pending: map[uint64]chan wire.Response{},
		streams: map[uint64]*tunnelConn{},
		ready:   make(chan wire.Ready, 1),
		done:    make(chan struct{}),
	}
	go c.readLoop(r)
	return c
}

func (c *agentConn) readLoop(r io.Reader) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	var err error
	for {
		var resp wire.Response
		if err = dec.Decode(&resp); err != nil {
			break
		}
		if resp.Kind == wire.KindReady && resp.Ready != nil {
			select {
			case c.ready <- *resp.Ready:
			default:
			}
			continue
		}
		if resp.Kind == wire.KindData || resp.Kind == wire.KindEOF {
			c.routeStream(resp) // never blocks: each stream buffers its own data
			continue
		}
		c.mu.Lock()
		ch := c.pending[resp.ID]
		c.mu.Unlock()
		if ch == nil {
			if resp.Kind == wire.KindError {
				c.log.Warn("agent error without a caller", "error", resp.Error, "code", resp.Code)
			}
			continue
		}
		if resp.Kind == wire.KindOutput {
			// Streaming chunks are best effort: they never block the reader, and they leave
			// the channel's last slot free for the one final response, so that send below
			// cannot block even when the caller has stopped listening.
			if len(ch) < cap(ch)-1 {
				ch <- resp
			}
			continue
		}
		ch <- resp
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
		err = errors.New("the agent's stream closed (the container exited or was removed)")
	}
	c.fail(err)
}

// fail ends the connection: every waiting and future call gets err.
func (c *agentConn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = fmt.Errorf("%w: %w", ErrClosed, err)
	close(c.done)
}

// closeErr returns why the connection ended, or nil while it is up.
func (c *agentConn) closeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *agentConn) send(req wire.Request) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.enc.Encode(req); err != nil {
		return fmt.Errorf("sending %s request to agent: %w", req.Op, err)
	}
	if err := c.buf.Flush(); err != nil {
		return fmt.Errorf("sending %s request to agent: %w", req.Op, err)
	}
	return nil
}

// call sends req and waits for its final response. Output chunks go to onOutput. When ctx
// ends during an exec, the agent is told to cancel it and call waits (briefly) for the
// cancelled result, so the caller learns what the process printed before it died.
func (c *agentConn) call(ctx context.Context, req wire.Request, onOutput func(wire.Output)) (wire.Response, error) {
	if req.ID == 0 { // a dial picks its ID first, to register its stream under it
		req.ID = c.nextID.Add(1)
	}
	ch := make(chan wire.Response, 16)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return wire.Response{}, err
	}
	c.pending[req.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
	}()

	if err := c.send(req); err != nil {
		return wire.Response{}, err
	}
	cancelled := ctx.Done()
	var grace <-chan time.Time
	for {
		select {
		case resp := <-ch:
			if resp.Kind == wire.KindOutput {
				if onOutput != nil && resp.Output != nil {
					onOutput(*resp.Output)
				}
				continue
			}
			if resp.Kind == wire.KindError {
				return resp, &AgentError{Code: resp.Code, Message: resp.Error}
			}
			return resp, nil
		case <-c.done:
			return wire.Response{}, c.closeErr()
		case <-cancelled:
			if req.Op != wire.OpExec {
				return wire.Response{}, ctx.Err()
			}
			cancelled = nil
			grace = time.After(cancelGrace)
			go func() { // a fresh context: the caller's is already done
				cctx, stop := context.WithTimeout(context.Background(), cancelGrace)
				defer stop()
				_, _ = c.call(cctx, wire.Request{Op: wire.OpCancel, Target: req.ID}, nil)
			}()
		case <-grace:
			return wire.Response{}, fmt.Errorf("cancelling exec: the agent did not answer within %s: %w", cancelGrace, ctx.Err())
		}
	}
}

// waitReady waits for the agent's greeting.
func (c *agentConn) waitReady(ctx context.Context) (wire.Ready, error) {
	select {
	case r := <-c.ready:
		if r.Version != wire.Version {
			return r, fmt.Errorf("agent speaks protocol version %d, this server %d: rebuild both from one source", r.Version, wire.Version)
		}
		return r, nil
	case <-c.done:
		return wire.Ready{}, c.closeErr()
	case <-ctx.Done():
		return wire.Ready{}, fmt.Errorf("waiting for the agent to start: %w", ctx.Err())
	}
}

// close ends the request stream; the agent sees EOF and exits.
func (c *agentConn) close() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.w.Close()
}
