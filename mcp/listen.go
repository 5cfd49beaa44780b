package mcp

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// A subscriptions/listen stream (protocol 2026-07-28) starts with
// notifications/subscriptions/acknowledged. mcp-go's streamable transport (v1.2.1) can drop
// it when the stream completes at once (nothing asked for can be established: this server
// announces no list changes): the handler queues the acknowledgement on the request's
// session and returns; the transport's notification forwarder takes it off the queue, but
// before it can write it the response path takes the lock, finds the queue empty, writes
// the result and ends the request, and the forwarder then discards what it holds. About one
// listen in a hundred lost its acknowledgement here (TestListenAcknowledgesFirst), and the
// conformance suite's server-stateless failed on it.
//
// The fix on our side of the library: every POST to /mcp gets a response writer that
// records its first flush (awaitFlush), and the hook that runs when listen returns, before
// the transport writes the result, waits for it: the acknowledgement is the only message
// the stream carries before the result, and the forwarder flushes it before it releases
// the lock the response path needs. The wait ends with the request (a client gone) or
// after listenAckWait, so a forwarder that never writes cannot hold a request.

// listenAckWait bounds how long a listen's result waits for its acknowledgement's write.
const listenAckWait = time.Second

// flushSeen is closed by a response writer's first flush.
type flushSeen struct {
	once sync.Once
	ch   chan struct{}
}

type flushSeenKey struct{}

// flushWatch is a response writer that reports its first flush.
type flushWatch struct {
	http.ResponseWriter
	flusher http.Flusher
	seen    *flushSeen
}

func (w flushWatch) Flush() {
	w.flusher.Flush()
	w.seen.once.Do(func() { close(w.seen.ch) })
}

// Unwrap lets http.ResponseController reach the connection (write deadlines).
func (w flushWatch) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// awaitFlush gives each POST a response writer whose first flush a listen hook can wait
// for. A writer that cannot flush (no streaming) is passed on as it is.
func awaitFlush(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if r.Method != http.MethodPost || !ok {
			next.ServeHTTP(w, r)
			return
		}
		seen := &flushSeen{ch: make(chan struct{})}
		next.ServeHTTP(flushWatch{ResponseWriter: w, flusher: f, seen: seen},
			r.WithContext(context.WithValue(r.Context(), flushSeenKey{}, seen)))
	})
}

// listenAcknowledged is the hook run when a listen returns: it waits until the request's
// response has been flushed once (the acknowledgement written), the request ends, or
// listenAckWait passes. Outside awaitFlush (stdio, which writes in order) it returns at once.
func listenAcknowledged(ctx context.Context, _ any, _ *mcp.SubscriptionsListenRequest, _ *mcp.SubscriptionsListenResult) {
	seen, ok := ctx.Value(flushSeenKey{}).(*flushSeen)
	if !ok {
		return
	}
	timer := time.NewTimer(listenAckWait)
	defer timer.Stop()
	select {
	case <-seen.ch:
	case <-ctx.Done():
	case <-timer.C:
	}
}
