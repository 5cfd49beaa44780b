package notebook

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// channels is one websocket connection to a kernel's channels (/api/kernels/{id}/channels).
// A reader goroutine routes every message to the request it answers, by parent msg_id;
// messages no request waits for are dropped. Each request has a mailbox that queues its
// messages, up to a budget: a kernel that sends faster than the request takes them is made
// to wait (its output backs up into the tunnel, which has a cap of its own), so memory stays
// bounded however fast it sends.
type channels struct {
	ws        *websocket.Conn
	session   string
	log       *slog.Logger
	textLimit atomic.Int64  // the output cap strings are cut to (see limits)
	lastRead  atomic.Int64  // when bytes last arrived (UnixNano), even mid-message
	badLog    rateLog       // warnings about messages that could not be decoded
	rbuf      *bufio.Reader // every message is read through it; only readLoop uses it

	wmu sync.Mutex // one writer at a time, as gorilla requires

	mu      sync.Mutex
	waiters map[string]*mailbox
	err     error
	done    chan struct{} // closed when the connection is gone; err says why

	// stale closes when the kernel reports it is restarting or dead without any request of
	// ours asking: its process died. After a restart jupyter_server no longer relays the
	// iopub channel on this connection, so it must be replaced.
	staleOnce  sync.Once
	stale      chan struct{}
	staleState string
}

const (
	// defaultTextLimit caps strings until an execution sets its own output cap.
	defaultTextLimit = 1 << 20
	// writeTimeout bounds one websocket write.
	writeTimeout = 10 * time.Second
	// handshakeWait bounds the websocket handshake. jupyter_server answers the upgrade only
	// once the kernel has answered a kernel_info request (its pre_get waits up to its
	// kernel_info_timeout, 60 s), so the handshake includes the kernel's start (importing
	// IPython): on a loaded machine that took more than 10 s (a CI run, 2026-12-07, failed
	// a pool's creation on it). The caller's context, which for a sandbox's start carries
	// its StartTimeout, still ends it sooner.
	handshakeWait = 60 * time.Second
	// handshakeLimit bounds what the websocket handshake may read: the server's answer is a
	// few hundred bytes of headers, and nothing else bounds them.
	handshakeLimit = 256 << 10
	// mailboxBudget bounds the messages one request has waiting, by cost: past it the reader
	// waits for the request to take them, so a kernel cannot outrun the server's memory.
	mailboxBudget = 8 << 20
)

// connect opens the kernel's channels websocket through the client's dial function.
func (c *Client) connect(ctx context.Context, kernelID string, log *slog.Logger) (*channels, error) {
	session := newMsgID()
	u := url.URL{Scheme: "ws", Host: c.addr, Path: "/api/kernels/" + kernelID + "/channels", RawQuery: "session_id=" + session}
	var handshake *handshakeConn
	dialer := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := c.dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			handshake = &handshakeConn{Conn: conn, left: handshakeLimit}
			return handshake, nil
		},
		HandshakeTimeout: handshakeWait,
		ReadBufferSize:   64 << 10,
		WriteBufferSize:  64 << 10,
	}
	ws, resp, err := dialer.DialContext(ctx, u.String(), http.Header{"Authorization": {"token " + c.token}})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("connecting to kernel %s: %w", kernelID, ErrKernelNotFound)
		}
		return nil, fmt.Errorf("connecting to kernel %s: %w", kernelID, err)
	}
	handshake.done.Store(true)
	// A frame header claiming more fails the read at once, before its payload is read.
	ws.SetReadLimit(maxMessageBytes)
	ch := &channels{
		ws:      ws,
		session: session,
		log:     log,
		waiters: map[string]*mailbox{},
		done:    make(chan struct{}),
		stale:   make(chan struct{}),
	}
	ch.textLimit.Store(defaultTextLimit)
	ch.rbuf = newReadBuffer(nil)
	go ch.readLoop()
	return ch, nil
}

