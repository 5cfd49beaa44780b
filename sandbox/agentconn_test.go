package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
	"github.com/enclave-mcp/enclave-mcp/internal/syncbuf"
	"github.com/enclave-mcp/enclave-mcp/internal/testwait"
)

// These tests play a hostile agent: they feed an agentConn byte streams through a pipe, the
// way a compromised agent (or code that reached its stdout) could, and check that each
// protocol violation ends that connection with ErrProtocol, quickly and within bounded
// memory, while honest traffic keeps working.

// violationWait bounds how long a violation may take to be detected.
const violationWait = 2 * time.Second

// hostileAgent is the far end of an agentConn under test.
type hostileAgent struct {
	t    *testing.T
	conn *agentConn
	out  *io.PipeWriter // the agent's stdout: what the conn reads
	reqs chan wire.Request
	logs *syncbuf.Buffer
}

// newHostileAgent connects an agentConn to a scripted agent that has greeted it.
func newHostileAgent(t *testing.T) *hostileAgent {
	t.Helper()
	reqR, reqW := io.Pipe()
	outR, outW := io.Pipe()
	logs := &syncbuf.Buffer{}
	abort := func() {
		reqW.CloseWithError(ErrClosed)
		outR.CloseWithError(ErrClosed)
	}
	a := &hostileAgent{t: t, out: outW, reqs: make(chan wire.Request, 64), logs: logs}
	a.conn = newAgentConn(reqW, outR, abort, slog.New(slog.NewTextHandler(logs, nil)))
	go func() {
		dec := json.NewDecoder(reqR)
		for {
			var req wire.Request
			if err := dec.Decode(&req); err != nil {
				close(a.reqs)
				return
			}
			a.reqs <- req
		}
	}()
	t.Cleanup(func() {
		a.conn.fail(errors.New("test over"))
		outW.Close()
	})
	a.write(`{"id":0,"kind":"ready","ready":{"version":1,"pid":1}}` + "\n")
	if _, err := a.conn.waitReady(t.Context()); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return a
}

// write sends raw bytes as the agent; once the conn has hung up, writes fail, which is fine.
func (a *hostileAgent) write(s string) { _, _ = io.WriteString(a.out, s) }

// request returns the next request the conn sent.
func (a *hostileAgent) request() wire.Request {
	a.t.Helper()
	select {
	case req, ok := <-a.reqs:
		if !ok {
			a.t.Fatal("the request stream ended")
		}
		return req
	case <-time.After(5 * time.Second):
		a.t.Fatal("no request arrived")
	}
	return wire.Request{}
}

// callResult is what a call started in the background returned.
type callResult struct {
	resp wire.Response
	err  error
}

// call starts req in the background and returns the request as the agent saw it.
func (a *hostileAgent) call(ctx context.Context, req wire.Request) (wire.Request, <-chan callResult) {
	a.t.Helper()
	done := make(chan callResult, 1)
	go func() {
		resp, err := a.conn.call(ctx, req, nil)
		done <- callResult{resp, err}
	}()
	return a.request(), done
}

// waitFailed waits for the conn to end and returns why.
func (a *hostileAgent) waitFailed(within time.Duration) error {
	a.t.Helper()
	select {
	case <-a.conn.done:
		return a.conn.closeErr()
	case <-time.After(within):
		a.t.Fatalf("the connection did not end within %s", within)
		return nil
	}
}

