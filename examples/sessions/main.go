// Command sessions runs the session API's flow (sandbox_runtime's SDK README) with the Go
// SDK, client.Sessions: create a session, put a file in it, run a command and code, read its
// status, download a file, delete the session. With several servers, the session lives on
// the one its id hashes to; every client listing the same servers finds it there.
//
//	ENCLAVE_MCP_TOKEN=T go run ./examples/sessions -servers http://127.0.0.1:8000,http://127.0.0.1:8001
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/enclave-mcp/enclave-mcp/client"
)

func main() {
	servers := flag.String("servers", "http://127.0.0.1:8000", "comma-separated base URLs of the servers")
	id := flag.String("session", "example", "the session's id")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, strings.Split(*servers, ","), os.Getenv("ENCLAVE_MCP_TOKEN"), *id, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sessions:", err)
		os.Exit(1)
	}
}

// run is the flow, printing what each step returns to out.
func run(ctx context.Context, servers []string, token, id string, out io.Writer) error {
	sdk, err := client.NewSessions(client.SessionsConfig{Servers: servers, Token: token})
	if err != nil {
		return err
	}
	info, err := sdk.Create(ctx, id, "50M")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "created session %s (%s) on %s\n", info.SessionID, info.Size, sdk.Server(id))
	// Whatever happens next, the session goes.
	defer func() { _ = sdk.Delete(context.WithoutCancel(ctx), id) }()

	file, err := sdk.CreateFile(ctx, id, "data.txt", []byte("apple\nbanana\ncherry\n"), 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s: %d bytes, mode %s\n", file.Name, file.Size, file.Mode)

	res, err := sdk.Execute(ctx, id, "wc", []string{"-l", "data.txt"}, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "wc -l data.txt: exit %d, stdout %q\n", res.ExitCode, res.Stdout)

	code := "words = open('data.txt').read().split()\nopen('upper.txt', 'w').write(' '.join(w.upper() for w in words))\nprint(len(words), 'words')\n"
	res, err = sdk.ExecuteCode(ctx, id, code, "", "python", 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "python: %s, stdout %q\n", res.Status, res.Stdout)

	st, err := sdk.Status(ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "status: %d files, %d running, size %s\n", st.Files, st.RunningProcesses, st.Size)

	var buf bytes.Buffer
	if _, err := sdk.Download(ctx, id, "upper.txt", &buf); err != nil {
		return err
	}
	fmt.Fprintf(out, "upper.txt: %s\n", buf.String())

	if err := sdk.Delete(ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(out, "deleted session %s\n", id)
	return nil
}
