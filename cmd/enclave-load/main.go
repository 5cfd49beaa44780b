// Command enclave-load puts enclave-mcp under load: N concurrent MCP sessions over
// streamable HTTP (mark3labs/mcp-go), each with its own sandbox, each making M
// python_executor calls whose output is checked. It prints a Markdown table: throughput,
// call and session-setup latency percentiles, errors, the server's peak RSS, and the
// sandboxes left once the sessions closed and once the server stopped (both must be 0).
//
// Usage (from the module root; `make load` runs the full size):
//
//	go run ./cmd/enclave-load [-sessions 50] [-calls 20] [-url URL -token T] [-- serve flags...]
//
// Without -url it builds a static enclave-mcp into a temporary directory (or uses
// -server-binary), starts `enclave-mcp serve --http 127.0.0.1:0 --token RANDOM` with the
// serve flags given after "--", and stops it at the end. With -url it only drives the
// load: the server's memory and containers are then not its to see. The exit status is 1
// when any call failed or any sandbox was left behind.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/enclave-mcp/enclave-mcp/loadtest"
)

func main() {
	os.Exit(run())
}

type config struct {
	load         loadtest.Options
	serverBinary string
	serverLog    string
	serveArgs    []string
}

func run() int {
	var cfg config
	flag.IntVar(&cfg.load.Sessions, "sessions", 50, "concurrent MCP sessions (each gets its own sandbox; the server's --max-sandboxes defaults to 100)")
	flag.IntVar(&cfg.load.CallsPerSession, "calls", 20, "python_executor calls per session, one after another")
	flag.StringVar(&cfg.load.URL, "url", "", "drive an already running server at this base URL (http://HOST:PORT) instead of starting one")
	flag.StringVar(&cfg.load.Token, "token", os.Getenv("ENCLAVE_TOKEN"), "the server's token, with -url (default $ENCLAVE_TOKEN)")
	flag.StringVar(&cfg.load.Code, "code", loadtest.DefaultCode, "Python code each call runs")
	flag.StringVar(&cfg.load.Want, "want", loadtest.DefaultWant, "text every call's output must contain (empty: only check isError)")
	flag.DurationVar(&cfg.load.CallTimeout, "call-timeout", 2*time.Minute, "bound on each call; a call past it counts as an error")
	flag.StringVar(&cfg.serverBinary, "server-binary", "", "static enclave-mcp binary to start (default: build one, CGO_ENABLED=0, into a temporary directory)")
	flag.StringVar(&cfg.serverLog, "server-log", "", "write the started server's log (JSON lines) to this file")
	warm := flag.Int("warm", 2, "the started server's warm pool (--warm): spares kept ready for new sessions, as `serve --http` keeps by default")
	flag.Parse()
	cfg.serveArgs = flag.Args()
	if cfg.load.URL != "" && len(cfg.serveArgs) > 0 {
		fmt.Fprintln(os.Stderr, "enclave-load: serve flags after -- only apply to a server it starts, not with -url")
		return 2
	}

	cfg.serveArgs = append([]string{fmt.Sprintf("--warm=%d", *warm)}, cfg.serveArgs...)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := load(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "enclave-load: %v\n", err)
		if rep.Calls == 0 {
			return 1
		}
	}
	fmt.Printf("`go run ./cmd/enclave-load %s`\n\n%s", strings.Join(os.Args[1:], " "), rep.Markdown())
	if err != nil || failed(rep) {
		return 1
	}
	return 0
}

// failed reports whether the run saw errors or left sandboxes behind.
func failed(rep loadtest.Report) bool {
	return rep.Errors > 0 || rep.Server != nil && (rep.Server.LeftAfterClose > 0 || rep.Server.LeftAfterStop > 0)
}

func load(ctx context.Context, cfg config) (loadtest.Report, error) {
	if cfg.load.URL != "" {
		return loadtest.Run(ctx, cfg.load)
	}
	sopts := loadtest.ServerOptions{Binary: cfg.serverBinary, Args: cfg.serveArgs}
	if sopts.Binary == "" {
		dir, err := os.MkdirTemp("", "enclave-load-")
		if err != nil {
			return loadtest.Report{}, fmt.Errorf("creating a build directory: %w", err)
		}
		defer os.RemoveAll(dir)
		if sopts.Binary, err = build(ctx, dir); err != nil {
			return loadtest.Report{}, err
		}
	}
	if cfg.serverLog != "" {
		f, err := os.Create(cfg.serverLog)
		if err != nil {
			return loadtest.Report{}, fmt.Errorf("creating the server log: %w", err)
		}
		defer f.Close()
		sopts.Log = f
	}
	return loadtest.RunWithServer(ctx, sopts, cfg.load)
}

// build builds the server from the module this command is run in.
func build(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root (go env GOMOD): %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the enclave-mcp module: run from its root, or pass -server-binary")
	}
	fmt.Fprintln(os.Stderr, "enclave-load: building enclave-mcp (CGO_ENABLED=0)")
	return loadtest.BuildServer(ctx, filepath.Dir(gomod), dir)
}