func frame(resp wire.Response) string {
	b, _ := json.Marshal(resp)
	return string(b) + "\n"
}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// TestAgentConnHostileFrames covers finding 1 (frames) and the main finding's server side:
// each hostile stream ends the connection with ErrProtocol, fast, having allocated little.
func TestAgentConnHostileFrames(t *testing.T) {
	ping := wire.Request{Op: wire.OpPing}
	oversized := frame(wire.Response{ID: 1, Kind: wire.KindResult, Error: strings.Repeat("x", 2<<20)})
	dense := []byte(`{"id":1,"kind":"result","jobs":[{}` + strings.Repeat(",{}", 2<<20) + "]}\n") // 6 MiB, 2M jobs
	tests := []struct {
		name string
		// attack drives the agent side; it returns once the hostile bytes are out (or the
		// conn hung up on them).
		attack  func(a *hostileAgent)
		wantErr string
	}{
		{
			name: "oversized frame for a small answer",
			attack: func(a *hostileAgent) {
				a.call(t.Context(), ping) // request 1 of a fresh conn
				a.write(oversized)
			},
			wantErr: "past the 1048576-byte limit",
		},
		{
			name: "unterminated 256 MiB frame",
			attack: func(a *hostileAgent) {
				chunk := strings.Repeat("x", 1<<20)
				a.write(`{"id":0,"kind":"error","error":"`)
				for range 256 {
					if _, err := io.WriteString(a.out, chunk); err != nil {
						return // the conn hung up, as it should
					}
				}
			},
			wantErr: "a frame of more than",
		},
		{
			name: "frame of many tiny values (heap amplification)",
			attack: func(a *hostileAgent) {
				a.call(t.Context(), wire.Request{Op: wire.OpJobs}) // request 1: a list answer
				_, _ = a.out.Write(dense)
			},
			wantErr: "JSON values, more than one per 12 bytes",
		},
		{
			name:    "malformed JSON",
			attack:  func(a *hostileAgent) { a.write("{\"id\":1,\"kind\":}\n") },
			wantErr: "not a response",
		},
		{
			name: "answer for an id never issued (a forged result)",
			attack: func(a *hostileAgent) {
				a.write(frame(wire.Response{ID: 57, Kind: wire.KindResult, Exec: &wire.ExecResult{Stdout: "FORGED-RESULT"}}))
			},
			wantErr: "request 57, which was never sent",
		},
		{
			name: "duplicate final",
			attack: func(a *hostileAgent) {
				req, done := a.call(t.Context(), ping)
				a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindResult}))
				if r := <-done; r.err != nil {
					t.Errorf("the first final answer was not delivered: %v", r.err)
				}
				a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindResult}))
			},
			wantErr: "had its final answer already",
		},
		{
			name: "17 finals for one id",
			attack: func(a *hostileAgent) {
				req, _ := a.call(t.Context(), ping)
				for range 17 {
					a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindResult}))
				}
			},
			wantErr: "had its final answer already",
		},
		{
			name:    "unknown kind",
			attack:  func(a *hostileAgent) { a.write(`{"id":0,"kind":"surprise"}` + "\n") },
			wantErr: `unknown kind "surprise"`,
		},
		{
			name:    "second greeting",
			attack:  func(a *hostileAgent) { a.write(`{"id":0,"kind":"ready","ready":{"version":1}}` + "\n") },
			wantErr: "unexpected greeting",
		},
		{
			name: "output for a request that streams none",
			attack: func(a *hostileAgent) {
				req, _ := a.call(t.Context(), ping)
				a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindOutput, Output: &wire.Output{Stdout: "x"}}))
			},
			wantErr: "streams none",
		},
		{
			name:    "data for a stream never opened",
			attack:  func(a *hostileAgent) { a.write(frame(wire.Response{ID: 9, Kind: wire.KindData, Data: []byte("x")})) },
			wantErr: "stream 9, which was never opened",
		},
		{
			name:    "open of a stream without the agent-stream bit",
			attack:  func(a *hostileAgent) { a.write(frame(wire.Response{ID: 5, Kind: wire.KindOpen})) },
			wantErr: "an open of stream 5",
		},
		{
			name: "open of a stream ID again",
			attack: func(a *hostileAgent) {
				a.write(frame(wire.Response{ID: wire.AgentStream | 2, Kind: wire.KindOpen}))
				a.write(frame(wire.Response{ID: wire.AgentStream | 2, Kind: wire.KindOpen}))
			},
			wantErr: "increase",
		},
		{
			name: "data for an agent stream never opened",
			attack: func(a *hostileAgent) {
				a.write(frame(wire.Response{ID: wire.AgentStream | 3, Kind: wire.KindData, Data: []byte("x")}))
			},
			wantErr: "which was never opened",
		},
		{
			name:    "stream cut inside a frame",
			attack:  func(a *hostileAgent) { a.write(`{"id":0,"kind":`); a.out.Close() },
			wantErr: "ended inside a frame",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newHostileAgent(t)
			before := totalAlloc()
			start := time.Now()
			attacked := make(chan struct{})
			go func() { defer close(attacked); tc.attack(a) }()
			err := a.waitFailed(violationWait)
			took := time.Since(start)
			<-attacked
			allocated := totalAlloc() - before

			if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("conn ended with %v, want ErrClosed mentioning %q", err, tc.wantErr)
			}
			if tc.name != "stream cut inside a frame" && !errors.Is(err, ErrProtocol) {
				t.Fatalf("conn ended with %v, want ErrProtocol", err)
			}
			if allocated > 32<<20 {
				t.Errorf("handling the attack allocated %d MiB, want a bounded amount (< 32 MiB)", allocated>>20)
			}
			// Every later call fails at once with the same error.
			if _, err := a.conn.call(t.Context(), ping, nil); !errors.Is(err, ErrClosed) {
				t.Errorf("a call after the violation returned %v, want ErrClosed", err)
			}
			t.Logf("detected in %s, %.1f MiB allocated", took, float64(allocated)/(1<<20))
		})
	}
}

