package agent

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
)

// Main is the agent's command: `enclave-mcp agent [--workspace DIR] [--egress-listen ADDR]`, serving the wire
// protocol on this process's stdin and stdout. A program that embeds the server and uses
// its own executable as the agent (on the process backend) calls it when it is started
// with the argument "agent". It logs to stderr and returns nil when the server closes the
// stream.
func Main(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	workspace := fs.String("workspace", "/sandbox", "the sandbox's writable workspace")
	egress := fs.String("egress-listen", "", "a loopback address where programs reach the server's egress proxy (empty: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("agent: unexpected arguments")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	err := Run(ctx, os.Stdin, os.Stdout, Options{Workspace: *workspace, Logger: log, EgressListen: *egress})
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
