package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclave-mcp/enclave-mcp/agent/wire"
)

// TestInstallCopiesSelf: --install writes this executable, whole and executable, where a
// Kubernetes init container asks, and serves nothing.
func TestInstallCopiesSelf(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "agent")
	if err := Main(t.Context(), []string{"--install", dst}); err != nil {
		t.Fatalf("agent --install: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("installed %d bytes, want the executable's %d", len(got), len(want))
	}
	if st, err := os.Stat(dst); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("installed agent's mode: %v, %v; want 0755", st.Mode(), err)
	}
	if err := Main(t.Context(), []string{"--install", filepath.Join(t.TempDir(), "missing", "agent")}); err == nil {
		t.Error("--install into a directory that does not exist: no error")
	}
}

// TestConnectServesOnTheSocket: with --connect the agent dials the server's socket, greets
// and answers there, and returns when the server half-closes it; a socket that is not there
// is an error naming it.
func TestConnectServesOnTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() { done <- Main(t.Context(), []string{"--workspace", t.TempDir(), "--connect", path}) }()
	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lines := bufio.NewScanner(conn)
	read := func() wire.Response {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("the agent's connection ended: %v", lines.Err())
		}
		var r wire.Response
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			t.Fatalf("decoding %q: %v", lines.Text(), err)
		}
		return r
	}
	if r := read(); r.Kind != wire.KindReady || r.Ready == nil || r.Ready.PID != os.Getpid() {
		t.Fatalf("first message %+v, want this process's greeting", r)
	}
	if _, err := conn.Write([]byte(`{"id":7,"op":"ping"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if r := read(); r.ID != 7 || r.Kind != wire.KindResult || r.Stats == nil {
		t.Fatalf("answer to ping %+v, want a result with stats", r)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("agent after the server closed: %v, want nil", err)
	}

	missing := filepath.Join(t.TempDir(), "none.sock")
	err = Main(t.Context(), []string{"--workspace", t.TempDir(), "--connect", missing})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("--connect to nothing: %v, want an error naming %s", err, missing)
	}
}