// TestAgentConnOpenedStreams: a stream the agent opens reaches the accept handler as a
// net.Conn carrying its data both ways; without a handler it is closed at once.
func TestAgentConnOpenedStreams(t *testing.T) {
	a := newHostileAgent(t)
	accepted := make(chan net.Conn, 1)
	a.conn.setAccept(func(c net.Conn) { accepted <- c })
	id := wire.AgentStream | 1
	a.write(frame(wire.Response{ID: id, Kind: wire.KindOpen}))
	a.write(frame(wire.Response{ID: id, Kind: wire.KindData, Data: []byte("GET / HTTP/1.1\r\n")}))
	var c net.Conn
	select {
	case c = <-accepted:
	case <-time.After(violationWait):
		t.Fatal("the opened stream reached no handler")
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if _, err := c.Write([]byte("HTTP/1.1 403 x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if req := <-a.reqs; req.Op != wire.OpData || req.Target != id || string(req.Data) != "HTTP/1.1 403 x\r\n\r\n" {
		t.Errorf("the agent got %+v, want the data for stream %d", req, id)
	}
	_ = c.Close()
	if req := <-a.reqs; req.Op != wire.OpClose || req.Target != id {
		t.Errorf("the agent got %+v, want the close of stream %d", req, id)
	}

	a.conn.setAccept(nil)
	a.write(frame(wire.Response{ID: id + 1, Kind: wire.KindOpen}))
	if req := <-a.reqs; req.Op != wire.OpClose || req.Target != id+1 {
		t.Errorf("without a handler the agent got %+v, want the close of stream %d", req, id+1)
	}
	if err := a.conn.closeErr(); err != nil {
		t.Errorf("the connection failed: %v", err)
	}
}

// TestAgentConnCallerlessErrorSpam: errors without a caller (id 0) are what an agent sends
// for requests it could not read, so they are not a violation; a flood of them reaches the
// log as a bounded trickle, and calls keep working.
func TestAgentConnCallerlessErrorSpam(t *testing.T) {
	a := newHostileAgent(t)
	line := frame(wire.Response{Kind: wire.KindError, Code: wire.CodeInvalid, Error: strings.Repeat("E", 64<<10)})
	spam := strings.Repeat(line, 50)
	for range 4 { // 200 frames, 12.5 MiB of error text
		a.write(spam)
	}
	req, done := a.call(t.Context(), wire.Request{Op: wire.OpPing})
	a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindResult}))
	if r := <-done; r.err != nil {
		t.Fatalf("a call after the spam failed: %v", r.err)
	}
	if err := a.conn.closeErr(); err != nil {
		t.Fatalf("callerless errors ended the connection: %v", err)
	}
	if n := a.logs.Len(); n > 64<<10 {
		t.Fatalf("200 error frames of 64 KiB left %d bytes of log, want a bounded, rate-limited trickle", n)
	}
}

