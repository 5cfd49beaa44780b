package sandbox

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/internal/logcap"
)

// The agent's stream is the one channel a sandbox has to the server, so the server reads it
// as hostile: the agent is ours, but it shares its container with untrusted code, and
// nothing read from it may cost the server more than a bounded amount of memory or time.
// Every frame is one line, read with a bounded reader; a frame that is too long, is not JSON,
// or breaks the protocol (an answer for a request never sent, a second final answer, an
// unknown kind) ends that connection with ErrProtocol. The sandbox then reads as dead and
// is replaced; the server and every other sandbox carry on.

// ErrProtocol ends an agent connection that broke the protocol. It comes wrapped in
// ErrClosed, with what happened.
var ErrProtocol = errors.New("agent protocol violation")

// Frame size limits. A frame's limit is the largest answer its request may legitimately
// get: its payload's cap, plus frameSlack for the envelope.
const (
	// frameSlack covers a response's envelope around its payload: ids, kinds, paths, exit
	// status, the omission markers of capped output.
	frameSlack = 64 << 10
	// baseFrameLimit bounds frames no request sized: the greeting, tunnel data (the agent
	// sends at most 64 KiB per message, 88 KiB in base64), errors, and the answers to small
	// requests (ping, cancel, stat, write, ...).
	baseFrameLimit = 1 << 20
	// listFrameLimit bounds answers whose size the agent does not cap: directory listings
	// and job lists, about 100,000 entries. It also covers operations this table does not
	// know. A directory listed past it ends the sandbox rather than the server's memory.
	listFrameLimit = 8 << 20
	// minBytesPerValue bounds how densely a frame may pack JSON values. Decoding turns each
	// object or array element into a Go value of up to ~100 bytes, so a frame of "{},{},..."
	// would take some 35 times its size in memory. An honest answer spends at least ~14
	// bytes per value (a listing entry with a one-letter name); at one value per 12 bytes a
	// frame decodes into at most about 9 times its size.
	minBytesPerValue = 12
	// maxAbandoned bounds the set of calls given up on whose late answers are dropped
	// without complaint. Past it the oldest are forgotten, and a very late answer to one of
	// them counts as a violation.
	maxAbandoned = 1024
	// readBuffer is the reader's buffer. Most frames (greetings, small answers, output
	// chunks) fit; a longer one is assembled apart, in a buffer dropped after it. An idle
	// connection holds this much and no more: with hundreds of sandboxes per server, a
	// 64 KiB buffer each would be tens of MiB held for nothing.
	readBuffer = 4 << 10
)

// frameLimit is the longest answer req may get.
func frameLimit(req wire.Request) int {
	switch req.Op {
	case wire.OpExec:
		limit := wire.DefaultMaxOutputBytes
		if req.Exec != nil && req.Exec.MaxOutputBytes > 0 {
			limit = req.Exec.MaxOutputBytes
		}
		return 2*limit + frameSlack // stdout and stderr, each capped by its encoded size
	case wire.OpFile:
		if req.File == nil {
			return baseFrameLimit
		}
		switch req.File.Action {
		case wire.FileRead:
			limit := int64(wire.DefaultMaxReadBytes)
			if req.File.MaxBytes > 0 {
				limit = req.File.MaxBytes
			}
			return base64.StdEncoding.EncodedLen(int(limit)) + frameSlack
		case wire.FileList:
			return listFrameLimit
		}
		return baseFrameLimit
	case wire.OpPing, wire.OpCancel, wire.OpKill, wire.OpDial:
		return baseFrameLimit
	default: // OpJobs, and operations added after this table
		return listFrameLimit
	}
}

// agentConn multiplexes requests to one agent over a single stream: requests are written as
// JSON lines, and a reader goroutine routes each response to the call waiting on its ID.
type agentConn struct {
	log   *slog.Logger
	stray *logcap.Logger // errors the agent sent without a caller: bounded and rate-limited
	abort func()         // tears the transport down, both ways

	wmu sync.Mutex
	w   io.WriteCloser
	enc *json.Encoder // writes each request in one Write, so it needs no buffer of its own

	nextID atomic.Uint64 // the last request ID issued
	// tunnelBytes is the tunnel data received and not read yet, all streams together;
	// tunnelLimit caps it (maxTunnelBuffer, smaller in tests).
	tunnelBytes atomic.Int64
	tunnelLimit int64

	mu        sync.Mutex
	pending   map[uint64]*pendingCall
	abandoned map[uint64]struct{}    // calls given up on: a late final answer is dropped
	streams   map[uint64]*tunnelConn // tunnels, by the ID of the dial that opened them
	err       error                  // set once the stream is gone; every later call fails with it

	// accept takes the streams the agent opens (egress connections); nil closes them.
	accept func(net.Conn)

	sawReady   bool   // reader goroutine only
	lastOpened uint64 // reader goroutine only: the agent's last stream ID (KindOpen)
	ready      chan wire.Ready
	done       chan struct{}
}

