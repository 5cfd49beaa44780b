// Package agent is the program that runs as PID 1 inside every sandbox container: it serves
// the wire protocol on its stdin and stdout, running commands and file operations for the
// enclave-mcp server, and makes sure nothing a command starts outlives it.
//
// Reading order: agent.go (the request loop), seal.go (keeping commands off the protocol
// stream), exec.go (running a command), jobs.go
// (background commands), tree.go (finding and killing everything a command started),
// reaper.go (collecting exit statuses, as PID 1 must), output.go (capping output by its
// encoded size), files.go (file operations), tunnel.go (connections relayed into the
// sandbox).
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// Options configures the agent.
type Options struct {
	// Workspace is where relative paths in requests resolve, and the default working
	// directory of commands. It should be absolute; empty means the current directory.
	Workspace string
	// Logger receives the agent's logs; nil discards them. It must not write to stdout,
	// which carries the protocol.
	Logger *slog.Logger
	// EgressListen, when set, is a TCP address on the sandbox's loopback (such as
	// "127.0.0.1:3128", or port 0 for any) where the agent accepts connections and hands
	// each to the server as a stream (egress.go).
	EgressListen string
}

// errShutdown cancels what is still running when Run stops.
var errShutdown = errors.New("agent shutting down")

// shutdownGrace bounds how long Run waits for requests in flight to send their answers
// once it is stopping. They kill their processes first, so only the answers are at risk.
const shutdownGrace = 3 * time.Second

// Run serves requests read from in and writes responses to out until in reaches EOF or ctx
// ends; then it kills every process it started (whole trees, background jobs included) and
// returns: nil after EOF, ctx.Err() when ctx ended, or the error that made the stream
// unusable.
func Run(ctx context.Context, in io.Reader, out io.Writer, opts Options) error {
	workspace, err := filepath.Abs(opts.Workspace)
	if err != nil {
		return fmt.Errorf("resolving workspace: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Before anything runs: the commands must never reach the protocol stream (seal.go).
	if err := sealProcess(); err != nil {
		return err
	}
	// As PID 1 the agent inherits orphans anyway; as anything else (tests, a debugging
	// session) this makes it inherit its own, so the tree logic works the same.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Warn("cannot become a child subreaper; orphans will escape", "err", err)
	}

	var egress net.Listener
	if opts.EgressListen != "" {
		if egress, err = listenEgress(opts.EgressListen); err != nil {
			return err
		}
		defer egress.Close()
	}

	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	s := &server{
		workspace: workspace,
		log:       log,
		reaper:    sharedReaper(),
		out:       newResponseWriter(out),
		stop:      stop,
		running:   make(map[uint64]context.CancelCauseFunc),
		jobs:      make(map[string]*job),
		tunnels:   newTunnelSet(),
		forks:     newForkServers(log, sharedReaper(), workspace),
	}
	ready := &wire.Ready{
		Version:   wire.Version,
		PID:       os.Getpid(),
		UID:       os.Getuid(),
		GID:       os.Getgid(),
		Workspace: workspace,
	}
	if egress != nil {
		ready.Egress = egress.Addr().String()
	}
	if err := s.out.send(&wire.Response{Kind: wire.KindReady, Ready: ready}); err != nil {
		return err
	}
	if egress != nil {
		// Streams are announced only after the greeting, which the server reads first.
		go s.acceptEgress(egress)
	}
	log.Info("agent ready", "workspace", workspace, "pid", os.Getpid())

	// The reader may stay blocked in in.Read after ctx ends; that goroutine is abandoned,
	// which is harmless in a process that is about to exit.
	served := make(chan error, 1)
	go func() { served <- s.serve(runCtx, in) }()
	var result error
	select {
	case result = <-served:
	case <-runCtx.Done():
		result = context.Cause(runCtx)
	}
	s.shutdown()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return result
}

// server is the state of one Run.
type server struct {
	workspace string
	log       *slog.Logger
	reaper    *reaper
	out       *responseWriter
	stop      context.CancelCauseFunc // ends the run, cancelling every request
	handlers  sync.WaitGroup          // requests in flight
	watchers  sync.WaitGroup          // background jobs' watch goroutines

	mu      sync.Mutex
	closed  bool                               // shutting down: accept no more requests
	running map[uint64]context.CancelCauseFunc // foreground exec requests, by request ID
	jobs    map[string]*job
	jobSeq  int
	tunnels *tunnelSet
	forks   *forkServers
}

// serve decodes requests and starts a goroutine for each until in ends or breaks.
func (s *server) serve(ctx context.Context, in io.Reader) error {
	dec := json.NewDecoder(in)
	for {
		var req wire.Request
		err := dec.Decode(&req)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			// A type mismatch leaves the decoder past the value, so the stream goes on;
			// a syntax or read error leaves it nowhere it could resume from.
			var typeErr *json.UnmarshalTypeError
			recoverable := errors.As(err, &typeErr)
			s.send(&wire.Response{ID: req.ID, Kind: wire.KindError, Code: wire.CodeInvalid,
				Error: fmt.Sprintf("decoding request: %v", err)})
			if recoverable {
				continue
			}
			return fmt.Errorf("decoding request: %w", err)
		}
		if req.Op == wire.OpData || req.Op == wire.OpClose {
			// Applied here, not in a goroutine, so that a stream's data keeps its order.
			s.tunnelRequest(req)
			continue
		}
		if !s.dispatch(ctx, req) {
			return nil
		}
	}
}