// TestAgentConnAbandonedCallsLateAnswers: a call that gave up leaves its id abandoned, so
// its late answer is dropped rather than taken for a forgery, and the set stays bounded.
func TestAgentConnAbandonedCallsLateAnswers(t *testing.T) {
	a := newHostileAgent(t)
	ctx, cancel := context.WithCancel(t.Context())
	req, done := a.call(ctx, wire.Request{Op: wire.OpFile, File: &wire.File{Action: wire.FileStat, Path: "x"}})
	cancel()
	if r := <-done; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled call returned %v", r.err)
	}
	a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindResult, File: &wire.FileResult{}}))

	ping, pinged := a.call(t.Context(), wire.Request{Op: wire.OpPing})
	a.write(frame(wire.Response{ID: ping.ID, Kind: wire.KindResult}))
	if r := <-pinged; r.err != nil {
		t.Fatalf("the late answer to an abandoned call broke the connection: %v", r.err)
	}
	// Its id is forgotten once answered: a second late answer is a violation.
	a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindResult}))
	if err := a.waitFailed(violationWait); !errors.Is(err, ErrProtocol) {
		t.Fatalf("second late answer: %v, want ErrProtocol", err)
	}

	c := &agentConn{pending: map[uint64]*pendingCall{}, abandoned: map[uint64]struct{}{}}
	for id := uint64(1); id <= 3*maxAbandoned; id++ {
		c.pending[id] = &pendingCall{}
		c.giveUp(id)
	}
	if len(c.abandoned) != maxAbandoned || len(c.pending) != 0 {
		t.Fatalf("%d abandoned ids kept (want %d), %d pending (want 0)", len(c.abandoned), maxAbandoned, len(c.pending))
	}
	if _, kept := c.abandoned[3*maxAbandoned]; !kept {
		t.Fatal("the newest abandoned id was evicted instead of the oldest")
	}
}

// TestAgentConnLargeAnswerWithinItsCallsLimit: the frame limit follows the answers awaited,
// so a large file read (here 2 MiB, 2.7 MiB in base64, past the base limit) passes while it
// is awaited.
func TestAgentConnLargeAnswerWithinItsCallsLimit(t *testing.T) {
	a := newHostileAgent(t)
	data := bytes.Repeat([]byte{0xff}, 2<<20)
	req, done := a.call(t.Context(), wire.Request{Op: wire.OpFile, File: &wire.File{Action: wire.FileRead, Path: "big", MaxBytes: 2 << 20}})
	a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindResult, File: &wire.FileResult{Data: data}}))
	r := <-done
	if r.err != nil || r.resp.File == nil || len(r.resp.File.Data) != len(data) {
		t.Fatalf("large read: %v (%d bytes)", r.err, len(r.resp.File.Data))
	}
	// The same answer again, with no such call waiting, is past every limit.
	a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindResult, File: &wire.FileResult{Data: data}}))
	if err := a.waitFailed(violationWait); !errors.Is(err, ErrProtocol) {
		t.Fatalf("unawaited large frame: %v, want ErrProtocol", err)
	}
}

// TestTunnelBuffersBoundedPerSandbox covers finding 4's server side for tunnels: data the
// reader has not taken is capped per stream and across a sandbox's streams; the stream that
// passes the cap fails with ErrStreamFull, the connection and its other streams live on, and
// the count returns to zero once the streams close.
func TestTunnelBuffersBoundedPerSandbox(t *testing.T) {
	a := newHostileAgent(t)
	a.conn.tunnelLimit = 4 << 20 // maxTunnelBuffer in small, so the test moves megabytes, not 64 MiB
	open := func() *tunnelConn {
		t.Helper()
		got := make(chan *tunnelConn, 1)
		go func() {
			conn, err := a.conn.dial(t.Context(), "tcp", "127.0.0.1:1")
			if err != nil {
				t.Errorf("dial: %v", err)
			}
			got <- conn
		}()
		req := a.request()
		a.write(frame(wire.Response{ID: req.ID, Kind: wire.KindResult}))
		return <-got
	}
	first, second := open(), open()
	chunk := bytes.Repeat([]byte{'d'}, 64<<10)
	push := func(s *tunnelConn, n int) {
		for range n / len(chunk) {
			a.write(frame(wire.Response{ID: s.id, Kind: wire.KindData, Data: chunk}))
		}
	}
	push(first, 3<<20)
	push(second, 3<<20) // 6 MiB unread in all: past the sandbox's limit
	testwait.Until(t, 5*time.Second, "the second stream failing", func() bool {
		second.mu.Lock()
		defer second.mu.Unlock()
		return second.ended
	})
	if _, err := second.Read(make([]byte, 1)); !errors.Is(err, ErrStreamFull) {
		t.Fatalf("second stream read: %v, want ErrStreamFull", err)
	}
	if n := a.conn.tunnelBytes.Load(); n > a.conn.tunnelLimit {
		t.Fatalf("%d bytes buffered, past the %d cap", n, a.conn.tunnelLimit)
	}
	if err := a.conn.closeErr(); err != nil {
		t.Fatalf("a full stream ended the connection: %v", err)
	}
	buf := make([]byte, 1<<20)
	if n, err := first.Read(buf); err != nil || n == 0 {
		t.Fatalf("first stream read: %d, %v", n, err)
	}
	_ = first.Close()
	_ = second.Close()
	if n := a.conn.tunnelBytes.Load(); n != 0 {
		t.Fatalf("%d bytes still counted after both streams closed", n)
	}
}