// pendingCall is a request waiting for its final answer.
type pendingCall struct {
	op    wire.Operation
	limit int // the longest frame its answers may be
	// ch gets the call's output chunks and its one final answer. The reader keeps its last
	// slot free for the final answer, so delivering never blocks the reader.
	ch chan wire.Response
}

// cancelGrace bounds the wait for a cancelled exec's final result before giving up on it.
const cancelGrace = 5 * time.Second

// newAgentConn starts reading responses from r. abort, called once the connection has
// failed, must tear down the transport under w and r so that nothing stays blocked on it;
// nil means closing w is enough.
func newAgentConn(w io.WriteCloser, r io.Reader, abort func(), log *slog.Logger) *agentConn {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if abort == nil {
		abort = func() { _ = w.Close() }
	}
	c := &agentConn{
		log:         log,
		stray:       logcap.New(log, logcap.Options{}),
		abort:       abort,
		tunnelLimit: maxTunnelBuffer,
		w:           w,
		enc:         enc,
		pending:     map[uint64]*pendingCall{},
		abandoned:   map[uint64]struct{}{},
		streams:     map[uint64]*tunnelConn{},
		ready:       make(chan wire.Ready, 1),
		done:        make(chan struct{}),
	}
	go c.readLoop(r)
	return c
}

func (c *agentConn) readLoop(r io.Reader) {
	frames := &frameReader{r: bufio.NewReaderSize(r, readBuffer)}
	var err error
	for {
		var frame []byte
		if frame, err = frames.next(c.maxFrame); err != nil {
			break
		}
		if err = c.route(frame); err != nil {
			break
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
		err = errors.New("the agent's stream closed (the container exited or was removed)")
	}
	if errors.Is(err, ErrProtocol) {
		c.log.Warn("ending the sandbox's agent connection", "error", err)
	}
	c.fail(err)
}

// maxFrame is the longest frame the reader accepts now: the base limit, or more while a call
// that may get a larger answer waits.
func (c *agentConn) maxFrame() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := baseFrameLimit
	for _, p := range c.pending {
		limit = max(limit, p.limit)
	}
	return limit
}

// protocolError describes a violation; it wraps ErrProtocol.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// route checks one frame and hands it to whoever waits for it.
func (c *agentConn) route(frame []byte) error {
	if n := jsonValues(frame); n > len(frame)/minBytesPerValue+64 {
		return protocolError("a %d-byte frame packing %d JSON values, more than one per %d bytes", len(frame), n, minBytesPerValue)
	}
	var resp wire.Response
	if err := json.Unmarshal(frame, &resp); err != nil {
		return protocolError("a frame that is not a response (%v): %q", err, logcap.Prefix(frame, 64))
	}
	switch resp.Kind {
	case wire.KindReady:
		if resp.ID != 0 || resp.Ready == nil || c.sawReady {
			return protocolError("an unexpected greeting (id %d; the agent greets once, with id 0)", resp.ID)
		}
		c.sawReady = true
		c.ready <- *resp.Ready // buffered for the one greeting: never blocks
		return nil
	case wire.KindData, wire.KindEOF:
		if len(frame) > baseFrameLimit {
			return protocolError("a %d-byte %s frame for stream %d, past the %d-byte limit", len(frame), resp.Kind, resp.ID, baseFrameLimit)
		}
		if resp.ID == 0 || (resp.ID > c.nextID.Load() && (resp.ID&wire.AgentStream == 0 || resp.ID > c.lastOpened)) {
			return protocolError("%s for stream %d, which was never opened", resp.Kind, resp.ID)
		}
		c.routeStream(resp) // never blocks: each stream buffers its own data, within caps
		return nil
	case wire.KindOpen:
		if len(frame) > baseFrameLimit || resp.ID&wire.AgentStream == 0 || resp.ID <= c.lastOpened {
			return protocolError("an open of stream %d (the agent's stream IDs carry wire.AgentStream and increase; the last was %d)", resp.ID, c.lastOpened)
		}
		c.lastOpened = resp.ID
		c.opened(resp.ID) // never blocks: the stream's handler runs in its own goroutine
		return nil
	case wire.KindError:
		if resp.ID == 0 { // an error about a request the agent could not read: nobody waits
			c.stray.Log(slog.LevelWarn, "agent error without a caller", "error", []byte(resp.Error), "code", logcap.Prefix(string(resp.Code), 32))
			return nil
		}
		return c.deliver(resp, len(frame))
	case wire.KindResult, wire.KindOutput:
		return c.deliver(resp, len(frame))
	default:
		return protocolError("a frame of unknown kind %q", logcap.Prefix(string(resp.Kind), 32))
	}
}