// dispatch handles req in its own goroutine, so that a long command does not hold up the
// requests behind it. It returns false once the server is shutting down.
func (s *server) dispatch(ctx context.Context, req wire.Request) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.handlers.Done()
		resp, err := s.answer(ctx, req)
		if resp == nil && err == nil {
			return // answered already: a dial's result must go out before its stream's data
		}
		if err != nil {
			resp = errorResponse(err)
			s.log.Debug("request failed", "id", req.ID, "op", req.Op, "err", err)
		}
		resp.ID = req.ID
		s.send(resp)
	}()
	return true
}

// answer runs one request and returns its final response; exec requests may also stream
// output before it.
func (s *server) answer(ctx context.Context, req wire.Request) (*wire.Response, error) {
	switch req.Op {
	case wire.OpPing:
		st := selfStats()
		st.ResidentPython = s.forks.ready()
		return &wire.Response{Kind: wire.KindResult, Stats: st}, nil
	case wire.OpWarm:
		return &wire.Response{Kind: wire.KindResult, Warm: s.warm(ctx, req.Warm)}, nil
	case wire.OpExec:
		res, after, err := s.exec(ctx, req.ID, req.Exec)
		if err != nil || after == nil {
			return &wire.Response{Kind: wire.KindResult, Exec: res}, err
		}
		s.send(&wire.Response{ID: req.ID, Kind: wire.KindResult, Exec: res})
		after()
		return nil, nil
	case wire.OpCancel:
		return &wire.Response{Kind: wire.KindResult}, s.cancel(req.Target)
	case wire.OpFile:
		res, err := s.file(req.File)
		return &wire.Response{Kind: wire.KindResult, File: res}, err
	case wire.OpJobs:
		return &wire.Response{Kind: wire.KindResult, Jobs: s.listJobs()}, nil
	case wire.OpKill:
		j, err := s.killJob(req.Job)
		if err != nil {
			return nil, err
		}
		return &wire.Response{Kind: wire.KindResult, Jobs: []wire.Job{j}}, nil
	case wire.OpDial:
		return s.dial(ctx, req.ID, req.Dial)
	case wire.OpReset:
		res, err := s.reset(req.Reset)
		return &wire.Response{Kind: wire.KindResult, Reset: res}, err
	default:
		return nil, errorf(wire.CodeInvalid, "unknown op %q (valid: %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", req.Op,
			wire.OpPing, wire.OpExec, wire.OpCancel, wire.OpFile, wire.OpJobs, wire.OpKill, wire.OpDial, wire.OpData, wire.OpClose, wire.OpReset, wire.OpWarm)
	}
}

// send writes one response; a failure to write means the server is gone, so it ends the run.
func (s *server) send(resp *wire.Response) {
	if err := s.out.send(resp); err != nil {
		s.stop(err)
	}
}

// shutdown refuses new requests, kills everything still running and waits (within reason)
// for the answers in flight.
func (s *server) shutdown() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop(errShutdown)

	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
		s.log.Warn("requests still answering at shutdown; their responses are dropped")
	}
	s.closeTunnels()
	s.killAllJobs()
	s.forks.stop(false)
	if n := sweepOrphans(s.reaper, nil, 0); n > 0 {
		s.log.Info("killed orphans at shutdown", "count", n)
	}
	s.out.close()
}

// responseWriter serialises responses from many goroutines onto one stream, one line each.
// The encoder writes each response in one Write, so the server sees it as soon as it exists
// and an idle agent holds no output buffer.
type responseWriter struct {
	closed atomic.Bool
	mu     sync.Mutex
	enc    *json.Encoder
	err    error
}

func newResponseWriter(w io.Writer) *responseWriter {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // output is text for a model, not for a browser
	return &responseWriter{enc: enc}
}

// send writes resp.
func (w *responseWriter) send(resp *wire.Response) error {
	if w.closed.Load() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := w.enc.Encode(resp); err != nil {
		w.err = fmt.Errorf("writing response: %w", err)
	}
	return w.err
}

// close makes later sends do nothing, so nothing is written once Run has returned.
func (w *responseWriter) close() { w.closed.Store(true) }

// codedError is an error with the wire code that classifies it.
type codedError struct {
	code wire.Code
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func errorf(code wire.Code, format string, args ...any) error {
	return &codedError{code: code, err: fmt.Errorf(format, args...)}
}

func errorResponse(err error) *wire.Response {
	code := wire.CodeInternal
	var coded *codedError
	if errors.As(err, &coded) {
		code = coded.code
	}
	return &wire.Response{Kind: wire.KindError, Code: code, Error: err.Error()}
}