// connSandbox is a fake sandbox whose liveness is a real agentConn's.
type connSandbox struct {
	fakeSandbox
	agent *hostileAgent
}

func (s *connSandbox) Alive() bool { return s.agent.conn.closeErr() == nil }

// TestManagerReplacesSandboxWhoseAgentBrokeProtocol: once a sandbox's agent connection
// ends with ErrProtocol, the owner's next Acquire gets a fresh sandbox, and the broken one
// is removed.
func TestManagerReplacesSandboxWhoseAgentBrokeProtocol(t *testing.T) {
	var mu sync.Mutex
	var made []*connSandbox
	create := func(ctx context.Context, owner string, cfg Resolved) (Sandbox, error) {
		sb := &connSandbox{fakeSandbox: fakeSandbox{id: NewID()}, agent: newHostileAgent(t)}
		mu.Lock()
		made = append(made, sb)
		mu.Unlock()
		return sb, nil
	}
	m := NewManager(ManagerOptions{Creators: map[Type]Creator{TypeDocker: create}})
	t.Cleanup(func() { _ = m.Close(context.Background()) })

	first, err := m.Acquire(t.Context(), "s", TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	victim := first.(*connSandbox)
	victim.agent.write(frame(wire.Response{ID: 41, Kind: wire.KindResult, Exec: &wire.ExecResult{Stdout: "FORGED"}}))
	if err := victim.agent.waitFailed(violationWait); !errors.Is(err, ErrProtocol) {
		t.Fatalf("forged frame: %v, want ErrProtocol", err)
	}
	second, err := m.Acquire(t.Context(), "s", TypeDocker)
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("the sandbox whose agent broke the protocol was handed out again")
	}
	testwait.Until(t, 5*time.Second, "the broken sandbox removed", victim.closed.Load)
	if _, err := m.Get(first.ID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the broken sandbox is still tracked: %v", err)
	}
	if got := fmt.Sprint(len(m.List())); got != "1" {
		t.Fatalf("manager tracks %s sandboxes, want 1", got)
	}
}

// TestJSONValuesLetHonestAnswersThrough: the density check counts only structure outside
// strings, so output full of braces and commas passes, and so does a listing of the
// shortest entries an honest agent sends.
func TestJSONValuesLetHonestAnswersThrough(t *testing.T) {
	entries := make([]wire.FileInfo, 10000)
	for i := range entries {
		entries[i] = wire.FileInfo{Name: "a", Mode: "drwxr-xr-x", IsDir: true, ModTime: time.Unix(int64(i), 0).UTC()}
	}
	tests := []struct {
		name string
		resp wire.Response
	}{
		{"output full of JSON punctuation", wire.Response{ID: 1, Kind: wire.KindResult, Exec: &wire.ExecResult{Stdout: strings.Repeat(`{[,"\`, 100000)}}},
		{"listing of one-letter directories", wire.Response{ID: 1, Kind: wire.KindResult, File: &wire.FileResult{Path: "/", Entries: entries}}},
		{"job list", wire.Response{ID: 1, Kind: wire.KindResult, Jobs: make([]wire.Job, 1000)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.resp)
			if err != nil {
				t.Fatal(err)
			}
			if n, limit := jsonValues(b), len(b)/minBytesPerValue+64; n > limit {
				t.Fatalf("%d values in %d bytes counted, past the %d allowed", n, len(b), limit)
			}
		})
	}
}
