package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
)

// Main is the agent's command: `enclave-mcp agent [--workspace DIR] [--egress-listen ADDR]
// [--connect PATH]`, serving the wire protocol on this process's stdin and stdout, or on a
// connection to the server's unix socket at PATH. A program that embeds the server and uses
// its own executable as the agent (on the process backend) calls it when it is started
// with the argument "agent". It logs to stderr and returns nil when the server closes the
// stream.
func Main(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	workspace := fs.String("workspace", "/sandbox", "the sandbox's writable workspace")
	egress := fs.String("egress-listen", "", "a loopback address where programs reach the server's egress proxy (empty: none)")
	install := fs.String("install", "", "copy this executable to `PATH` (mode 0755) and exit: how a Kubernetes init container, whose image holds nothing else, hands the agent to the sandbox container")
	connect := fs.String("connect", "", "serve the protocol on a connection to the unix socket at `PATH` instead of stdin and stdout: the server's direct line to a sandbox on a local engine, which it listens on only until this one connection arrives (see sandbox/agentsocket.go)")
	awaitAttach := fs.Bool("await-attach", false, "read one byte from stdin before serving: the server writes it once attached, so the greeting is not sent before anyone listens (a Kubernetes attach joins a container that already runs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("agent: unexpected arguments")
	}
	if *install != "" {
		return installSelf(*install)
	}
	if *awaitAttach {
		var b [1]byte
		if _, err := io.ReadFull(os.Stdin, b[:]); err != nil {
			return nil // the server never attached, or left: nothing to serve
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var in io.Reader = os.Stdin
	var out io.Writer = os.Stdout
	if *connect != "" {
		conn, err := net.Dial("unix", *connect)
		if err != nil {
			return fmt.Errorf("agent: connecting to the server at %s: %w", *connect, err)
		}
		defer conn.Close()
		in, out = conn, conn
	}
	err := Run(ctx, in, out, Options{Workspace: *workspace, Logger: log, EgressListen: *egress})
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// installSelf copies this executable to path: written beside it under a temporary name and
// renamed, so that path holds either nothing or the whole binary.
func installSelf(path string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("agent --install: finding own executable: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("agent --install: %w", err)
	}
	defer src.Close()
	tmp := path + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("agent --install: %w", err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		_ = dst.Close()
		return fmt.Errorf("agent --install: copying to %s: %w", tmp, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("agent --install: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("agent --install: %w", err)
	}
	return nil
}
