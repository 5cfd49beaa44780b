// Package loadtest drives enclave-mcp the way its users do: many concurrent MCP sessions
// over HTTP against one server, each with its own sandbox. Run is the load itself;
// RunWithServer also starts the server as a subprocess and checks what a run leaves
// behind (peak memory, containers). Server, Session and the container queries are the
// building blocks of the fault tests in this package, which kill servers, containers,
// clients and the engine mid-load.
//
// Everything here observes the product from the outside: real server processes, real
// HTTP clients (mark3labs/mcp-go), and the docker CLI for what exists on the engine.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// DefaultCode is the program each call runs unless Options.Code says otherwise, and
// DefaultWant its expected output.
const (
	DefaultCode = "print(sum(range(1000)))"
	DefaultWant = "499500"
)

// maxErrorSamples is how many error messages a report keeps: enough to tell one failure
// mode from several, few enough to print.
const maxErrorSamples = 5

// Options configures a load run.
type Options struct {
	// URL is the server's base URL (http://HOST:PORT); sessions use URL+"/mcp".
	URL   string
	Token string
	// Sessions is how many MCP sessions run at once; CallsPerSession how many
	// python_executor calls each makes, one after another.
	Sessions        int
	CallsPerSession int
	// Code is the Python each call runs (default DefaultCode). Want, when set, must appear
	// in every call's output; with the default code it defaults to DefaultWant.
	Code string
	Want string
	// CallTimeout bounds each call, so that a hung server shows up as errors, not as a
	// hung run; 0 means 2 minutes.
	CallTimeout time.Duration
}

// Report is what a run measured. The Server fields are filled only when the run started
// the server itself (RunWithServer).
type Report struct {
	Sessions        int
	CallsPerSession int
	// Calls counts the calls made (including those that failed), Errors the failures:
	// failed sessions, calls that errored or came back isError or with the wrong output.
	Calls  int
	Errors int
	// ErrorSamples are the first few error messages.
	ErrorSamples []string
	// Wall is the time from the first session's start to the last session's end.
	Wall time.Duration
	// Latency covers every call but each session's first; Setup is a session's
	// initialize plus its first call, which includes creating its sandbox.
	Latency Percentiles
	Setup   Percentiles
	// Server is what the server subprocess looked like; nil when it was not ours.
	Server *ServerReport
}

// ServerReport is what RunWithServer saw of the server.
type ServerReport struct {
	PID int
	// PeakRSS is the server process's peak resident set size (VmHWM) in bytes.
	PeakRSS int64
	// LeftAfterClose counts the server's sandbox containers once every session had closed
	// (and a bounded wait for their removal); LeftAfterStop counts them after the server
	// exited and the engine had a minute to remove what the server handed it. Both must be
	// 0.
	LeftAfterClose int
	LeftAfterStop  int
	// WarmSpares are the started sandboxes the server's warm pool keeps ready for new
	// sessions when the sessions have closed; they are the server's, not leaks, and are not
	// counted in LeftAfterClose.
	WarmSpares int
	// Pools describes the warm pools that served sessions: bounds, growth, hits and misses.
	Pools string
	// PoolsReady is how long the server took from its start to fill its warm pools, which
	// the load waited for.
	PoolsReady time.Duration
	// StopTime is how long the server took to exit after SIGTERM, EngineDone how long until
	// the engine had removed its last sandbox.
	StopTime, EngineDone time.Duration
}

// Throughput is calls per second over the whole run.
func (r Report) Throughput() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.Calls) / r.Wall.Seconds()
}

func (o *Options) setDefaults() error {
	if o.URL == "" {
		return errors.New("load: no server URL")
	}
	if o.Sessions < 1 || o.CallsPerSession < 1 {
		return fmt.Errorf("load: want at least one session and one call, got %d sessions x %d calls", o.Sessions, o.CallsPerSession)
	}
	if o.Code == "" {
		o.Code = DefaultCode
		if o.Want == "" {
			o.Want = DefaultWant
		}
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 2 * time.Minute
	}
	return nil
}

// Run starts opts.Sessions MCP sessions at once, has each make opts.CallsPerSession
// python_executor calls, closes them, and reports. Failures of the server are counted in
// the report, not returned: the error is for a run that could not be made at all.
func Run(ctx context.Context, opts Options) (Report, error) {
	if err := opts.setDefaults(); err != nil {
		return Report{}, err
	}
	results := make([]sessionResult, opts.Sessions)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range results {
		wg.Go(func() { results[i] = runSession(ctx, opts) })
	}
	wg.Wait()
	rep := Report{Sessions: opts.Sessions, CallsPerSession: opts.CallsPerSession, Wall: time.Since(start)}
	rep.merge(results)
	return rep, ctx.Err()
}

// sessionResult is one session's share of a run.
type sessionResult struct {
	setup   time.Duration // initialize + first call; 0 when the session failed before
	calls   []time.Duration
	made    int
	errs    []string
	nerrors int
}

func (r *sessionResult) fail(msg string) {
	r.nerrors++
	if len(r.errs) < maxErrorSamples {
		r.errs = append(r.errs, msg)
	}
}

// runSession is one agent: connect, make the calls, check each output, close.
func runSession(ctx context.Context, opts Options) (res sessionResult) {
	begin := time.Now()
	cctx, cancel := context.WithTimeout(ctx, opts.CallTimeout)
	s, err := Connect(cctx, SessionOptions{URL: opts.URL, Token: opts.Token})
	cancel()
	if err != nil {
		res.fail(err.Error())
		return res
	}
	defer func() { // res is named: the deferred close still counts
		if err := s.Close(); err != nil {
			res.fail("closing session: " + err.Error())
		}
	}()
	res.callAll(ctx, s, opts, begin)
	return res
}

// callAll makes the session's calls, one after another; begin is when the session started,
// so that the first call's figure is the session's whole setup.
func (r *sessionResult) callAll(ctx context.Context, s *Session, opts Options, begin time.Time) {
	args := map[string]any{"code": opts.Code}
	for i := range opts.CallsPerSession {
		if ctx.Err() != nil {
			return // the run was called off: the calls not made are not failures
		}
		callStart := time.Now()
		cctx, cancel := context.WithTimeout(ctx, opts.CallTimeout)
		out, err := s.Call(cctx, "python_executor", args)
		cancel()
		r.made++
		if i == 0 {
			r.setup = time.Since(begin)
		} else {
			r.calls = append(r.calls, time.Since(callStart))
		}
		if msg := checkCall(out, err, opts.Want); msg != "" {
			r.fail(msg)
		}
	}
}

// checkCall returns what is wrong with a call's outcome, or "".
func checkCall(out CallResult, err error, want string) string {
	switch {
	case err != nil:
		return err.Error()
	case out.IsError:
		return "isError: " + firstLine(out.Text)
	case want != "" && !strings.Contains(out.Text, want):
		return fmt.Sprintf("wrong output %q, want %q", firstLine(out.Text), want)
	}
	return ""
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	const limit = 300
	if len(line) > limit {
		line = line[:limit] + "..."
	}
	return line
}

// merge adds the sessions' results into r.
func (r *Report) merge(results []sessionResult) {
	var calls, setups []time.Duration
	for _, s := range results {
		r.Calls += s.made
		r.Errors += s.nerrors
		for _, e := range s.errs {
			if len(r.ErrorSamples) < maxErrorSamples {
				r.ErrorSamples = append(r.ErrorSamples, e)
			}
		}
		calls = append(calls, s.calls...)
		if s.setup > 0 {
			setups = append(setups, s.setup)
		}
	}
	r.Latency = summarize(calls)
	r.Setup = summarize(setups)
}
