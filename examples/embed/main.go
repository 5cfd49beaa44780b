// Command embed is enclave-mcp embedded in a program of its own: an MCP server over stdio
// that offers, beside the built-in tools, one written here in Go (word_count: a parameter
// struct and a handler; its schema, strict argument checking and every export come from
// the struct) and one declared as an argv template (line_count, as an operator would in
// the config file), with its sandboxes on the process backend, so it runs without a
// container engine.
//
// The process backend ISOLATES NOTHING: the sandboxed code runs on this host. It is here so
// that the example runs anywhere; swap in sandbox.NewDocker for hardened containers and
// nothing else changes.
//
// This binary is also its sandboxes' agent: started as `embed agent ...` it serves the
// agent's protocol instead (agent.Main), so it needs no enclave-mcp binary beside it.
//
//	go build -o /tmp/embed ./examples/embed && /tmp/embed   # then speak MCP on stdin
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/enclave-mcp/enclave-mcp/agent"
	"github.com/enclave-mcp/enclave-mcp/mcp"
	"github.com/enclave-mcp/enclave-mcp/sandbox"
	"github.com/enclave-mcp/enclave-mcp/session"
	"github.com/enclave-mcp/enclave-mcp/tools"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		err = agent.Main(ctx, os.Args[2:])
	} else {
		err = serve(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

// WordCountParams are word_count's parameters: the schema every face shows is reflected
// from this struct, and arguments are decoded into it strictly.
type WordCountParams struct {
	Path string `json:"path" jsonschema_description:"File to count, relative to the workspace"`
}

// wordCount is a tool written in Go: it reads a file of the caller's sandbox through the
// agent and counts its words.
func wordCount() tools.Def {
	return tools.New(tools.Def{
		Name:        "word_count",
		Description: "Count the words of a text file in the sandbox's workspace.",
		Sandbox:     sandbox.TypeDocker, // needs only files, which every sandbox has
		ReadOnly:    true,
	}, func(ctx context.Context, call tools.Call, p WordCountParams) (tools.Result, error) {
		r, err := call.Sandbox.File(ctx, sandbox.FileRequest{Action: sandbox.FileRead, Path: p.Path})
		if err != nil {
			return tools.Result{Status: tools.StatusError, Error: fmt.Sprintf("reading %s: %v", p.Path, err)}, nil
		}
		n := len(strings.Fields(string(r.Data)))
		return tools.Result{Status: tools.StatusSuccess, Output: fmt.Sprintf("%d words", n), Metadata: map[string]any{"words": n}}, nil
	})
}

// lineCount is declared the way an operator declares a tool in the config file's "tools":
// an argv template, run without a shell.
const lineCount = `[{
	"name": "line_count",
	"description": "Count the lines of a file in the sandbox's workspace.",
	"parameters": {"path": {"type": "string", "description": "File to count", "required": true}},
	"argv": ["wc", "-l", "--", "{path}"],
	"read_only": true
}]`

// toolList is the built-in tools, the declared one and the Go one.
func toolList() ([]tools.Def, error) {
	var declared []tools.CommandTool
	if err := json.Unmarshal([]byte(lineCount), &declared); err != nil {
		return nil, fmt.Errorf("reading the declared tools: %w", err)
	}
	defs, err := tools.AddCommands(tools.All(), declared)
	if err != nil {
		return nil, err
	}
	return append(defs, wordCount()), nil
}

// newCore assembles the session core on backend: the layers every face shares.
func newCore(backend sandbox.Backend, log *slog.Logger) (*session.Core, error) {
	defs, err := toolList()
	if err != nil {
		return nil, err
	}
	manager, err := session.NewManager(session.Sandboxes{Backend: backend, Tools: defs, MaxSandboxes: 4, Logger: log})
	if err != nil {
		return nil, err
	}
	return session.New(session.Config{Manager: manager, Tools: defs, Logger: log, Version: "embed"})
}

// serve runs the MCP server over stdio until stdin ends or a signal arrives.
func serve(ctx context.Context) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	backend, err := sandbox.NewProcess(sandbox.ProcessOptions{Logger: log}) // this binary is the agent
	if err != nil {
		return err
	}
	defer backend.Close()
	core, err := newCore(backend, log)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = core.Close(cctx)
		_ = core.Manager().Close(cctx)
	}()
	srv, err := mcp.New(mcp.Config{Name: "embed", Version: "1", Core: core, Logger: log})
	if err != nil {
		return err
	}
	return srv.ServeStdio(ctx, os.Stdin, os.Stdout)
}
