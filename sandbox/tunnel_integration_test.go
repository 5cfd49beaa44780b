package sandbox_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/enclave-mcp/enclave-mcp/internal/testenv"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
)

// TestIntegrationTunnel reaches an HTTP server that listens only on a sandbox's loopback
// (the sandbox has no network at all) through the agent's tunnel.
func TestIntegrationTunnel(t *testing.T) {
	e := testenv.Engine(t)
	sb := testenv.Sandbox(t, e, sandbox.Config{})
	ctx := t.Context()

	// A 3 MiB file of varied bytes, written in the workspace the server serves.
	payload := bytes.Repeat([]byte("0123456789abcdef\x00\xff\n"), 3<<20/19)
	if _, err := sb.File(ctx, sandbox.FileRequest{Action: sandbox.FileWrite, Path: "big.bin", Data: payload}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"}, Background: true}, nil); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: sb.DialContext}, Timeout: 20 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	waitForServer(t, sb, "127.0.0.1:8000")

	t.Run("http through the tunnel, large body intact", func(t *testing.T) {
		for range 3 { // keep-alive reuses the tunnel
			resp, err := client.Get("http://127.0.0.1:8000/big.bin")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(body) != sha256.Sum256(payload) {
				t.Fatalf("body differs: %d bytes, want %d", len(body), len(payload))
			}
		}
	})

	t.Run("nothing listening is ErrNotFound", func(t *testing.T) {
		_, err := sb.DialContext(ctx, "tcp", "127.0.0.1:9")
		if !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})

	t.Run("deadlines and close", func(t *testing.T) {
		conn, err := sb.DialContext(ctx, "tcp", "127.0.0.1:8000")
		if err != nil {
			t.Fatal(err)
		}
		// The server says nothing until asked: the read must time out, as a net.Error.
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		start := time.Now()
		_, err = conn.Read(make([]byte, 10))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read err = %v, want a deadline timeout", err)
		}
		if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
			t.Errorf("deadline fired after %s, want ~200ms", took)
		}
		// A deadline moved into the future lets the connection work again.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprint(conn, "GET /big.bin HTTP/1.0\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 12)
		if _, err := io.ReadFull(conn, head); err != nil || !strings.HasPrefix(string(head), "HTTP/1.0 200") {
			t.Fatalf("read %q, %v", head, err)
		}
		// A past write deadline fails the write at once.
		_ = conn.SetWriteDeadline(time.Now().Add(-time.Second))
		if _, err := conn.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write err = %v, want a deadline timeout", err)
		}
		if err := conn.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(head); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v, want net.ErrClosed", err)
		}
	})

	t.Run("a read waiting when the sandbox goes away returns", func(t *testing.T) {
		sb2 := testenv.Sandbox(t, e, sandbox.Config{})
		if _, err := sb2.Exec(ctx, sandbox.ExecRequest{Argv: []string{"python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"}, Background: true}, nil); err != nil {
			t.Fatal(err)
		}
		waitForServer(t, sb2, "127.0.0.1:8000")
		conn, err := sb2.DialContext(ctx, "tcp", "127.0.0.1:8000")
		if err != nil {
			t.Fatal(err)
		}
		readErr := make(chan error, 1)
		go func() {
			_, err := conn.Read(make([]byte, 1))
			readErr <- err
		}()
		if err := sb2.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-readErr:
			if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read err = %v, want the sandbox's end", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("read still blocked after the sandbox was removed")
		}
	})
}

// waitForServer polls until something accepts connections at addr inside sb.
func waitForServer(t *testing.T, sb *sandbox.AgentSandbox, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := sb.DialContext(t.Context(), "tcp", addr)
		if err == nil {
			conn.Close()
			return
		}
		if !errors.Is(err, sandbox.ErrNotFound) || time.Now().After(deadline) {
			t.Fatalf("server at %s did not come up: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