// readLoop routes every message to the request it answers until the connection ends. A
// message past its budget ends the connection with that error: the cell it belonged to
// fails with it, and the next cell reconnects.
func (ch *channels) readLoop() {
	for {
		typ, r, err := ch.ws.NextReader()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				err = errOverBytes()
			}
			ch.fail(err)
			return
		}
		if typ != websocket.TextMessage {
			continue // binary frames carry buffers of comm messages, which this client never opens
		}
		ch.lastRead.Store(time.Now().UnixNano())
		m, err := readMessage(activityReader{r, &ch.lastRead}, limits{text: int(ch.textLimit.Load())}, ch.rbuf)
		if errors.Is(err, errBadMessage) {
			if n := ch.badLog.allow(time.Now()); n > 0 {
				ch.log.Warn("skipping kernel messages that could not be decoded", "count", n, "error", err)
			}
			continue
		}
		if errors.Is(err, websocket.ErrReadLimit) {
			err = errOverBytes()
		}
		if err != nil { // past the budget, or the connection broke mid-message
			ch.fail(err)
			return
		}
		if m.Channel == channelIOPub && m.Header.MsgType == "status" && m.ParentHeader.MsgID == "" {
			switch m.Content.str("execution_state") {
			case "restarting", "autorestarting", "dead":
				ch.markStale(m.Content.str("execution_state"))
			}
		}
		parent := m.ParentHeader.MsgID
		ch.log.Debug("kernel message", "channel", m.Channel, "type", m.Header.MsgType, "parent", parent, "cost", m.cost)
		if parent == "" {
			continue
		}
		ch.mu.Lock()
		box := ch.waiters[parent]
		ch.mu.Unlock()
		if box != nil {
			box.put(m, ch.done)
		}
	}
}

func (ch *channels) markStale(state string) {
	ch.staleOnce.Do(func() {
		ch.staleState = state
		close(ch.stale)
	})
}

// isStale reports whether the kernel died under this connection, and the state it reported.
func (ch *channels) isStale() (bool, string) {
	select {
	case <-ch.stale:
		return true, ch.staleState
	default:
		return false, ""
	}
}

// fail ends the connection: err says why, and every waiting request sees it.
func (ch *channels) fail(err error) {
	ch.mu.Lock()
	if ch.err != nil {
		ch.mu.Unlock()
		return
	}
	if errors.Is(err, ErrMessageTooLarge) {
		ch.err = fmt.Errorf("%w (%w)", err, ErrConnectionLost)
	} else {
		ch.err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
	}
	close(ch.done)
	ch.mu.Unlock()
	// Nothing more is read: closing lets the tunnel drop what the sandbox still sends.
	_ = ch.ws.NetConn().Close()
}

// closed returns why the connection ended, or nil while it is up.
func (ch *channels) closed() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.err
}

// send sends a request and returns its id and the mailbox its replies arrive in; the
// mailbox is registered before the request goes out, so no reply can be missed. The caller
// must forget the id when done.
func (ch *channels) send(channel, msgType string, content any) (string, *mailbox, error) {
	req := newRequest(ch.session, channel, msgType, content)
	data, err := json.Marshal(req)
	if err != nil {
		return "", nil, fmt.Errorf("encoding %s: %w", msgType, err)
	}
	box := newMailbox()
	ch.mu.Lock()
	if ch.err != nil {
		err := ch.err
		ch.mu.Unlock()
		return "", nil, err
	}
	ch.waiters[req.Header.MsgID] = box
	ch.mu.Unlock()

	ch.wmu.Lock()
	_ = ch.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	err = ch.ws.WriteMessage(websocket.TextMessage, data)
	ch.wmu.Unlock()
	if err != nil {
		ch.forget(req.Header.MsgID)
		ch.fail(err)
		return "", nil, fmt.Errorf("sending %s: %w", msgType, ch.closed())
	}
	return req.Header.MsgID, box, nil
}

