// Package fakejupyter stands in for jupyter_server in tests that run notebook sandboxes on the
// process backend, where the host has no Jupyter: the test binary itself, started inside a
// sandbox as its notebook server (Command), serves the REST and kernel-channel calls the
// notebook client makes, on 127.0.0.1 at the port the sandbox's environment names, with the
// token from JUPYTER_TOKEN. Its kernel understands a few commands instead of Python:
//
//	cwd              prints the server's working directory
//	read NAME        prints the file NAME
//	write NAME TEXT  writes TEXT to the file NAME
//	exit             ends the server at once, without answering (a server that died)
//	anything else    is printed back
//
// Every start appends a line to StartsFile in the working directory, so a test can count the
// servers a sandbox started; a RefuseFile there makes the start fail the way a missing
// jupyter_server does. A test binary that uses it calls Run from its TestMain.
package fakejupyter

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
)

// PortEnv names the environment variable with the port to listen on; a process that has it is
// a fake Jupyter (see Main).
const PortEnv = "ENCLAVE_FAKE_JUPYTER_PORT"

// The files a fake server reads and writes in its working directory.
const (
	// StartsFile gets a line per server start.
	StartsFile = "fake-jupyter-starts"
	// RefuseFile, when present, makes the server exit at start as if jupyter_server were missing.
	RefuseFile = "fake-jupyter-refuse"
	// RefuseMessage is what a refused start writes to the server log.
	RefuseMessage = "ModuleNotFoundError: No module named 'jupyter_server'"
)

// Run is a test binary's TestMain body: `os.Exit(fakejupyter.Run(m))`. Started as a fake
// Jupyter (by Command, inside a sandbox), the process serves as one; otherwise it runs the
// tests, then removes the copy of itself Command made.
func Run(m *testing.M) int {
	if port := os.Getenv(PortEnv); port != "" {
		if err := serve(port, os.Getenv("JUPYTER_TOKEN")); err != nil {
			logf("%v", err)
			return 1
		}
		return 0
	}
	code := m.Run()
	if copyPath != "" {
		_ = os.RemoveAll(filepath.Dir(copyPath))
	}
	return code
}

// Env is the sandbox environment that makes Command a fake Jupyter listening on port.
func Env(port int) map[string]string { return map[string]string{PortEnv: strconv.Itoa(port)} }

var (
	copyOnce sync.Once
	copyPath string
	copyErr  error
)

// Command is the argv that starts this test binary as a fake Jupyter inside a sandbox. The
// binary is copied, once per test process, to a directory any uid may enter: the process
// backend runs its agents as the config's uid when the tests run as root.
func Command(t testing.TB) []string {
	t.Helper()
	copyOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			copyErr = err
			return
		}
		dir, err := os.MkdirTemp("", "enclave-fake-jupyter-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			copyErr = err
			return
		}
		copyPath = filepath.Join(dir, "fake-jupyter")
		copyErr = copyFile(self, copyPath)
	})
	if copyErr != nil {
		t.Fatalf("copying the test binary to run as a fake Jupyter: %v", copyErr)
	}
	return []string{copyPath}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// FreePort returns a loopback port nothing listens on now: the process backend shares the
// host's network, so each test's server needs a port of its own.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// logf writes to the server log the notebook package names in ENCLAVE_JUPYTER_LOG, as its
// launcher does, so a failed start is explained.
func logf(format string, args ...any) {
	path := os.Getenv("ENCLAVE_JUPYTER_LOG")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format+"\n", args...)
}

func serve(port, token string) error {
	if _, err := os.Stat(RefuseFile); err == nil {
		return fmt.Errorf("Traceback (most recent call last):\n%s", RefuseMessage)
	}
	f, err := os.OpenFile(StartsFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "start pid %d\n", os.Getpid())
	_ = f.Close()
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		return err
	}
	return http.Serve(l, handler(token))
}

const model = `{"id": "k1", "name": "python3", "execution_state": "idle"}`

func handler(token string) http.Handler {
	upgrader := websocket.Upgrader{}
	var counts counters
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/kernels", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "[]") })
	mux.HandleFunc("POST /api/kernels", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, model)
	})
	mux.HandleFunc("GET /api/kernels/k1", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, model) })
	mux.HandleFunc("POST /api/kernels/k1/restart", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, model) })
	mux.HandleFunc("POST /api/kernels/k1/interrupt", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("DELETE /api/kernels/k1", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /api/kernels/k1/channels", func(w http.ResponseWriter, r *http.Request) {
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		kernel(ws, &counts)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "token "+token {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"message": "Forbidden"}`)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// counters number a server's cells and messages.
type counters struct{ cells, msgs atomic.Int64 }

// kernel answers kernel_info and execute requests until the client goes.
func kernel(ws *websocket.Conn, c *counters) {
	send := func(channel, msgType, parent string, content any) {
		msg := map[string]any{
			"header":        map[string]any{"msg_id": "fake-" + strconv.FormatInt(c.msgs.Add(1), 10), "msg_type": msgType},
			"parent_header": map[string]any{"msg_id": parent},
			"channel":       channel, "content": content,
		}
		if data, err := json.Marshal(msg); err == nil {
			_ = ws.WriteMessage(websocket.TextMessage, data)
		}
	}
	for {
		var req struct {
			Header struct {
				MsgID   string `json:"msg_id"`
				MsgType string `json:"msg_type"`
			} `json:"header"`
			Content struct {
				Code string `json:"code"`
			} `json:"content"`
		}
		if err := ws.ReadJSON(&req); err != nil {
			return
		}
		parent := req.Header.MsgID
		send("iopub", "status", parent, map[string]any{"execution_state": "busy"})
		switch req.Header.MsgType {
		case "kernel_info_request":
			send("shell", "kernel_info_reply", parent, map[string]any{"status": "ok"})
		case "execute_request":
			n := c.cells.Add(1)
			out, err := run(req.Content.Code)
			if err != nil {
				send("iopub", "stream", parent, map[string]any{"name": "stderr", "text": err.Error() + "\n"})
			} else if out != "" {
				send("iopub", "stream", parent, map[string]any{"name": "stdout", "text": out})
			}
			send("shell", "execute_reply", parent, map[string]any{"status": "ok", "execution_count": n})
		}
		send("iopub", "status", parent, map[string]any{"execution_state": "idle"})
	}
}

// run carries out one cell's command and returns its stdout.
func run(code string) (string, error) {
	verb, rest, _ := strings.Cut(strings.TrimSpace(code), " ")
	switch verb {
	case "cwd":
		dir, err := os.Getwd()
		return dir + "\n", err
	case "read":
		data, err := os.ReadFile(rest)
		return string(data), err
	case "write":
		name, text, _ := strings.Cut(rest, " ")
		return "", os.WriteFile(name, []byte(text), 0o644)
	case "exit":
		os.Exit(3)
	}
	return code + "\n", nil
}
