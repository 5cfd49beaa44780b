package agent

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// strayStream reads the next message of agent-opened streams, which no request waits for.
func strayStream(t *testing.T, a *testAgent) wire.Response {
	t.Helper()
	select {
	case resp := <-a.stray:
		return resp
	case <-time.After(responseWait):
		t.Fatal("no message on the agent's streams")
		return wire.Response{}
	}
}

func TestEgressListenerRelaysBothWays(t *testing.T) {
	a := startAgentWith(t, Options{EgressListen: "127.0.0.1:0"})
	addr := a.ready.Ready.Egress
	if addr == "" {
		t.Fatal("the greeting names no egress address")
	}

	var ids []uint64
	for i := range 2 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("CONNECT x:443 HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		open := strayStream(t, a)
		if open.Kind != wire.KindOpen || open.ID&wire.AgentStream == 0 {
			t.Fatalf("connection %d: got %+v, want an open with the agent-stream bit", i, open)
		}
		ids = append(ids, open.ID)
		if i > 0 && open.ID <= ids[i-1] {
			t.Errorf("stream IDs do not increase: %d after %d", open.ID, ids[i-1])
		}
		var got []byte
		for len(got) < len("CONNECT x:443 HTTP/1.1\r\n\r\n") {
			data := strayStream(t, a)
			if data.Kind != wire.KindData || data.ID != open.ID {
				t.Fatalf("got %+v, want data of stream %d", data, open.ID)
			}
			got = append(got, data.Data...)
		}
		if string(got) != "CONNECT x:443 HTTP/1.1\r\n\r\n" {
			t.Errorf("relayed %q", got)
		}

		// The server's answer reaches the program, and the server's close ends it.
		a.sendRaw(wire.Request{Op: wire.OpData, Target: open.ID, Data: []byte("HTTP/1.1 200 OK\r\n\r\n")})
		a.sendRaw(wire.Request{Op: wire.OpClose, Target: open.ID})
		_ = conn.SetReadDeadline(time.Now().Add(responseWait))
		answer, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if string(answer) != "HTTP/1.1 200 OK\r\n\r\n" {
			t.Errorf("the program read %q", answer)
		}
	}
}

func TestEgressProgramCloseSendsEOF(t *testing.T) {
	a := startAgentWith(t, Options{EgressListen: "127.0.0.1:0"})
	conn, err := net.Dial("tcp", a.ready.Ready.Egress)
	if err != nil {
		t.Fatal(err)
	}
	open := strayStream(t, a)
	if open.Kind != wire.KindOpen {
		t.Fatalf("got %+v, want an open", open)
	}
	conn.Close()
	if eof := strayStream(t, a); eof.Kind != wire.KindEOF || eof.ID != open.ID || eof.Error != "" {
		t.Errorf("got %+v, want a clean EOF of stream %d", eof, open.ID)
	}
}

func TestEgressListenFailsOnABusyAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = listenEgress(l.Addr().String())
	if err == nil {
		t.Fatal("listening on a busy address succeeded")
	}
}
