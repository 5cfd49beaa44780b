// Command enclave-agent is the in-sandbox agent alone: the program enclave-mcp injects into
// every sandbox as its PID 1, built without the server. It is what `enclave-mcp agent` runs,
// minus the server's packages, whose initialisation alone costs an agent about 2.7 MB of
// allocations and 40 ms at every start, and whose pages make its resident set several times
// larger. `make build` puts it beside enclave-mcp, which then injects it instead of itself
// (see --agent-binary). It is not meant to be run by hand.
//
// Usage: enclave-agent agent [--workspace DIR], the command line `enclave-mcp agent` takes,
// so that either binary can be injected.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/enclave-mcp/enclave-mcp/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "agent" {
		args = args[1:]
	}
	err := agent.Main(ctx, args)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "enclave-agent: %v\n", err)
		os.Exit(1)
	}
}
