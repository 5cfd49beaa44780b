package agent

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// listen starts a loopback listener whose accepted connections go to handle.
func listen(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return l.Addr().String()
}

// openStream dials addr through the agent and returns the stream's ID and the channel its
// messages arrive on.
func openStream(t *testing.T, a *testAgent, addr string) (uint64, <-chan wire.Response) {
	t.Helper()
	id, ch := a.send(wire.Request{Op: wire.OpDial, Dial: &wire.Dial{Network: "tcp", Address: addr}})
	select {
	case resp := <-ch:
		if resp.Kind != wire.KindResult {
			t.Fatalf("dial: got %+v, want a result", resp)
		}
	case <-time.After(responseWait):
		t.Fatal("dial: no answer")
	}
	return id, ch
}

// readStream collects a stream's data until n bytes arrived or the stream ended.
func readStream(t *testing.T, ch <-chan wire.Response, n int) (data []byte, eof *wire.Response) {
	t.Helper()
	deadline := time.After(responseWait)
	for len(data) < n {
		select {
		case resp := <-ch:
			switch resp.Kind {
			case wire.KindData:
				data = append(data, resp.Data...)
			case wire.KindEOF:
				return data, &resp
			default:
				t.Fatalf("unexpected message on a stream: %+v", resp)
			}
		case <-deadline:
			t.Fatalf("stream: got %d of %d bytes before the deadline", len(data), n)
		}
	}
	return data, nil
}

func TestTunnelEchoKeepsOrder(t *testing.T) {
	a := startAgent(t)
	peerGone := make(chan struct{})
	addr := listen(t, func(c net.Conn) {
		defer close(peerGone)
		_, _ = io.Copy(c, c) // echo until the agent closes its side
		c.Close()
	})
	id, ch := openStream(t, a, addr)

	var want bytes.Buffer
	for i := range 200 {
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, 1000+i*37)
		want.Write(chunk)
		a.sendRaw(wire.Request{Op: wire.OpData, Target: id, Data: chunk})
	}
	got, eof := readStream(t, ch, want.Len())
	if eof != nil {
		t.Fatalf("stream ended early: %+v", eof)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("echo differs: got %d bytes, want %d", len(got), want.Len())
	}

	a.sendRaw(wire.Request{Op: wire.OpClose, Target: id})
	select {
	case <-peerGone:
	case <-time.After(responseWait):
		t.Fatal("the peer did not see the close")
	}
	// The agent still serves requests, and data for the closed stream is dropped quietly.
	a.sendRaw(wire.Request{Op: wire.OpData, Target: id, Data: []byte("late")})
	if resp := a.call(wire.Request{Op: wire.OpPing}); resp.Kind != wire.KindResult {
		t.Fatalf("ping after close: %+v", resp)
	}
	select {
	case resp := <-ch:
		t.Fatalf("nothing may follow a close the server asked for, got %+v", resp)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestTunnelPeerCloseSendsEOF(t *testing.T) {
	a := startAgent(t)
	addr := listen(t, func(c net.Conn) {
		_, _ = c.Write([]byte("hello"))
		c.Close()
	})
	_, ch := openStream(t, a, addr)
	got, eof := readStream(t, ch, 1<<20)
	if string(got) != "hello" {
		t.Errorf("data = %q, want hello", got)
	}
	if eof == nil || eof.Error != "" {
		t.Errorf("want a clean EOF after the peer closed, got %+v", eof)
	}
}

func TestTunnelFullBufferFailsOnlyThatStream(t *testing.T) {
	if testing.Short() {
		t.Skip("moves more than 64 MiB through the protocol")
	}
	a := startAgent(t)
	stuck := make(chan net.Conn, 1)
	addr := listen(t, func(c net.Conn) { stuck <- c }) // never reads
	id, ch := openStream(t, a, addr)
	defer func() { (<-stuck).Close() }()

	chunk := make([]byte, 1<<20)
	for range wire.MaxStreamBuffer/len(chunk) + 16 { // past the cap, plus what the socket buffers
		a.sendRaw(wire.Request{Op: wire.OpData, Target: id, Data: chunk})
	}
	_, eof := readStream(t, ch, 1)
	if eof == nil || !strings.Contains(eof.Error, "buffer full") {
		t.Fatalf("want the stream failed with a full buffer, got %+v", eof)
	}
	if resp := a.call(wire.Request{Op: wire.OpPing}); resp.Kind != wire.KindResult {
		t.Fatalf("the agent must keep serving: %+v", resp)
	}
}

func TestDialErrors(t *testing.T) {
	a := startAgent(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name     string
		dial     *wire.Dial
		wantCode wire.Code
		wantText string
	}{
		{"no dial field", nil, wire.CodeInvalid, "no dial field"},
		{"udp is refused", &wire.Dial{Network: "udp", Address: "127.0.0.1:53"}, wire.CodeInvalid, `network "udp"`},
		{"negative timeout", &wire.Dial{Network: "tcp", Address: refused, TimeoutMS: -1}, wire.CodeInvalid, "timeout_ms"},
		{"nothing listening", &wire.Dial{Network: "tcp", Address: refused}, wire.CodeNotFound, "connection refused"},
		{"no such socket", &wire.Dial{Network: "unix", Address: "/nonexistent/sock"}, wire.CodeNotFound, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := a.call(wire.Request{Op: wire.OpDial, Dial: tc.dial})
			if resp.Kind != wire.KindError || resp.Code != tc.wantCode || !strings.Contains(resp.Error, tc.wantText) {
				t.Fatalf("got %+v, want a %s error containing %q", resp, tc.wantCode, tc.wantText)
			}
		})
	}
}