// deliver hands a call's output chunk or final answer to the call. The reader takes the
// call off the pending set as it delivers the final answer, so a second one is caught here
// and cannot block anything.
func (c *agentConn) deliver(resp wire.Response, size int) error {
	final := resp.Kind != wire.KindOutput
	c.mu.Lock()
	p, waiting := c.pending[resp.ID]
	_, abandoned := c.abandoned[resp.ID]
	if waiting && final {
		delete(c.pending, resp.ID)
	}
	if abandoned && final {
		delete(c.abandoned, resp.ID)
	}
	c.mu.Unlock()

	switch {
	case abandoned:
		return nil // the call gave up; its late answer interests nobody
	case !waiting && (resp.ID == 0 || resp.ID > c.nextID.Load()):
		return protocolError("%s for request %d, which was never sent", resp.Kind, resp.ID)
	case !waiting:
		return protocolError("%s for request %d, which had its final answer already", resp.Kind, resp.ID)
	case size > p.limit:
		return protocolError("a %d-byte answer to a %s request, past its %d-byte limit", size, p.op, p.limit)
	case !final && p.op != wire.OpExec:
		return protocolError("output for request %d, a %s request, which streams none", resp.ID, p.op)
	case !final:
		// Streaming chunks are best effort: dropped rather than wait for a slow caller.
		if len(p.ch) < cap(p.ch)-1 {
			p.ch <- resp
		}
		return nil
	default:
		p.ch <- resp
		return nil
	}
}

// fail ends the connection: every waiting and future call gets err, and the transport is
// torn down so that nothing stays blocked on it.
func (c *agentConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = fmt.Errorf("%w: %w", ErrClosed, err)
	close(c.done)
	c.mu.Unlock()
	c.abort()
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
	return nil
}

// call sends req and waits for its final response. Output chunks go to onOutput. When ctx
// ends during an exec, the agent is told to cancel it and call waits (briefly) for the
// cancelled result, so the caller learns what the process printed before it died.
func (c *agentConn) call(ctx context.Context, req wire.Request, onOutput func(wire.Output)) (wire.Response, error) {
	if req.ID == 0 { // a dial picks its ID first, to register its stream under it
		req.ID = c.nextID.Add(1)
	}
	p := &pendingCall{op: req.Op, limit: frameLimit(req), ch: make(chan wire.Response, 16)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return wire.Response{}, err
	}
	c.pending[req.ID] = p
	c.mu.Unlock()
	defer c.giveUp(req.ID)

	if err := c.send(req); err != nil {
		return wire.Response{}, err
	}
	cancelled := ctx.Done()
	var grace <-chan time.Time
	for {
		select {
		case resp := <-p.ch:
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

// giveUp ends call id's wait. A call that had no final answer yet is remembered as
// abandoned, so that the answer arriving later is dropped rather than taken for a forgery.
func (c *agentConn) giveUp(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, waiting := c.pending[id]; !waiting {
		return // answered: the reader took it off the set
	}
	delete(c.pending, id)
	if len(c.abandoned) >= maxAbandoned {
		oldest := id
		for a := range c.abandoned {
			oldest = min(oldest, a)
		}
		delete(c.abandoned, oldest)
	}
	c.abandoned[id] = struct{}{}
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

// jsonValues counts the objects, arrays and separators outside strings in frame: about the
// number of values decoding it would make. It does not validate anything; Unmarshal does.
func jsonValues(frame []byte) int {
	n := 0
	inString, escaped := false, false
	for _, b := range frame {
		switch {
		case escaped:
			escaped = false
		case inString && b == '\\':
			escaped = true
		case b == '"':
			inString = !inString
		case !inString && (b == '{' || b == '[' || b == ','):
			n++
		}
	}
	return n
}

// frameReader splits the agent's stream into newline-terminated frames without ever
// holding more of one than the limit it is given.
type frameReader struct {
	r    *bufio.Reader
	long []byte // assembles a frame longer than r's buffer; dropped once it is read
}

// next returns the next frame without its newline; the slice is valid until the next call.
// limit is asked only once a frame outgrows baseFrameLimit, so that a limit raised while
// the frame arrives (a call for a large answer began) counts.
func (f *frameReader) next(limit func() int) ([]byte, error) {
	f.long = nil // an idle connection keeps no large frame's buffer
	allowed := baseFrameLimit
	for {
		chunk, err := f.r.ReadSlice('\n')
		if n := len(f.long) + len(chunk); n > allowed {
			if allowed = limit(); n > allowed {
				return nil, protocolError("a frame of more than %d bytes, past the %d-byte limit of the answers awaited", n, allowed)
			}
		}
		switch {
		case err == nil && len(f.long) == 0:
			return chunk[:len(chunk)-1], nil // the whole frame is in r's buffer: no copy
		case err == nil:
			f.add(chunk, allowed)
			return f.long[:len(f.long)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			f.add(chunk, allowed)
		case errors.Is(err, io.EOF) && len(f.long)+len(chunk) > 0:
			return nil, fmt.Errorf("the agent's stream ended inside a frame: %w", io.ErrUnexpectedEOF)
		default:
			return nil, err
		}
	}
}

// add appends chunk to the frame under way, doubling the buffer (append grows large slices
// by a quarter, which would copy a large frame many times over) but never past allowed.
func (f *frameReader) add(chunk []byte, allowed int) {
	if need := len(f.long) + len(chunk); need > cap(f.long) {
		grown := make([]byte, len(f.long), min(max(2*cap(f.long), need, 64<<10), allowed))
		copy(grown, f.long)
		f.long = grown
	}
	f.long = append(f.long, chunk...)
}