// forget stops routing replies to msgID; a reader waiting for room in its mailbox drops
// the message instead.
func (ch *channels) forget(msgID string) {
	ch.mu.Lock()
	box := ch.waiters[msgID]
	delete(ch.waiters, msgID)
	ch.mu.Unlock()
	if box != nil {
		box.abandon()
	}
}

// close ends the connection.
func (ch *channels) close() {
	ch.wmu.Lock()
	_ = ch.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	ch.wmu.Unlock()
	_ = ch.ws.Close()
	ch.fail(errors.New("closed by the client"))
}

// quietFor is how long nothing has arrived on the connection.
func (ch *channels) quietFor() time.Duration {
	return time.Since(time.Unix(0, ch.lastRead.Load()))
}

// activityReader notes when bytes arrive, so that a large message being read counts as
// activity before it is whole.
type activityReader struct {
	r    io.Reader
	last *atomic.Int64
}

func (a activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// handshakeConn bounds what the websocket handshake reads; once done is set, reads pass
// through (the websocket's read limit bounds each message from then on).
type handshakeConn struct {
	net.Conn
	left int64 // read only by the handshake, before done
	done atomic.Bool
}

// errHandshakeTooLarge: the server's answer to the websocket handshake was too long.
var errHandshakeTooLarge = fmt.Errorf("%w: websocket handshake answer over %d KiB", ErrServer, handshakeLimit>>10)

func (c *handshakeConn) Read(p []byte) (int, error) {
	if c.done.Load() {
		return c.Conn.Read(p)
	}
	if c.left <= 0 {
		return 0, errHandshakeTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= int64(n)
	return n, err
}

// rateLog lets a warning through at most once per rateLogEvery, counting the ones held
// back: a kernel can send malformed messages as fast as it likes.
type rateLog struct {
	mu   sync.Mutex
	last time.Time
	held int
}

const rateLogEvery = 10 * time.Second

// allow counts one occurrence and returns how many to report now (this one and those held
// back), or 0 to stay quiet.
func (l *rateLog) allow(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held++
	if !l.last.IsZero() && now.Sub(l.last) < rateLogEvery {
		return 0
	}
	n := l.held
	l.last, l.held = now, 0
	return n
}

// mailbox queues the messages answering one request, up to mailboxBudget of them by cost
// (always at least one).
type mailbox struct {
	mu        sync.Mutex
	msgs      []*message
	cost      int
	abandoned bool
	ready     chan struct{} // has a token while msgs is not empty
	room      chan struct{} // has a token when take made room, or the box was abandoned
}

func newMailbox() *mailbox {
	return &mailbox{ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// put queues m, waiting while the box is over its budget until the request takes what is
// queued, forgets the box, or done closes.
func (b *mailbox) put(m *message, done <-chan struct{}) {
	for {
		b.mu.Lock()
		switch {
		case b.abandoned:
			b.mu.Unlock()
			return
		case len(b.msgs) == 0 || b.cost+m.cost <= mailboxBudget:
			b.msgs = append(b.msgs, m)
			b.cost += m.cost
			b.mu.Unlock()
			signal(b.ready)
			return
		}
		b.mu.Unlock()
		select {
		case <-b.room:
		case <-done:
			return
		}
	}
}

// take returns the queued messages, oldest first.
func (b *mailbox) take() []*message {
	b.mu.Lock()
	msgs := b.msgs
	b.msgs, b.cost = nil, 0
	b.mu.Unlock()
	signal(b.room)
	return msgs
}

// abandon drops what is queued and makes put drop whatever comes.
func (b *mailbox) abandon() {
	b.mu.Lock()
	b.abandoned, b.msgs, b.cost = true, nil, 0
	b.mu.Unlock()
	signal(b.room)
}

// signal leaves a token in a channel of capacity one, if it has none.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
