// Command enclave-mcp is an MCP server that gives LLM agents secure, fast, stateful
// sandboxes. This file parses the command line and hands off; the work lives in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lmittmann/tint"
	"golang.org/x/sys/unix"

	"github.com/enclave-mcp/enclave-mcp/agent"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `enclave-mcp: secure, fast, stateful sandboxes for LLM agents, over MCP.

Usage:
  enclave-mcp serve [flags]              serve MCP over stdio (one client, one sandbox)
  enclave-mcp serve --http ADDR --token-file F
                                         serve MCP over HTTP (/mcp, /sse) beside the REST API
  enclave-mcp schema --format F          print every tool's schema (F: mcp, openai, openai-strict)
  enclave-mcp doctor                     check the engine, images and runtimes, with fixes
  enclave-mcp images build               build the default images from Debian packages
  enclave-mcp version                    print the version

Run "enclave-mcp COMMAND --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

// run returns the process exit code; deferred cleanups in commands always run before it.
func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = serveCmd(ctx, rest)
	case "schema":
		err = schemaCmd(rest, os.Stdout)
	case "doctor":
		err = doctorCmd(ctx, rest, os.Stdout)
	case "images":
		err = imagesCmd(ctx, rest)
	case "agent":
		err = agentCmd(ctx, rest)
	case "version", "--version":
		fmt.Println("enclave-mcp", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "enclave-mcp: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(os.Stderr, "enclave-mcp %s: %v\n", cmd, err)
		return 1
	}
}

// errUsage marks a command-line mistake that has already been explained.
var errUsage = errors.New("usage")

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text (colour on a terminal) or json")
}

// logger writes to stderr only: in stdio mode stdout belongs to the protocol.
func (l *logFlags) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	switch l.format {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
	case "text":
		return slog.New(tint.NewTextHandler(os.Stderr, &tint.Options{Level: level, NoColor: !isTerminal(os.Stderr)})), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", l.format)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// parseFlags parses args, printing errors and help to stderr.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments: %s\n", fs.Name(), strings.Join(fs.Args(), " "))
		return errUsage
	}
	return nil
}

// agentCmd is the in-sandbox side: the same binary, injected into every container as PID 1.
// It is not meant to be run by hand.
func agentCmd(ctx context.Context, args []string) error { return agent.Main(ctx, args) }
