package loadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ServerOptions says how to start an enclave-mcp server subprocess.
type ServerOptions struct {
	// Binary is a static enclave-mcp executable (it is also injected into the sandboxes as
	// their agent, so it must be built with CGO_ENABLED=0).
	Binary string
	// Token is the bearer token the server requires; empty means a random one.
	Token string
	// Args are extra `serve` flags, e.g. --session-ttl 3s.
	Args []string
	// Log receives the server's log (JSON lines, from its stderr); nil discards it.
	Log io.Writer
	// StartTimeout bounds the wait for the server to listen; 0 means 60 s (startup reaps
	// dead servers' sandboxes first, which takes a while when there are many).
	StartTimeout time.Duration
}

// Server is a running `enclave-mcp serve --http` subprocess on a loopback port of its
// own choosing.
type Server struct {
	// URL is the server's base URL (http://127.0.0.1:PORT); MCP is at URL+"/mcp" and
	// URL+"/sse".
	URL string
	// Token is the bearer token every request but GET /health needs.
	Token string
	// Started is when the process was started.
	Started time.Time

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// StartServer starts the server and returns once it answers GET /health. The subprocess
// gets SIGTERM should this process die first, so that it never outlives its driver.
func StartServer(ctx context.Context, opts ServerOptions) (*Server, error) {
	if opts.Binary == "" {
		return nil, errors.New("starting server: no enclave-mcp binary given")
	}
	if opts.Token == "" {
		opts.Token = randomToken()
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	// The warm pool is off unless Args turn it on: fault tests count a server's containers
	// exactly, and spares kept ready would be counted with them.
	args := append([]string{"serve", "--http", "127.0.0.1:0", "--token", opts.Token, "--log-format", "json", "--warm", "0"}, opts.Args...)
	found := make(chan string, 1)
	cmd := exec.Command(opts.Binary, args...)
	cmd.Stderr = &logScanner{out: log, found: found}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", opts.Binary, err)
	}
	s := &Server{Token: opts.Token, Started: time.Now(), cmd: cmd, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	wctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := s.awaitListening(wctx, found); err != nil {
		s.Kill()
		return nil, err
	}
	return s, nil
}

// awaitListening waits for the log line that names the listener, then for /health.
func (s *Server) awaitListening(ctx context.Context, found <-chan string) error {
	select {
	case u := <-found:
		s.URL = u
	case <-s.exited:
		return fmt.Errorf("server exited before listening: %w", s.waitErr)
	case <-ctx.Done():
		return fmt.Errorf("waiting for the server to listen: %w", ctx.Err())
	}
	for {
		if err := s.health(ctx); err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("server exited during start: %w", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s/health: %w", s.URL, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) health(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/health", nil)
	if err != nil {
		return fmt.Errorf("building health request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("asking %s/health: %w", s.URL, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/health answered %s", s.URL, resp.Status)
	}
	return nil
}

// Healthy reports whether the server answers GET /health within a few seconds.
func (s *Server) Healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.health(ctx)
}

// PID is the server's process id (the value of its containers' enclave-mcp.pid label).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Exited is closed once the server process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Signal sends sig to the server.
func (s *Server) Signal(sig os.Signal) error {
	if err := s.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signalling server %d: %w", s.PID(), err)
	}
	return nil
}

// Wait waits for the server to exit and returns how it exited (nil for status 0).
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-s.exited:
		return s.waitErr
	case <-ctx.Done():
		return fmt.Errorf("waiting for server %d to exit: %w", s.PID(), ctx.Err())
	}
}

// Stop asks the server to shut down (SIGTERM) and waits for it; when ctx ends first the
// server is killed.
func (s *Server) Stop(ctx context.Context) error {
	select {
	case <-s.exited:
		return s.waitErr
	default:
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := s.Wait(ctx); err != nil {
		s.Kill()
		return fmt.Errorf("stopping server: %w", err)
	}
	return nil
}

// Kill kills the server at once (SIGKILL), as a crash would, and waits for it to be gone.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// PeakRSS is the server's peak resident set size in bytes (VmHWM in /proc/PID/status); the
// server must still be running.
func (s *Server) PeakRSS() (int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.PID()), "status"))
	if err != nil {
		return 0, fmt.Errorf("reading the server's memory use: %w", err)
	}
	return parseVmHWM(data)
}

// parseVmHWM finds "VmHWM:   12345 kB" in a /proc/PID/status file.
func parseVmHWM(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmHWM:"))
		if !ok {
			continue
		}
		fields := strings.Fields(string(rest))
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmHWM line %q", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing VmHWM: %w", err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmHWM in /proc status (the process has exited?)")
}

// logScanner passes the server's log through and reports the first listening URL it names.
// It looks for any JSON log attribute whose value is an http URL ending in /mcp, rather than
// one message text, so a reworded log line does not break it.
type logScanner struct {
	out     io.Writer
	found   chan<- string
	mu      sync.Mutex
	partial []byte
	done    bool
}

func (l *logScanner) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.out.Write(p) // the log is for people; a failing sink must not kill the server
	if l.done {
		return len(p), nil
	}
	l.partial = append(l.partial, p...)
	for {
		line, rest, ok := bytes.Cut(l.partial, []byte("\n"))
		if !ok {
			break
		}
		l.partial = rest
		if u := listenURL(line); u != "" {
			l.found <- u
			l.done, l.partial = true, nil
			break
		}
	}
	return len(p), nil
}

// listenURL returns the base URL announced by a JSON log line, or "".
func listenURL(line []byte) string {
	var rec map[string]any
	if json.Unmarshal(line, &rec) != nil {
		return ""
	}
	for _, v := range rec {
		s, ok := v.(string)
		if !ok || !strings.HasPrefix(s, "http://") {
			continue
		}
		if base, ok := strings.CutSuffix(s, "/mcp"); ok {
			return base
		}
	}
	return ""
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// BuildServer builds a static enclave-mcp (CGO_ENABLED=0, as the agent needs) from the
// module at moduleDir into dir, and returns its path.
func BuildServer(ctx context.Context, moduleDir, dir string) (string, error) {
	out := filepath.Join(dir, "enclave-mcp")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./cmd/enclave-mcp")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building enclave-mcp: %w\n%s", err, msg)
	}
	return out, nil
}
