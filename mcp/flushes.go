package mcp

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// Messages queued before a result reach the client before it. Over streamable HTTP,
// mcp-go's transport (v1.2.1) writes what a request's handler queues on its session (a
// progress notification, a listen stream's acknowledgement) from a forwarder goroutine, and
// the result from the request's own once the handler returns. The forwarder can take the
// last message off the queue and, before it writes it, lose the response's lock to the
// result's path, which finds the queue empty, writes the result and ends the request; the
// forwarder then discards what it holds. A call whose output fits in one progress
// notification, sent just before its result, lost it in most calls
// (TestIntegrationHTTPProgressBeforeResult), and about one listen in a hundred lost its
// acknowledgement (TestListenAcknowledgesFirst; the conformance suite's server-stateless
// failed on it).
//
// So, on our side of the library: a POST to /mcp gets a response writer that counts its
// flushes (the forwarder flushes once per message it writes), handlers count what they
// queue, and the hooks that run when a handler returns, before the result is written, wait
// until as many have been flushed. Counting is exact only where the request's session is
// its own: a 2026-07-28 request (a session client's requests share a session, and its GET
// stream may take the message instead), so only those get the writer; the transport
// refuses one whose Mcp-Protocol-Version header, which countFlushes goes by, disagrees with
// its body. The wait ends with the request (a client gone) or after flushWait, so a
// forwarder that never writes cannot hold a request.

// flushWait bounds how long a result waits for the messages queued before it.
const flushWait = time.Second

// responseFlushes counts a response's flushes and the messages queued for it.
type responseFlushes struct {
	mu      sync.Mutex
	flushed int
	queued  int
	changed chan struct{} // closed and replaced at each flush
}

type responseFlushesKey struct{}

func (f *responseFlushes) flush() {
	f.mu.Lock()
	f.flushed++
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// await waits until the response has been flushed as often as messages were queued for
// it, and extra times more (messages mcp-go queued itself), ctx ends, or flushWait passes.
func (f *responseFlushes) await(ctx context.Context, extra int) {
	timer := time.NewTimer(flushWait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		done, changed := f.flushed >= f.queued+extra, f.changed
		f.mu.Unlock()
		if done {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		}
	}
}

// flushWatch is a response writer that counts its flushes.
type flushWatch struct {
	http.ResponseWriter
	flusher http.Flusher
	flushes *responseFlushes
}

func (w flushWatch) Flush() {
	w.flusher.Flush()
	w.flushes.flush()
}

// Unwrap lets http.ResponseController reach the connection (write deadlines).
func (w flushWatch) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countFlushes gives each 2026-07-28 POST a response writer that counts its flushes. A
// writer that cannot flush (no streaming) is passed on as it is.
func countFlushes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if r.Method != http.MethodPost || !ok || !mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion)) {
			next.ServeHTTP(w, r)
			return
		}
		flushes := &responseFlushes{changed: make(chan struct{})}
		next.ServeHTTP(flushWatch{ResponseWriter: w, flusher: f, flushes: flushes},
			r.WithContext(context.WithValue(r.Context(), responseFlushesKey{}, flushes)))
	})
}

// flushesOf is the flush count of ctx's response when a message queued by ctx's request
// can only go to that response (a 2026-07-28 request over streamable HTTP), else nil.
func flushesOf(ctx context.Context) *responseFlushes {
	f, _ := ctx.Value(responseFlushesKey{}).(*responseFlushes)
	return f
}

// queued records that ctx's request queued a message for its response.
func queued(ctx context.Context) {
	if f := flushesOf(ctx); f != nil {
		f.mu.Lock()
		f.queued++
		f.mu.Unlock()
	}
}

// callToolFlushed is the hook run when a tool call returns: its queued progress
// notifications are written before its result.
func callToolFlushed(ctx context.Context, _ any, _ *mcp.CallToolRequest, _ any) {
	if f := flushesOf(ctx); f != nil {
		f.await(ctx, 0)
	}
}

// listenAcknowledged is the hook run when a listen returns: the acknowledgement mcp-go
// queued is written before the result.
func listenAcknowledged(ctx context.Context, _ any, _ *mcp.SubscriptionsListenRequest, _ *mcp.SubscriptionsListenResult) {
	if f := flushesOf(ctx); f != nil {
		f.await(ctx, 1)
	}
}
