package notebook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// channels is one websocket connection to a kernel's channels (/api/kernels/{id}/channels).
// A reader goroutine routes every message to the request it answers, by parent msg_id;
// messages no request waits for are dropped. It never blocks on a slow consumer: each
// request has a mailbox that queues its messages.
type channels struct {
	ws        *websocket.Conn
	session   string
	log       *slog.Logger
	textLimit atomic.Int64 // cap for strings in large messages (see readMessage)
	lastRead  atomic.Int64 // when bytes last arrived (UnixNano), even mid-message

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

// The limits on strings read from one large message (see readMessage).
const (
	// maxImagePayload caps one base64 image; a larger one is refused, not returned.
	maxImagePayload = 16 << 20
	// defaultTextLimit caps any other string until an execution sets its own output cap.
	defaultTextLimit = 1 << 20
	// writeTimeout bounds one websocket write.
	writeTimeout = 10 * time.Second
)

// connect opens the kernel's channels websocket through the client's dial function.
func (c *Client) connect(ctx context.Context, kernelID string, log *slog.Logger) (*channels, error) {
	session := newMsgID()
	u := url.URL{Scheme: "ws", Host: c.addr, Path: "/api/kernels/" + kernelID + "/channels", RawQuery: "session_id=" + session}
	dialer := websocket.Dialer{
		NetDialContext:   c.dial,
		HandshakeTimeout: 10 * time.Second,
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
	ch := &channels{
		ws:      ws,
		session: session,
		log:     log,
		waiters: map[string]*mailbox{},
		done:    make(chan struct{}),
		stale:   make(chan struct{}),
	}
	ch.textLimit.Store(defaultTextLimit)
	go ch.readLoop()
	return ch, nil
}

func (ch *channels) limitFor(key string) int {
	for _, mime := range rasterTypes() {
		if key == mime {
			return maxImagePayload
		}
	}
	return int(ch.textLimit.Load())
}

func (ch *channels) readLoop() {
	for {
		typ, r, err := ch.ws.NextReader()
		if err != nil {
			ch.fail(err)
			return
		}
		if typ != websocket.TextMessage {
			continue // binary frames carry buffers of comm messages, which this client never opens
		}
		ch.lastRead.Store(time.Now().UnixNano())
		m, err := readMessage(activityReader{r, &ch.lastRead}, ch.limitFor)
		if errors.Is(err, errBadMessage) {
			ch.log.Warn("skipping a kernel message that could not be decoded", "error", err)
			continue
		}
		if err != nil { // the connection broke mid-message
			ch.fail(err)
			return
		}
		if m.Channel == channelIOPub && m.Header.MsgType == "status" {
			var st statusContent
			if json.Unmarshal(m.Content, &st) == nil && m.ParentHeader.MsgID == "" {
				switch st.ExecutionState {
				case "restarting", "autorestarting", "dead":
					ch.markStale(st.ExecutionState)
				}
			}
		}
		parent := m.ParentHeader.MsgID
		ch.log.Debug("kernel message", "channel", m.Channel, "type", m.Header.MsgType, "parent", parent, "size", len(m.Content))
		if parent == "" {
			continue
		}
		ch.mu.Lock()
		box := ch.waiters[parent]
		ch.mu.Unlock()
		if box != nil {
			box.put(m)
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

func (ch *channels) fail(err error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.err != nil {
		return
	}
	ch.err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
	close(ch.done)
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

func (ch *channels) forget(msgID string) {
	ch.mu.Lock()
	delete(ch.waiters, msgID)
	ch.mu.Unlock()
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

// mailbox queues the messages answering one request.
type mailbox struct {
	mu    sync.Mutex
	msgs  []*message
	ready chan struct{} // has a token while msgs is not empty
}

func newMailbox() *mailbox { return &mailbox{ready: make(chan struct{}, 1)} }

func (b *mailbox) put(m *message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// take returns the queued messages, oldest first.
func (b *mailbox) take() []*message {
	b.mu.Lock()
	defer b.mu.Unlock()
	msgs := b.msgs
	b.msgs = nil
	return msgs
}
