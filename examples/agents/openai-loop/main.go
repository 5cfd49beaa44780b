// Command openai-loop is an OpenAI-compatible function-calling agent whose tools run in an
// enclave-mcp sandbox: it fetches the tool schemas from the server (GET /v1/tools), sends
// them with the prompt to any /v1/chat/completions endpoint, runs the tool calls the model
// makes in a sandbox of its own (POST /sandbox/tool/execute), feeds the results back, and
// prints the model's final answer.
//
//	enclave-mcp serve --http 127.0.0.1:8000 --token "$ENCLAVE_TOKEN" &
//	OPENAI_API_KEY=... go run ./openai-loop "What is the 20th Fibonacci number? Compute it."
//
// Any provider with OpenAI's chat-completions API works: set OPENAI_BASE_URL (for example a
// local vLLM or Ollama server's /v1) and OPENAI_MODEL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/enclave-mcp/enclave-mcp/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "openai-loop:", err)
		os.Exit(1)
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// run parses flags, runs the agent on the prompt (the arguments, or stdin) and prints the
// answer.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("openai-loop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", envOr("ENCLAVE_URL", "http://127.0.0.1:8000"), "enclave-mcp server (or ENCLAVE_URL)")
	token := fs.String("token", os.Getenv("ENCLAVE_TOKEN"), "enclave-mcp token (or ENCLAVE_TOKEN)")
	baseURL := fs.String("base-url", envOr("OPENAI_BASE_URL", "https://api.openai.com/v1"), "chat-completions base URL (or OPENAI_BASE_URL)")
	model := fs.String("model", envOr("OPENAI_MODEL", "gpt-4o-mini"), "model (or OPENAI_MODEL)")
	apiKey := fs.String("api-key", os.Getenv("OPENAI_API_KEY"), "model provider's API key (or OPENAI_API_KEY)")
	format := fs.String("format", "openai", "tool schema format: openai or openai-strict")
	maxTurns := fs.Int("max-turns", 20, "most model calls before giving up")
	verbose := fs.Bool("v", false, "log each tool call to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	prompt := strings.Join(fs.Args(), " ")
	if prompt == "" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return fmt.Errorf("reading the prompt: %w", err)
		}
		prompt = strings.TrimSpace(string(b))
	}
	if prompt == "" {
		return errors.New("no prompt: pass it as arguments or on stdin")
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	enclave, err := client.NewRemote(client.RemoteConfig{BaseURL: *server, Token: *token})
	if err != nil {
		return err
	}
	agent := Agent{
		Chat:     Chat{BaseURL: *baseURL, Model: *model, APIKey: *apiKey},
		Enclave:  enclave,
		Format:   *format,
		MaxTurns: *maxTurns,
		System: "You can run code in an isolated Linux sandbox with the tools given. Use them to compute or check " +
			"anything you are not sure of, then answer briefly.",
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	answer, err := agent.Run(ctx, prompt)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, answer)
	return err
}
